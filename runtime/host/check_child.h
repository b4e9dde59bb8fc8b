/* --check-policy in a child process with limits: a policy file is untrusted
 * input, and if the sandbox has a hole nobody foresaw (an endless loop the
 * instruction budget misses, a crash in C, memory without bound), the check
 * must still end with a clear error instead of hanging or crashing the
 * caller (an operator's shell, a CI step, a deploy hook). */
#ifndef MNEMO_CHECK_CHILD_H
#define MNEMO_CHECK_CHILD_H

#include "host.h"

/* Runs mnemo_host_run(options) in a forked child under RLIMIT_AS
 * ($MNEMO_CHECK_MEMORY, default 2G; not under AddressSanitizer) and
 * RLIMIT_CPU, and waits at most $MNEMO_CHECK_SECONDS (default 10) of wall
 * time for it. `path` is the policy file, for the messages. Call it before
 * any loop or Lua state exists. Returns the exit code: the child's own, 1
 * when it was stopped or crashed (one line on stderr says which), 2 for a
 * bad limit variable, 128 + N when signal N stopped mnemo-run itself. */
int mnemo_check_child_run(const mnemo_host_options_t *options,
                          const char *path);

#endif
