#include "guard.h"

#include <stdio.h>

#include "status.h"

#define CALL_OF(field, ptr)                                                    \
  ((mnemo_guard_call_t *)((char *)(ptr)-offsetof(mnemo_guard_call_t, field)))

static void start_attempt(mnemo_guard_call_t *call);

static uint64_t now_of(mnemo_guard_call_t *call) {
  return mnemo_clock_cached(call->timers->clock);
}

static void count(mnemo_guard_call_t *call, size_t offset) {
  if (call->stats != NULL)
    (*(uint64_t *)((char *)call->stats + offset))++;
}
#define COUNT(call, field) count(call, offsetof(mnemo_guard_stats_t, field))

static void release_bulkhead(mnemo_guard_call_t *call) {
  if (call->waiting_bulkhead) {
    mnemo_bulkhead_cancel(call->policy->bulkhead, &call->waiter);
    call->waiting_bulkhead = 0;
  }
  if (call->holds_bulkhead) {
    call->holds_bulkhead = 0;
    mnemo_bulkhead_leave(call->policy->bulkhead);
  }
}

static void finish(mnemo_guard_call_t *call, int status,
                   mnemo_error_class_t error_class) {
  if (call->finished)
    return;
  call->finished = 1;
  call->status = status;
  call->error_class = error_class;
  mnemo_timer_stop(&call->backoff);
  mnemo_deadline_leave(&call->per_attempt);
  if (call->has_overall)
    mnemo_deadline_leave(&call->overall);
  release_bulkhead(call);
  if (status == 0)
    COUNT(call, successes);
  else
    COUNT(call, failures);
  if (error_class == MNEMO_EC_TIMEOUT)
    COUNT(call, timeouts);
  call->done_fn(call, status, error_class);
}

/* Settles the breaker permit of the attempt that just ended. */
static void settle_breaker(mnemo_guard_call_t *call, int status,
                           mnemo_error_class_t error_class) {
  mnemo_breaker_t *breaker = call->policy->breaker;
  uint64_t now, duration;
  if (!call->holds_breaker)
    return;
  call->holds_breaker = 0;
  now = now_of(call);
  duration = now - call->attempt_started_ns;
  if (status == 0)
    mnemo_breaker_on_success(breaker, now, duration);
  else if (call->policy->breaker_ignores & MNEMO_EC_BIT(error_class))
    mnemo_breaker_on_ignored(breaker, now);
  else
    mnemo_breaker_on_failure(breaker, now, duration);
}

static void on_backoff(mnemo_timer_t *timer) {
  start_attempt(CALL_OF(backoff, timer));
}

/* After a failed attempt: schedule the next one, or finish. */
static void retry_or_finish(mnemo_guard_call_t *call, int status,
                            mnemo_error_class_t error_class,
                            uint64_t retry_after_ns) {
  const mnemo_guard_policy_t *p = call->policy;
  uint64_t now = now_of(call), delay;

  if (p->retry == NULL || !p->idempotent ||
      !mnemo_retry_should(p->retry, error_class, call->attempt) ||
      (call->has_overall && mnemo_deadline_is_expired(&call->overall))) {
    finish(call, status, error_class);
    return;
  }
  delay = mnemo_retry_delay(p->retry, call->attempt, call->prev_delay_ns,
                            call->rng);
  call->prev_delay_ns = delay;
  if (retry_after_ns > delay)
    delay = retry_after_ns;
  /* Never sleep past the overall deadline: a retry that could not start
   * in time is not worth waiting for. */
  if (call->has_overall &&
      delay >= mnemo_deadline_remaining(&call->overall, now)) {
    finish(call, status, error_class);
    return;
  }
  if (p->budget != NULL && !mnemo_retry_budget_try_retry(p->budget, now)) {
    COUNT(call, budget_denials);
    finish(call, status, error_class);
    return;
  }
  COUNT(call, retries);
  mnemo_timer_start(call->timers, &call->backoff, delay);
}

static void end_attempt(mnemo_guard_call_t *call, int status,
                        mnemo_error_class_t error_class,
                        uint64_t retry_after_ns) {
  call->in_attempt = 0;
  mnemo_deadline_leave(&call->per_attempt);
  settle_breaker(call, status, error_class);
  if (call->holds_bulkhead) {
    call->holds_bulkhead = 0;
    mnemo_bulkhead_leave(call->policy->bulkhead);
  }
  if (status == 0)
    finish(call, 0, MNEMO_EC_UNKNOWN);
  else
    retry_or_finish(call, status, error_class, retry_after_ns);
}

void mnemo_guard_attempt_done(mnemo_guard_call_t *call, int status,
                              mnemo_error_class_t error_class,
                              uint64_t retry_after_ns) {
  if (!call->in_attempt || call->attempt_answered)
    return; /* an attempt already given up on */
  call->attempt_answered = 1;
  end_attempt(call, status, error_class, retry_after_ns);
}

static void on_attempt_timeout(mnemo_deadline_t *d) {
  mnemo_guard_call_t *call = CALL_OF(per_attempt, d);
  if (!call->in_attempt || call->attempt_answered)
    return;
  /* The operation sees its token cancelled; its late report is ignored. */
  call->attempt_answered = 1;
  end_attempt(call, MNEMO_ETIMEDOUT, MNEMO_EC_TIMEOUT, 0);
}

static void on_overall_timeout(mnemo_deadline_t *d) {
  mnemo_guard_call_t *call = CALL_OF(overall, d);
  if (call->in_attempt && !call->attempt_answered) {
    call->attempt_answered = 1;
    call->in_attempt = 0;
    mnemo_deadline_leave(&call->per_attempt);
    mnemo_cancel_token_cancel(&call->per_attempt.token);
    settle_breaker(call, MNEMO_ETIMEDOUT, MNEMO_EC_TIMEOUT);
  }
  finish(call, MNEMO_ETIMEDOUT, MNEMO_EC_TIMEOUT);
}

/* The slot is ours: run the attempt through the breaker. */
static void run_attempt(mnemo_guard_call_t *call) {
  const mnemo_guard_policy_t *p = call->policy;
  uint64_t now = now_of(call), retry_after = 0;
  mnemo_deadline_t *parent = call->has_overall ? &call->overall : NULL;

  if (p->breaker != NULL) {
    if (mnemo_breaker_acquire(p->breaker, now, &retry_after) != 0) {
      COUNT(call, fast_fails);
      if (call->holds_bulkhead) {
        call->holds_bulkhead = 0;
        mnemo_bulkhead_leave(p->bulkhead);
      }
      /* An open breaker fails fast, without waiting on any timeout. */
      retry_or_finish(call, MNEMO_ECIRCUIT_OPEN, MNEMO_EC_CIRCUIT_OPEN,
                      retry_after);
      return;
    }
    call->holds_breaker = 1;
  }
  call->attempt_started_ns = now;
  call->in_attempt = 1;
  call->attempt_answered = 0;
  /* Computes the due time now but arms the timer only if the operation
   * goes asynchronous (below). */
  mnemo_timer_init(&call->per_attempt.timer, NULL, NULL);
  call->per_attempt.due_ns = MNEMO_DEADLINE_NONE;
  mnemo_cancel_token_reset(&call->per_attempt.token);
  call->per_attempt.expired = 0;
  call->attempt_fn(call, call->attempt, &call->per_attempt.token);
  if (call->in_attempt && !call->attempt_answered && !call->finished)
    mnemo_deadline_enter(&call->per_attempt, call->timers, parent,
                         p->attempt_timeout_ns, on_attempt_timeout, NULL);
}

static void on_bulkhead_admit(mnemo_bulkhead_waiter_t *w) {
  mnemo_guard_call_t *call = CALL_OF(waiter, w);
  call->waiting_bulkhead = 0;
  call->holds_bulkhead = 1;
  run_attempt(call);
}

static void start_attempt(mnemo_guard_call_t *call) {
  const mnemo_guard_policy_t *p = call->policy;
  call->attempt++;
  if (call->has_overall && mnemo_deadline_is_expired(&call->overall)) {
    finish(call, MNEMO_ETIMEDOUT, MNEMO_EC_TIMEOUT);
    return;
  }
  if (p->bulkhead != NULL) {
    int rc = mnemo_bulkhead_try_enter(p->bulkhead);
    if (rc == MNEMO_EAGAIN) {
      /* Queued; the overall deadline bounds the wait. */
      call->waiting_bulkhead = 1;
      mnemo_bulkhead_waiter_init(&call->waiter, on_bulkhead_admit, NULL);
      mnemo_bulkhead_enqueue(p->bulkhead, &call->waiter);
      return;
    }
    if (rc != 0) {
      COUNT(call, bulkhead_rejections);
      finish(call, MNEMO_EBULKHEAD_FULL, MNEMO_EC_BULKHEAD_FULL);
      return;
    }
    call->holds_bulkhead = 1;
  }
  run_attempt(call);
}

int mnemo_guard_policy_validate(const mnemo_guard_policy_t *policy, char *err,
                                size_t errlen) {
  if (policy->retry != NULL && policy->retry->max_attempts > 1 &&
      !policy->idempotent) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen,
               "%s: retry: refusing to retry an operation not marked "
               "idempotent",
               policy->operation ? policy->operation : "operation");
    return MNEMO_EINVAL;
  }
  return 0;
}

int mnemo_guard_start(mnemo_guard_call_t *call,
                      const mnemo_guard_policy_t *policy,
                      mnemo_timers_t *timers, mnemo_rng_t *rng,
                      mnemo_deadline_t *parent, mnemo_guard_stats_t *stats,
                      mnemo_guard_attempt_fn attempt_fn,
                      mnemo_guard_done_fn done_fn, void *data) {
  int rc = mnemo_guard_policy_validate(policy, NULL, 0);
  if (rc != 0)
    return rc;
  call->policy = policy;
  call->timers = timers;
  call->rng = rng;
  call->stats = stats;
  call->attempt_fn = attempt_fn;
  call->done_fn = done_fn;
  call->data = data;
  call->attempt = 0;
  call->status = 0;
  call->error_class = MNEMO_EC_UNKNOWN;
  call->finished = 0;
  call->prev_delay_ns = 0;
  call->in_attempt = call->attempt_answered = 0;
  call->holds_breaker = call->holds_bulkhead = call->waiting_bulkhead = 0;
  mnemo_timer_init(&call->backoff, on_backoff, NULL);
  mnemo_timer_init(&call->per_attempt.timer, NULL, NULL);
  call->per_attempt.due_ns = MNEMO_DEADLINE_NONE;
  COUNT(call, calls);
  if (policy->budget != NULL)
    mnemo_retry_budget_on_request(policy->budget,
                                  mnemo_clock_cached(timers->clock));
  /* No overall deadline of our own and none above: skip the timer. */
  call->has_overall =
      policy->overall_timeout_ns != MNEMO_DEADLINE_NONE || parent != NULL;
  if (call->has_overall)
    mnemo_deadline_enter(&call->overall, timers, parent,
                         policy->overall_timeout_ns, on_overall_timeout, NULL);
  start_attempt(call);
  return 0;
}
