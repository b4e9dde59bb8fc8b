/* Circuit breaker: CLOSED -> OPEN -> HALF_OPEN -> CLOSED.
 *
 * CLOSED trips to OPEN on failure_threshold consecutive failures, or, with a
 * window, when the window holds at least minimum_calls outcomes and the
 * failure rate is at least failure_rate_threshold (a success slower than
 * slow_call_ns counts as a failure everywhere). OPEN rejects until
 * recovery_timeout has passed, then (lazily, when next looked at) moves to
 * HALF_OPEN, which admits at most half_open_max_calls probes at once:
 * that many probe successes close it, any probe failure reopens it.
 *
 * Knows nothing about Lua or libuv and never reads a clock: every function
 * takes now_ns (monotonic nanoseconds) from the caller. The only allocation
 * is the window ring, in init and reconfigure.
 *
 * Outcomes of calls admitted in an earlier state. An outcome carries no
 * ticket, so the breaker counts admitted calls still in flight, and in
 * HALF_OPEN tells probes (admitted since it half-opened) from stragglers
 * (admitted while CLOSED, or by an earlier HALF_OPEN) by those counts:
 * with no probe in flight the outcome is a straggler's, with no straggler
 * in flight it is a probe's, and when both are in flight the call is a
 * probe's if it started (now_ns - duration_ns) at or after the moment the
 * breaker half-opened. on_ignored has no duration and, when both are in
 * flight, frees a probe slot. A straggler's outcome counts in the lifetime
 * counters only: it neither closes nor reopens the breaker, nor frees a
 * probe slot. Outcomes in CLOSED all go to the window (the call ran against
 * the dependency recently); outcomes in OPEN count in the lifetime counters
 * only. */
#ifndef MNEMO_BREAKER_H
#define MNEMO_BREAKER_H

#include <stddef.h>
#include <stdint.h>

#define MNEMO_BREAKER_MAX_WINDOW 100000

typedef enum {
  MNEMO_BREAKER_CLOSED = 0,
  MNEMO_BREAKER_OPEN = 1,
  MNEMO_BREAKER_HALF_OPEN = 2
} mnemo_breaker_state_t;

typedef enum {
  MNEMO_WINDOW_NONE = 0,
  MNEMO_WINDOW_COUNT = 1,
  MNEMO_WINDOW_TIME = 2
} mnemo_window_kind_t;

typedef struct mnemo_breaker_config {
  uint32_t failure_threshold; /* consecutive failures that trip it; 0 = off */
  double failure_rate_threshold; /* 0 = off; else in (0, 1]: trips when
                                    failures / calls >= it over the window */
  mnemo_window_kind_t window_kind;
  uint32_t window_size;         /* calls (COUNT) or whole seconds (TIME);
                                   1..100000 when a window is used */
  uint32_t minimum_calls;       /* the rate is judged only with at least this
                                   many calls in the window (>= 1); a COUNT
                                   window judges it once full if smaller */
  uint64_t slow_call_ns;        /* a success slower than this counts as a
                                   failure; 0 = off */
  uint64_t recovery_timeout_ns; /* OPEN -> HALF_OPEN after this (> 0) */
  uint32_t half_open_max_calls; /* probes admitted at once in HALF_OPEN
                                   (>= 1); that many successes close it */
  int critical; /* only reported: health is "unhealthy" while it is open */
} mnemo_breaker_config_t;

/* failure_threshold 5, recovery 30 s, half_open_max_calls 1, no window,
 * rate off, minimum_calls 10, slow calls off, not critical. */
void mnemo_breaker_config_default(mnemo_breaker_config_t *cfg);
/* 0, or MNEMO_EINVAL with every problem written to err (may be NULL) as
 * "field: expected ..., got ..." lines joined by "\n". Field names:
 * failure_threshold, failure_rate_threshold, window, window_size,
 * minimum_calls, recovery_timeout, half_open_max_calls. Also invalid: a
 * failure_threshold and a failure_rate_threshold both 0 (nothing could trip
 * it), and a rate without a window. */
int mnemo_breaker_config_validate(const mnemo_breaker_config_t *cfg, char *err,
                                  size_t errlen);

typedef struct mnemo_breaker mnemo_breaker_t;
/* Called after the state has changed. It may call back into the breaker. */
typedef void (*mnemo_breaker_transition_cb)(mnemo_breaker_t *b,
                                            mnemo_breaker_state_t from,
                                            mnemo_breaker_state_t to,
                                            uint64_t now_ns, void *data);

/* Private: one second of a TIME window. */
typedef struct mnemo_breaker_bucket {
  uint32_t calls;
  uint32_t failures; /* slow successes included */
  uint32_t slow;
} mnemo_breaker_bucket_t;

/* Private: the sliding window, a ring of the last `size` outcomes (COUNT,
 * one byte each) or of per-second buckets (TIME), with running sums. */
typedef struct mnemo_breaker_window {
  mnemo_window_kind_t kind;
  uint32_t size;
  uint8_t *outcomes;               /* COUNT */
  mnemo_breaker_bucket_t *buckets; /* TIME, indexed by second % size */
  uint32_t head;                   /* COUNT: the next slot to write */
  uint32_t filled;                 /* COUNT: slots holding an outcome */
  uint64_t head_sec;               /* TIME: the second of the newest bucket */
  uint64_t calls, failures, slow;  /* sums over the window */
} mnemo_breaker_window_t;

struct mnemo_breaker {
  /* read only */
  char name[64];
  mnemo_breaker_config_t config;
  mnemo_breaker_state_t state;
  uint64_t state_changed_ns;
  uint64_t opened_ns;
  uint64_t last_failure_ns;      /* 0 = never */
  uint32_t consecutive_failures; /* slow successes count; any success and
                                    closing reset it */
  uint32_t half_open_in_flight;  /* probes admitted in this HALF_OPEN */
  uint32_t half_open_successes;
  /* lifetime: calls = successes + failures (slow successes are failures,
   * and also counted in slow_calls); ignored and rejected apart */
  uint64_t calls, successes, failures, slow_calls, rejected, ignored;
  /* successes of calls admitted before it opened that ended while OPEN: a
   * sign the trip was early, or the dependency came back (a warning) */
  uint64_t successes_while_open;
  /* set by the caller after init; may be NULL */
  mnemo_breaker_transition_cb on_transition;
  void *data;
  /* private */
  uint32_t in_flight; /* admitted calls without an outcome yet */
  mnemo_breaker_window_t window;
};

/* 0; MNEMO_EINVAL (see validate); MNEMO_ENOMEM. Starts CLOSED. On error
 * nothing needs freeing. */
int mnemo_breaker_init(mnemo_breaker_t *b, const char *name,
                       const mnemo_breaker_config_t *cfg, uint64_t now_ns);
/* Frees the window. Safe to call twice. */
void mnemo_breaker_free(mnemo_breaker_t *b);

/* Admission. 0: the call may go ahead. MNEMO_ECIRCUIT_OPEN: rejected
 * (counted in `rejected`); *retry_after_ns (may be NULL) is the time until
 * it half-opens, 0 when half-open with every probe slot busy. Moves
 * OPEN -> HALF_OPEN once recovery_timeout has passed. Every admitted call
 * must be followed by exactly one on_success, on_failure or on_ignored. */
int mnemo_breaker_acquire(mnemo_breaker_t *b, uint64_t now_ns,
                          uint64_t *retry_after_ns);
/* duration_ns: how long the call took (from its acquire). */
void mnemo_breaker_on_success(mnemo_breaker_t *b, uint64_t now_ns,
                              uint64_t duration_ns);
void mnemo_breaker_on_failure(mnemo_breaker_t *b, uint64_t now_ns,
                              uint64_t duration_ns);
/* An error that says nothing about the dependency (bad input): frees a
 * half-open probe slot, counts in `ignored` and nothing else. */
void mnemo_breaker_on_ignored(mnemo_breaker_t *b, uint64_t now_ns);

/* The state, after the lazy OPEN -> HALF_OPEN move. */
mnemo_breaker_state_t mnemo_breaker_state(mnemo_breaker_t *b, uint64_t now_ns);
/* To CLOSED, window and consecutive count cleared, counters kept. */
void mnemo_breaker_reset(mnemo_breaker_t *b, uint64_t now_ns);
/* An active health probe succeeded while OPEN: HALF_OPEN now. No-op in any
 * other state. */
void mnemo_breaker_force_half_open(mnemo_breaker_t *b, uint64_t now_ns);

/* Puts a CLOSED breaker into a state saved by an earlier process (the
 * breaker store, lua/mnemo/breaker_store.lua), so a restart does not hammer
 * a dependency that was down a moment ago. OPEN: it half-opens remaining_ns
 * from now, as the original would have (opened_ns is set back by
 * recovery_timeout - remaining_ns; on a monotonic clock younger than that it
 * is clamped at 0 and the breaker stays open a little longer). HALF_OPEN:
 * half-open now, its probes bounded as usual (remaining_ns unused). The
 * transition callback runs, with opened_ns already set. Window and counters
 * are untouched. MNEMO_EINVAL and nothing changes: the breaker is not
 * CLOSED, `to` is neither OPEN nor HALF_OPEN, or (OPEN) remaining_ns is 0 or
 * more than recovery_timeout. */
int mnemo_breaker_restore(mnemo_breaker_t *b, mnemo_breaker_state_t to,
                          uint64_t remaining_ns, uint64_t now_ns);

/* New settings for a live breaker. State, counters and the most recent
 * window data carry over: COUNT keeps the last min(old, new) outcomes, TIME
 * the seconds still inside the new span; a change of window kind starts an
 * empty window. The new thresholds apply to the carried window from the
 * next outcome on (nothing trips here). Validates first: MNEMO_EINVAL or
 * MNEMO_ENOMEM, and then nothing changes. */
int mnemo_breaker_reconfigure(mnemo_breaker_t *b,
                              const mnemo_breaker_config_t *cfg,
                              uint64_t now_ns, char *err, size_t errlen);

typedef struct mnemo_breaker_window_metrics {
  mnemo_breaker_state_t state;
  uint32_t window_calls;
  uint32_t window_failures; /* slow successes included */
  uint32_t window_slow;
  double failure_rate;     /* window_failures / window_calls, 0 when empty */
  uint64_t retry_after_ns; /* OPEN: time until it half-opens; else 0 */
} mnemo_breaker_window_metrics_t;

/* Applies the lazy OPEN -> HALF_OPEN move and slides a TIME window to
 * now_ns first. */
void mnemo_breaker_metrics(mnemo_breaker_t *b, uint64_t now_ns,
                           mnemo_breaker_window_metrics_t *out);
/* "closed", "open", "half_open" */
const char *mnemo_breaker_state_name(mnemo_breaker_state_t s);

#endif
