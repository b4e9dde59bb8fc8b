/* mnemo-run: command line parsing; the work happens in host.c. */
#include <stdio.h>
#include <string.h>

#include "host.h"
#include "version.h"

static const char usage[] =
    "usage: %s [options] [script.lua [args...]]\n"
    "  -e CODE      run CODE instead of a script file\n"
    "  --version    print the version and exit\n"
    "  -h, --help   print this help and exit\n"
    "The script runs as a task on the event loop (it may call mnemo.sleep);\n"
    "mnemo-run exits when the script and all the work it started are done.\n"
    "Exit status: 0 ok, 1 uncaught error, 2 usage or unreadable script,\n"
    "128+N stopped by signal N.\n";

int main(int argc, char **argv) {
  mnemo_host_options_t options;
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
  } else {
    fprintf(stderr, usage, options.program);
    return MNEMO_EXIT_USAGE;
  }
  return mnemo_host_run(&options);
}
