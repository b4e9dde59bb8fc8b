/* Deadlines on the virtual clock: expiry, nesting (min), shields, tokens. */
#include "testing.h"

#include "deadline.h"

static int expirations;

static void count_expiry(mnemo_deadline_t *d) {
  (void)d;
  expirations++;
}

static void setup(mnemo_clock_t *clock, mnemo_timers_t *timers) {
  mnemo_clock_init(clock, NULL);
  mnemo_clock_set_virtual(clock, 1);
  assert_int_equal(mnemo_timers_init(timers, clock, NULL), 0);
  expirations = 0;
}

static void test_expires_and_cancels_token(void **state) {
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  mnemo_deadline_t d;
  (void)state;

  setup(&clock, &timers);
  mnemo_deadline_enter(&d, &timers, NULL, 2 * MNEMO_NS_PER_SEC, count_expiry,
                       NULL);
  assert_int_equal(mnemo_deadline_remaining(&d, clock.virtual_ns),
                   2 * MNEMO_NS_PER_SEC);
  mnemo_timers_advance(&timers, MNEMO_NS_PER_SEC);
  assert_false(mnemo_cancel_token_is_cancelled(&d.token));
  mnemo_timers_advance(&timers, MNEMO_NS_PER_SEC);
  assert_true(d.expired);
  assert_true(mnemo_cancel_token_is_cancelled(&d.token));
  assert_int_equal(expirations, 1);
  assert_int_equal(mnemo_deadline_remaining(&d, clock.virtual_ns), 0);
  mnemo_deadline_leave(&d);
  mnemo_deadline_leave(&d); /* twice is fine */
  mnemo_timers_close(&timers);
}

static void test_inner_clamped_to_outer(void **state) {
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  mnemo_deadline_t outer, inner, short_inner;
  (void)state;

  setup(&clock, &timers);
  mnemo_deadline_enter(&outer, &timers, NULL, 30 * MNEMO_NS_PER_SEC, NULL,
                       NULL);
  mnemo_timers_advance(&timers, 25 * MNEMO_NS_PER_SEC);
  mnemo_deadline_enter(&inner, &timers, &outer, 10 * MNEMO_NS_PER_SEC,
                       count_expiry, NULL);
  assert_int_equal(inner.due_ns, outer.due_ns);
  assert_int_equal(mnemo_deadline_remaining(&inner, clock.virtual_ns),
                   5 * MNEMO_NS_PER_SEC);
  mnemo_deadline_enter(&short_inner, &timers, &outer, MNEMO_NS_PER_SEC,
                       count_expiry, NULL);
  assert_true(short_inner.due_ns < outer.due_ns);
  mnemo_timers_advance(&timers, 5 * MNEMO_NS_PER_SEC);
  assert_true(inner.expired);
  assert_true(outer.expired);
  assert_int_equal(expirations, 2);
  mnemo_deadline_leave(&short_inner);
  mnemo_deadline_leave(&inner);
  mnemo_deadline_leave(&outer);
  mnemo_timers_close(&timers);
}

static void test_child_of_expired_starts_expired(void **state) {
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  mnemo_deadline_t outer, inner;
  (void)state;

  setup(&clock, &timers);
  mnemo_deadline_enter(&outer, &timers, NULL, MNEMO_NS_PER_SEC, NULL, NULL);
  mnemo_timers_advance(&timers, MNEMO_NS_PER_SEC);
  mnemo_deadline_enter(&inner, &timers, &outer, MNEMO_NS_PER_SEC, count_expiry,
                       NULL);
  assert_true(inner.expired);
  assert_true(mnemo_cancel_token_is_cancelled(&inner.token));
  assert_int_equal(mnemo_timers_count(&timers), 0);
  mnemo_deadline_leave(&inner);
  mnemo_deadline_leave(&outer);
  mnemo_timers_close(&timers);
}

static void test_shield_cuts_the_chain(void **state) {
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  mnemo_deadline_t outer, shield, inside;
  (void)state;

  setup(&clock, &timers);
  mnemo_deadline_enter(&outer, &timers, NULL, MNEMO_NS_PER_SEC, NULL, NULL);
  mnemo_deadline_enter_shield(&shield, &timers, &outer);
  mnemo_deadline_enter(&inside, &timers, &shield, 5 * MNEMO_NS_PER_SEC, NULL,
                       NULL);
  assert_true(inside.due_ns > outer.due_ns); /* not clamped by the outer */
  mnemo_timers_advance(&timers, 2 * MNEMO_NS_PER_SEC);
  assert_true(mnemo_deadline_is_expired(&outer));
  assert_false(mnemo_deadline_is_expired(&shield));
  assert_false(mnemo_deadline_is_expired(&inside));
  assert_int_equal(mnemo_deadline_remaining(&shield, clock.virtual_ns),
                   MNEMO_DEADLINE_NONE);
  mnemo_deadline_leave(&inside);
  mnemo_deadline_leave(&shield);
  mnemo_deadline_leave(&outer);
  mnemo_timers_close(&timers);
}

static void test_unbounded(void **state) {
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  mnemo_deadline_t d;
  (void)state;

  setup(&clock, &timers);
  mnemo_deadline_enter(&d, &timers, NULL, MNEMO_DEADLINE_NONE, count_expiry,
                       NULL);
  assert_int_equal(mnemo_timers_count(&timers), 0);
  mnemo_timers_advance(&timers, UINT64_MAX / 2);
  assert_false(d.expired);
  mnemo_deadline_leave(&d);
  mnemo_timers_close(&timers);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_expires_and_cancels_token),
      cmocka_unit_test(test_inner_clamped_to_outer),
      cmocka_unit_test(test_child_of_expired_starts_expired),
      cmocka_unit_test(test_shield_cuts_the_chain),
      cmocka_unit_test(test_unbounded),
  };
  return cmocka_run_group_tests_name("deadline", tests, NULL, NULL);
}
