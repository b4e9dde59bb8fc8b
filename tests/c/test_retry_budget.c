/* Retry budgets: ratio of retries to requests over a sliding window, the
 * floor, forgetting old counts, time jumps, reconfiguration. */
#include "testing.h"

#include <math.h>

#include "retry_budget.h"
#include "status.h"

#define SEC 1000000000ull
#define T0 (1000 * SEC) /* an arbitrary start, as from a monotonic clock */

static int retries_allowed(mnemo_retry_budget_t *b, uint64_t now, int tries) {
  int i, allowed = 0;

  for (i = 0; i < tries; i++)
    allowed += mnemo_retry_budget_try_retry(b, now);
  return allowed;
}

static void requests(mnemo_retry_budget_t *b, uint64_t now, int n) {
  int i;

  for (i = 0; i < n; i++)
    mnemo_retry_budget_on_request(b, now);
}

static void test_init_validates(void **state) {
  mnemo_retry_budget_t b;
  (void)state;

  assert_int_equal(mnemo_retry_budget_init(&b, 0.2, 3, 10 * SEC), 0);
  assert_true(b.ratio == 0.2);
  assert_int_equal(b.min_retries, 3);
  assert_int_equal(b.window_ns, 10 * SEC);
  assert_int_equal(b.total_requests + b.total_retries + b.total_denied, 0);
  assert_int_equal(mnemo_retry_budget_init(&b, 0, 0, 1), 0);
  assert_int_equal(mnemo_retry_budget_init(&b, 10, 0, 1), 0);
  assert_int_equal(mnemo_retry_budget_init(&b, -0.1, 3, SEC), MNEMO_EINVAL);
  assert_int_equal(mnemo_retry_budget_init(&b, 10.01, 3, SEC), MNEMO_EINVAL);
  assert_int_equal(mnemo_retry_budget_init(&b, NAN, 3, SEC), MNEMO_EINVAL);
  assert_int_equal(mnemo_retry_budget_init(&b, INFINITY, 3, SEC), MNEMO_EINVAL);
  assert_int_equal(mnemo_retry_budget_init(&b, 0.2, 3, 0), MNEMO_EINVAL);
}

static void test_ratio_limits_retries(void **state) {
  mnemo_retry_budget_t b;
  (void)state;

  assert_int_equal(mnemo_retry_budget_init(&b, 0.2, 3, 10 * SEC), 0);
  requests(&b, T0, 100);
  assert_int_equal(retries_allowed(&b, T0 + SEC, 20), 20);
  assert_false(mnemo_retry_budget_try_retry(&b, T0 + SEC));
  assert_false(mnemo_retry_budget_try_retry(&b, T0 + 2 * SEC));
  assert_int_equal(b.total_requests, 100);
  assert_int_equal(b.total_retries, 20);
  assert_int_equal(b.total_denied, 2);
  assert_int_equal(b.window_requests, 100);
  assert_int_equal(b.window_retries, 20);
  /* Five more requests earn one more retry. */
  requests(&b, T0 + 2 * SEC, 5);
  assert_int_equal(retries_allowed(&b, T0 + 2 * SEC, 3), 1);
}

static void test_floor_applies(void **state) {
  mnemo_retry_budget_t b;
  (void)state;

  assert_int_equal(mnemo_retry_budget_init(&b, 0.2, 3, 10 * SEC), 0);
  /* No requests at all: the floor of 3 per window. */
  assert_int_equal(retries_allowed(&b, T0, 5), 3);
  assert_int_equal(b.total_denied, 2);
  /* 10 requests: 0.2 * 10 = 2 < 3, still the floor. */
  assert_int_equal(mnemo_retry_budget_init(&b, 0.2, 3, 10 * SEC), 0);
  requests(&b, T0, 10);
  assert_int_equal(retries_allowed(&b, T0, 5), 3);
  /* A zero ratio and no floor: no retry ever. */
  assert_int_equal(mnemo_retry_budget_init(&b, 0, 0, 10 * SEC), 0);
  requests(&b, T0, 1000);
  assert_int_equal(retries_allowed(&b, T0, 5), 0);
}

static void test_ratio_rounding(void **state) {
  mnemo_retry_budget_t b;
  (void)state;

  /* 0.29 * 100 is 28.999999999999996 in doubles: still 29 retries. */
  assert_int_equal(mnemo_retry_budget_init(&b, 0.29, 0, 10 * SEC), 0);
  requests(&b, T0, 100);
  assert_int_equal(retries_allowed(&b, T0, 40), 29);
  /* A ratio above 1: more retries than requests. */
  assert_int_equal(mnemo_retry_budget_init(&b, 2.5, 0, 10 * SEC), 0);
  requests(&b, T0, 4);
  assert_int_equal(retries_allowed(&b, T0, 20), 10);
}

static void test_window_forgets(void **state) {
  mnemo_retry_budget_t b;
  (void)state;

  assert_int_equal(mnemo_retry_budget_init(&b, 0.2, 3, 10 * SEC), 0);
  requests(&b, T0, 100);
  assert_int_equal(retries_allowed(&b, T0, 30), 20);
  /* Still within the window: still exhausted. */
  assert_int_equal(retries_allowed(&b, T0 + 9 * SEC - 1, 1), 0);
  /* A window later everything is forgotten: only the floor is left. */
  assert_int_equal(retries_allowed(&b, T0 + 10 * SEC, 5), 3);
  assert_int_equal(b.window_requests, 0);
  assert_int_equal(b.window_retries, 3);
  assert_int_equal(b.total_requests, 100);
  assert_int_equal(b.total_retries, 23);
  assert_int_equal(b.total_denied, 10 + 1 + 2);
}

/* The window slides bucket by bucket: old requests stop counting one
 * bucket (window / 10) at a time. */
static void test_window_slides(void **state) {
  mnemo_retry_budget_t b;
  int i;
  (void)state;

  assert_int_equal(mnemo_retry_budget_init(&b, 1.0, 0, 10 * SEC), 0);
  for (i = 0; i < 10; i++) /* 10 requests in each 1 s bucket */
    requests(&b, T0 + (uint64_t)i * SEC, 10);
  assert_int_equal(b.window_requests, 100);
  mnemo_retry_budget_on_request(&b, T0 + 10 * SEC); /* first bucket gone */
  assert_int_equal(b.window_requests, 91);
  mnemo_retry_budget_on_request(&b, T0 + 13 * SEC + SEC / 2);
  assert_int_equal(b.window_requests, 92 - 30);
  assert_int_equal(retries_allowed(&b, T0 + 13 * SEC, 100), 62);
  /* Time going backwards counts in the current bucket. */
  mnemo_retry_budget_on_request(&b, T0);
  assert_int_equal(b.window_requests, 63);
  assert_int_equal(retries_allowed(&b, T0, 2), 1);
}

static void test_time_jumps(void **state) {
  mnemo_retry_budget_t b;
  uint64_t now = T0;
  int round;
  (void)state;

  assert_int_equal(mnemo_retry_budget_init(&b, 0.2, 3, 10 * SEC), 0);
  for (round = 0; round < 5; round++) {
    requests(&b, now, 50);
    assert_int_equal(retries_allowed(&b, now, 20), 10);
    assert_int_equal(b.window_requests, 50);
    /* Many windows later (and a huge jump) the count starts afresh. */
    now += round == 3 ? UINT64_MAX / 2 : 1000 * 10 * SEC + 1;
  }
  assert_int_equal(b.total_requests, 250);
  assert_int_equal(b.total_retries, 50);
  assert_int_equal(b.total_denied, 50);
  /* From time 0 and up to the end of time. */
  assert_int_equal(mnemo_retry_budget_init(&b, 0.2, 3, 10 * SEC), 0);
  requests(&b, 0, 10);
  assert_int_equal(retries_allowed(&b, 0, 5), 3);
  assert_int_equal(retries_allowed(&b, UINT64_MAX, 5), 3);
  assert_int_equal(b.window_requests, 0);
}

static void test_tiny_window(void **state) {
  mnemo_retry_budget_t b;
  (void)state;

  /* Shorter than the bucket count: buckets of 1 ns. */
  assert_int_equal(mnemo_retry_budget_init(&b, 0.5, 1, 3), 0);
  requests(&b, 100, 4);
  assert_int_equal(retries_allowed(&b, 100, 5), 2);
  assert_int_equal(retries_allowed(&b, 109, 5), 0);
  assert_int_equal(retries_allowed(&b, 110, 5), 1);
}

static void test_reconfigure(void **state) {
  mnemo_retry_budget_t b;
  (void)state;

  assert_int_equal(mnemo_retry_budget_init(&b, 0.2, 3, 10 * SEC), 0);
  requests(&b, T0, 100);
  assert_int_equal(retries_allowed(&b, T0, 30), 20);
  /* A higher ratio applies to the requests already counted. */
  assert_int_equal(mnemo_retry_budget_reconfigure(&b, 0.5, 3, 10 * SEC), 0);
  assert_int_equal(retries_allowed(&b, T0 + SEC, 50), 30);
  assert_int_equal(b.window_retries, 50);
  /* Bad arguments change nothing. */
  assert_int_equal(mnemo_retry_budget_reconfigure(&b, 11, 0, SEC),
                   MNEMO_EINVAL);
  assert_int_equal(mnemo_retry_budget_reconfigure(&b, 0.5, 0, 0), MNEMO_EINVAL);
  assert_true(b.ratio == 0.5);
  assert_int_equal(b.min_retries, 3);
  assert_int_equal(b.window_ns, 10 * SEC);

  /* A new window length keeps the counts in the window... */
  assert_int_equal(mnemo_retry_budget_reconfigure(&b, 0.5, 3, 60 * SEC), 0);
  assert_int_equal(retries_allowed(&b, T0 + 2 * SEC, 1), 0);
  assert_int_equal(b.window_requests, 100);
  assert_int_equal(b.window_retries, 50);
  requests(&b, T0 + 2 * SEC, 2);
  assert_int_equal(retries_allowed(&b, T0 + 2 * SEC, 5), 1);
  /* ...each old bucket now lasting a new one (6 s): the newest old bucket
   * became the current one, so its counts live a full new window. */
  assert_int_equal(retries_allowed(&b, T0 + 2 * SEC + 50 * SEC, 1), 0);
  assert_int_equal(b.window_requests, 102);
  assert_int_equal(retries_allowed(&b, T0 + 2 * SEC + 60 * SEC, 5), 3);
  assert_int_equal(b.window_requests, 0);
  assert_int_equal(b.total_requests, 102);

  /* A shorter window too. */
  assert_int_equal(mnemo_retry_budget_init(&b, 0.2, 0, 10 * SEC), 0);
  requests(&b, T0, 100);
  assert_int_equal(mnemo_retry_budget_reconfigure(&b, 0.2, 0, SEC), 0);
  assert_int_equal(retries_allowed(&b, T0 + SEC / 2, 30), 20);
  assert_int_equal(retries_allowed(&b, T0 + SEC / 2 + SEC, 1), 0);
  mnemo_retry_budget_on_request(&b, T0 + SEC / 2 + SEC);
  assert_int_equal(b.window_requests, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_validates),
      cmocka_unit_test(test_ratio_limits_retries),
      cmocka_unit_test(test_floor_applies),
      cmocka_unit_test(test_ratio_rounding),
      cmocka_unit_test(test_window_forgets),
      cmocka_unit_test(test_window_slides),
      cmocka_unit_test(test_time_jumps),
      cmocka_unit_test(test_tiny_window),
      cmocka_unit_test(test_reconfigure),
  };
  return cmocka_run_group_tests_name("retry_budget", tests, NULL, NULL);
}
