/* Circuit breaker: trips on consecutive failures and on a windowed failure
 * rate, recovery through HALF_OPEN, stragglers admitted in an earlier state,
 * callbacks, reset, forced half-open, metrics, live reconfiguration and
 * config validation. Every time is passed in by hand. */
#include "testing.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "breaker.h"
#include "status.h"

#define SEC 1000000000ull
#define MS 1000000ull
#define T0 (1000 * SEC) /* an arbitrary start, as from a monotonic clock */

typedef struct recorder {
  int count;
  mnemo_breaker_state_t from[16], to[16];
  uint64_t at[16];
  int state_was_updated; /* b->state == to inside every callback */
} recorder_t;

static void record(mnemo_breaker_t *b, mnemo_breaker_state_t from,
                   mnemo_breaker_state_t to, uint64_t now_ns, void *data) {
  recorder_t *r = data;
  if (r->count < 16) {
    r->from[r->count] = from;
    r->to[r->count] = to;
    r->at[r->count] = now_ns;
  }
  r->count++;
  if (b->state != to)
    r->state_was_updated = 0;
}

static void watch(mnemo_breaker_t *b, recorder_t *r) {
  memset(r, 0, sizeof(*r));
  r->state_was_updated = 1;
  b->on_transition = record;
  b->data = r;
}

static void call_failed(mnemo_breaker_t *b, uint64_t now) {
  assert_int_equal(mnemo_breaker_acquire(b, now, NULL), 0);
  mnemo_breaker_on_failure(b, now, 0);
}

static void call_ok(mnemo_breaker_t *b, uint64_t now) {
  assert_int_equal(mnemo_breaker_acquire(b, now, NULL), 0);
  mnemo_breaker_on_success(b, now, 0);
}

/* Outcomes from a string: 'F' failure, 'S' success. */
static void outcomes(mnemo_breaker_t *b, uint64_t now, const char *seq) {
  for (; *seq; seq++) {
    if (*seq == 'F')
      call_failed(b, now);
    else
      call_ok(b, now);
  }
}

/* A config that trips only on the rate over a window. */
static mnemo_breaker_config_t rate_config(mnemo_window_kind_t kind,
                                          uint32_t size, double rate,
                                          uint32_t minimum_calls) {
  mnemo_breaker_config_t cfg;
  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 0;
  cfg.failure_rate_threshold = rate;
  cfg.window_kind = kind;
  cfg.window_size = size;
  cfg.minimum_calls = minimum_calls;
  return cfg;
}

static void test_defaults(void **state) {
  mnemo_breaker_config_t cfg;
  (void)state;

  memset(&cfg, 0xff, sizeof(cfg));
  mnemo_breaker_config_default(&cfg);
  assert_int_equal(cfg.failure_threshold, 5);
  assert_true(cfg.failure_rate_threshold == 0);
  assert_int_equal(cfg.window_kind, MNEMO_WINDOW_NONE);
  assert_int_equal(cfg.minimum_calls, 10);
  assert_int_equal(cfg.slow_call_ns, 0);
  assert_int_equal(cfg.recovery_timeout_ns, 30 * SEC);
  assert_int_equal(cfg.half_open_max_calls, 1);
  assert_int_equal(cfg.critical, 0);
  assert_int_equal(mnemo_breaker_config_validate(&cfg, NULL, 0), 0);
  assert_string_equal(mnemo_breaker_state_name(MNEMO_BREAKER_CLOSED), "closed");
  assert_string_equal(mnemo_breaker_state_name(MNEMO_BREAKER_OPEN), "open");
  assert_string_equal(mnemo_breaker_state_name(MNEMO_BREAKER_HALF_OPEN),
                      "half_open");
}

/* Threshold 5, recovery 30 s, one probe. */
static void test_open_half_open_close(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  uint64_t retry = 12345, t1, t2;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  assert_int_equal(mnemo_breaker_init(&b, "db", &cfg, T0), 0);
  assert_string_equal(b.name, "db");
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.last_failure_ns, 0);

  outcomes(&b, T0, "FFFF");
  assert_int_equal(mnemo_breaker_state(&b, T0), MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.consecutive_failures, 4);
  t1 = T0 + SEC;
  call_failed(&b, t1);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(b.opened_ns, t1);
  assert_int_equal(b.state_changed_ns, t1);
  assert_int_equal(b.last_failure_ns, t1);

  /* Fails fast, with the time left until it half-opens. */
  assert_int_equal(mnemo_breaker_acquire(&b, t1 + 10 * SEC, &retry),
                   MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(retry, 20 * SEC);
  assert_int_equal(mnemo_breaker_acquire(&b, t1 + 30 * SEC - MS, &retry),
                   MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(retry, MS);
  assert_int_equal(mnemo_breaker_state(&b, t1 + 30 * SEC - MS),
                   MNEMO_BREAKER_OPEN);
  assert_int_equal(b.rejected, 2);

  /* At 30 s: one probe goes through, a second concurrent one does not. */
  assert_int_equal(mnemo_breaker_acquire(&b, t1 + 30 * SEC, &retry), 0);
  assert_int_equal(retry, 0);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(b.state_changed_ns, t1 + 30 * SEC);
  assert_int_equal(b.half_open_in_flight, 1);
  retry = 777;
  assert_int_equal(mnemo_breaker_acquire(&b, t1 + 30 * SEC, &retry),
                   MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(retry, 0);
  assert_int_equal(b.rejected, 3);
  mnemo_breaker_on_success(&b, t1 + 31 * SEC, SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.consecutive_failures, 0);
  assert_int_equal(b.half_open_in_flight, 0);

  /* Opens again; a failed probe reopens it with a fresh 30 s. */
  t2 = t1 + 40 * SEC;
  outcomes(&b, t2, "FFFFF");
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(mnemo_breaker_acquire(&b, t2 + 30 * SEC, NULL), 0);
  mnemo_breaker_on_failure(&b, t2 + 32 * SEC, 2 * SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(b.opened_ns, t2 + 32 * SEC);
  assert_int_equal(mnemo_breaker_acquire(&b, t2 + 32 * SEC, &retry),
                   MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(retry, 30 * SEC);
  assert_int_equal(mnemo_breaker_state(&b, t2 + 62 * SEC - 1),
                   MNEMO_BREAKER_OPEN);
  assert_int_equal(mnemo_breaker_state(&b, t2 + 62 * SEC),
                   MNEMO_BREAKER_HALF_OPEN);

  assert_int_equal(b.calls, 12);
  assert_int_equal(b.failures, 11);
  assert_int_equal(b.successes, 1);
  assert_int_equal(b.calls, b.successes + b.failures);
  assert_int_equal(b.rejected, 4);
  mnemo_breaker_free(&b);
  mnemo_breaker_free(&b); /* twice is harmless */
}

static void test_success_resets_consecutive(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "FFFFSFFFF");
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.consecutive_failures, 4);
  call_failed(&b, T0);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_free(&b);
}

static void test_rate_count_window(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg = rate_config(MNEMO_WINDOW_COUNT, 10, 0.5, 6);
  (void)state;

  /* Not judged below minimum_calls, however bad the rate. */
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "FFFFF");
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  call_failed(&b, T0);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_free(&b);

  /* The oldest outcome leaves a full window. */
  cfg = rate_config(MNEMO_WINDOW_COUNT, 4, 0.5, 4);
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "FSSSF"); /* window SSSF: 1/4 */
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  outcomes(&b, T0, "S"); /* SSFS */
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  outcomes(&b, T0, "F"); /* SFSF: 2/4 */
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_free(&b);

  /* 7 of 25 reaches 0.28 exactly: 7 / 25 and the literal 0.28 are the same
   * double, while 0.28 * 25 is above 7. */
  cfg = rate_config(MNEMO_WINDOW_COUNT, 25, 0.28, 25);
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "SSSSSSSSSSSSSSSSSSFFFFFF");
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  outcomes(&b, T0, "F");
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_free(&b);

  /* With both rules, consecutive failures still trip it. */
  cfg = rate_config(MNEMO_WINDOW_COUNT, 100, 0.9, 50);
  cfg.failure_threshold = 3;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "SSSSSFFF");
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_free(&b);
}

/* A COUNT window smaller than minimum_calls is judged once full. */
static void test_minimum_calls_above_count_window(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg = rate_config(MNEMO_WINDOW_COUNT, 5, 0.5, 10);
  (void)state;

  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "SFSF");
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  outcomes(&b, T0, "F");
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_free(&b);
}

static void test_time_window_forgets(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg = rate_config(MNEMO_WINDOW_TIME, 10, 0.5, 4);
  mnemo_breaker_window_metrics_t m;
  (void)state;

  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "FFF");
  mnemo_breaker_metrics(&b, T0 + 10 * SEC - 1, &m);
  assert_int_equal(m.window_calls, 3); /* still inside */
  mnemo_breaker_metrics(&b, T0 + 10 * SEC, &m);
  assert_int_equal(m.window_calls, 0); /* that second has left */

  /* 11 s later the old failures no longer count: 1 of 4 is below 0.5. */
  outcomes(&b, T0 + 11 * SEC, "SSFS");
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  mnemo_breaker_metrics(&b, T0 + 11 * SEC, &m);
  assert_int_equal(m.window_calls, 4);
  assert_int_equal(m.window_failures, 1);

  /* Spread over the window, all seconds count. */
  outcomes(&b, T0 + 15 * SEC, "F");
  outcomes(&b, T0 + 20 * SEC + 999 * MS, "F");
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN); /* 3 of 6 */
  mnemo_breaker_metrics(&b, T0 + 20 * SEC + 999 * MS, &m);
  assert_int_equal(m.window_calls, 6);
  assert_int_equal(m.window_failures, 3);

  /* A jump far ahead empties it; an earlier now_ns counts in the newest
   * second. */
  mnemo_breaker_reset(&b, T0 + 21 * SEC);
  outcomes(&b, T0 + 21 * SEC, "SS");
  mnemo_breaker_metrics(&b, T0 + 1000000 * SEC, &m);
  assert_int_equal(m.window_calls, 0);
  outcomes(&b, T0 + 999999 * SEC, "S");
  mnemo_breaker_metrics(&b, T0 + 1000000 * SEC, &m);
  assert_int_equal(m.window_calls, 1);
  mnemo_breaker_free(&b);
}

static void test_slow_calls(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  mnemo_breaker_window_metrics_t m;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 3;
  cfg.slow_call_ns = SEC;
  cfg.window_kind = MNEMO_WINDOW_COUNT;
  cfg.window_size = 10;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  /* Exactly the limit is not slow. */
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0);
  mnemo_breaker_on_success(&b, T0 + SEC, SEC);
  assert_int_equal(b.slow_calls, 0);
  assert_int_equal(b.consecutive_failures, 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0);
  mnemo_breaker_on_success(&b, T0 + 2 * SEC, 2 * SEC);
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0);
  mnemo_breaker_on_failure(&b, T0 + 2 * SEC, 2 * SEC); /* slow failure */
  assert_int_equal(b.consecutive_failures, 2);
  mnemo_breaker_metrics(&b, T0 + 2 * SEC, &m);
  assert_int_equal(m.window_calls, 3);
  assert_int_equal(m.window_failures, 2);
  assert_int_equal(m.window_slow, 1);
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0);
  mnemo_breaker_on_success(&b, T0 + 3 * SEC, 3 * SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(b.last_failure_ns, T0 + 3 * SEC);
  assert_int_equal(b.slow_calls, 2);
  assert_int_equal(b.failures, 3);
  assert_int_equal(b.successes, 1);

  /* A slow probe reopens it. */
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 40 * SEC, NULL), 0);
  mnemo_breaker_on_success(&b, T0 + 42 * SEC, 2 * SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(b.opened_ns, T0 + 42 * SEC);
  mnemo_breaker_free(&b);

  /* Slow successes alone trip a rate. */
  cfg = rate_config(MNEMO_WINDOW_TIME, 10, 0.5, 2);
  cfg.slow_call_ns = 100 * MS;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0);
  mnemo_breaker_on_success(&b, T0, 10 * MS);
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0);
  mnemo_breaker_on_success(&b, T0 + 500 * MS, 500 * MS);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_free(&b);
}

static void test_ignored(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  mnemo_breaker_window_metrics_t m;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.window_kind = MNEMO_WINDOW_COUNT;
  cfg.window_size = 10;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "FFFF");
  /* Counts nothing but `ignored`: the streak goes on. */
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0);
  mnemo_breaker_on_ignored(&b, T0);
  assert_int_equal(b.ignored, 1);
  assert_int_equal(b.calls, 4);
  assert_int_equal(b.consecutive_failures, 4);
  mnemo_breaker_metrics(&b, T0, &m);
  assert_int_equal(m.window_calls, 4);
  call_failed(&b, T0);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);

  /* In HALF_OPEN it frees the probe slot, and closes nothing. */
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 30 * SEC, NULL), 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 30 * SEC, NULL),
                   MNEMO_ECIRCUIT_OPEN);
  mnemo_breaker_on_ignored(&b, T0 + 31 * SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(b.half_open_in_flight, 0);
  assert_int_equal(b.half_open_successes, 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 31 * SEC, NULL), 0);
  mnemo_breaker_on_success(&b, T0 + 32 * SEC, SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.ignored, 2);
  mnemo_breaker_free(&b);
}

static void test_transitions(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  recorder_t r;
  static const mnemo_breaker_state_t from[] = {
      MNEMO_BREAKER_CLOSED, MNEMO_BREAKER_OPEN,     MNEMO_BREAKER_HALF_OPEN,
      MNEMO_BREAKER_CLOSED, MNEMO_BREAKER_OPEN,     MNEMO_BREAKER_HALF_OPEN,
      MNEMO_BREAKER_OPEN,   MNEMO_BREAKER_HALF_OPEN};
  static const mnemo_breaker_state_t to[] = {
      MNEMO_BREAKER_OPEN,      MNEMO_BREAKER_HALF_OPEN, MNEMO_BREAKER_CLOSED,
      MNEMO_BREAKER_OPEN,      MNEMO_BREAKER_HALF_OPEN, MNEMO_BREAKER_OPEN,
      MNEMO_BREAKER_HALF_OPEN, MNEMO_BREAKER_CLOSED};
  static const uint64_t at[] = {0, 30, 31, 40, 70, 71, 101, 101};
  int i;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 2;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  watch(&b, &r);
  outcomes(&b, T0, "FF");
  assert_int_equal(mnemo_breaker_state(&b, T0 + 30 * SEC),
                   MNEMO_BREAKER_HALF_OPEN);
  call_ok(&b, T0 + 31 * SEC);
  outcomes(&b, T0 + 40 * SEC, "FF");
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 70 * SEC, NULL), 0);
  mnemo_breaker_on_failure(&b, T0 + 71 * SEC, SEC);
  call_ok(&b, T0 + 101 * SEC);
  /* The lazy moves happened inside state() and acquire(). */
  assert_int_equal(r.count, 8);
  assert_int_equal(mnemo_breaker_state(&b, T0 + 102 * SEC),
                   MNEMO_BREAKER_CLOSED);
  mnemo_breaker_reset(&b, T0 + 102 * SEC); /* CLOSED already: no callback */
  assert_int_equal(r.count, 8);
  outcomes(&b, T0 + 102 * SEC, "FF");
  mnemo_breaker_force_half_open(&b, T0 + 102 * SEC);
  assert_int_equal(r.count, 10);
  for (i = 0; i < 8; i++) {
    assert_int_equal(r.from[i], from[i]);
    assert_int_equal(r.to[i], to[i]);
    assert_int_equal(r.at[i], T0 + at[i] * SEC);
  }
  assert_true(r.state_was_updated);
  mnemo_breaker_free(&b);
}

/* A callback may call back into the breaker. */
static void reset_on_open(mnemo_breaker_t *b, mnemo_breaker_state_t from,
                          mnemo_breaker_state_t to, uint64_t now_ns,
                          void *data) {
  (void)from;
  (*(int *)data)++;
  if (to == MNEMO_BREAKER_OPEN)
    mnemo_breaker_reset(b, now_ns);
}

static void test_callback_reentry(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  int calls = 0;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 1;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  b.on_transition = reset_on_open;
  b.data = &calls;
  call_failed(&b, T0);
  assert_int_equal(calls, 2); /* closed -> open, open -> closed */
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.consecutive_failures, 0);
  call_ok(&b, T0);
  mnemo_breaker_free(&b);
}

static void test_reset(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  mnemo_breaker_window_metrics_t m;
  recorder_t r;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.window_kind = MNEMO_WINDOW_TIME;
  cfg.window_size = 60;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  watch(&b, &r);
  outcomes(&b, T0, "SFFF");
  mnemo_breaker_reset(&b, T0 + SEC); /* CLOSED: clears window and streak */
  assert_int_equal(r.count, 0);
  assert_int_equal(b.consecutive_failures, 0);
  mnemo_breaker_metrics(&b, T0 + SEC, &m);
  assert_int_equal(m.window_calls, 0);
  outcomes(&b, T0 + SEC, "FFFF");
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  call_failed(&b, T0 + SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 2 * SEC, NULL),
                   MNEMO_ECIRCUIT_OPEN);

  mnemo_breaker_reset(&b, T0 + 3 * SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.state_changed_ns, T0 + 3 * SEC);
  assert_int_equal(r.count, 2);
  assert_int_equal(r.from[1], MNEMO_BREAKER_OPEN);
  assert_int_equal(r.to[1], MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.consecutive_failures, 0);
  mnemo_breaker_metrics(&b, T0 + 3 * SEC, &m);
  assert_int_equal(m.window_calls, 0);
  /* Lifetime counters are kept. */
  assert_int_equal(b.calls, 9);
  assert_int_equal(b.failures, 8);
  assert_int_equal(b.rejected, 1);
  call_ok(&b, T0 + 3 * SEC);
  mnemo_breaker_free(&b);
}

static void test_force_half_open(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  recorder_t r;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.half_open_max_calls = 2;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  watch(&b, &r);
  mnemo_breaker_force_half_open(&b, T0); /* CLOSED: no-op */
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  outcomes(&b, T0, "FFFFF");
  mnemo_breaker_force_half_open(&b, T0 + SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(b.state_changed_ns, T0 + SEC);
  mnemo_breaker_force_half_open(&b, T0 + SEC); /* HALF_OPEN: no-op */
  assert_int_equal(r.count, 2);
  /* Two probes at once; both must succeed to close it. */
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + SEC, NULL), 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + SEC, NULL), 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + SEC, NULL),
                   MNEMO_ECIRCUIT_OPEN);
  mnemo_breaker_on_success(&b, T0 + 2 * SEC, SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(b.half_open_successes, 1);
  mnemo_breaker_on_success(&b, T0 + 2 * SEC, SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  mnemo_breaker_free(&b);
}

static void test_metrics(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg = rate_config(MNEMO_WINDOW_COUNT, 4, 0.75, 4);
  mnemo_breaker_window_metrics_t m;
  (void)state;

  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  mnemo_breaker_metrics(&b, T0, &m);
  assert_int_equal(m.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(m.window_calls, 0);
  assert_true(m.failure_rate == 0.0);
  assert_int_equal(m.retry_after_ns, 0);
  outcomes(&b, T0, "SFSF");
  mnemo_breaker_metrics(&b, T0, &m);
  assert_int_equal(m.window_calls, 4);
  assert_int_equal(m.window_failures, 2);
  assert_int_equal(m.window_slow, 0);
  assert_true(m.failure_rate == 0.5);
  outcomes(&b, T0, "F"); /* FSFF */
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_metrics(&b, T0 + 5 * SEC, &m);
  assert_int_equal(m.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(m.retry_after_ns, 25 * SEC);
  /* The window that tripped it stays visible while open. */
  assert_true(m.failure_rate == 0.75);
  /* Applies the lazy move. */
  mnemo_breaker_metrics(&b, T0 + 30 * SEC, &m);
  assert_int_equal(m.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(m.retry_after_ns, 0);
  mnemo_breaker_free(&b);

  /* No window: zeros. */
  mnemo_breaker_config_default(&cfg);
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "FS");
  mnemo_breaker_metrics(&b, T0, &m);
  assert_int_equal(m.window_calls, 0);
  assert_true(m.failure_rate == 0.0);
  mnemo_breaker_free(&b);
}

/* A slow call admitted while CLOSED ends after the breaker has half-opened:
 * it neither closes nor reopens it, nor takes the probe's slot. */
static void test_straggler_in_half_open(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  uint64_t t_open = T0 + SEC, t_half = T0 + 31 * SEC;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0); /* slow A */
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0); /* slow B */
  outcomes(&b, t_open, "FFFFF");
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);

  /* Only stragglers in flight: an outcome is theirs, whatever it says. */
  assert_int_equal(mnemo_breaker_state(&b, t_half), MNEMO_BREAKER_HALF_OPEN);
  mnemo_breaker_on_success(&b, t_half, 0); /* A, duration not even given */
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(b.half_open_successes, 0);

  /* The probe and B in flight together: told apart by their start. */
  assert_int_equal(mnemo_breaker_acquire(&b, t_half, NULL), 0);
  assert_int_equal(b.half_open_in_flight, 1);
  mnemo_breaker_on_failure(&b, t_half + SEC, t_half + SEC - T0); /* B */
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(b.half_open_in_flight, 1);
  assert_int_equal(mnemo_breaker_acquire(&b, t_half + SEC, NULL),
                   MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(b.failures, 6); /* still counted for life */
  assert_int_equal(b.successes, 1);
  mnemo_breaker_on_success(&b, t_half + 2 * SEC, 2 * SEC); /* the probe */
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.in_flight, 0);
  mnemo_breaker_free(&b);
}

/* Probes admitted by one HALF_OPEN never count for the next one. */
static void test_straggler_probe(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  uint64_t t;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 1;
  cfg.half_open_max_calls = 2;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  call_failed(&b, T0);
  t = T0 + 30 * SEC;
  assert_int_equal(mnemo_breaker_acquire(&b, t, NULL), 0); /* P1 */
  assert_int_equal(mnemo_breaker_acquire(&b, t, NULL), 0); /* P2 */
  mnemo_breaker_on_failure(&b, t + SEC, SEC);              /* P1 */
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(b.half_open_in_flight, 0);
  t += SEC;

  /* Next HALF_OPEN: P3 is a probe, P2 is not. */
  assert_int_equal(mnemo_breaker_acquire(&b, t + 30 * SEC, NULL), 0); /* P3 */
  assert_int_equal(b.half_open_in_flight, 1);
  mnemo_breaker_on_success(&b, t + 31 * SEC, 32 * SEC); /* P2 */
  assert_int_equal(b.half_open_in_flight, 1);
  assert_int_equal(b.half_open_successes, 0);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(mnemo_breaker_acquire(&b, t + 31 * SEC, NULL), 0); /* P4 */
  assert_int_equal(mnemo_breaker_acquire(&b, t + 31 * SEC, NULL),
                   MNEMO_ECIRCUIT_OPEN);
  mnemo_breaker_on_success(&b, t + 32 * SEC, 2 * SEC); /* P3 */
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  mnemo_breaker_on_success(&b, t + 32 * SEC, SEC); /* P4 */
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.in_flight, 0);
  mnemo_breaker_free(&b);
}

/* on_ignored has no duration: with a probe and a straggler in flight it is
 * taken as the probe's and frees the probe slot. */
static void test_ignored_with_straggler(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 1;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0); /* straggler */
  call_failed(&b, T0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 30 * SEC, NULL), 0);
  mnemo_breaker_on_ignored(&b, T0 + 31 * SEC);
  assert_int_equal(b.half_open_in_flight, 0);
  assert_int_equal(b.in_flight, 1);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  mnemo_breaker_on_success(&b, T0 + 32 * SEC, 32 * SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN); /* no probe in flight */
  assert_int_equal(b.in_flight, 0);
  call_ok(&b, T0 + 33 * SEC); /* the slot is free for a new probe */
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  mnemo_breaker_free(&b);
}

/* Outcomes arriving while OPEN count for life and decide nothing; a probe
 * ending after a reset counts in the CLOSED window. */
static void test_outcomes_in_open_and_after_reset(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  mnemo_breaker_window_metrics_t m;
  uint64_t retry;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 2;
  cfg.window_kind = MNEMO_WINDOW_COUNT;
  cfg.window_size = 10;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0);
  outcomes(&b, T0, "FF");
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_on_success(&b, T0 + SEC, SEC);
  mnemo_breaker_on_failure(&b, T0 + 2 * SEC, 2 * SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(b.opened_ns, T0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 2 * SEC, &retry),
                   MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(retry, 28 * SEC);
  assert_int_equal(b.calls, 4);
  assert_int_equal(b.failures, 3);

  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 30 * SEC, NULL), 0);
  mnemo_breaker_reset(&b, T0 + 30 * SEC);
  assert_int_equal(b.half_open_in_flight, 0);
  mnemo_breaker_on_failure(&b, T0 + 31 * SEC, SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.consecutive_failures, 1);
  mnemo_breaker_metrics(&b, T0 + 31 * SEC, &m);
  assert_int_equal(m.window_calls, 1);
  assert_int_equal(b.in_flight, 0);
  /* An outcome without an admission does not underflow anything. */
  mnemo_breaker_on_ignored(&b, T0 + 31 * SEC);
  assert_int_equal(b.in_flight, 0);
  mnemo_breaker_free(&b);
}

static void test_reconfigure_count_window(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg = rate_config(MNEMO_WINDOW_COUNT, 10, 0.5, 5);
  mnemo_breaker_window_metrics_t m;
  uint64_t retry;
  char err[256];
  (void)state;

  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "FSSSSFSFFS"); /* 4 of 10 */
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);

  /* Size 5 keeps the last 5 outcomes: FSFFS, 3 of 5. Nothing trips here,
   * even though 0.6 is above the threshold. */
  cfg.window_size = 5;
  assert_int_equal(mnemo_breaker_reconfigure(&b, &cfg, T0, err, sizeof(err)),
                   0);
  mnemo_breaker_metrics(&b, T0, &m);
  assert_int_equal(m.window_calls, 5);
  assert_int_equal(m.window_failures, 3);
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.config.window_size, 5);

  /* A higher threshold, then one below the carried rate: it trips on the
   * next failure. */
  cfg.failure_rate_threshold = 0.9;
  assert_int_equal(mnemo_breaker_reconfigure(&b, &cfg, T0, err, sizeof(err)),
                   0);
  outcomes(&b, T0, "F");
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  outcomes(&b, T0, "S"); /* FFSFS */
  cfg.failure_rate_threshold = 0.5;
  assert_int_equal(mnemo_breaker_reconfigure(&b, &cfg, T0, err, sizeof(err)),
                   0);
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  outcomes(&b, T0, "F"); /* FSFSF */
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);

  /* OPEN survives a reconfigure, with the new recovery timeout. */
  cfg.recovery_timeout_ns = 10 * SEC;
  cfg.window_size = 8;
  assert_int_equal(
      mnemo_breaker_reconfigure(&b, &cfg, T0 + SEC, err, sizeof(err)), 0);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(b.opened_ns, T0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + SEC, &retry),
                   MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(retry, 9 * SEC);
  /* Growing keeps all 5 outcomes and has room for 3 more. */
  mnemo_breaker_metrics(&b, T0 + SEC, &m);
  assert_int_equal(m.window_calls, 5);
  assert_int_equal(m.window_failures, 3);
  assert_int_equal(b.calls, 13);
  assert_int_equal(b.rejected, 1);
  mnemo_breaker_reset(&b, T0 + 2 * SEC);
  outcomes(&b, T0 + 2 * SEC, "SSSSSSSSSS");
  mnemo_breaker_metrics(&b, T0 + 2 * SEC, &m);
  assert_int_equal(m.window_calls, 8);

  /* A change of kind starts empty; back to no window drops it. */
  cfg.window_kind = MNEMO_WINDOW_TIME;
  cfg.window_size = 30;
  assert_int_equal(
      mnemo_breaker_reconfigure(&b, &cfg, T0 + 2 * SEC, err, sizeof(err)), 0);
  mnemo_breaker_metrics(&b, T0 + 2 * SEC, &m);
  assert_int_equal(m.window_calls, 0);
  outcomes(&b, T0 + 2 * SEC, "FS");
  mnemo_breaker_config_default(&cfg);
  assert_int_equal(
      mnemo_breaker_reconfigure(&b, &cfg, T0 + 2 * SEC, err, sizeof(err)), 0);
  mnemo_breaker_metrics(&b, T0 + 2 * SEC, &m);
  assert_int_equal(m.window_calls, 0);
  assert_int_equal(b.consecutive_failures, 0);
  mnemo_breaker_free(&b);
}

static void test_reconfigure_time_window(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg = rate_config(MNEMO_WINDOW_TIME, 10, 0.9, 100);
  mnemo_breaker_window_metrics_t m;
  (void)state;

  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "FF");
  outcomes(&b, T0 + 5 * SEC, "FFS");
  outcomes(&b, T0 + 8 * SEC, "S");
  /* 4 s at T0 + 8.5 s: seconds +5 to +8 stay, +0 goes. */
  cfg.window_size = 4;
  assert_int_equal(
      mnemo_breaker_reconfigure(&b, &cfg, T0 + 8 * SEC + 500 * MS, NULL, 0), 0);
  mnemo_breaker_metrics(&b, T0 + 8 * SEC + 500 * MS, &m);
  assert_int_equal(m.window_calls, 4);
  assert_int_equal(m.window_failures, 2);
  mnemo_breaker_metrics(&b, T0 + 9 * SEC, &m); /* +5 leaves */
  assert_int_equal(m.window_calls, 1);

  /* Growing back does not bring old seconds back. */
  cfg.window_size = 10;
  assert_int_equal(mnemo_breaker_reconfigure(&b, &cfg, T0 + 9 * SEC, NULL, 0),
                   0);
  mnemo_breaker_metrics(&b, T0 + 9 * SEC, &m);
  assert_int_equal(m.window_calls, 1);
  outcomes(&b, T0 + 17 * SEC, "F");
  mnemo_breaker_metrics(&b, T0 + 17 * SEC, &m);
  assert_int_equal(m.window_calls, 2); /* +8 and +17 */
  mnemo_breaker_metrics(&b, T0 + 18 * SEC, &m);
  assert_int_equal(m.window_calls, 1);

  /* New thresholds apply from the next outcome: 3 of 4 is above 0.5. */
  outcomes(&b, T0 + 18 * SEC, "SF");
  cfg.failure_rate_threshold = 0.5;
  cfg.minimum_calls = 4;
  assert_int_equal(mnemo_breaker_reconfigure(&b, &cfg, T0 + 18 * SEC, NULL, 0),
                   0);
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  outcomes(&b, T0 + 18 * SEC, "F");
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_free(&b);
}

static void test_reconfigure_invalid_changes_nothing(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg = rate_config(MNEMO_WINDOW_COUNT, 10, 0.5, 5);
  mnemo_breaker_config_t bad = cfg;
  mnemo_breaker_window_metrics_t m;
  char err[256];
  (void)state;

  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "FSF");
  bad.window_size = 0;
  bad.recovery_timeout_ns = 0;
  assert_int_equal(mnemo_breaker_reconfigure(&b, &bad, T0, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, "window_size: expected integer in [1, 100000], "
                           "got 0\n"
                           "recovery_timeout: expected a duration > 0, got 0");
  assert_int_equal(b.config.window_size, 10);
  assert_int_equal(b.config.recovery_timeout_ns, 30 * SEC);
  mnemo_breaker_metrics(&b, T0, &m);
  assert_int_equal(m.window_calls, 3);
  assert_int_equal(m.window_failures, 2);
  mnemo_breaker_free(&b);
}

static void expect_invalid(const mnemo_breaker_config_t *cfg,
                           const char *expected) {
  char err[1024];
  mnemo_breaker_t b;

  memset(err, 'x', sizeof(err));
  assert_int_equal(mnemo_breaker_config_validate(cfg, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, expected);
  assert_int_equal(mnemo_breaker_init(&b, "x", cfg, T0), MNEMO_EINVAL);
}

static void test_validation(void **state) {
  mnemo_breaker_config_t cfg;
  char err[64];
  char small[16];
  (void)state;

  /* Every problem, in field order. */
  memset(&cfg, 0, sizeof(cfg));
  expect_invalid(&cfg, "failure_threshold: expected integer >= 1 when "
                       "failure_rate_threshold is 0 (nothing could trip "
                       "the breaker), got 0\n"
                       "recovery_timeout: expected a duration > 0, got 0\n"
                       "half_open_max_calls: expected integer >= 1, got 0");

  mnemo_breaker_config_default(&cfg);
  cfg.failure_rate_threshold = 1.5;
  cfg.half_open_max_calls = 0;
  expect_invalid(&cfg, "failure_rate_threshold: expected 0 (off) or a "
                       "number in (0, 1], got 1.5\n"
                       "window: expected count or time when "
                       "failure_rate_threshold is set, got none\n"
                       "half_open_max_calls: expected integer >= 1, got 0");

  cfg = rate_config(MNEMO_WINDOW_COUNT, 0, -0.25, 0);
  expect_invalid(&cfg, "failure_rate_threshold: expected 0 (off) or a "
                       "number in (0, 1], got -0.25\n"
                       "window_size: expected integer in [1, 100000], got 0\n"
                       "minimum_calls: expected integer >= 1, got 0");

  cfg = rate_config(MNEMO_WINDOW_TIME, 100001, NAN, 1);
  expect_invalid(&cfg, "failure_rate_threshold: expected 0 (off) or a "
                       "number in (0, 1], got nan\n"
                       "window_size: expected integer in [1, 100000], "
                       "got 100001");

  mnemo_breaker_config_default(&cfg);
  cfg.window_kind = (mnemo_window_kind_t)7;
  expect_invalid(&cfg, "window: expected none, count or time, got 7");

  /* Limits that are fine. */
  cfg = rate_config(MNEMO_WINDOW_TIME, 100000, 1.0, 1);
  assert_int_equal(mnemo_breaker_config_validate(&cfg, err, sizeof(err)), 0);
  assert_string_equal(err, "");
  cfg = rate_config(MNEMO_WINDOW_COUNT, 1, 1e-9, 1);
  assert_int_equal(mnemo_breaker_config_validate(&cfg, NULL, 0), 0);
  mnemo_breaker_config_default(&cfg);
  cfg.window_size = 0; /* unused without a window */
  cfg.minimum_calls = 0;
  assert_int_equal(mnemo_breaker_config_validate(&cfg, NULL, 0), 0);

  /* A short buffer is truncated, never overrun; NULL is fine. */
  memset(&cfg, 0, sizeof(cfg));
  assert_int_equal(mnemo_breaker_config_validate(&cfg, small, sizeof(small)),
                   MNEMO_EINVAL);
  assert_int_equal(strlen(small), sizeof(small) - 1);
  assert_int_equal(strncmp(small, "failure_thresho", 15), 0);
  assert_int_equal(mnemo_breaker_config_validate(&cfg, NULL, 0), MNEMO_EINVAL);
}

/* A recovery timeout near the end of time saturates instead of wrapping. */
static void test_huge_recovery_timeout(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  uint64_t retry;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 1;
  cfg.recovery_timeout_ns = UINT64_MAX;
  assert_int_equal(mnemo_breaker_init(&b, NULL, &cfg, T0), 0);
  assert_string_equal(b.name, "");
  call_failed(&b, T0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + SEC, &retry),
                   MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(retry, UINT64_MAX - (T0 + SEC));
  assert_int_equal(mnemo_breaker_state(&b, UINT64_MAX - 1), MNEMO_BREAKER_OPEN);
  mnemo_breaker_free(&b);
}

/* An out-of-range state has a name too: "unknown", never NULL. */
static void test_state_names(void **state) {
  (void)state;
  assert_string_equal(mnemo_breaker_state_name(MNEMO_BREAKER_CLOSED), "closed");
  assert_string_equal(mnemo_breaker_state_name(MNEMO_BREAKER_OPEN), "open");
  assert_string_equal(mnemo_breaker_state_name(MNEMO_BREAKER_HALF_OPEN),
                      "half_open");
  assert_string_equal(mnemo_breaker_state_name((mnemo_breaker_state_t)7),
                      "unknown");
}

/* The problem list at the edges of the caller's buffer: errlen 0 writes
 * nothing at all; a buffer that the first line and its newline fill
 * exactly ends there, terminated, with every problem still counted. */
static void test_validation_buffer_edges(void **state) {
  mnemo_breaker_config_t cfg;
  char all[1024], buf[1024];
  size_t first;
  (void)state;

  memset(&cfg, 0, sizeof(cfg)); /* three problems */
  assert_int_equal(mnemo_breaker_config_validate(&cfg, all, sizeof(all)),
                   MNEMO_EINVAL);
  assert_non_null(strchr(all, '\n'));
  first = (size_t)(strchr(all, '\n') - all);

  memset(buf, 'x', sizeof(buf));
  assert_int_equal(mnemo_breaker_config_validate(&cfg, buf, 0), MNEMO_EINVAL);
  assert_int_equal(buf[0], 'x');

  memset(buf, 'x', sizeof(buf));
  assert_int_equal(mnemo_breaker_config_validate(&cfg, buf, first + 2),
                   MNEMO_EINVAL);
  assert_int_equal(strlen(buf), first + 1);
  assert_memory_equal(buf, all, first + 1); /* the first line and '\n' */
  assert_int_equal(buf[first + 2], 'x');    /* nothing past the buffer */
}

/* A breaker without a window reconfigured without one: the window is
 * kept as it is (none), the new threshold applies to the streak so far
 * from the next outcome on. */
static void test_reconfigure_without_window(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  char err[256];
  (void)state;

  mnemo_breaker_config_default(&cfg); /* 5 consecutive failures */
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  outcomes(&b, T0, "FFF");
  cfg.failure_threshold = 3;
  cfg.recovery_timeout_ns = 5 * SEC;
  assert_int_equal(mnemo_breaker_reconfigure(&b, &cfg, T0, err, sizeof(err)),
                   0);
  assert_int_equal(b.window.kind, MNEMO_WINDOW_NONE);
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED); /* nothing trips here */
  assert_int_equal(b.consecutive_failures, 3);
  call_failed(&b, T0 + SEC);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(mnemo_breaker_state(&b, T0 + 6 * SEC),
                   MNEMO_BREAKER_HALF_OPEN); /* the new recovery timeout */
  mnemo_breaker_free(&b);
}

/* A TIME window shrunk early in the clock's life carries the seconds
 * there are: none before second 0. */
static void test_reconfigure_time_window_near_zero(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg = rate_config(MNEMO_WINDOW_TIME, 10, 0.9, 100);
  mnemo_breaker_window_metrics_t m;
  (void)state;

  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, 0), 0);
  outcomes(&b, 0, "F");
  outcomes(&b, SEC, "S");
  outcomes(&b, 2 * SEC, "FS");
  cfg.window_size = 5;
  assert_int_equal(
      mnemo_breaker_reconfigure(&b, &cfg, 2 * SEC + SEC / 2, NULL, 0), 0);
  mnemo_breaker_metrics(&b, 2 * SEC + SEC / 2, &m);
  assert_int_equal(m.window_calls, 4);
  assert_int_equal(m.window_failures, 2);
  /* Second 0 leaves at second 5, as in a window that had always been 5. */
  mnemo_breaker_metrics(&b, 5 * SEC, &m);
  assert_int_equal(m.window_calls, 3);
  assert_int_equal(m.window_failures, 1);
  mnemo_breaker_free(&b);
}

/* Out of memory for a window, in init and in reconfigure: provoked by an
 * address-space limit just above what the process has mapped (a TIME
 * window of 100000 seconds is 1.2 MB, mmap'ed by malloc). */
static struct rlimit saved_as;

#if defined(__SANITIZE_ADDRESS__)
/* Under ASan: an allocation that fails returns NULL, as malloc does. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "allocator_may_return_null=1";
}
#endif

static int limit_address_space(void) {
  unsigned long pages = 0;
  struct rlimit r;
  FILE *f = fopen("/proc/self/statm", "r");
  void *probe;

  if (f == NULL)
    return -1;
  if (fscanf(f, "%lu", &pages) != 1)
    pages = 0;
  fclose(f);
  if (pages == 0 || getrlimit(RLIMIT_AS, &saved_as) != 0)
    return -1;
  r = saved_as;
  r.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + 256 * 1024;
  if (r.rlim_max != RLIM_INFINITY && r.rlim_cur > r.rlim_max)
    return -1;
  if (setrlimit(RLIMIT_AS, &r) != 0)
    return -1;
  /* Only if the allocator has no such block at hand already. */
  probe = calloc(MNEMO_BREAKER_MAX_WINDOW, sizeof(mnemo_breaker_bucket_t));
  if (probe != NULL) {
    free(probe);
    setrlimit(RLIMIT_AS, &saved_as);
    return -1;
  }
  return 0;
}

static void unlimit_address_space(void) {
  setrlimit(RLIMIT_AS, &saved_as);
}

static void test_window_out_of_memory(void **state) {
  mnemo_breaker_t b, big;
  mnemo_breaker_config_t cfg, wide;
  char err[128];
  int init_rc, rc_err, rc_null, rc_zero;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 2;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  call_failed(&b, T0);
  wide = rate_config(MNEMO_WINDOW_TIME, MNEMO_BREAKER_MAX_WINDOW, 0.5, 10);

  if (limit_address_space() != 0) {
    /* Not skip(): scripts/run-tests counts cmocka's TAP "not ok # SKIP"
     * as a failure. Said, and left to a machine where it can run. */
    print_message("test_window_out_of_memory: cannot make the allocation "
                  "fail here (no address-space limit, or memory at hand)\n");
    mnemo_breaker_free(&b);
    return;
  }
  init_rc = mnemo_breaker_init(&big, "big", &wide, T0);
  memset(err, 'x', sizeof(err));
  rc_err = mnemo_breaker_reconfigure(&b, &wide, T0, err, sizeof(err));
  rc_null = mnemo_breaker_reconfigure(&b, &wide, T0, NULL, 0);
  err[0] = 'x';
  rc_zero = mnemo_breaker_reconfigure(&b, &wide, T0, err, 0);
  unlimit_address_space();

  assert_int_equal(init_rc, MNEMO_ENOMEM);
  assert_int_equal(big.window.kind, MNEMO_WINDOW_NONE); /* nothing to free */
  assert_null(big.window.buckets);
  assert_int_equal(rc_err, MNEMO_ENOMEM);
  assert_string_equal(err + 1, "indow_size: out of memory for 100000");
  assert_int_equal(rc_null, MNEMO_ENOMEM);
  assert_int_equal(rc_zero, MNEMO_ENOMEM);
  assert_int_equal(err[0], 'x'); /* errlen 0: not written */
  /* Nothing changed: the old config, window and streak. */
  assert_int_equal(b.config.failure_threshold, 2);
  assert_int_equal(b.window.kind, MNEMO_WINDOW_NONE);
  assert_int_equal(b.consecutive_failures, 1);
  call_failed(&b, T0);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_free(&b);
  /* With the memory back, the same change goes through. */
  assert_int_equal(mnemo_breaker_init(&big, "big", &wide, T0), 0);
  mnemo_breaker_free(&big);
}

/* Both a probe and a straggler in flight, and an outcome whose duration is
 * longer than the clock's reading (a call timed on another clock, or the
 * clock's first second): taken as started at 0, before the breaker
 * half-opened, so a straggler's; nothing wraps around. */
static void test_duration_longer_than_clock(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 1;
  cfg.recovery_timeout_ns = SEC;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, 0), 0);
  assert_int_equal(mnemo_breaker_acquire(&b, 0, NULL), 0); /* straggler */
  call_failed(&b, 0);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(mnemo_breaker_acquire(&b, SEC, NULL), 0); /* probe */
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  mnemo_breaker_on_success(&b, 2 * SEC, 5 * SEC); /* "started" before 0 */
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(b.half_open_in_flight, 1); /* the probe's slot is held */
  assert_int_equal(b.half_open_successes, 0);
  mnemo_breaker_on_success(&b, 2 * SEC, SEC); /* the probe */
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);
  assert_int_equal(b.in_flight, 0);
  mnemo_breaker_free(&b);
}

/* The streak saturates at UINT32_MAX instead of wrapping to 0 (which would
 * make the longest outage look like a healthy dependency). Four billion
 * failures are not run: the counter is set just below its limit. */
static void test_consecutive_failures_saturate(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg = rate_config(MNEMO_WINDOW_COUNT, 100, 1.0, 100);
  (void)state;

  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  b.consecutive_failures = UINT32_MAX - 1;
  call_failed(&b, T0);
  assert_int_equal(b.consecutive_failures, UINT32_MAX);
  call_failed(&b, T0);
  assert_int_equal(b.consecutive_failures, UINT32_MAX);
  assert_int_equal(b.failures, 2);
  call_ok(&b, T0);
  assert_int_equal(b.consecutive_failures, 0);
  mnemo_breaker_free(&b);
}

/* Window sums past 32 bits (a TIME window's seconds hold up to 2^32 - 1
 * calls each) are reported clamped to UINT32_MAX, the rate from the full
 * sums. The sums are set by hand: billions of calls are not run. */
static void test_metrics_clamp_window_sums(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg = rate_config(MNEMO_WINDOW_TIME, 10, 0.9, 10);
  mnemo_breaker_window_metrics_t m;
  (void)state;

  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  b.window.buckets[b.window.head_sec % 10].calls = UINT32_MAX;
  b.window.buckets[(b.window.head_sec + 9) % 10].calls = 10;
  b.window.calls = (uint64_t)UINT32_MAX + 10;
  b.window.failures = (uint64_t)UINT32_MAX + 1;
  b.window.slow = (uint64_t)UINT32_MAX + 2;
  mnemo_breaker_metrics(&b, T0, &m);
  assert_int_equal(m.window_calls, UINT32_MAX);
  assert_int_equal(m.window_failures, UINT32_MAX);
  assert_int_equal(m.window_slow, UINT32_MAX);
  assert_true(m.failure_rate > 0.999999 && m.failure_rate < 1.0);
  mnemo_breaker_free(&b);
}

/* A transition callback may call back into the breaker (breaker.h), with
 * its own times: here the probe it runs on half-opening fails at a time
 * older than the recovery timeout. The acquire that half-opened it then
 * finds it OPEN and past its due time: refused with retry_after 0 (not a
 * wrapped-around figure), and the next look half-opens it. */
static void probe_fails_early(mnemo_breaker_t *b, mnemo_breaker_state_t from,
                              mnemo_breaker_state_t to, uint64_t now_ns,
                              void *data) {
  int *done = data;
  (void)from;
  if (to != MNEMO_BREAKER_HALF_OPEN || *done)
    return;
  *done = 1;
  assert_int_equal(mnemo_breaker_acquire(b, now_ns, NULL), 0);
  mnemo_breaker_on_failure(b, now_ns - 60 * SEC, 0);
}

static void test_retry_after_reopened_in_callback(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  mnemo_breaker_window_metrics_t m;
  uint64_t retry = 12345;
  int done = 0;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 1;
  assert_int_equal(mnemo_breaker_init(&b, "x", &cfg, T0), 0);
  call_failed(&b, T0);
  b.on_transition = probe_fails_early;
  b.data = &done;
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 30 * SEC, &retry),
                   MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(done, 1);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(b.opened_ns, T0 - 30 * SEC);
  assert_int_equal(retry, 0);
  b.on_transition = NULL;
  mnemo_breaker_metrics(&b, T0 + 30 * SEC, &m);
  assert_int_equal(m.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(m.retry_after_ns, 0);
  mnemo_breaker_free(&b);
}

/* restore: the remaining time is honoured, the callback sees it, bad
 * inputs change nothing. */
static uint64_t seen_retry_after;
static void note_retry_after(mnemo_breaker_t *b, mnemo_breaker_state_t from,
                             mnemo_breaker_state_t to, uint64_t now_ns,
                             void *data) {
  mnemo_breaker_window_metrics_t m;
  (void)from;
  (void)to;
  (void)data;
  mnemo_breaker_metrics(b, now_ns, &m);
  seen_retry_after = m.retry_after_ns;
}

static void test_restore(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  recorder_t r;
  uint64_t retry = 0;
  (void)state;

  mnemo_breaker_config_default(&cfg); /* recovery 30 s */
  assert_int_equal(mnemo_breaker_init(&b, "db", &cfg, T0), 0);
  watch(&b, &r);
  /* Opened 20 s ago by the previous process: 10 s left. */
  assert_int_equal(mnemo_breaker_restore(&b, MNEMO_BREAKER_OPEN, 10 * SEC, T0),
                   0);
  assert_int_equal(r.count, 1);
  assert_int_equal(r.from[0], MNEMO_BREAKER_CLOSED);
  assert_int_equal(r.to[0], MNEMO_BREAKER_OPEN);
  assert_true(r.state_was_updated);
  assert_int_equal(mnemo_breaker_acquire(&b, T0, &retry), MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(retry, 10 * SEC);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 10 * SEC - 1, &retry),
                   MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(retry, 1);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 10 * SEC, NULL), 0);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  /* Not CLOSED any more: refused, nothing changes. */
  assert_int_equal(mnemo_breaker_restore(&b, MNEMO_BREAKER_OPEN, SEC, T0),
                   MNEMO_EINVAL);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  mnemo_breaker_on_success(&b, T0 + 10 * SEC, 0);
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);

  /* Bad inputs on a CLOSED breaker: refused, no callback. */
  r.count = 0;
  assert_int_equal(mnemo_breaker_restore(&b, MNEMO_BREAKER_OPEN, 0, T0),
                   MNEMO_EINVAL);
  assert_int_equal(
      mnemo_breaker_restore(&b, MNEMO_BREAKER_OPEN, 30 * SEC + 1, T0),
      MNEMO_EINVAL);
  assert_int_equal(
      mnemo_breaker_restore(&b, MNEMO_BREAKER_OPEN, UINT64_MAX, T0),
      MNEMO_EINVAL);
  assert_int_equal(mnemo_breaker_restore(&b, MNEMO_BREAKER_CLOSED, SEC, T0),
                   MNEMO_EINVAL);
  assert_int_equal(mnemo_breaker_restore(&b, (mnemo_breaker_state_t)7, SEC, T0),
                   MNEMO_EINVAL);
  assert_int_equal(r.count, 0);
  assert_int_equal(b.state, MNEMO_BREAKER_CLOSED);

  /* The whole recovery time left; the callback sees retry_after. */
  b.on_transition = note_retry_after;
  assert_int_equal(
      mnemo_breaker_restore(&b, MNEMO_BREAKER_OPEN, 30 * SEC, T0 + 100 * SEC),
      0);
  assert_int_equal(seen_retry_after, 30 * SEC);
  mnemo_breaker_reset(&b, T0 + 100 * SEC);
  assert_int_equal(
      mnemo_breaker_restore(&b, MNEMO_BREAKER_OPEN, 3 * SEC, T0 + 100 * SEC),
      0);
  assert_int_equal(seen_retry_after, 3 * SEC);
  mnemo_breaker_reset(&b, T0 + 100 * SEC);

  /* HALF_OPEN: probes bounded at once. */
  b.on_transition = NULL;
  assert_int_equal(
      mnemo_breaker_restore(&b, MNEMO_BREAKER_HALF_OPEN, 0, T0 + 200 * SEC), 0);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 200 * SEC, NULL), 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 200 * SEC, NULL),
                   MNEMO_ECIRCUIT_OPEN);
  mnemo_breaker_on_failure(&b, T0 + 200 * SEC, 0);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_free(&b);

  /* A monotonic clock younger than the time already spent open: opened_ns
   * clamps at 0, it stays open until recovery_timeout, never shorter. */
  assert_int_equal(mnemo_breaker_init(&b, "young", &cfg, 5 * SEC), 0);
  assert_int_equal(mnemo_breaker_restore(&b, MNEMO_BREAKER_OPEN, SEC, 5 * SEC),
                   0);
  assert_int_equal(b.opened_ns, 0);
  assert_int_equal(mnemo_breaker_acquire(&b, 6 * SEC, &retry),
                   MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(retry, 24 * SEC);
  mnemo_breaker_free(&b);
}

/* A call admitted while CLOSED that succeeds once the breaker has opened
 * decides nothing, and is counted apart: it says the trip may have come
 * early (the Lua side warns once per open period). */
static void test_success_while_open_counted(void **state) {
  mnemo_breaker_t b;
  mnemo_breaker_config_t cfg;
  (void)state;

  mnemo_breaker_config_default(&cfg);
  assert_int_equal(mnemo_breaker_init(&b, "late", &cfg, T0), 0);
  assert_int_equal(mnemo_breaker_acquire(&b, T0, NULL), 0); /* the slow one */
  outcomes(&b, T0, "FFFFF");
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  mnemo_breaker_on_success(&b, T0 + MS, 0);
  assert_int_equal(b.state, MNEMO_BREAKER_OPEN);
  assert_int_equal(b.successes_while_open, 1);
  /* A failure ending while open is not counted there. */
  assert_int_equal(mnemo_breaker_acquire(&b, T0 + 40 * SEC, NULL), 0);
  assert_int_equal(b.state, MNEMO_BREAKER_HALF_OPEN);
  mnemo_breaker_on_success(&b, T0 + 40 * SEC, 0);
  assert_int_equal(b.successes_while_open, 1);
  mnemo_breaker_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_open_half_open_close),
      cmocka_unit_test(test_success_resets_consecutive),
      cmocka_unit_test(test_rate_count_window),
      cmocka_unit_test(test_minimum_calls_above_count_window),
      cmocka_unit_test(test_time_window_forgets),
      cmocka_unit_test(test_slow_calls),
      cmocka_unit_test(test_ignored),
      cmocka_unit_test(test_transitions),
      cmocka_unit_test(test_callback_reentry),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_force_half_open),
      cmocka_unit_test(test_metrics),
      cmocka_unit_test(test_straggler_in_half_open),
      cmocka_unit_test(test_straggler_probe),
      cmocka_unit_test(test_ignored_with_straggler),
      cmocka_unit_test(test_outcomes_in_open_and_after_reset),
      cmocka_unit_test(test_reconfigure_count_window),
      cmocka_unit_test(test_reconfigure_time_window),
      cmocka_unit_test(test_reconfigure_invalid_changes_nothing),
      cmocka_unit_test(test_validation),
      cmocka_unit_test(test_huge_recovery_timeout),
      cmocka_unit_test(test_state_names),
      cmocka_unit_test(test_validation_buffer_edges),
      cmocka_unit_test(test_reconfigure_without_window),
      cmocka_unit_test(test_reconfigure_time_window_near_zero),
      cmocka_unit_test(test_window_out_of_memory),
      cmocka_unit_test(test_duration_longer_than_clock),
      cmocka_unit_test(test_consecutive_failures_saturate),
      cmocka_unit_test(test_metrics_clamp_window_sums),
      cmocka_unit_test(test_retry_after_reopened_in_callback),
      cmocka_unit_test(test_restore),
      cmocka_unit_test(test_success_while_open_counted),
  };
  return cmocka_run_group_tests_name("breaker", tests, NULL, NULL);
}
