/* mnemo-run: command line parsing; the work happens in host.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_child.h"
#include "host.h"
#include "version.h"

/* Built-in tools, run as Lua with their argument as arg[1]. */
static const char check_policy_code[] =
    "local policy = require 'mnemo.policy'\n"
    "local path = ...\n"
    "local t, err = policy.check(path)\n"
    "if not t then io.stderr:write(err, '\\n') os.exit(1) end\n"
    "print(path .. ': ok')\n";

static const char explain_code[] =
    "local mnemo = require 'mnemo'\n"
    "local e = mnemo.explain((...))\n"
    "local st = mnemo.policy.status()\n"
    "local sw = e.switches or {}\n"
    "local function off(name)\n"
    "  return sw[name] == false and ('  (off: switches.' .. name .. ' = "
    "false)') or ''\n"
    "end\n"
    "print(('operation  %s%s'):format(e.operation, e.known and '' or\n"
    "  '  (not in the policy: defaults apply)'))\n"
    "print(('policy     %s'):format(st.path and (st.path .. ' generation ' ..\n"
    "  st.generation) or '(none: built-in defaults)'))\n"
    "print(('timeout    %gs per attempt%s'):format(e.timeout, "
    "off('timeouts')))\n"
    "if e.deadline then print(('deadline   %gs for all "
    "attempts%s'):format(e.deadline, off('timeouts'))) end\n"
    "local r = e.retry_policy\n"
    "if r and e.idempotent then print(('retry      %s: %d attempts, base %gs, "
    "max %gs, jitter %s, on %s%s'):format(\n"
    "  e.retry, r.attempts, r.base, r.max, r.jitter, table.concat(r.on, ','), "
    "off('retries')))\n"
    "else print('retry      none' .. (e.known and '' or '  (unnamed operations "
    "are tried once unless operations.default is idempotent)')) end\n"
    "if e.breaker then local m = mnemo.breaker.get(e.breaker):metrics()\n"
    "  print(('breaker    %s: %d consecutive failures, recovery %gs, half-open "
    "probes %d%s%s'):format(\n"
    "  e.breaker, m.config.failure_threshold, m.config.recovery_timeout,\n"
    "  m.config.half_open_max_calls, m.critical and ', critical' or '', "
    "off('breakers')))\n"
    "else print('breaker    none') end\n"
    "print(('bulkhead   %s'):format(e.bulkhead or 'none'))\n"
    "print(('idempotent %s'):format(tostring(e.idempotent)))\n"
    "local offs = {}\n"
    "for _, name in ipairs({ 'timeouts', 'retries', 'breakers', "
    "'error_tracking' }) do\n"
    "  if sw[name] == false then offs[#offs + 1] = name end\n"
    "end\n"
    "print(('switches   %s'):format(#offs == 0 and 'all on' or ('off: ' .. "
    "table.concat(offs, ', '))))\n";

static const char migrate_code[] =
    "local mnemo = require 'mnemo'\n"
    "local dsn = os.getenv('MNEMO_PG_DSN')\n"
    "local conn, err = mnemo.pg.connect(dsn)\n"
    "if not conn then io.stderr:write(tostring(err), '\\n') os.exit(1) end\n"
    "local ok, applied = pcall(mnemo.pg.migrate, conn, (...) or "
    "mnemo.pg.MIGRATIONS)\n"
    "conn:close()\n"
    "if not ok then io.stderr:write(tostring(applied), '\\n') os.exit(1) end\n"
    "print(('migrations: %d applied%s'):format(#applied,\n"
    "  #applied > 0 and (' (' .. table.concat(applied, ', ') .. ')') or ', "
    "schema up to date'))\n";

/* --serve ADDR: mnemo.http serves its registry's routes, then the script
 * (or -e code) runs as it would have without --serve. */
static const char serve_code[] =
    "return require('mnemo.http').serve_main(...)\n";

static const char usage[] =
    "usage: %s [options] [script.lua [args...]]\n"
    "  -e CODE      run CODE instead of a script file\n"
    "  --policy FILE         load this policy file first (reloaded when it\n"
    "                        changes or on SIGHUP)\n"
    "  --check-policy FILE   validate a policy file: exit 0, or 1 with every\n"
    "                        problem listed; it runs in a child process,\n"
    "                        stopped (exit 1) after $MNEMO_CHECK_SECONDS (10)\n"
    "                        and limited to $MNEMO_CHECK_MEMORY bytes (2G; a\n"
    "                        K, M or G suffix) of address space\n"
    "  --explain OPERATION   print the timeout, retry, breaker and bulkhead\n"
    "                        an operation gets (with --policy, from it)\n"
    "  --migrate [DIR]       apply the schema migrations (db/migrations) to\n"
    "                        the database at $MNEMO_PG_DSN, and exit\n"
    "  --serve ADDR          serve HTTP on ADDR (HOST:PORT, port 0 picks a\n"
    "                        free one; `mnemo: serving URL` on stderr) with\n"
    "                        the mnemo.http routes (GET /health, ...) while\n"
    "                        the script runs, and after it until SIGINT or\n"
    "                        SIGTERM (exit 130 or 143); no script: just serve\n"
    "  --version    print the version and exit\n"
    "  -h, --help   print this help and exit\n"
    "The script runs as a task on the event loop (it may call mnemo.sleep);\n"
    "mnemo-run exits when the script and all the work it started are done.\n"
    "Exit status: 0 ok, 1 uncaught error, 2 usage or unreadable script,\n"
    "128+N stopped by signal N.\n";

/* Runs `serve_code` with (ADDR, MODE, TARGET, script args...) as its `...`:
 * MODE is "file" (TARGET the script), "code" (TARGET the -e code) or
 * "none". `first` is the index of the script, or of the first argument
 * after the options with -e. */
static int run_serving(mnemo_host_options_t *o, const char *addr, int first) {
  const char *mode = o->code ? "code" : o->script ? "file" : "none";
  const char *target = o->code ? o->code : o->script ? o->script : "";
  int from = o->script ? first + 1 : first;
  int nargs = o->argc > from ? o->argc - from : 0, k, rc;
  char **argv = calloc((size_t)nargs + 6, sizeof(*argv));

  if (argv == NULL) {
    fprintf(stderr, "%s: out of memory\n", o->program);
    return MNEMO_EXIT_ERROR;
  }
  argv[0] = o->argv[0];
  argv[1] = "--serve";
  argv[2] = (char *)addr;
  argv[3] = (char *)mode;
  argv[4] = (char *)target;
  for (k = 0; k < nargs; k++)
    argv[5 + k] = o->argv[from + k];
  o->argv = argv;
  o->argc = 5 + nargs;
  o->script_index = 1; /* `...` = ADDR, MODE, TARGET, args */
  o->code = serve_code;
  o->script = NULL;
  rc = mnemo_host_run(o);
  free(argv);
  return rc;
}

int main(int argc, char **argv) {
  mnemo_host_options_t options;
  const char *serve = NULL;
  int i;

  memset(&options, 0, sizeof(options));
  options.program = "mnemo-run";
  options.argv = argv;
  options.argc = argc;
  options.script_index = argc;

  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--version") == 0) {
      printf("mnemo-run %s\n", MNEMO_VERSION);
      return MNEMO_EXIT_OK;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      printf(usage, options.program);
      return MNEMO_EXIT_OK;
    } else if (strcmp(a, "-e") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "%s: -e needs an argument\n", options.program);
        return MNEMO_EXIT_USAGE;
      }
      options.code = argv[++i];
    } else if (strcmp(a, "--policy") == 0 || strcmp(a, "--check-policy") == 0 ||
               strcmp(a, "--explain") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "%s: %s needs an argument\n", options.program, a);
        return MNEMO_EXIT_USAGE;
      }
      if (strcmp(a, "--policy") == 0) {
        options.policy = argv[++i];
      } else {
        /* The tool's code runs like -e, its argument as arg[1]. */
        options.code =
            strcmp(a, "--explain") == 0 ? explain_code : check_policy_code;
        options.script_index = i;
        i++;
        options.argc = i + 1;
        /* A policy file is untrusted: checked in a child with limits. */
        if (options.code == check_policy_code)
          return mnemo_check_child_run(&options, argv[i]);
        return mnemo_host_run(&options);
      }
    } else if (strcmp(a, "--serve") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "%s: --serve needs an address (HOST:PORT)\n",
                options.program);
        return MNEMO_EXIT_USAGE;
      }
      serve = argv[++i];
    } else if (strcmp(a, "--migrate") == 0) {
      options.code = migrate_code;
      options.script_index = i;
      return mnemo_host_run(&options);
    } else if (strcmp(a, "--") == 0) {
      i++;
      break;
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "%s: unknown option %s\n", options.program, a);
      fprintf(stderr, usage, options.program);
      return MNEMO_EXIT_USAGE;
    } else {
      break;
    }
  }
  if (i < argc && options.code == NULL) {
    options.script = argv[i];
    options.script_index = i;
  } else if (options.code != NULL) {
    /* As luajit does for -e: the arguments after the options start at 1. */
    options.script_index = i - 1;
  } else if (serve == NULL) {
    fprintf(stderr, usage, options.program);
    return MNEMO_EXIT_USAGE;
  }
  if (serve != NULL)
    return run_serving(&options, serve, i);
  return mnemo_host_run(&options);
}
