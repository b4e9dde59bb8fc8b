/* guard: retry( bulkhead( deadline_per_attempt( breaker( call ) ) ) ) under
 * an overall deadline, for C callers (the pipeline's database, cache and
 * embedding calls). The Lua face (mnemo.guard) composes the same parts.
 *
 * Everything is caller-owned: a mnemo_guard_call_t embeds its deadlines,
 * its backoff timer and its bulkhead waiter, so a call allocates nothing.
 * Operations are asynchronous: the guard calls attempt_fn, and the
 * operation reports back with mnemo_guard_attempt_done(), synchronously or
 * later from the loop. An attempt that completes synchronously never
 * touches the timer heap: the per-attempt timer is armed only once
 * attempt_fn has returned without an answer. */
#ifndef MNEMO_GUARD_H
#define MNEMO_GUARD_H

#include <stdint.h>

#include "breaker.h"
#include "bulkhead.h"
#include "deadline.h"
#include "error_class.h"
#include "retry.h"
#include "retry_budget.h"
#include "rng.h"

typedef struct mnemo_guard_policy {
  const char *operation;
  uint64_t attempt_timeout_ns; /* per attempt; MNEMO_DEADLINE_NONE: none */
  uint64_t overall_timeout_ns; /* whole call; MNEMO_DEADLINE_NONE: only the
                                  parent's */
  const mnemo_retry_policy_t *retry; /* NULL: a single attempt */
  mnemo_retry_budget_t *budget;      /* NULL: no budget */
  mnemo_breaker_t *breaker;          /* NULL: none */
  mnemo_bulkhead_t *bulkhead;        /* NULL: none */
  uint32_t breaker_ignores;          /* classes that say nothing about the
                                        dependency's health (MNEMO_EC_BIT mask) */
  int idempotent; /* only idempotent operations are retried */
} mnemo_guard_policy_t;

typedef struct mnemo_guard_call mnemo_guard_call_t;

/* Starts attempt number `attempt` (1-based). The operation should stop
 * early once `token` is cancelled, and must call mnemo_guard_attempt_done
 * exactly once per attempt. */
typedef void (*mnemo_guard_attempt_fn)(mnemo_guard_call_t *call,
                                       uint32_t attempt,
                                       mnemo_cancel_token_t *token);
/* The call's outcome: status 0, or a negative MNEMO_E* / operation status
 * with its error class. Called exactly once. */
typedef void (*mnemo_guard_done_fn)(mnemo_guard_call_t *call, int status,
                                    mnemo_error_class_t error_class);

/* Counters a caller may aggregate (metrics). */
typedef struct mnemo_guard_stats {
  uint64_t calls, successes, failures, timeouts, retries, fast_fails,
      bulkhead_rejections, budget_denials;
} mnemo_guard_stats_t;

struct mnemo_guard_call {
  /* set by mnemo_guard_start */
  const mnemo_guard_policy_t *policy;
  mnemo_timers_t *timers;
  mnemo_rng_t *rng;
  mnemo_guard_stats_t *stats; /* may be NULL */
  mnemo_guard_attempt_fn attempt_fn;
  mnemo_guard_done_fn done_fn;
  void *data;
  /* state, read-only for callers */
  uint32_t attempt;
  int status;
  mnemo_error_class_t error_class;
  int finished;
  /* private */
  mnemo_deadline_t overall;
  mnemo_deadline_t per_attempt;
  mnemo_timer_t backoff;
  mnemo_bulkhead_waiter_t waiter;
  uint64_t attempt_started_ns;
  uint64_t prev_delay_ns;
  int in_attempt;       /* an attempt is running */
  int attempt_answered; /* its done arrived */
  int holds_breaker;    /* a breaker permit is held */
  int holds_bulkhead;   /* a bulkhead slot is held */
  int has_overall;
  int waiting_bulkhead;
};

/* Starts a guarded call. parent may be NULL. Returns 0, or MNEMO_EINVAL
 * for a policy that retries a non-idempotent operation. done_fn may run
 * before this returns (a synchronous operation, an open breaker). */
int mnemo_guard_start(mnemo_guard_call_t *call,
                      const mnemo_guard_policy_t *policy,
                      mnemo_timers_t *timers, mnemo_rng_t *rng,
                      mnemo_deadline_t *parent, mnemo_guard_stats_t *stats,
                      mnemo_guard_attempt_fn attempt_fn,
                      mnemo_guard_done_fn done_fn, void *data);

/* Reports the current attempt's outcome: status 0 for success, else its
 * class and, if the dependency asked for it (HTTP Retry-After, Redis
 * LOADING), the least time to wait before retrying. A report for an attempt
 * the guard already gave up on (its deadline passed) is ignored. */
void mnemo_guard_attempt_done(mnemo_guard_call_t *call, int status,
                              mnemo_error_class_t error_class,
                              uint64_t retry_after_ns);

/* Validates a policy: a retry policy on a non-idempotent operation is
 * refused. 0 or MNEMO_EINVAL with the reason in err. */
int mnemo_guard_policy_validate(const mnemo_guard_policy_t *policy, char *err,
                                size_t errlen);

#endif
