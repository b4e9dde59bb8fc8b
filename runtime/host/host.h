/* mnemo-run's host: one LuaJIT state and one uv loop shared with luv. */
#ifndef MNEMO_HOST_H
#define MNEMO_HOST_H

/* Exit codes, as documented in README.md. */
enum {
  MNEMO_EXIT_OK = 0,
  MNEMO_EXIT_ERROR = 1, /* uncaught Lua error (script, task or callback) */
  MNEMO_EXIT_USAGE = 2  /* bad command line, unreadable script */
};

typedef struct mnemo_host_options {
  const char *program; /* argv[0] */
  const char *script;  /* path, or NULL with `code` */
  const char *code;    /* -e CODE, or NULL */
  char **argv;         /* the full command line, for `arg` */
  int argc;
  int script_index;   /* index in argv that becomes arg[0] */
  const char *policy; /* --policy FILE: loaded (and watched) first */
} mnemo_host_options_t;

/* Runs the script as the main task, then the loop until no work is left.
 * Returns the process exit code. */
int mnemo_host_run(const mnemo_host_options_t *options);

#endif
