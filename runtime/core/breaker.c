#include "breaker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

#define NS_PER_SEC 1000000000ull

/* What a call's outcome puts in the window. A slow success is a failure
 * that is also counted as slow. */
enum { OUTCOME_SUCCESS = 0, OUTCOME_FAILURE = 1, OUTCOME_SLOW = 2 };

const char *mnemo_breaker_state_name(mnemo_breaker_state_t s) {
  switch (s) {
  case MNEMO_BREAKER_CLOSED:
    return "closed";
  case MNEMO_BREAKER_OPEN:
    return "open";
  case MNEMO_BREAKER_HALF_OPEN:
    return "half_open";
  }
  return "unknown";
}

void mnemo_breaker_config_default(mnemo_breaker_config_t *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->failure_threshold = 5;
  cfg->failure_rate_threshold = 0;
  cfg->window_kind = MNEMO_WINDOW_NONE;
  cfg->window_size = 0;
  cfg->minimum_calls = 10;
  cfg->slow_call_ns = 0;
  cfg->recovery_timeout_ns = 30 * NS_PER_SEC;
  cfg->half_open_max_calls = 1;
  cfg->critical = 0;
}

/* ---- validation ---- */

typedef struct problems {
  char *err;
  size_t errlen;
  size_t used;
  int count;
} problems_t;

/* Appends one line to err, truncating (never overflowing) when it is full. */
__attribute__((format(printf, 2, 3))) static void
problem(problems_t *p, const char *fmt, ...) {
  va_list ap;
  int n;

  p->count++;
  if (p->err == NULL || p->used + 1 >= p->errlen)
    return;
  if (p->count > 1) {
    p->err[p->used++] = '\n';
    p->err[p->used] = '\0';
    if (p->used + 1 >= p->errlen)
      return;
  }
  va_start(ap, fmt);
  n = vsnprintf(p->err + p->used, p->errlen - p->used, fmt, ap);
  va_end(ap);
  if (n > 0)
    p->used +=
        (size_t)n < p->errlen - p->used ? (size_t)n : p->errlen - p->used - 1;
}

int mnemo_breaker_config_validate(const mnemo_breaker_config_t *cfg, char *err,
                                  size_t errlen) {
  problems_t p = {err, errlen, 0, 0};
  double rate = cfg->failure_rate_threshold;
  int kind = (int)cfg->window_kind;
  int windowed = kind == MNEMO_WINDOW_COUNT || kind == MNEMO_WINDOW_TIME;

  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (cfg->failure_threshold == 0 && rate == 0)
    problem(&p, "failure_threshold: expected integer >= 1 when "
                "failure_rate_threshold is 0 (nothing could trip the "
                "breaker), got 0");
  /* Written so that NaN fails. */
  if (!(rate == 0 || (rate > 0 && rate <= 1)))
    problem(&p,
            "failure_rate_threshold: expected 0 (off) or a number in "
            "(0, 1], got %g",
            rate);
  if (!windowed && kind != MNEMO_WINDOW_NONE)
    problem(&p, "window: expected none, count or time, got %d", kind);
  else if (kind == MNEMO_WINDOW_NONE && rate > 0)
    problem(&p, "window: expected count or time when "
                "failure_rate_threshold is set, got none");
  if (windowed &&
      (cfg->window_size < 1 || cfg->window_size > MNEMO_BREAKER_MAX_WINDOW))
    problem(&p, "window_size: expected integer in [1, %u], got %u",
            (unsigned)MNEMO_BREAKER_MAX_WINDOW, cfg->window_size);
  if (windowed && cfg->minimum_calls < 1)
    problem(&p, "minimum_calls: expected integer >= 1, got %u",
            cfg->minimum_calls);
  if (cfg->recovery_timeout_ns == 0)
    problem(&p, "recovery_timeout: expected a duration > 0, got 0");
  if (cfg->half_open_max_calls < 1)
    problem(&p, "half_open_max_calls: expected integer >= 1, got %u",
            cfg->half_open_max_calls);
  return p.count > 0 ? MNEMO_EINVAL : 0;
}

/* ---- the window ---- */

static int window_init(mnemo_breaker_window_t *w, mnemo_window_kind_t kind,
                       uint32_t size, uint64_t now_ns) {
  memset(w, 0, sizeof(*w));
  w->kind = kind;
  w->head_sec = now_ns / NS_PER_SEC;
  if (kind == MNEMO_WINDOW_COUNT)
    w->outcomes = calloc(size, sizeof(*w->outcomes));
  else if (kind == MNEMO_WINDOW_TIME)
    w->buckets = calloc(size, sizeof(*w->buckets));
  else
    return 0;
  if (w->outcomes == NULL && w->buckets == NULL) {
    w->kind = MNEMO_WINDOW_NONE;
    return MNEMO_ENOMEM;
  }
  w->size = size;
  return 0;
}

static void window_free(mnemo_breaker_window_t *w) {
  free(w->outcomes);
  free(w->buckets);
  w->outcomes = NULL;
  w->buckets = NULL;
  w->size = 0;
  w->kind = MNEMO_WINDOW_NONE;
}

static void window_clear(mnemo_breaker_window_t *w, uint64_t now_ns) {
  if (w->outcomes != NULL)
    memset(w->outcomes, 0, w->size * sizeof(*w->outcomes));
  if (w->buckets != NULL)
    memset(w->buckets, 0, w->size * sizeof(*w->buckets));
  w->head = w->filled = 0;
  w->head_sec = now_ns / NS_PER_SEC;
  w->calls = w->failures = w->slow = 0;
}

/* TIME: moves the newest bucket to now_ns's second, zeroing the buckets of
 * the seconds skipped (at most one window's worth, however far time
 * jumped). A now_ns before the newest bucket counts in the newest bucket. */
static void window_slide(mnemo_breaker_window_t *w, uint64_t now_ns) {
  uint64_t sec = now_ns / NS_PER_SEC, n, s;

  if (w->kind != MNEMO_WINDOW_TIME || sec <= w->head_sec)
    return;
  n = sec - w->head_sec < w->size ? sec - w->head_sec : w->size;
  for (s = sec - n + 1; s <= sec; s++) {
    mnemo_breaker_bucket_t *k = &w->buckets[s % w->size];
    w->calls -= k->calls;
    w->failures -= k->failures;
    w->slow -= k->slow;
    memset(k, 0, sizeof(*k));
  }
  w->head_sec = sec;
}

static void window_add(mnemo_breaker_window_t *w, uint64_t now_ns,
                       int outcome) {
  uint32_t failed = outcome != OUTCOME_SUCCESS, slow = outcome == OUTCOME_SLOW;

  if (w->kind == MNEMO_WINDOW_COUNT) {
    uint8_t *slot = &w->outcomes[w->head];
    if (w->filled == w->size) { /* the oldest outcome leaves */
      w->calls--;
      w->failures -= *slot != OUTCOME_SUCCESS;
      w->slow -= *slot == OUTCOME_SLOW;
    } else {
      w->filled++;
    }
    *slot = (uint8_t)outcome;
    w->head = w->head + 1 == w->size ? 0 : w->head + 1;
  } else if (w->kind == MNEMO_WINDOW_TIME) {
    mnemo_breaker_bucket_t *k;
    window_slide(w, now_ns);
    k = &w->buckets[w->head_sec % w->size];
    k->calls++;
    k->failures += failed;
    k->slow += slow;
  } else {
    return;
  }
  w->calls++;
  w->failures += failed;
  w->slow += slow;
}

/* Copies the most recent data of src (same kind) into the empty dst. */
static void window_carry(mnemo_breaker_window_t *dst,
                         mnemo_breaker_window_t *src, uint64_t now_ns) {
  uint32_t keep, i;

  if (dst->kind == MNEMO_WINDOW_COUNT) {
    keep = src->filled < dst->size ? src->filled : dst->size;
    /* The newest `keep` outcomes, oldest first. */
    for (i = 0; i < keep; i++) {
      uint8_t o = src->outcomes[(src->head + src->size - keep + i) % src->size];
      dst->outcomes[i] = o;
      dst->calls++;
      dst->failures += o != OUTCOME_SUCCESS;
      dst->slow += o == OUTCOME_SLOW;
    }
    dst->filled = keep;
    dst->head = keep == dst->size ? 0 : keep;
  } else if (dst->kind == MNEMO_WINDOW_TIME) {
    window_slide(src, now_ns);
    dst->head_sec = src->head_sec;
    keep = src->size < dst->size ? src->size : dst->size;
    /* The newest `keep` seconds (none before second 0). */
    for (i = 0; i < keep && i <= src->head_sec; i++) {
      uint64_t s = src->head_sec - i;
      const mnemo_breaker_bucket_t *k = &src->buckets[s % src->size];
      dst->buckets[s % dst->size] = *k;
      dst->calls += k->calls;
      dst->failures += k->failures;
      dst->slow += k->slow;
    }
  }
}

/* ---- states ---- */

static uint64_t half_open_due(const mnemo_breaker_t *b) {
  uint64_t t = b->config.recovery_timeout_ns;
  return b->opened_ns > UINT64_MAX - t ? UINT64_MAX : b->opened_ns + t;
}

/* Updates the state, then tells the caller. Whoever calls this must not
 * rely on the breaker's state afterwards: the callback may change it. */
static void transition(mnemo_breaker_t *b, mnemo_breaker_state_t to,
                       uint64_t now_ns) {
  mnemo_breaker_state_t from = b->state;

  if (from == to)
    return;
  b->state = to;
  b->state_changed_ns = now_ns;
  /* Probes still in flight become stragglers (see settle()). */
  b->half_open_in_flight = 0;
  b->half_open_successes = 0;
  if (to == MNEMO_BREAKER_OPEN)
    b->opened_ns = now_ns;
  if (to == MNEMO_BREAKER_CLOSED) {
    b->consecutive_failures = 0;
    window_clear(&b->window, now_ns);
  }
  if (b->on_transition != NULL)
    b->on_transition(b, from, to, now_ns, b->data);
}

/* OPEN becomes HALF_OPEN lazily, when someone looks after the timeout. */
static void check_recovery(mnemo_breaker_t *b, uint64_t now_ns) {
  if (b->state == MNEMO_BREAKER_OPEN && now_ns >= half_open_due(b))
    transition(b, MNEMO_BREAKER_HALF_OPEN, now_ns);
}

static uint64_t retry_after(const mnemo_breaker_t *b, uint64_t now_ns) {
  uint64_t due;

  if (b->state != MNEMO_BREAKER_OPEN)
    return 0;
  due = half_open_due(b);
  return due > now_ns ? due - now_ns : 0;
}

static int should_trip(const mnemo_breaker_t *b) {
  const mnemo_breaker_config_t *c = &b->config;
  const mnemo_breaker_window_t *w = &b->window;
  uint64_t min_calls;

  if (c->failure_threshold != 0 &&
      b->consecutive_failures >= c->failure_threshold)
    return 1;
  if (!(c->failure_rate_threshold > 0) || w->kind == MNEMO_WINDOW_NONE)
    return 0;
  /* A COUNT window smaller than minimum_calls is judged once full, or the
   * rate could never trip it. */
  min_calls = c->minimum_calls;
  if (w->kind == MNEMO_WINDOW_COUNT && min_calls > w->size)
    min_calls = w->size;
  if (w->calls == 0 || w->calls < min_calls)
    return 0;
  /* A division, not failures >= rate * calls: 0.28 * 25 is above 7 in
   * doubles, while 7 / 25 and the literal 0.28 are the same double. */
  return (double)w->failures / (double)w->calls >= c->failure_rate_threshold;
}

int mnemo_breaker_init(mnemo_breaker_t *b, const char *name,
                       const mnemo_breaker_config_t *cfg, uint64_t now_ns) {
  if (mnemo_breaker_config_validate(cfg, NULL, 0) != 0)
    return MNEMO_EINVAL;
  memset(b, 0, sizeof(*b));
  snprintf(b->name, sizeof(b->name), "%s", name != NULL ? name : "");
  b->config = *cfg;
  b->state = MNEMO_BREAKER_CLOSED;
  b->state_changed_ns = now_ns;
  return window_init(&b->window, cfg->window_kind, cfg->window_size, now_ns);
}

void mnemo_breaker_free(mnemo_breaker_t *b) {
  window_free(&b->window);
}

int mnemo_breaker_acquire(mnemo_breaker_t *b, uint64_t now_ns,
                          uint64_t *retry_after_ns) {
  check_recovery(b, now_ns);
  if (retry_after_ns != NULL)
    *retry_after_ns = 0;
  switch (b->state) {
  case MNEMO_BREAKER_CLOSED:
    b->in_flight++;
    return 0;
  case MNEMO_BREAKER_HALF_OPEN:
    if (b->half_open_in_flight < b->config.half_open_max_calls) {
      b->half_open_in_flight++;
      b->in_flight++;
      return 0;
    }
    break;
  case MNEMO_BREAKER_OPEN:
    if (retry_after_ns != NULL)
      *retry_after_ns = retry_after(b, now_ns);
    break;
  }
  b->rejected++;
  return MNEMO_ECIRCUIT_OPEN;
}

/* Ends an admitted call that took duration_ns. Returns 1 if it was a probe
 * of the current HALF_OPEN (and frees its slot), 0 for a straggler admitted
 * in an earlier state. */
static int settle(mnemo_breaker_t *b, uint64_t now_ns, uint64_t duration_ns) {
  uint32_t probes = b->half_open_in_flight;
  uint32_t stragglers = b->in_flight - probes; /* in_flight >= probes */
  int probe;

  if (b->in_flight > 0)
    b->in_flight--;
  if (probes == 0)
    probe = 0;
  else if (stragglers == 0)
    probe = 1;
  else /* both in flight: a probe started once it had half-opened */
    probe = (duration_ns < now_ns ? now_ns - duration_ns : 0) >=
            b->state_changed_ns;
  if (probe)
    b->half_open_in_flight--;
  return probe;
}

static void on_outcome(mnemo_breaker_t *b, uint64_t now_ns,
                       uint64_t duration_ns, int failed) {
  int slow = !failed && b->config.slow_call_ns != 0 &&
             duration_ns > b->config.slow_call_ns;
  int bad = failed || slow;
  int probe = settle(b, now_ns, duration_ns);

  b->calls++;
  if (bad) {
    b->failures++;
    b->last_failure_ns = now_ns;
    if (b->consecutive_failures < UINT32_MAX)
      b->consecutive_failures++;
  } else {
    b->successes++;
    b->consecutive_failures = 0;
  }
  if (slow)
    b->slow_calls++;

  switch (b->state) {
  case MNEMO_BREAKER_CLOSED:
    window_add(&b->window, now_ns,
               slow     ? OUTCOME_SLOW
               : failed ? OUTCOME_FAILURE
                        : OUTCOME_SUCCESS);
    if (should_trip(b))
      transition(b, MNEMO_BREAKER_OPEN, now_ns);
    break;
  case MNEMO_BREAKER_HALF_OPEN:
    if (!probe)
      break;
    if (bad)
      transition(b, MNEMO_BREAKER_OPEN, now_ns);
    else if (++b->half_open_successes >= b->config.half_open_max_calls)
      transition(b, MNEMO_BREAKER_CLOSED, now_ns);
    break;
  case MNEMO_BREAKER_OPEN:
    /* admitted before it opened: counted above, decides nothing */
    if (!bad)
      b->successes_while_open++;
    break;
  }
}

void mnemo_breaker_on_success(mnemo_breaker_t *b, uint64_t now_ns,
                              uint64_t duration_ns) {
  on_outcome(b, now_ns, duration_ns, 0);
}

void mnemo_breaker_on_failure(mnemo_breaker_t *b, uint64_t now_ns,
                              uint64_t duration_ns) {
  on_outcome(b, now_ns, duration_ns, 1);
}

void mnemo_breaker_on_ignored(mnemo_breaker_t *b, uint64_t now_ns) {
  b->ignored++;
  settle(b, now_ns, 0); /* no duration: taken as a probe's when in doubt */
}

mnemo_breaker_state_t mnemo_breaker_state(mnemo_breaker_t *b, uint64_t now_ns) {
  check_recovery(b, now_ns);
  return b->state;
}

void mnemo_breaker_reset(mnemo_breaker_t *b, uint64_t now_ns) {
  if (b->state != MNEMO_BREAKER_CLOSED) {
    transition(b, MNEMO_BREAKER_CLOSED, now_ns); /* clears both */
    return;
  }
  b->consecutive_failures = 0;
  window_clear(&b->window, now_ns);
}

void mnemo_breaker_force_half_open(mnemo_breaker_t *b, uint64_t now_ns) {
  if (b->state == MNEMO_BREAKER_OPEN)
    transition(b, MNEMO_BREAKER_HALF_OPEN, now_ns);
}

int mnemo_breaker_restore(mnemo_breaker_t *b, mnemo_breaker_state_t to,
                          uint64_t remaining_ns, uint64_t now_ns) {
  mnemo_breaker_transition_cb cb;
  uint64_t back;

  if (b->state != MNEMO_BREAKER_CLOSED)
    return MNEMO_EINVAL;
  if (to != MNEMO_BREAKER_OPEN && to != MNEMO_BREAKER_HALF_OPEN)
    return MNEMO_EINVAL;
  if (to == MNEMO_BREAKER_OPEN &&
      (remaining_ns == 0 || remaining_ns > b->config.recovery_timeout_ns))
    return MNEMO_EINVAL;
  /* The callback must see the restored opened_ns (retry_after), so it is
   * called here rather than by transition(). */
  cb = b->on_transition;
  b->on_transition = NULL;
  transition(b, to, now_ns);
  b->on_transition = cb;
  if (to == MNEMO_BREAKER_OPEN) {
    back = b->config.recovery_timeout_ns - remaining_ns;
    b->opened_ns = now_ns > back ? now_ns - back : 0;
  }
  if (cb != NULL)
    cb(b, MNEMO_BREAKER_CLOSED, to, now_ns, b->data);
  return 0;
}

int mnemo_breaker_reconfigure(mnemo_breaker_t *b,
                              const mnemo_breaker_config_t *cfg,
                              uint64_t now_ns, char *err, size_t errlen) {
  mnemo_breaker_window_t *old = &b->window;
  mnemo_breaker_window_t w;

  if (mnemo_breaker_config_validate(cfg, err, errlen) != 0)
    return MNEMO_EINVAL;
  if (cfg->window_kind != old->kind || (cfg->window_kind != MNEMO_WINDOW_NONE &&
                                        cfg->window_size != old->size)) {
    if (window_init(&w, cfg->window_kind, cfg->window_size, now_ns) != 0) {
      if (err != NULL && errlen > 0)
        snprintf(err, errlen, "window_size: out of memory for %u",
                 cfg->window_size);
      return MNEMO_ENOMEM;
    }
    if (w.kind == old->kind)
      window_carry(&w, old, now_ns);
    window_free(old);
    *old = w;
  }
  b->config = *cfg;
  return 0;
}

void mnemo_breaker_metrics(mnemo_breaker_t *b, uint64_t now_ns,
                           mnemo_breaker_window_metrics_t *out) {
  const mnemo_breaker_window_t *w = &b->window;

  check_recovery(b, now_ns);
  window_slide(&b->window, now_ns);
  out->state = b->state;
  out->window_calls = w->calls > UINT32_MAX ? UINT32_MAX : (uint32_t)w->calls;
  out->window_failures =
      w->failures > UINT32_MAX ? UINT32_MAX : (uint32_t)w->failures;
  out->window_slow = w->slow > UINT32_MAX ? UINT32_MAX : (uint32_t)w->slow;
  out->failure_rate =
      w->calls > 0 ? (double)w->failures / (double)w->calls : 0.0;
  out->retry_after_ns = retry_after(b, now_ns);
}
