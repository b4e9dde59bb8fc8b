/* --check-policy in a child process with limits (see check_child.h). */
#include "check_child.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* AddressSanitizer reserves terabytes of address space for its shadow
 * memory at start-up and maps more as it goes: under RLIMIT_AS those maps
 * fail and ASan aborts the child, so every check would "crash". Built with
 * ASan, the child gets no RLIMIT_AS (the wall clock and RLIMIT_CPU stay). */
#if defined(__SANITIZE_ADDRESS__)
#define CHECK_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHECK_UNDER_ASAN 1
#endif
#endif
#ifndef CHECK_UNDER_ASAN
#define CHECK_UNDER_ASAN 0
#endif

#define CHECK_SECONDS_DEFAULT 10.0
#define CHECK_SECONDS_MAX 86400.0
#define CHECK_MEMORY_DEFAULT (2ULL << 30)
/* Below this the check fails for want of room, not because of the file:
 * mnemo-run maps ~20 MB of libraries, and libuv's thread pool (the check
 * opens files through it) starts 4 threads with 8 MB stacks and aborts if
 * it cannot, which would be reported as a crash. 128M leaves room for the
 * Lua heap on top. */
#define CHECK_MEMORY_MIN (128ULL << 20)
/* After SIGKILL, how long to wait for the child to be reaped. A process in
 * uninterruptible sleep (a dead NFS mount) dies only when the sleep ends;
 * the caller must not hang on it: init reaps it then. */
#define CHECK_REAP_SECONDS 2.0

typedef struct check_limits {
  double seconds;            /* wall clock */
  unsigned long long memory; /* RLIMIT_AS, bytes */
} check_limits_t;

typedef struct check_signals {
  sigset_t wait;     /* SIGCHLD and the signals that stop mnemo-run */
  sigset_t old_mask; /* restored in the child */
} check_signals_t;

/* Signals that stop mnemo-run itself while it waits: the child is killed
 * with it, never left behind. */
static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP};

/* A number of seconds > 0 and at most CHECK_SECONDS_MAX, such as "10" or
 * "0.5". strtod alone would take " 1", "-1", "inf" and "nan". */
static int parse_seconds(const char *text, double *out) {
  char *end;
  double s;

  if (!((text[0] >= '0' && text[0] <= '9') || text[0] == '.'))
    return -EINVAL;
  errno = 0;
  s = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !(s > 0) ||
      s > CHECK_SECONDS_MAX)
    return -EINVAL;
  *out = s;
  return 0;
}

/* Bytes, or a number with a K, M or G suffix (powers of 1024). strtoull
 * alone would take "-1" (as a huge number) and leading spaces. */
static int parse_bytes(const char *text, unsigned long long *out) {
  unsigned long long n, unit = 1;
  char *end;

  if (!(text[0] >= '0' && text[0] <= '9'))
    return -EINVAL;
  errno = 0;
  n = strtoull(text, &end, 10);
  if (errno != 0)
    return -EINVAL;
  switch (*end) {
  case 'K':
  case 'k':
    unit = 1ULL << 10;
    end++;
    break;
  case 'M':
  case 'm':
    unit = 1ULL << 20;
    end++;
    break;
  case 'G':
  case 'g':
    unit = 1ULL << 30;
    end++;
    break;
  default:
    break;
  }
  if (*end != '\0' || n > ~0ULL / unit || n * unit < CHECK_MEMORY_MIN)
    return -EINVAL;
  *out = n * unit;
  return 0;
}

/* The limits from the environment; unset or empty means the default. A bad
 * value is a usage error on one line naming the variable. */
static int read_limits(const char *program, check_limits_t *limits) {
  const char *s = getenv("MNEMO_CHECK_SECONDS");
  const char *m = getenv("MNEMO_CHECK_MEMORY");

  limits->seconds = CHECK_SECONDS_DEFAULT;
  limits->memory = CHECK_MEMORY_DEFAULT;
  if (s != NULL && s[0] != '\0' && parse_seconds(s, &limits->seconds) != 0) {
    fprintf(stderr,
            "%s: MNEMO_CHECK_SECONDS: expected a number of seconds > 0 and "
            "at most %g, got \"%s\"\n",
            program, CHECK_SECONDS_MAX, s);
    return -EINVAL;
  }
  if (m != NULL && m[0] != '\0' && parse_bytes(m, &limits->memory) != 0) {
    fprintf(stderr,
            "%s: MNEMO_CHECK_MEMORY: expected a number of bytes (or with a "
            "K, M or G suffix) of at least %lluM, got \"%s\"\n",
            program, CHECK_MEMORY_MIN >> 20, m);
    return -EINVAL;
  }
  return 0;
}

/* Blocks SIGCHLD and the stop signals, so that none is lost between fork()
 * and the wait: they stay pending until sigtimedwait() takes them. */
static int block_signals(check_signals_t *sigs) {
  struct sigaction sa;
  size_t k;

  sigemptyset(&sigs->wait);
  sigaddset(&sigs->wait, SIGCHLD);
  for (k = 0; k < sizeof(stop_signals) / sizeof(stop_signals[0]); k++) {
    /* A blocked signal is queued even when ignored: waiting for one the
     * caller ignores (nohup's SIGHUP, a background job's SIGINT) would
     * make mnemo-run stop on it. */
    if (sigaction(stop_signals[k], NULL, &sa) == 0 && sa.sa_handler != SIG_IGN)
      sigaddset(&sigs->wait, stop_signals[k]);
  }
  /* With SIGCHLD ignored (inherited through exec), the kernel reaps the
   * child itself and waitpid() fails with ECHILD. */
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGCHLD, &sa, NULL) != 0)
    return -errno;
  if (sigprocmask(SIG_BLOCK, &sigs->wait, &sigs->old_mask) != 0)
    return -errno;
  return 0;
}

/* Lowers one limit, soft and hard (so the child cannot raise it back), but
 * never above the limits mnemo-run was given: a tighter `ulimit` of the
 * operator's stays, and raising a hard limit would fail with EPERM. */
static int lower_limit(int resource, rlim_t soft, rlim_t hard) {
  struct rlimit rl;

  if (getrlimit(resource, &rl) != 0)
    return -errno;
  if (soft > rl.rlim_cur) /* RLIM_INFINITY is the largest rlim_t */
    soft = rl.rlim_cur;
  if (hard > rl.rlim_max)
    hard = rl.rlim_max;
  if (soft > hard)
    soft = hard;
  rl.rlim_cur = soft;
  rl.rlim_max = hard;
  return setrlimit(resource, &rl) != 0 ? -errno : 0;
}

/* RLIMIT_CPU is the backstop for when the wall clock cannot act (mnemo-run
 * itself stopped by SIGSTOP or a debugger while the child spins): SIGXCPU
 * after a second more CPU time than the wall limit, SIGKILL one later. */
static int set_limits(const check_limits_t *limits) {
  rlim_t cpu = (rlim_t)ceil(limits->seconds) + 1;
  int rc = lower_limit(RLIMIT_CPU, cpu, cpu + 1);

  if (rc == 0 && !CHECK_UNDER_ASAN)
    rc = lower_limit(RLIMIT_AS, (rlim_t)limits->memory, (rlim_t)limits->memory);
  return rc;
}

/* The child: limits, then the check as it ran before there was a child;
 * stdout and stderr are inherited, so its output is unchanged and never
 * interleaved with the parent's (which writes only once it is gone). */
static void run_child(const mnemo_host_options_t *options, const char *path,
                      const check_limits_t *limits, const check_signals_t *sigs,
                      pid_t parent) {
  int rc;

  sigprocmask(SIG_SETMASK, &sigs->old_mask, NULL);
  /* If mnemo-run is SIGKILLed it cannot kill the child: the kernel does.
   * The parent may have died before this call: then exit at once. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
    _exit(MNEMO_EXIT_ERROR);
  rc = set_limits(limits);
  if (rc != 0) {
    fprintf(stderr, "%s: %s: cannot limit the policy check: %s\n",
            options->program, path, strerror(-rc));
    exit(MNEMO_EXIT_ERROR);
  }
  /* exit(), not _exit(): Lua's print() buffers stdout when it is a pipe. */
  exit(mnemo_host_run(options));
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits for the child to end, at most `seconds`. Returns 0 when it was
 * reaped (`*status` set), -ETIMEDOUT, a signal number (> 0) when a stop
 * signal arrived, or -errno.
 * sigtimedwait() on the blocked SIGCHLD sleeps until something happens or
 * the time is up: no busy loop, no handler, and nothing lost to the race
 * between a check and a sleep (the signal stays pending until taken).
 * POSIX, unlike a pidfd (Linux 5.3, and glibc 2.36 for pidfd_open). A
 * SIGCHLD for a stopped or continued child, or for another child mnemo-run
 * inherited through exec, just means another round. */
static int wait_child(pid_t pid, const sigset_t *set, double seconds,
                      int *status) {
  double deadline = now_seconds() + seconds, left;
  struct timespec ts;
  pid_t got;
  int sig;

  for (;;) {
    got = waitpid(pid, status, WNOHANG);
    if (got == pid)
      return 0;
    if (got < 0 && errno != EINTR)
      return -errno;
    left = deadline - now_seconds();
    if (left <= 0)
      return -ETIMEDOUT;
    ts.tv_sec = (time_t)left;
    ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec > 999999999L)
      ts.tv_nsec = 999999999L;
    sig = sigtimedwait(set, NULL, &ts);
    if (sig > 0 && sig != SIGCHLD)
      return sig;
    if (sig < 0 && errno != EAGAIN && errno != EINTR)
      return -errno;
  }
}

/* SIGKILL works on a stopped child too; then reap it, for a bounded time. */
static void kill_child(pid_t pid, const sigset_t *set) {
  int status;
  kill(pid, SIGKILL);
  wait_child(pid, set, CHECK_REAP_SECONDS, &status);
}

/* The child's own exit code, or 1 and one line saying how it ended. */
static int child_result(const char *program, const char *path,
                        const check_limits_t *limits, int status) {
  int sig;

  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  sig = WTERMSIG(status);
  if (sig == SIGXCPU)
    fprintf(stderr,
            "%s: %s: policy check used more than %.0f s of CPU time "
            "(stopped)\n",
            program, path, ceil(limits->seconds) + 1);
  else
    fprintf(stderr, "%s: %s: policy check crashed (signal %d, %s)\n", program,
            path, sig, strsignal(sig));
  return MNEMO_EXIT_ERROR;
}

int mnemo_check_child_run(const mnemo_host_options_t *options,
                          const char *path) {
  const char *program = options->program;
  check_limits_t limits;
  check_signals_t sigs;
  pid_t self = getpid(), pid;
  int rc, status;

  if (read_limits(program, &limits) != 0)
    return MNEMO_EXIT_USAGE;
  if ((rc = block_signals(&sigs)) != 0) {
    fprintf(stderr, "%s: %s: cannot start the policy check: %s\n", program,
            path, strerror(-rc));
    return MNEMO_EXIT_ERROR;
  }
  /* Nothing buffered may be written twice, once by each process. */
  fflush(NULL);
  pid = fork();
  if (pid < 0) {
    fprintf(stderr, "%s: %s: cannot start the policy check: %s\n", program,
            path, strerror(errno));
    return MNEMO_EXIT_ERROR;
  }
  if (pid == 0)
    run_child(options, path, &limits, &sigs, self);

  rc = wait_child(pid, &sigs.wait, limits.seconds, &status);
  if (rc == 0)
    return child_result(program, path, &limits, status);
  kill_child(pid, &sigs.wait);
  if (rc == -ETIMEDOUT) {
    fprintf(stderr,
            "%s: %s: policy check did not finish within %g s (stopped)\n",
            program, path, limits.seconds);
    return MNEMO_EXIT_ERROR;
  }
  if (rc > 0) /* as the host does when a signal stops it */
    return 128 + rc;
  fprintf(stderr, "%s: %s: waiting for the policy check failed: %s\n", program,
          path, strerror(-rc));
  return MNEMO_EXIT_ERROR;
}
