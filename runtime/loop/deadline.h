/* Deadlines: a timer that expires a scope of work, nested scopes, and the
 * cancellation token that CPU-bound work on the thread pool polls.
 *
 * A deadline is owned by the caller (no allocation). Entering one inside a
 * parent clamps it: an inner deadline never outlives the outer one
 * (effective due time = min). A shielded deadline has no due time of its
 * own and cuts the chain: work inside it (a transaction's COMMIT) is not
 * cancelled by an outer expiry; the outer expiry takes effect once the
 * shield is left. */
#ifndef MNEMO_DEADLINE_H
#define MNEMO_DEADLINE_H

#include <stddef.h>
#include <stdint.h>

#include "timer.h"

/* Polled by work on other threads. tree-sitter reads the same word through
 * ts_parser_set_cancellation_flag(), hence a size_t. */
typedef struct mnemo_cancel_token {
  volatile size_t flag;
} mnemo_cancel_token_t;

static inline void mnemo_cancel_token_reset(mnemo_cancel_token_t *t) {
  __atomic_store_n(&t->flag, 0, __ATOMIC_RELEASE);
}
static inline void mnemo_cancel_token_cancel(mnemo_cancel_token_t *t) {
  __atomic_store_n(&t->flag, 1, __ATOMIC_RELEASE);
}
static inline int mnemo_cancel_token_is_cancelled(mnemo_cancel_token_t *t) {
  return __atomic_load_n(&t->flag, __ATOMIC_ACQUIRE) != 0;
}

typedef struct mnemo_deadline mnemo_deadline_t;
typedef void (*mnemo_deadline_cb)(mnemo_deadline_t *d);

#define MNEMO_DEADLINE_NONE UINT64_MAX

struct mnemo_deadline {
  mnemo_timer_t timer;
  mnemo_deadline_t *parent;
  uint64_t started_ns;
  uint64_t timeout_ns; /* as asked for, before clamping */
  uint64_t due_ns;     /* effective; MNEMO_DEADLINE_NONE if unbounded */
  int expired;
  int shielded;
  mnemo_cancel_token_t token;
  mnemo_deadline_cb on_expire; /* may be NULL */
  void *data;
};

/* Starts a deadline timeout_ns from now (MNEMO_DEADLINE_NONE: unbounded)
 * under `parent` (may be NULL). If the parent has already expired, the
 * new deadline starts expired, without calling on_expire. "Now" is a
 * precise reading, not the loop's cached time, which lags after a long
 * loop iteration (a deadline counted from it ended early). The kernel's
 * coarse clock is no substitute: under kvm it lags by up to 7 ms, more
 * than its stated 4 ms resolution. */
void mnemo_deadline_enter(mnemo_deadline_t *d, mnemo_timers_t *timers,
                          mnemo_deadline_t *parent, uint64_t timeout_ns,
                          mnemo_deadline_cb on_expire, void *data);
/* A shield: no due time of its own, and not cancelled by its parent. */
void mnemo_deadline_enter_shield(mnemo_deadline_t *d, mnemo_timers_t *timers,
                                 mnemo_deadline_t *parent);
/* Stops the timer. Safe to call more than once. */
void mnemo_deadline_leave(mnemo_deadline_t *d);

/* Time left until the effective due time (0 once expired or past). */
uint64_t mnemo_deadline_remaining(const mnemo_deadline_t *d, uint64_t now_ns);

/* Non-zero if d or an ancestor (up to the nearest shield) has expired. */
int mnemo_deadline_is_expired(const mnemo_deadline_t *d);

#endif
