/* The C guard on the virtual clock, with operations that answer at once,
 * later, or never. */
#include "testing.h"

#include <string.h>

#include "guard.h"
#include "status.h"

typedef struct fake_op {
  mnemo_guard_call_t call;
  /* script: what each attempt answers; 1 = later (the test answers) */
  int statuses[8];
  mnemo_error_class_t classes[8];
  int answer_later[8];
  uint64_t retry_after_ns[8];
  uint32_t attempts_seen;
  uint64_t attempt_times[8];
  int done;
  int done_status;
  mnemo_error_class_t done_class;
  uint64_t done_at;
  mnemo_cancel_token_t *token;
} fake_op_t;

static mnemo_clock_t clock_;
static mnemo_timers_t timers;
static mnemo_rng_t rng;

static void attempt(mnemo_guard_call_t *call, uint32_t n,
                    mnemo_cancel_token_t *token) {
  fake_op_t *op = (fake_op_t *)call;
  uint32_t i = n - 1;
  op->attempts_seen = n;
  op->attempt_times[i] = clock_.virtual_ns;
  op->token = token;
  if (!op->answer_later[i])
    mnemo_guard_attempt_done(call, op->statuses[i], op->classes[i],
                             op->retry_after_ns[i]);
}

static void done(mnemo_guard_call_t *call, int status, mnemo_error_class_t c) {
  fake_op_t *op = (fake_op_t *)call;
  op->done++;
  op->done_status = status;
  op->done_class = c;
  op->done_at = clock_.virtual_ns;
}

static int setup(void **state) {
  (void)state;
  mnemo_clock_init(&clock_, NULL);
  mnemo_clock_set_virtual(&clock_, 1);
  clock_.virtual_ns = 1000 * MNEMO_NS_PER_SEC;
  mnemo_timers_init(&timers, &clock_, NULL);
  mnemo_rng_seed(&rng, 1);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  assert_int_equal(mnemo_timers_count(&timers), 0);
  mnemo_timers_close(&timers);
  return 0;
}

static mnemo_guard_policy_t policy_with(const mnemo_retry_policy_t *retry,
                                        mnemo_breaker_t *breaker) {
  mnemo_guard_policy_t p;
  memset(&p, 0, sizeof(p));
  p.operation = "op";
  p.attempt_timeout_ns = 2 * MNEMO_NS_PER_SEC;
  p.overall_timeout_ns = MNEMO_DEADLINE_NONE;
  p.retry = retry;
  p.breaker = breaker;
  p.idempotent = 1;
  p.breaker_ignores = MNEMO_EC_BIT(MNEMO_EC_INVALID_INPUT);
  return p;
}

static mnemo_retry_policy_t no_jitter_retry(uint32_t attempts) {
  mnemo_retry_policy_t r;
  mnemo_retry_policy_default(&r);
  r.max_attempts = attempts;
  r.base_ns = MNEMO_NS_PER_SEC;
  r.max_ns = 10 * MNEMO_NS_PER_SEC;
  r.multiplier = 2;
  r.jitter = MNEMO_JITTER_NONE;
  return r;
}

static void test_sync_success_touches_no_timer(void **state) {
  fake_op_t op;
  mnemo_guard_stats_t stats;
  mnemo_guard_policy_t p = policy_with(NULL, NULL);
  (void)state;
  memset(&op, 0, sizeof(op));
  memset(&stats, 0, sizeof(stats));
  assert_int_equal(mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, &stats,
                                     attempt, done, NULL),
                   0);
  assert_int_equal(op.done, 1);
  assert_int_equal(op.done_status, 0);
  assert_int_equal(mnemo_timers_count(&timers), 0);
  assert_int_equal(stats.calls, 1);
  assert_int_equal(stats.successes, 1);
}

static void test_retries_with_backoff_then_succeeds(void **state) {
  fake_op_t op;
  mnemo_retry_policy_t r = no_jitter_retry(3);
  mnemo_guard_policy_t p = policy_with(&r, NULL);
  uint64_t t0 = clock_.virtual_ns;
  (void)state;
  memset(&op, 0, sizeof(op));
  op.statuses[0] = op.statuses[1] = -ECONNREFUSED;
  op.classes[0] = op.classes[1] = MNEMO_EC_CONNECTION;
  mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, NULL, attempt, done,
                    NULL);
  assert_int_equal(op.attempts_seen, 1);
  mnemo_timers_advance(&timers, MNEMO_NS_PER_SEC); /* 1 s backoff */
  assert_int_equal(op.attempts_seen, 2);
  assert_int_equal(op.attempt_times[1] - t0, MNEMO_NS_PER_SEC);
  mnemo_timers_advance(&timers, 2 * MNEMO_NS_PER_SEC); /* then 2 s */
  assert_int_equal(op.attempts_seen, 3);
  assert_int_equal(op.done, 1);
  assert_int_equal(op.done_status, 0);
}

static void test_non_retryable_is_not_retried(void **state) {
  fake_op_t op;
  mnemo_retry_policy_t r = no_jitter_retry(5);
  mnemo_guard_policy_t p = policy_with(&r, NULL);
  (void)state;
  memset(&op, 0, sizeof(op));
  op.statuses[0] = -EINVAL;
  op.classes[0] = MNEMO_EC_INVALID_INPUT;
  mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, NULL, attempt, done,
                    NULL);
  assert_int_equal(op.attempts_seen, 1);
  assert_int_equal(op.done, 1);
  assert_int_equal(op.done_class, MNEMO_EC_INVALID_INPUT);
}

static void test_non_idempotent_retry_refused(void **state) {
  fake_op_t op;
  mnemo_retry_policy_t r = no_jitter_retry(3);
  mnemo_guard_policy_t p = policy_with(&r, NULL);
  char err[128];
  (void)state;
  p.idempotent = 0;
  memset(&op, 0, sizeof(op));
  assert_int_equal(mnemo_guard_policy_validate(&p, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_non_null(strstr(err, "not marked idempotent"));
  assert_int_equal(mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, NULL,
                                     attempt, done, NULL),
                   MNEMO_EINVAL);
  assert_int_equal(op.attempts_seen, 0);
}

static void test_attempt_timeout_then_retry(void **state) {
  fake_op_t op;
  mnemo_retry_policy_t r = no_jitter_retry(2);
  mnemo_guard_policy_t p = policy_with(&r, NULL);
  (void)state;
  memset(&op, 0, sizeof(op));
  op.answer_later[0] = 1; /* never answers: times out after 2 s */
  mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, NULL, attempt, done,
                    NULL);
  assert_int_equal(mnemo_timers_count(&timers), 1);
  mnemo_timers_advance(&timers, 2 * MNEMO_NS_PER_SEC);
  assert_true(mnemo_cancel_token_is_cancelled(op.token));
  /* A late answer from the abandoned attempt is ignored. */
  mnemo_guard_attempt_done(&op.call, 0, MNEMO_EC_UNKNOWN, 0);
  assert_int_equal(op.done, 0);
  mnemo_timers_advance(&timers, MNEMO_NS_PER_SEC);
  assert_int_equal(op.attempts_seen, 2);
  assert_int_equal(op.done, 1);
  assert_int_equal(op.done_status, 0);
}

static void test_retry_never_sleeps_past_overall_deadline(void **state) {
  fake_op_t op;
  mnemo_retry_policy_t r = no_jitter_retry(10);
  mnemo_guard_policy_t p = policy_with(&r, NULL);
  uint64_t t0 = clock_.virtual_ns;
  int i;
  (void)state;
  p.overall_timeout_ns = 4 * MNEMO_NS_PER_SEC;
  memset(&op, 0, sizeof(op));
  for (i = 0; i < 8; i++) {
    op.statuses[i] = -ECONNRESET;
    op.classes[i] = MNEMO_EC_CONNECTION;
  }
  mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, NULL, attempt, done,
                    NULL);
  /* attempts at 0 s, 1 s, 3 s; the next backoff (4 s) would end past the
   * 4 s deadline, so the call fails at 3 s instead of sleeping. */
  mnemo_timers_advance(&timers, 10 * MNEMO_NS_PER_SEC);
  assert_int_equal(op.attempts_seen, 3);
  assert_int_equal(op.done, 1);
  assert_int_equal(op.done_class, MNEMO_EC_CONNECTION);
  assert_int_equal(op.done_at - t0, 3 * MNEMO_NS_PER_SEC);
}

static void test_overall_timeout_during_attempt(void **state) {
  fake_op_t op;
  mnemo_guard_policy_t p = policy_with(NULL, NULL);
  (void)state;
  p.attempt_timeout_ns = 10 * MNEMO_NS_PER_SEC;
  p.overall_timeout_ns = 3 * MNEMO_NS_PER_SEC;
  memset(&op, 0, sizeof(op));
  op.answer_later[0] = 1;
  mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, NULL, attempt, done,
                    NULL);
  mnemo_timers_advance(&timers, 3 * MNEMO_NS_PER_SEC);
  assert_int_equal(op.done, 1);
  assert_int_equal(op.done_status, MNEMO_ETIMEDOUT);
  assert_int_equal(op.done_class, MNEMO_EC_TIMEOUT);
}

static void test_retry_after_is_honoured(void **state) {
  fake_op_t op;
  mnemo_retry_policy_t r = no_jitter_retry(2);
  mnemo_guard_policy_t p = policy_with(&r, NULL);
  uint64_t t0 = clock_.virtual_ns;
  (void)state;
  r.retry_on |= MNEMO_EC_BIT(MNEMO_EC_BUSY);
  memset(&op, 0, sizeof(op));
  op.statuses[0] = -EBUSY;
  op.classes[0] = MNEMO_EC_BUSY;
  op.retry_after_ns[0] = 5 * MNEMO_NS_PER_SEC; /* more than the 1 s backoff */
  mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, NULL, attempt, done,
                    NULL);
  mnemo_timers_advance(&timers, 4 * MNEMO_NS_PER_SEC);
  assert_int_equal(op.attempts_seen, 1);
  mnemo_timers_advance(&timers, MNEMO_NS_PER_SEC);
  assert_int_equal(op.attempts_seen, 2);
  assert_int_equal(op.attempt_times[1] - t0, 5 * MNEMO_NS_PER_SEC);
  assert_int_equal(op.done, 1);
}

static void test_open_breaker_fails_fast(void **state) {
  fake_op_t op;
  mnemo_breaker_t breaker;
  mnemo_breaker_config_t cfg;
  mnemo_guard_policy_t p;
  mnemo_guard_stats_t stats;
  int i;
  (void)state;
  mnemo_breaker_config_default(&cfg);
  cfg.failure_threshold = 2;
  assert_int_equal(mnemo_breaker_init(&breaker, "dep", &cfg, clock_.virtual_ns),
                   0);
  p = policy_with(NULL, &breaker);
  memset(&stats, 0, sizeof(stats));
  for (i = 0; i < 2; i++) {
    memset(&op, 0, sizeof(op));
    op.statuses[0] = -ECONNREFUSED;
    op.classes[0] = MNEMO_EC_CONNECTION;
    mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, &stats, attempt, done,
                      NULL);
  }
  assert_int_equal(breaker.state, MNEMO_BREAKER_OPEN);
  memset(&op, 0, sizeof(op));
  op.answer_later[0] = 1;
  mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, &stats, attempt, done,
                    NULL);
  /* No attempt ran and no timer was armed: it failed at once. */
  assert_int_equal(op.attempts_seen, 0);
  assert_int_equal(op.done, 1);
  assert_int_equal(op.done_status, MNEMO_ECIRCUIT_OPEN);
  assert_int_equal(stats.fast_fails, 1);
  /* A timeout counts as a breaker failure; an ignored class does not. */
  mnemo_breaker_reset(&breaker, clock_.virtual_ns);
  memset(&op, 0, sizeof(op));
  op.statuses[0] = -EINVAL;
  op.classes[0] = MNEMO_EC_INVALID_INPUT;
  mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, &stats, attempt, done,
                    NULL);
  assert_int_equal(breaker.consecutive_failures, 0);
  memset(&op, 0, sizeof(op));
  op.answer_later[0] = 1;
  mnemo_guard_start(&op.call, &p, &timers, &rng, NULL, &stats, attempt, done,
                    NULL);
  mnemo_timers_advance(&timers, 2 * MNEMO_NS_PER_SEC);
  assert_int_equal(breaker.consecutive_failures, 1);
  mnemo_breaker_free(&breaker);
}

static void test_bulkhead_queues_and_rejects(void **state) {
  fake_op_t ops[3];
  mnemo_bulkhead_t bulkhead;
  mnemo_bulkhead_config_t cfg = {
      .max_concurrent = 1, .max_queue = 1, .max_wait_ns = 0};
  mnemo_guard_policy_t p = policy_with(NULL, NULL);
  int i;
  (void)state;
  assert_int_equal(mnemo_bulkhead_init(&bulkhead, "embed", &cfg), 0);
  p.bulkhead = &bulkhead;
  memset(ops, 0, sizeof(ops));
  for (i = 0; i < 3; i++) {
    ops[i].answer_later[0] = 1;
    mnemo_guard_start(&ops[i].call, &p, &timers, &rng, NULL, NULL, attempt,
                      done, NULL);
  }
  assert_int_equal(ops[0].attempts_seen, 1); /* running */
  assert_int_equal(ops[1].attempts_seen, 0); /* queued */
  assert_int_equal(ops[2].done_status, MNEMO_EBULKHEAD_FULL);
  mnemo_guard_attempt_done(&ops[0].call, 0, MNEMO_EC_UNKNOWN, 0);
  assert_int_equal(ops[1].attempts_seen, 1); /* handed the slot */
  mnemo_guard_attempt_done(&ops[1].call, 0, MNEMO_EC_UNKNOWN, 0);
  assert_int_equal(bulkhead.active, 0);
}

/* The composition order with a bulkhead, the same three scenarios as
 * guard_spec.lua's "queued in a bulkhead": `shared` holds one slot; the
 * breaker is half-open with one trial. */
typedef struct queued_fixture {
  mnemo_breaker_t breaker;
  mnemo_bulkhead_t shared, side;
  mnemo_guard_policy_t plain;  /* shared bulkhead, no breaker */
  mnemo_guard_policy_t short_; /* shared bulkhead, breaker, 0.2 s */
  mnemo_guard_policy_t side_;  /* its own bulkhead, breaker */
} queued_fixture_t;

static void queued_setup(queued_fixture_t *f, int half_open) {
  mnemo_breaker_config_t bcfg;
  mnemo_bulkhead_config_t hcfg = {
      .max_concurrent = 1, .max_queue = 5, .max_wait_ns = 0};
  mnemo_breaker_config_default(&bcfg);
  bcfg.failure_threshold = 1;
  bcfg.recovery_timeout_ns = MNEMO_NS_PER_SEC;
  assert_int_equal(
      mnemo_breaker_init(&f->breaker, "br", &bcfg, clock_.virtual_ns), 0);
  assert_int_equal(mnemo_bulkhead_init(&f->shared, "shared", &hcfg), 0);
  assert_int_equal(mnemo_bulkhead_init(&f->side, "side", &hcfg), 0);
  f->plain = policy_with(NULL, NULL);
  f->plain.bulkhead = &f->shared;
  f->short_ = policy_with(NULL, &f->breaker);
  f->short_.bulkhead = &f->shared;
  f->short_.attempt_timeout_ns = MNEMO_NS_PER_SEC / 5;
  f->side_ = policy_with(NULL, &f->breaker);
  f->side_.bulkhead = &f->side;
  if (half_open) {
    uint64_t retry_after;
    assert_int_equal(
        mnemo_breaker_acquire(&f->breaker, clock_.virtual_ns, &retry_after), 0);
    mnemo_breaker_on_failure(&f->breaker, clock_.virtual_ns, 0);
    mnemo_timers_advance(&timers, MNEMO_NS_PER_SEC);
    assert_int_equal(mnemo_breaker_state(&f->breaker, clock_.virtual_ns),
                     MNEMO_BREAKER_HALF_OPEN);
  }
}

static void queued_free(queued_fixture_t *f) {
  mnemo_breaker_free(&f->breaker);
}

static void start_later(fake_op_t *op, const mnemo_guard_policy_t *p,
                        mnemo_deadline_t *parent) {
  memset(op, 0, sizeof(*op));
  op->answer_later[0] = 1;
  mnemo_guard_start(&op->call, p, &timers, &rng, parent, NULL, attempt, done,
                    NULL);
}

static void test_queue_time_is_not_attempt_time(void **state) {
  queued_fixture_t f;
  fake_op_t filler, queued;
  (void)state;
  queued_setup(&f, 0);
  start_later(&filler, &f.plain, NULL);
  start_later(&queued, &f.short_, NULL);
  mnemo_timers_advance(&timers, MNEMO_NS_PER_SEC / 2); /* past its 0.2 s */
  assert_int_equal(queued.done, 0);
  assert_int_equal(queued.attempts_seen, 0);
  mnemo_guard_attempt_done(&filler.call, 0, MNEMO_EC_UNKNOWN, 0);
  assert_int_equal(queued.attempts_seen, 1); /* now its attempt starts */
  mnemo_timers_advance(&timers, MNEMO_NS_PER_SEC / 10);
  mnemo_guard_attempt_done(&queued.call, 0, MNEMO_EC_UNKNOWN, 0);
  assert_int_equal(queued.done_status, 0);
  queued_free(&f);
}

static void test_queued_call_holds_no_trial(void **state) {
  queued_fixture_t f;
  fake_op_t filler, queued, side;
  (void)state;
  queued_setup(&f, 1);
  start_later(&filler, &f.plain, NULL);
  start_later(&queued, &f.short_, NULL);
  start_later(&side, &f.side_, NULL); /* gets the trial */
  assert_int_equal(side.attempts_seen, 1);
  mnemo_guard_attempt_done(&side.call, 0, MNEMO_EC_UNKNOWN, 0);
  assert_int_equal(side.done_status, 0);
  assert_int_equal(mnemo_breaker_state(&f.breaker, clock_.virtual_ns),
                   MNEMO_BREAKER_CLOSED);
  mnemo_guard_attempt_done(&filler.call, 0, MNEMO_EC_UNKNOWN, 0);
  mnemo_guard_attempt_done(&queued.call, 0, MNEMO_EC_UNKNOWN, 0);
  assert_int_equal(queued.done_status, 0);
  queued_free(&f);
}

static void test_deadline_in_queue_leaves_nothing(void **state) {
  queued_fixture_t f;
  fake_op_t filler, queued, side;
  mnemo_deadline_t caller;
  (void)state;
  queued_setup(&f, 1);
  start_later(&filler, &f.plain, NULL);
  mnemo_deadline_enter(&caller, &timers, NULL, 3 * MNEMO_NS_PER_SEC / 10, NULL,
                       NULL);
  start_later(&queued, &f.short_, &caller);
  mnemo_timers_advance(&timers, 3 * MNEMO_NS_PER_SEC / 10);
  assert_int_equal(queued.done, 1);
  assert_int_equal(queued.done_status, MNEMO_ETIMEDOUT);
  mnemo_deadline_leave(&caller);
  assert_int_equal(f.shared.queued, 0);
  start_later(&side, &f.side_, NULL); /* the trial is free */
  assert_int_equal(side.attempts_seen, 1);
  mnemo_guard_attempt_done(&side.call, 0, MNEMO_EC_UNKNOWN, 0);
  assert_int_equal(mnemo_breaker_state(&f.breaker, clock_.virtual_ns),
                   MNEMO_BREAKER_CLOSED);
  mnemo_guard_attempt_done(&filler.call, 0, MNEMO_EC_UNKNOWN, 0);
  queued_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_sync_success_touches_no_timer, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_retries_with_backoff_then_succeeds,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_non_retryable_is_not_retried, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_non_idempotent_retry_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_attempt_timeout_then_retry, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          test_retry_never_sleeps_past_overall_deadline, setup, teardown),
      cmocka_unit_test_setup_teardown(test_overall_timeout_during_attempt,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry_after_is_honoured, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_open_breaker_fails_fast, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_bulkhead_queues_and_rejects, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_queue_time_is_not_attempt_time,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_queued_call_holds_no_trial, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_deadline_in_queue_leaves_nothing,
                                      setup, teardown),
  };
  return cmocka_run_group_tests_name("guard", tests, NULL, NULL);
}
