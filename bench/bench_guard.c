/* guard() overhead from C: a bare call against a guarded call (per-attempt
 * timeout + retry policy + breaker) on the success path, and the fast-fail
 * path with the breaker open. Heap allocations are counted by wrapping
 * malloc (linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guard.h"
#include "status.h"

enum { N = 5000000 };

static uint64_t allocations;
void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t a, size_t b);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n) {
  allocations++;
  return __real_malloc(n);
}
void *__wrap_calloc(size_t a, size_t b) {
  allocations++;
  return __real_calloc(a, b);
}
void *__wrap_realloc(void *p, size_t n) {
  allocations++;
  return __real_realloc(p, n);
}

static volatile uint64_t sink;

/* The operation: a trivial synchronous success. */
__attribute__((noinline)) static int bare_operation(uint64_t x) {
  sink += x;
  return 0;
}

static void attempt(mnemo_guard_call_t *call, uint32_t n,
                    mnemo_cancel_token_t *token) {
  (void)token;
  mnemo_guard_attempt_done(call, bare_operation(n), MNEMO_EC_UNKNOWN, 0);
}

static uint64_t completed;
static void done(mnemo_guard_call_t *call, int status, mnemo_error_class_t c) {
  (void)call;
  (void)c;
  completed += status == 0;
}

int main(void) {
  uv_loop_t loop;
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  mnemo_rng_t rng;
  mnemo_retry_policy_t retry;
  mnemo_breaker_t breaker;
  mnemo_breaker_config_t bcfg;
  mnemo_guard_policy_t policy;
  mnemo_guard_call_t call;
  uint64_t t0, t1, allocs;
  double bare_ns, guarded_ns, fastfail_ns;
  int i;

  uv_loop_init(&loop);
  mnemo_clock_init(&clock, &loop);
  mnemo_timers_init(&timers, &clock, &loop);
  mnemo_rng_seed(&rng, 1);
  mnemo_retry_policy_default(&retry);
  mnemo_breaker_config_default(&bcfg);
  mnemo_breaker_init(&breaker, "bench", &bcfg, mnemo_clock_cached(&clock));
  memset(&policy, 0, sizeof(policy));
  policy.operation = "bench";
  policy.attempt_timeout_ns = 5 * MNEMO_NS_PER_SEC;
  policy.overall_timeout_ns = MNEMO_DEADLINE_NONE;
  policy.retry = &retry;
  policy.breaker = &breaker;
  policy.idempotent = 1;

  t0 = uv_hrtime();
  for (i = 0; i < N; i++)
    bare_operation((uint64_t)i);
  t1 = uv_hrtime();
  bare_ns = (double)(t1 - t0) / N;

  allocs = allocations;
  t0 = uv_hrtime();
  for (i = 0; i < N; i++)
    mnemo_guard_start(&call, &policy, &timers, &rng, NULL, NULL, attempt, done,
                      NULL);
  t1 = uv_hrtime();
  guarded_ns = (double)(t1 - t0) / N;
  allocs = allocations - allocs;

  /* Open the breaker by hand, then measure the fast-fail path. */
  for (i = 0; i < 10; i++) {
    uint64_t ra;
    if (mnemo_breaker_acquire(&breaker, mnemo_clock_cached(&clock), &ra) == 0)
      mnemo_breaker_on_failure(&breaker, mnemo_clock_cached(&clock), 0);
  }
  t0 = uv_hrtime();
  for (i = 0; i < N; i++)
    mnemo_guard_start(&call, &policy, &timers, &rng, NULL, NULL, attempt, done,
                      NULL);
  t1 = uv_hrtime();
  fastfail_ns = (double)(t1 - t0) / N;

  printf("guard from C (%d calls each)\n", N);
  printf("  bare call                          %7.1f ns/call\n", bare_ns);
  printf("  guarded call, success path         %7.1f ns/call  overhead %.1f "
         "ns  ratio %.1fx  (target: success <= 50 ns)\n",
         guarded_ns, guarded_ns - bare_ns, guarded_ns / bare_ns);
  printf("  heap allocations per guarded call  %7.3f          (target 0)\n",
         (double)allocs / N);
  printf("  fast-fail, breaker open            %7.1f ns/call  (target <= "
         "1000 ns)\n",
         fastfail_ns);
  if (completed != (uint64_t)N || breaker.state != MNEMO_BREAKER_OPEN) {
    fprintf(stderr, "bench_guard: unexpected outcome\n");
    return 1;
  }
  mnemo_breaker_free(&breaker);
  mnemo_timers_close(&timers);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return 0;
}
