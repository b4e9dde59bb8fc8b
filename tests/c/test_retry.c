/* The PRNG, and retry policies: should-retry decisions, backoff delays for
 * each jitter, validation messages. Fixed seeds: deterministic. */
#include "testing.h"

#include <math.h>
#include <string.h>

#include "retry.h"
#include "status.h"

#define MS 1000000u
#define SEC 1000000000u
#define DRAWS 100000

/* rng */

static void test_rng_same_seed_same_sequence(void **state) {
  mnemo_rng_t a, b, c;
  int i, differ = 0;
  (void)state;

  mnemo_rng_seed(&a, 42);
  mnemo_rng_seed(&b, 42);
  mnemo_rng_seed(&c, 43);
  for (i = 0; i < 1000; i++) {
    uint64_t x = mnemo_rng_next(&a);
    assert_int_equal(x, mnemo_rng_next(&b));
    differ += x != mnemo_rng_next(&c);
  }
  assert_true(differ > 990);
}

/* Reference xoshiro256** outputs after splitmix64 seeding (computed with an
 * independent implementation): the sequence is the same everywhere. */
static void test_rng_known_values(void **state) {
  mnemo_rng_t r;
  (void)state;

  mnemo_rng_seed(&r, 0);
  assert_int_equal(mnemo_rng_next(&r), 0x99ec5f36cb75f2b4u);
  assert_int_equal(mnemo_rng_next(&r), 0xbf6e1f784956452au);
  assert_int_equal(mnemo_rng_next(&r), 0x1a5f849d4933e6e0u);
  mnemo_rng_seed(&r, 42);
  assert_int_equal(mnemo_rng_next(&r), 0x15780b2e0c2ec716u);
  assert_int_equal(mnemo_rng_next(&r), 0x6104d9866d113a7eu);
  assert_int_equal(mnemo_rng_next(&r), 0xae17533239e499a1u);
}

static void test_rng_uniform(void **state) {
  mnemo_rng_t r;
  double sum = 0, lo = 1, hi = 0;
  int i;
  (void)state;

  mnemo_rng_seed(&r, 7);
  for (i = 0; i < DRAWS; i++) {
    double u = mnemo_rng_uniform(&r);
    assert_true(u >= 0.0 && u < 1.0);
    assert_true(u == ldexp(floor(ldexp(u, 53)), -53)); /* 53-bit grid */
    sum += u;
    lo = u < lo ? u : lo;
    hi = u > hi ? u : hi;
  }
  assert_true(fabs(sum / DRAWS - 0.5) < 0.005);
  assert_true(lo < 0.001 && hi > 0.999);
}

static void test_rng_range_inclusive(void **state) {
  mnemo_rng_t r;
  int seen[5] = {0};
  uint64_t big_lo = UINT64_MAX / 2, big_hi = UINT64_MAX;
  int i;
  (void)state;

  mnemo_rng_seed(&r, 1);
  for (i = 0; i < 10000; i++) {
    uint64_t x = mnemo_rng_range(&r, 5, 9);
    assert_true(x >= 5 && x <= 9);
    seen[x - 5]++;
  }
  for (i = 0; i < 5; i++) /* both ends hit, and roughly evenly */
    assert_true(seen[i] > 1800 && seen[i] < 2200);

  assert_int_equal(mnemo_rng_range(&r, 17, 17), 17);
  assert_int_equal(mnemo_rng_range(&r, 9, 5), 9); /* lo > hi: lo */
  for (i = 0; i < 1000; i++) {
    /* n = 2^63 + 1: the worst case for rejection. */
    uint64_t x = mnemo_rng_range(&r, big_lo, big_hi);
    assert_true(x >= big_lo);
  }
  mnemo_rng_range(&r, 0, UINT64_MAX); /* full range: no n to reduce by */
  seen[0] = seen[1] = 0;
  for (i = 0; i < 1000; i++) {
    uint64_t x = mnemo_rng_range(&r, 0, 1);
    assert_true(x <= 1);
    seen[x]++;
  }
  assert_true(seen[0] > 400 && seen[1] > 400);
}

/* jitter names */

static void test_jitter_names(void **state) {
  static const char *const names[] = {"none", "full", "equal", "decorrelated",
                                      "proportional"};
  mnemo_jitter_t j;
  int i;
  (void)state;

  assert_int_equal(MNEMO_JITTER_COUNT, 5);
  for (i = 0; i < 5; i++) {
    assert_string_equal(mnemo_jitter_name((mnemo_jitter_t)i), names[i]);
    j = MNEMO_JITTER_COUNT;
    assert_int_equal(mnemo_jitter_parse(names[i], &j), 0);
    assert_int_equal(j, i);
  }
  assert_int_equal(mnemo_jitter_parse("Full", &j), MNEMO_EINVAL);
  assert_int_equal(mnemo_jitter_parse("", &j), MNEMO_EINVAL);
  assert_int_equal(mnemo_jitter_parse("exponential", &j), MNEMO_EINVAL);
  assert_int_equal(mnemo_jitter_parse("proportionally", &j), MNEMO_EINVAL);
  assert_int_equal(mnemo_jitter_parse(NULL, &j), MNEMO_EINVAL);
  assert_string_equal(mnemo_jitter_name(MNEMO_JITTER_COUNT), "unknown");
}

/* should */

static void test_policy_default(void **state) {
  mnemo_retry_policy_t p;
  char err[64] = "junk";
  (void)state;

  mnemo_retry_policy_default(&p);
  assert_int_equal(p.max_attempts, 3);
  assert_int_equal(p.base_ns, 500 * MS);
  assert_int_equal(p.max_ns, 5ull * SEC);
  assert_true(p.multiplier == 2.0);
  assert_int_equal(p.jitter, MNEMO_JITTER_FULL);
  assert_int_equal(p.retry_on, MNEMO_EC_BIT(MNEMO_EC_CONNECTION) |
                                   MNEMO_EC_BIT(MNEMO_EC_TIMEOUT));
  assert_int_equal(p.never_retry, MNEMO_EC_BIT(MNEMO_EC_INVALID_INPUT) |
                                      MNEMO_EC_BIT(MNEMO_EC_CONSTRAINT) |
                                      MNEMO_EC_BIT(MNEMO_EC_AUTH) |
                                      MNEMO_EC_BIT(MNEMO_EC_NOT_FOUND));
  assert_int_equal(mnemo_retry_policy_validate(&p, err, sizeof(err)), 0);
  assert_string_equal(err, "");
}

static void test_should_retryable_and_limits(void **state) {
  mnemo_retry_policy_t p;
  (void)state;

  mnemo_retry_policy_default(&p);
  assert_true(mnemo_retry_should(&p, MNEMO_EC_CONNECTION, 1));
  assert_true(mnemo_retry_should(&p, MNEMO_EC_CONNECTION, 2));
  assert_false(mnemo_retry_should(&p, MNEMO_EC_CONNECTION, 3)); /* last */
  assert_false(mnemo_retry_should(&p, MNEMO_EC_CONNECTION, 4));
  assert_false(mnemo_retry_should(&p, MNEMO_EC_CONNECTION, UINT32_MAX));
  assert_true(mnemo_retry_should(&p, MNEMO_EC_TIMEOUT, 2));
  /* Not listed in on: not retried. */
  assert_false(mnemo_retry_should(&p, MNEMO_EC_DEADLOCK, 1));
  assert_false(mnemo_retry_should(&p, MNEMO_EC_HTTP_5XX, 1));
  assert_false(mnemo_retry_should(&p, MNEMO_EC_CIRCUIT_OPEN, 1));
  assert_false(mnemo_retry_should(&p, MNEMO_EC_BUSY, 1));

  p.max_attempts = 1; /* no retry at all */
  assert_false(mnemo_retry_should(&p, MNEMO_EC_CONNECTION, 1));

  p.max_attempts = 10;
  p.retry_on |= MNEMO_EC_BIT(MNEMO_EC_CIRCUIT_OPEN);
  assert_true(mnemo_retry_should(&p, MNEMO_EC_CIRCUIT_OPEN, 9));
  assert_false(mnemo_retry_should(&p, MNEMO_EC_CIRCUIT_OPEN, 10));
}

static void test_should_never_wins(void **state) {
  mnemo_retry_policy_t p;
  int c;
  (void)state;

  mnemo_retry_policy_default(&p);
  p.retry_on = MNEMO_EC_ALL;
  for (c = 0; c < MNEMO_EC_COUNT; c++) {
    int never = (MNEMO_RETRY_NEVER_DEFAULT & MNEMO_EC_BIT(c)) != 0;
    assert_int_equal(mnemo_retry_should(&p, (mnemo_error_class_t)c, 1), !never);
  }
  assert_false(mnemo_retry_should(&p, MNEMO_EC_AUTH, 1));
  assert_false(mnemo_retry_should(&p, MNEMO_EC_INVALID_INPUT, 1));
  assert_false(mnemo_retry_should(&p, MNEMO_EC_CONSTRAINT, 1));
  assert_false(mnemo_retry_should(&p, MNEMO_EC_NOT_FOUND, 1));
  /* An empty never list: everything in on is retried. */
  p.never_retry = 0;
  assert_true(mnemo_retry_should(&p, MNEMO_EC_AUTH, 1));
}

static void test_should_unknown(void **state) {
  mnemo_retry_policy_t p;
  (void)state;

  mnemo_retry_policy_default(&p);
  assert_false(mnemo_retry_should(&p, MNEMO_EC_UNKNOWN, 1));
  /* Out of range counts as unknown (and does not shift past 31 bits). */
  assert_false(mnemo_retry_should(&p, MNEMO_EC_COUNT, 1));
  assert_false(mnemo_retry_should(&p, (mnemo_error_class_t)40, 1));
  assert_false(mnemo_retry_should(&p, (mnemo_error_class_t)-1, 1));
  p.retry_on |= MNEMO_EC_BIT(MNEMO_EC_UNKNOWN);
  assert_true(mnemo_retry_should(&p, MNEMO_EC_UNKNOWN, 1));
  assert_true(mnemo_retry_should(&p, (mnemo_error_class_t)40, 1));
  p.never_retry |= MNEMO_EC_BIT(MNEMO_EC_UNKNOWN);
  assert_false(mnemo_retry_should(&p, MNEMO_EC_UNKNOWN, 1));
}

/* delay */

static void test_delay_exponential_and_cap(void **state) {
  mnemo_retry_policy_t p;
  static const uint64_t expect[] = {100 * MS, 100 * MS,  200 * MS, 400 * MS,
                                    800 * MS, 1000 * MS, 1000 * MS};
  uint32_t a;
  (void)state;

  mnemo_retry_policy_default(&p);
  p.jitter = MNEMO_JITTER_NONE;
  p.base_ns = 100 * MS;
  p.max_ns = 1 * SEC;
  for (a = 0; a < 7; a++) /* attempt 0 counts as 1 */
    assert_int_equal(mnemo_retry_delay(&p, a, 0, NULL), expect[a]);
  assert_int_equal(mnemo_retry_delay(&p, UINT32_MAX, 0, NULL), 1 * SEC);

  p.multiplier = 1.5;
  assert_int_equal(mnemo_retry_delay(&p, 2, 0, NULL), 150 * MS);
  assert_int_equal(mnemo_retry_delay(&p, 3, 0, NULL), 225 * MS);
  p.multiplier = 1.0;
  assert_int_equal(mnemo_retry_delay(&p, 50, 0, NULL), 100 * MS);
  assert_int_equal(mnemo_retry_delay(&p, UINT32_MAX, 0, NULL), 100 * MS);

  /* A NULL rng means no jitter, whatever the policy says. */
  p.multiplier = 2.0;
  p.jitter = MNEMO_JITTER_FULL;
  assert_int_equal(mnemo_retry_delay(&p, 3, 0, NULL), 400 * MS);
}

static void test_delay_no_overflow(void **state) {
  mnemo_retry_policy_t p;
  mnemo_rng_t r;
  (void)state;

  mnemo_retry_policy_default(&p);
  p.jitter = MNEMO_JITTER_NONE;
  p.multiplier = 10.0;
  p.base_ns = 1 * SEC;
  p.max_ns = 60ull * SEC;
  assert_int_equal(mnemo_retry_delay(&p, 2, 0, NULL), 10ull * SEC);
  assert_int_equal(mnemo_retry_delay(&p, 3, 0, NULL), 60ull * SEC);
  assert_int_equal(mnemo_retry_delay(&p, 1000, 0, NULL), 60ull * SEC);
  assert_int_equal(mnemo_retry_delay(&p, UINT32_MAX, 0, NULL), 60ull * SEC);
  /* Even with no real cap: 10^999 s saturates at max. */
  p.max_ns = UINT64_MAX;
  assert_int_equal(mnemo_retry_delay(&p, 1000, 0, NULL), UINT64_MAX);
  assert_int_equal(mnemo_retry_delay(&p, 10, 0, NULL), 1000000000ull * SEC);

  mnemo_rng_seed(&r, 5);
  p.jitter = MNEMO_JITTER_EQUAL;
  assert_true(mnemo_retry_delay(&p, 1000, 0, &r) >= UINT64_MAX / 2);
  p.jitter = MNEMO_JITTER_DECORRELATED;
  assert_true(mnemo_retry_delay(&p, 1, UINT64_MAX - 1, &r) >= p.base_ns);
}

static void test_delay_full_jitter(void **state) {
  mnemo_retry_policy_t p;
  mnemo_rng_t r;
  uint64_t d = 2 * SEC, lo = UINT64_MAX, hi = 0;
  double sum = 0;
  int i;
  (void)state;

  mnemo_retry_policy_default(&p); /* full jitter; attempt 3: d = 2 s */
  mnemo_rng_seed(&r, 12345);
  for (i = 0; i < DRAWS; i++) {
    uint64_t x = mnemo_retry_delay(&p, 3, 0, &r);
    assert_true(x <= d);
    sum += (double)x;
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
  }
  assert_true(fabs(sum / DRAWS - d / 2.0) < 0.02 * (d / 2.0));
  assert_true(lo < d / 100 && hi > d - d / 100); /* spread over [0, d] */
}

static void test_delay_equal_jitter(void **state) {
  mnemo_retry_policy_t p;
  mnemo_rng_t r;
  uint64_t d = 1 * SEC, lo = UINT64_MAX, hi = 0;
  double sum = 0;
  int i;
  (void)state;

  mnemo_retry_policy_default(&p);
  p.jitter = MNEMO_JITTER_EQUAL;
  mnemo_rng_seed(&r, 999);
  for (i = 0; i < DRAWS; i++) {
    uint64_t x = mnemo_retry_delay(&p, 2, 0, &r); /* d = 1 s */
    assert_true(x >= d / 2 && x <= d);
    sum += (double)x;
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
  }
  assert_true(fabs(sum / DRAWS - 0.75 * d) < 0.02 * (0.75 * d));
  assert_true(lo < d / 2 + d / 100 && hi > d - d / 100);

  /* An odd d can still be reached: d = 3 ns gives 1..3. */
  p.base_ns = 3;
  p.max_ns = 3;
  lo = UINT64_MAX;
  hi = 0;
  for (i = 0; i < 1000; i++) {
    uint64_t x = mnemo_retry_delay(&p, 1, 0, &r);
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
  }
  assert_int_equal(lo, 1);
  assert_int_equal(hi, 3);
}

static void test_delay_decorrelated_jitter(void **state) {
  mnemo_retry_policy_t p;
  mnemo_rng_t r;
  uint64_t prev = 0, hi = 0;
  int i, capped = 0;
  (void)state;

  mnemo_retry_policy_default(&p); /* base 0.5 s, max 5 s */
  p.jitter = MNEMO_JITTER_DECORRELATED;
  mnemo_rng_seed(&r, 2024);
  /* The first retry draws from [base, 3 * base]. */
  for (i = 0; i < 1000; i++) {
    uint64_t x = mnemo_retry_delay(&p, 1, 0, &r);
    assert_true(x >= p.base_ns && x <= 3 * p.base_ns);
    hi = x > hi ? x : hi;
  }
  assert_true(hi > 3 * p.base_ns - p.base_ns / 50);

  /* A chain, each delay fed back as prev: within [base, max], never more
   * than 3 times the previous one. */
  for (i = 0; i < DRAWS; i++) {
    uint64_t x = mnemo_retry_delay(&p, (uint32_t)(i % 5) + 1, prev, &r);
    assert_true(x >= p.base_ns && x <= p.max_ns);
    if (prev != 0)
      assert_true(x <= 3 * prev);
    capped += x == p.max_ns;
    prev = x;
  }
  assert_true(capped > 0);

  /* A previous delay below base still draws from [base, ...]. */
  assert_int_equal(mnemo_retry_delay(&p, 1, 1, &r), p.base_ns);
}

/* Proportional jitter: d * U(0.75, 1.25), within [ceil(0.75 d), floor(1.25
 * d)], mean d, spread over the whole range. */
static void test_delay_proportional_jitter(void **state) {
  mnemo_retry_policy_t p;
  mnemo_rng_t r;
  uint64_t d = 2 * SEC, lo = UINT64_MAX, hi = 0;
  double sum = 0;
  int i;
  (void)state;

  mnemo_retry_policy_default(&p); /* base 0.5 s, max 5 s; attempt 3: 2 s */
  p.jitter = MNEMO_JITTER_PROPORTIONAL;
  mnemo_rng_seed(&r, 4242);
  for (i = 0; i < DRAWS; i++) {
    uint64_t x = mnemo_retry_delay(&p, 3, 0, &r);
    assert_true(x >= d - d / 4 && x <= d + d / 4);
    sum += (double)x;
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
  }
  assert_true(fabs(sum / DRAWS - (double)d) < 0.005 * (double)d);
  assert_true(lo < d * 3 / 4 + d / 200 && hi > d * 5 / 4 - d / 200);

  /* Each attempt jitters its own exponential delay: 0.5, 1, 2, 4 s. */
  for (i = 1; i <= 4; i++) {
    uint64_t e = (500ull * MS) << (i - 1);
    int k;
    for (k = 0; k < 1000; k++) {
      uint64_t x = mnemo_retry_delay(&p, (uint32_t)i, 0, &r);
      assert_true(x >= e - e / 4 && x <= e + e / 4);
    }
  }

  /* Tiny delays: 3 ns gives 3 - 0 .. 3 + 0 = 3; 4 ns gives 3..5. */
  p.base_ns = 4;
  p.max_ns = 100;
  lo = UINT64_MAX;
  hi = 0;
  for (i = 0; i < 1000; i++) {
    uint64_t x = mnemo_retry_delay(&p, 1, 0, &r);
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
  }
  assert_int_equal(lo, 3);
  assert_int_equal(hi, 5);
  p.base_ns = 3;
  assert_int_equal(mnemo_retry_delay(&p, 1, 0, &r), 3);
}

/* The same seed gives the same delays; another seed others. */
static void test_delay_proportional_seeded(void **state) {
  mnemo_retry_policy_t p;
  mnemo_rng_t a, b, c;
  int i, differ = 0;
  (void)state;

  mnemo_retry_policy_default(&p);
  p.jitter = MNEMO_JITTER_PROPORTIONAL;
  mnemo_rng_seed(&a, 77);
  mnemo_rng_seed(&b, 77);
  mnemo_rng_seed(&c, 78);
  for (i = 0; i < 1000; i++) {
    uint32_t attempt = (uint32_t)(i % 4) + 1;
    uint64_t x = mnemo_retry_delay(&p, attempt, 0, &a);
    assert_int_equal(x, mnemo_retry_delay(&p, attempt, 0, &b));
    differ += x != mnemo_retry_delay(&p, attempt, 0, &c);
  }
  assert_true(differ > 990);
  /* Deterministic across runs and platforms too (rng_known_values): the
   * first draw of seed 77 for d = 0.5 s. */
  mnemo_rng_seed(&a, 77);
  mnemo_rng_seed(&b, 77);
  assert_int_equal(mnemo_retry_delay(&p, 1, 0, &a),
                   mnemo_rng_range(&b, 375 * MS, 625 * MS));
}

/* The cap applies after the jitter: 1.25 * max is never waited. At the cap
 * the draws spread over [0.75 max, max] (cut, not clamped: max itself is
 * one value among many, not a pile). Below the cap only the part of d *
 * 1.25 above max is cut. */
static void test_delay_proportional_cap(void **state) {
  mnemo_retry_policy_t p;
  mnemo_rng_t r;
  uint64_t max = 5ull * SEC, lo = UINT64_MAX, hi = 0, d;
  int i, at_max = 0;
  double sum = 0;
  (void)state;

  mnemo_retry_policy_default(&p); /* max 5 s */
  p.jitter = MNEMO_JITTER_PROPORTIONAL;
  mnemo_rng_seed(&r, 31337);
  for (i = 0; i < DRAWS; i++) {
    uint64_t x = mnemo_retry_delay(&p, 20, 0, &r); /* d = max */
    assert_true(x >= max - max / 4 && x <= max);
    at_max += x == max;
    sum += (double)x;
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
  }
  assert_true(at_max < 10);
  assert_true(fabs(sum / DRAWS - 0.875 * (double)max) < 0.005 * (double)max);
  assert_true(lo < max * 3 / 4 + max / 200 && hi > max - max / 200);

  /* attempt 5: d = 0.5 * 2^4 = 8 s, capped to 5 s before the jitter too. */
  assert_true(mnemo_retry_delay(&p, 5, 0, &r) <= max);
  p.max_ns = 4500ull * MS; /* d = 4 s: [3 s, 4.5 s] */
  d = 4ull * SEC;
  lo = UINT64_MAX;
  hi = 0;
  for (i = 0; i < DRAWS; i++) {
    uint64_t x = mnemo_retry_delay(&p, 4, 0, &r);
    assert_true(x >= d - d / 4 && x <= p.max_ns);
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
  }
  assert_true(lo < d * 3 / 4 + d / 200 && hi > p.max_ns - d / 200);

  /* No overflow near UINT64_MAX: d + d/4 saturates, max still bounds. */
  p.base_ns = UINT64_MAX - 10;
  p.max_ns = UINT64_MAX;
  for (i = 0; i < 100; i++)
    assert_true(mnemo_retry_delay(&p, 1, 0, &r) >=
                (UINT64_MAX - 10) - (UINT64_MAX - 10) / 4);
}

/* validate */

static void test_validate_each_problem(void **state) {
  mnemo_retry_policy_t p;
  char err[256];
  (void)state;

  mnemo_retry_policy_default(&p);
  p.max_attempts = 0;
  assert_int_equal(mnemo_retry_policy_validate(&p, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, "attempts: expected integer >= 1, got 0");

  mnemo_retry_policy_default(&p);
  p.base_ns = 0;
  assert_int_equal(mnemo_retry_policy_validate(&p, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, "base: expected a duration > 0, got 0");

  mnemo_retry_policy_default(&p);
  p.max_ns = 100 * MS;
  assert_int_equal(mnemo_retry_policy_validate(&p, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, "max: expected a duration >= base (0.5), got 0.1");
  p.max_ns = p.base_ns; /* equal is fine */
  assert_int_equal(mnemo_retry_policy_validate(&p, err, sizeof(err)), 0);

  mnemo_retry_policy_default(&p);
  p.multiplier = 0.5;
  assert_int_equal(mnemo_retry_policy_validate(&p, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, "multiplier: expected a finite number >= 1, "
                           "got 0.5");
  p.multiplier = INFINITY;
  assert_int_equal(mnemo_retry_policy_validate(&p, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, "multiplier: expected a finite number >= 1, "
                           "got inf");
  p.multiplier = NAN;
  assert_int_equal(mnemo_retry_policy_validate(&p, NULL, 0), MNEMO_EINVAL);
  p.multiplier = 1.0;
  assert_int_equal(mnemo_retry_policy_validate(&p, NULL, 0), 0);

  mnemo_retry_policy_default(&p);
  p.jitter = MNEMO_JITTER_COUNT;
  assert_int_equal(mnemo_retry_policy_validate(&p, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, "jitter: expected none, full, equal, "
                           "decorrelated or proportional, got 5");

  mnemo_retry_policy_default(&p);
  p.retry_on |= 1u << 20;
  p.never_retry |= 1u << 31;
  assert_int_equal(mnemo_retry_policy_validate(&p, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err,
                      "on: expected known error classes, got unknown bits "
                      "0x100000\n"
                      "never: expected known error classes, got unknown bits "
                      "0x80000000");
}

static void test_validate_all_problems_at_once(void **state) {
  mnemo_retry_policy_t p;
  char err[512];
  (void)state;

  mnemo_retry_policy_default(&p);
  p.max_attempts = 0;
  p.base_ns = 1500 * MS;
  p.max_ns = 250 * MS;
  p.multiplier = 0.25;
  p.retry_on |= MNEMO_EC_BIT(MNEMO_EC_AUTH) | MNEMO_EC_BIT(MNEMO_EC_NOT_FOUND);
  assert_int_equal(mnemo_retry_policy_validate(&p, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, "attempts: expected integer >= 1, got 0\n"
                           "max: expected a duration >= base (1.5), got 0.25\n"
                           "multiplier: expected a finite number >= 1, got "
                           "0.25\n"
                           "on: class auth is also in never\n"
                           "on: class not_found is also in never");
}

static void test_validate_small_buffer(void **state) {
  mnemo_retry_policy_t p;
  char err[16];
  (void)state;

  mnemo_retry_policy_default(&p);
  p.max_attempts = 0;
  p.base_ns = 0;
  memset(err, 'x', sizeof(err));
  assert_int_equal(mnemo_retry_policy_validate(&p, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, "attempts: expec"); /* cut, NUL-terminated */
  assert_int_equal(mnemo_retry_policy_validate(&p, err, 1), MNEMO_EINVAL);
  assert_string_equal(err, "");
  assert_int_equal(mnemo_retry_policy_validate(&p, err, 0), MNEMO_EINVAL);
  assert_int_equal(mnemo_retry_policy_validate(&p, NULL, 100), MNEMO_EINVAL);
}

/* A policy that was never validated cannot produce a wrapped-around delay:
 * a negative multiplier makes every other exponential step negative, and
 * that delay is 0, not a cast of a negative double; NaN gives the cap. */
static void test_delay_unvalidated_multiplier(void **state) {
  mnemo_retry_policy_t p;
  (void)state;

  mnemo_retry_policy_default(&p);
  p.jitter = MNEMO_JITTER_NONE;
  p.base_ns = 1 * SEC;
  p.max_ns = 60ull * SEC;
  p.multiplier = -2.0;
  assert_int_equal(mnemo_retry_delay(&p, 1, 0, NULL), 1 * SEC);
  assert_int_equal(mnemo_retry_delay(&p, 2, 0, NULL), 0); /* 1 s * -2 */
  assert_int_equal(mnemo_retry_delay(&p, 3, 0, NULL), 4ull * SEC);
  p.multiplier = NAN;
  assert_int_equal(mnemo_retry_delay(&p, 2, 0, NULL), 60ull * SEC);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rng_same_seed_same_sequence),
      cmocka_unit_test(test_rng_known_values),
      cmocka_unit_test(test_rng_uniform),
      cmocka_unit_test(test_rng_range_inclusive),
      cmocka_unit_test(test_jitter_names),
      cmocka_unit_test(test_policy_default),
      cmocka_unit_test(test_should_retryable_and_limits),
      cmocka_unit_test(test_should_never_wins),
      cmocka_unit_test(test_should_unknown),
      cmocka_unit_test(test_delay_exponential_and_cap),
      cmocka_unit_test(test_delay_no_overflow),
      cmocka_unit_test(test_delay_full_jitter),
      cmocka_unit_test(test_delay_equal_jitter),
      cmocka_unit_test(test_delay_decorrelated_jitter),
      cmocka_unit_test(test_delay_proportional_jitter),
      cmocka_unit_test(test_delay_proportional_seeded),
      cmocka_unit_test(test_delay_proportional_cap),
      cmocka_unit_test(test_validate_each_problem),
      cmocka_unit_test(test_validate_all_problems_at_once),
      cmocka_unit_test(test_validate_small_buffer),
      cmocka_unit_test(test_delay_unvalidated_multiplier),
  };
  return cmocka_run_group_tests_name("retry", tests, NULL, NULL);
}
