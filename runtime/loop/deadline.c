#include "deadline.h"

static void on_deadline_timer(mnemo_timer_t *timer) {
  mnemo_deadline_t *d = timer->data;
  d->expired = 1;
  mnemo_cancel_token_cancel(&d->token);
  if (d->on_expire != NULL)
    d->on_expire(d);
}

static void init_common(mnemo_deadline_t *d, mnemo_deadline_t *parent,
                        uint64_t now) {
  mnemo_timer_init(&d->timer, on_deadline_timer, d);
  d->parent = parent;
  d->started_ns = now;
  d->expired = 0;
  mnemo_cancel_token_reset(&d->token);
}

void mnemo_deadline_enter(mnemo_deadline_t *d, mnemo_timers_t *timers,
                          mnemo_deadline_t *parent, uint64_t timeout_ns,
                          mnemo_deadline_cb on_expire, void *data) {
  uint64_t now = mnemo_clock_now(timers->clock);
  uint64_t due = timeout_ns == MNEMO_DEADLINE_NONE ||
                         timeout_ns > MNEMO_DEADLINE_NONE - 1 - now
                     ? MNEMO_DEADLINE_NONE
                     : now + timeout_ns;

  init_common(d, parent, now);
  d->timeout_ns = timeout_ns;
  d->shielded = 0;
  d->on_expire = on_expire;
  d->data = data;
  if (parent != NULL && parent->due_ns < due)
    due = parent->due_ns;
  d->due_ns = due;
  if (parent != NULL && mnemo_deadline_is_expired(parent)) {
    d->expired = 1;
    mnemo_cancel_token_cancel(&d->token);
    return;
  }
  if (due != MNEMO_DEADLINE_NONE)
    mnemo_timer_start_at(timers, &d->timer, due);
}

void mnemo_deadline_enter_shield(mnemo_deadline_t *d, mnemo_timers_t *timers,
                                 mnemo_deadline_t *parent) {
  init_common(d, parent, mnemo_clock_cached(timers->clock));
  d->timeout_ns = MNEMO_DEADLINE_NONE;
  d->due_ns = MNEMO_DEADLINE_NONE;
  d->shielded = 1;
  d->on_expire = NULL;
  d->data = NULL;
}

void mnemo_deadline_leave(mnemo_deadline_t *d) {
  mnemo_timer_stop(&d->timer);
}

uint64_t mnemo_deadline_remaining(const mnemo_deadline_t *d, uint64_t now_ns) {
  if (mnemo_deadline_is_expired(d))
    return 0;
  if (d->due_ns == MNEMO_DEADLINE_NONE)
    return MNEMO_DEADLINE_NONE;
  return d->due_ns > now_ns ? d->due_ns - now_ns : 0;
}

int mnemo_deadline_is_expired(const mnemo_deadline_t *d) {
  for (; d != NULL; d = d->parent) {
    if (d->expired)
      return 1;
    if (d->shielded)
      return 0;
  }
  return 0;
}
