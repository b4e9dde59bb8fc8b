/* Timers on the virtual clock (deterministic) and on a real uv loop. */
#include "testing.h"

#include "timer.h"

typedef struct recorder {
  int order[16];
  uint64_t fired_at[16];
  int count;
  mnemo_clock_t *clock;
} recorder_t;

typedef struct tagged_timer {
  mnemo_timer_t timer;
  int tag;
  recorder_t *rec;
} tagged_timer_t;

static void record(mnemo_timer_t *timer) {
  tagged_timer_t *t = (tagged_timer_t *)timer;
  t->rec->order[t->rec->count] = t->tag;
  t->rec->fired_at[t->rec->count] = mnemo_clock_now(t->rec->clock);
  t->rec->count++;
}

static void setup_virtual(mnemo_clock_t *clock, mnemo_timers_t *timers) {
  mnemo_clock_init(clock, NULL);
  mnemo_clock_set_virtual(clock, 1);
  clock->virtual_ns = 1000;
  assert_int_equal(mnemo_timers_init(timers, clock, NULL), 0);
}

static void test_virtual_fires_in_order(void **state) {
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  recorder_t rec = {.count = 0, .clock = &clock};
  tagged_timer_t t[4];
  uint64_t delays[4] = {300, 100, 200, 100};
  int i;
  (void)state;

  setup_virtual(&clock, &timers);
  for (i = 0; i < 4; i++) {
    t[i].tag = i;
    t[i].rec = &rec;
    mnemo_timer_init(&t[i].timer, record, NULL);
    mnemo_timer_start(&timers, &t[i].timer, delays[i]);
  }
  assert_int_equal(mnemo_timers_advance(&timers, 99), 0);
  assert_int_equal(rec.count, 0);
  assert_int_equal(mnemo_timers_advance(&timers, 1000), 4);
  /* Due-time order; equal due times in start order. */
  assert_int_equal(rec.order[0], 1);
  assert_int_equal(rec.order[1], 3);
  assert_int_equal(rec.order[2], 2);
  assert_int_equal(rec.order[3], 0);
  /* Each fires with the clock at its own due time. */
  assert_int_equal(rec.fired_at[0], 1100);
  assert_int_equal(rec.fired_at[2], 1200);
  assert_int_equal(rec.fired_at[3], 1300);
  assert_int_equal(mnemo_clock_now(&clock), 1000 + 99 + 1000);
  mnemo_timers_close(&timers);
}

static void test_stop_and_restart(void **state) {
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  recorder_t rec = {.count = 0, .clock = &clock};
  tagged_timer_t a = {.tag = 1, .rec = &rec};
  (void)state;

  setup_virtual(&clock, &timers);
  mnemo_timer_init(&a.timer, record, NULL);
  mnemo_timer_start(&timers, &a.timer, 100);
  assert_true(mnemo_timer_is_pending(&a.timer));
  mnemo_timer_stop(&a.timer);
  assert_false(mnemo_timer_is_pending(&a.timer));
  mnemo_timer_stop(&a.timer); /* stopping twice is harmless */
  assert_int_equal(mnemo_timers_advance(&timers, 1000), 0);

  mnemo_timer_start(&timers, &a.timer, 50);
  mnemo_timer_start(&timers, &a.timer, 500); /* restart moves it */
  assert_int_equal(mnemo_timers_count(&timers), 1);
  assert_int_equal(mnemo_timers_advance(&timers, 499), 0);
  assert_int_equal(mnemo_timers_advance(&timers, 1), 1);
  mnemo_timers_close(&timers);
}

/* A callback that starts another timer which is due within the same
 * advance: it fires in the same call, after the current one. */
typedef struct chain {
  mnemo_timer_t timer;
  mnemo_timers_t *timers;
  int remaining;
  int fired;
} chain_t;

static void chain_step(mnemo_timer_t *timer) {
  chain_t *c = (chain_t *)timer;
  c->fired++;
  if (--c->remaining > 0)
    mnemo_timer_start(c->timers, &c->timer, 10);
}

static void test_callback_rearms_within_advance(void **state) {
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  chain_t c;
  (void)state;

  setup_virtual(&clock, &timers);
  c.timers = &timers;
  c.remaining = 5;
  c.fired = 0;
  mnemo_timer_init(&c.timer, chain_step, NULL);
  mnemo_timer_start(&timers, &c.timer, 10);
  assert_int_equal(mnemo_timers_advance(&timers, 35), 3);
  assert_int_equal(c.fired, 3);
  assert_int_equal(mnemo_timers_advance(&timers, 100), 2);
  assert_false(mnemo_timer_is_pending(&c.timer));
  mnemo_timers_close(&timers);
}

static void test_close_drops_pending(void **state) {
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  recorder_t rec = {.count = 0, .clock = &clock};
  tagged_timer_t a = {.tag = 1, .rec = &rec}, b = {.tag = 2, .rec = &rec};
  (void)state;

  setup_virtual(&clock, &timers);
  mnemo_timer_init(&a.timer, record, NULL);
  mnemo_timer_init(&b.timer, record, NULL);
  mnemo_timer_start(&timers, &a.timer, 1);
  mnemo_timer_start(&timers, &b.timer, 2);
  mnemo_timers_close(&timers);
  assert_false(mnemo_timer_is_pending(&a.timer));
  assert_false(mnemo_timer_is_pending(&b.timer));
  assert_int_equal(rec.count, 0);
}

static void test_saturating_seconds(void **state) {
  (void)state;
  assert_int_equal(mnemo_seconds_to_ns(-1), 0);
  assert_int_equal(mnemo_seconds_to_ns(0.0 / 0.0), 0);
  assert_int_equal(mnemo_seconds_to_ns(1.5), 1500000000ull);
  assert_int_equal(mnemo_seconds_to_ns(1e30), UINT64_MAX);
}

/* Real mode: one uv timer drives the heap; the loop exits once the heap is
 * empty, and no timer fires before its due time. */
static void test_real_loop(void **state) {
  uv_loop_t loop;
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  recorder_t rec = {.count = 0, .clock = &clock};
  tagged_timer_t a = {.tag = 1, .rec = &rec}, b = {.tag = 2, .rec = &rec};
  uint64_t start;
  (void)state;

  assert_int_equal(uv_loop_init(&loop), 0);
  mnemo_clock_init(&clock, &loop);
  assert_int_equal(mnemo_timers_init(&timers, &clock, &loop), 0);
  mnemo_timer_init(&a.timer, record, NULL);
  mnemo_timer_init(&b.timer, record, NULL);
  start = mnemo_clock_now(&clock);
  mnemo_timer_start(&timers, &a.timer, 20 * MNEMO_NS_PER_MS);
  mnemo_timer_start(&timers, &b.timer, 5 * MNEMO_NS_PER_MS);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(rec.count, 2);
  assert_int_equal(rec.order[0], 2);
  assert_int_equal(rec.order[1], 1);
  /* A millisecond of slack: the loop's cached time has 1 ms resolution. */
  assert_true(rec.fired_at[1] - start >= 19 * MNEMO_NS_PER_MS);
  mnemo_timers_close(&timers);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Weak timers do not keep the loop alive; a strong one added later does. */
static void test_weak_timers(void **state) {
  uv_loop_t loop;
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  recorder_t rec = {.count = 0, .clock = &clock};
  tagged_timer_t weak = {.tag = 1, .rec = &rec};
  tagged_timer_t strong = {.tag = 2, .rec = &rec};
  (void)state;

  assert_int_equal(uv_loop_init(&loop), 0);
  mnemo_clock_init(&clock, &loop);
  assert_int_equal(mnemo_timers_init(&timers, &clock, &loop), 0);
  mnemo_timer_init(&weak.timer, record, NULL);
  weak.timer.weak = 1;
  mnemo_timer_start(&timers, &weak.timer, 5 * MNEMO_NS_PER_MS);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* exits at once */
  assert_int_equal(rec.count, 0);
  mnemo_timer_init(&strong.timer, record, NULL);
  mnemo_timer_start(&timers, &strong.timer, 10 * MNEMO_NS_PER_MS);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(rec.count, 2); /* the weak one fired on the way */
  assert_int_equal(rec.order[0], 1);
  assert_int_equal(timers.weak_count, 0);
  mnemo_timers_close(&timers);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_virtual_fires_in_order),
      cmocka_unit_test(test_stop_and_restart),
      cmocka_unit_test(test_callback_rearms_within_advance),
      cmocka_unit_test(test_close_drops_pending),
      cmocka_unit_test(test_saturating_seconds),
      cmocka_unit_test(test_real_loop),
      cmocka_unit_test(test_weak_timers),
  };
  return cmocka_run_group_tests_name("timer", tests, NULL, NULL);
}
