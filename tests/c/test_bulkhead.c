/* Bulkheads: admission up to max_concurrent, FIFO hand-off to waiters, a
 * full queue, cancelled waiters, re-entrant on_admit, reconfiguration and
 * config validation. */
#include "testing.h"

#include <stdlib.h>
#include <string.h>

#include "bulkhead.h"
#include "status.h"

typedef struct log {
  int order[64];
  int count;
} log_t;

typedef struct tagged {
  mnemo_bulkhead_waiter_t waiter;
  int tag;
  log_t *log;
} tagged_t;

static void log_admit(mnemo_bulkhead_waiter_t *w) {
  tagged_t *t = (tagged_t *)w;
  assert_false(w->queued);
  t->log->order[t->log->count++] = t->tag;
}

static void init_waiters(tagged_t *t, int n, log_t *log) {
  int i;
  for (i = 0; i < n; i++) {
    t[i].tag = i;
    t[i].log = log;
    mnemo_bulkhead_waiter_init(&t[i].waiter, log_admit, &t[i]);
  }
}

static mnemo_bulkhead_config_t config(uint32_t max_concurrent,
                                      uint32_t max_queue) {
  mnemo_bulkhead_config_t cfg = {max_concurrent, max_queue, 0};
  return cfg;
}

static void test_admission(void **state) {
  mnemo_bulkhead_t b;
  mnemo_bulkhead_config_t cfg = config(2, 1);
  log_t log = {.count = 0};
  tagged_t w[1];
  (void)state;

  init_waiters(w, 1, &log);
  assert_ptr_equal(w[0].waiter.data, &w[0]);
  assert_int_equal(mnemo_bulkhead_init(&b, "pool", &cfg), 0);
  assert_string_equal(b.name, "pool");
  assert_int_equal(mnemo_bulkhead_try_enter(&b), 0);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), 0);
  assert_int_equal(b.active, 2);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EAGAIN);
  assert_int_equal(b.rejected, 0);
  mnemo_bulkhead_enqueue(&b, &w[0].waiter);
  assert_true(w[0].waiter.queued);
  assert_int_equal(b.queued, 1);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EBULKHEAD_FULL);
  assert_int_equal(b.rejected, 1);

  /* The slot goes straight to the waiter: active stays 2. */
  mnemo_bulkhead_leave(&b);
  assert_int_equal(log.count, 1);
  assert_int_equal(b.active, 2);
  assert_int_equal(b.queued, 0);
  assert_false(w[0].waiter.queued);
  assert_int_equal(b.admitted, 3);
  mnemo_bulkhead_leave(&b);
  mnemo_bulkhead_leave(&b);
  assert_int_equal(b.active, 0);
  mnemo_bulkhead_leave(&b); /* one too many: no underflow */
  assert_int_equal(b.active, 0);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), 0);
  assert_int_equal(b.admitted, 4);
}

static void test_fifo_hand_off(void **state) {
  mnemo_bulkhead_t b;
  mnemo_bulkhead_config_t cfg = config(1, 5);
  log_t log = {.count = 0};
  tagged_t w[3];
  int i;
  (void)state;

  init_waiters(w, 3, &log);
  assert_int_equal(mnemo_bulkhead_init(&b, "x", &cfg), 0);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), 0);
  for (i = 0; i < 3; i++) {
    assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EAGAIN);
    mnemo_bulkhead_enqueue(&b, &w[i].waiter);
  }
  assert_int_equal(b.queued, 3);
  for (i = 0; i < 3; i++) {
    mnemo_bulkhead_leave(&b);
    assert_int_equal(log.count, i + 1);
    assert_int_equal(log.order[i], i);
    assert_int_equal(b.active, 1);
    assert_int_equal(b.queued, (uint32_t)(2 - i));
  }
  mnemo_bulkhead_leave(&b);
  assert_int_equal(b.active, 0);
  assert_int_equal(b.admitted, 4);
  assert_null(b.head);
  assert_null(b.tail);
}

static void test_full_queue(void **state) {
  mnemo_bulkhead_t b;
  mnemo_bulkhead_config_t cfg = config(1, 0);
  log_t log = {.count = 0};
  tagged_t w[2];
  (void)state;

  /* No queue: one in, the rest rejected. */
  assert_int_equal(mnemo_bulkhead_init(&b, "x", &cfg), 0);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), 0);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EBULKHEAD_FULL);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EBULKHEAD_FULL);
  assert_int_equal(b.rejected, 2);
  assert_int_equal(b.admitted, 1);

  cfg = config(1, 2);
  init_waiters(w, 2, &log);
  assert_int_equal(mnemo_bulkhead_init(&b, "x", &cfg), 0);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), 0);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EAGAIN);
  mnemo_bulkhead_enqueue(&b, &w[0].waiter);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EAGAIN);
  mnemo_bulkhead_enqueue(&b, &w[1].waiter);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EBULKHEAD_FULL);
  assert_int_equal(b.rejected, 1);
  /* Room again once a waiter is admitted. */
  mnemo_bulkhead_leave(&b);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EAGAIN);
}

static void test_cancel(void **state) {
  mnemo_bulkhead_t b;
  mnemo_bulkhead_config_t cfg = config(1, 10);
  log_t log = {.count = 0};
  tagged_t w[5];
  int i;
  (void)state;

  init_waiters(w, 5, &log);
  assert_int_equal(mnemo_bulkhead_init(&b, "x", &cfg), 0);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), 0);
  for (i = 0; i < 5; i++)
    mnemo_bulkhead_enqueue(&b, &w[i].waiter);

  mnemo_bulkhead_cancel(&b, &w[2].waiter); /* the middle */
  assert_false(w[2].waiter.queued);
  assert_int_equal(b.queued, 4);
  assert_int_equal(b.timed_out, 1);
  mnemo_bulkhead_cancel(&b, &w[2].waiter); /* no longer queued: no-op */
  assert_int_equal(b.timed_out, 1);
  assert_int_equal(b.queued, 4);
  mnemo_bulkhead_cancel(&b, &w[0].waiter); /* the head */
  mnemo_bulkhead_cancel(&b, &w[4].waiter); /* the tail */
  assert_int_equal(b.timed_out, 3);
  assert_int_equal(b.queued, 2);

  mnemo_bulkhead_leave(&b);
  mnemo_bulkhead_leave(&b);
  assert_int_equal(log.count, 2);
  assert_int_equal(log.order[0], 1);
  assert_int_equal(log.order[1], 3);
  assert_int_equal(b.queued, 0);
  assert_null(b.head);
  assert_null(b.tail);
  /* An admitted waiter cannot be cancelled. */
  mnemo_bulkhead_cancel(&b, &w[3].waiter);
  assert_int_equal(b.timed_out, 3);
  assert_int_equal(b.active, 1);

  /* Cancel all, then the queue works again. */
  mnemo_bulkhead_enqueue(&b, &w[0].waiter);
  mnemo_bulkhead_cancel(&b, &w[0].waiter);
  assert_null(b.head);
  mnemo_bulkhead_enqueue(&b, &w[4].waiter);
  mnemo_bulkhead_leave(&b);
  assert_int_equal(log.order[2], 4);
}

/* Waiters whose on_admit leaves at once: each hand-off must come from the
 * outer leave()'s loop, not from a nested call. */
typedef struct chain {
  mnemo_bulkhead_waiter_t waiter;
  mnemo_bulkhead_t *bulkhead;
  int index;
  int *next_expected;
  int *depth, *max_depth;
} chain_t;

static void leave_at_once(mnemo_bulkhead_waiter_t *w) {
  chain_t *c = (chain_t *)w;
  assert_int_equal(c->index, *c->next_expected);
  (*c->next_expected)++;
  if (++*c->depth > *c->max_depth)
    *c->max_depth = *c->depth;
  mnemo_bulkhead_leave(c->bulkhead);
  --*c->depth;
}

static void test_reentrant_leave(void **state) {
  enum { N = 10000 };
  mnemo_bulkhead_t b;
  mnemo_bulkhead_config_t cfg = config(1, N);
  chain_t *c = calloc(N, sizeof(*c));
  int next = 0, depth = 0, max_depth = 0, i;
  (void)state;

  assert_non_null(c);
  assert_int_equal(mnemo_bulkhead_init(&b, "x", &cfg), 0);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), 0);
  for (i = 0; i < N; i++) {
    c[i].bulkhead = &b;
    c[i].index = i;
    c[i].next_expected = &next;
    c[i].depth = &depth;
    c[i].max_depth = &max_depth;
    mnemo_bulkhead_waiter_init(&c[i].waiter, leave_at_once, NULL);
    assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EAGAIN);
    mnemo_bulkhead_enqueue(&b, &c[i].waiter);
  }
  assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EBULKHEAD_FULL);
  mnemo_bulkhead_leave(&b);
  assert_int_equal(next, N);
  assert_int_equal(max_depth, 1);
  assert_int_equal(b.active, 0);
  assert_int_equal(b.queued, 0);
  assert_int_equal(b.admitted, N + 1);
  free(c);
}

/* While slots are being handed over, a newcomer queues behind the waiters
 * instead of taking the slot a waiter's leave() just freed. */
typedef struct barging {
  mnemo_bulkhead_waiter_t waiter;
  mnemo_bulkhead_t *bulkhead;
  tagged_t *newcomer;
  int try_enter_rc;
} barging_t;

static void admit_then_newcomer(mnemo_bulkhead_waiter_t *w) {
  barging_t *g = (barging_t *)w;
  mnemo_bulkhead_leave(g->bulkhead);
  g->try_enter_rc = mnemo_bulkhead_try_enter(g->bulkhead);
  if (g->try_enter_rc == MNEMO_EAGAIN)
    mnemo_bulkhead_enqueue(g->bulkhead, &g->newcomer->waiter);
}

static void test_no_overtaking(void **state) {
  mnemo_bulkhead_t b;
  mnemo_bulkhead_config_t cfg = config(1, 5);
  log_t log = {.count = 0};
  tagged_t w[2];
  barging_t g;
  (void)state;

  init_waiters(w, 2, &log);
  assert_int_equal(mnemo_bulkhead_init(&b, "x", &cfg), 0);
  g.bulkhead = &b;
  g.newcomer = &w[1];
  g.try_enter_rc = 1;
  mnemo_bulkhead_waiter_init(&g.waiter, admit_then_newcomer, NULL);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), 0);
  mnemo_bulkhead_enqueue(&b, &g.waiter);
  mnemo_bulkhead_enqueue(&b, &w[0].waiter);
  mnemo_bulkhead_leave(&b);
  assert_int_equal(g.try_enter_rc, MNEMO_EAGAIN);
  /* w0 was ahead of the newcomer and holds the slot. */
  assert_int_equal(log.count, 1);
  assert_int_equal(log.order[0], 0);
  assert_int_equal(b.active, 1);
  assert_int_equal(b.queued, 1);
  mnemo_bulkhead_leave(&b);
  assert_int_equal(log.order[1], 1);
  assert_int_equal(b.active, 1);
}

static void test_reconfigure(void **state) {
  mnemo_bulkhead_t b;
  mnemo_bulkhead_config_t cfg = config(1, 10);
  log_t log = {.count = 0};
  tagged_t w[4];
  char err[128];
  int i;
  (void)state;

  init_waiters(w, 4, &log);
  assert_int_equal(mnemo_bulkhead_init(&b, "x", &cfg), 0);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), 0);
  for (i = 0; i < 4; i++)
    mnemo_bulkhead_enqueue(&b, &w[i].waiter);

  /* Up: waiters are admitted at once, in order. */
  cfg = config(3, 10);
  assert_int_equal(mnemo_bulkhead_reconfigure(&b, &cfg, err, sizeof(err)), 0);
  assert_string_equal(err, "");
  assert_int_equal(b.active, 3);
  assert_int_equal(b.queued, 2);
  assert_int_equal(log.count, 2);
  assert_int_equal(log.order[1], 1);

  /* Down: nobody is evicted; admission waits until active drops below. */
  cfg = config(1, 1);
  assert_int_equal(mnemo_bulkhead_reconfigure(&b, &cfg, err, sizeof(err)), 0);
  assert_int_equal(b.active, 3);
  assert_int_equal(b.queued, 2); /* above the new max_queue, kept */
  assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EBULKHEAD_FULL);
  mnemo_bulkhead_leave(&b);
  mnemo_bulkhead_leave(&b);
  assert_int_equal(log.count, 2);
  assert_int_equal(b.active, 1);
  mnemo_bulkhead_leave(&b);
  assert_int_equal(log.count, 3);
  assert_int_equal(log.order[2], 2);
  assert_int_equal(b.active, 1);
  assert_int_equal(b.queued, 1);
  assert_int_equal(mnemo_bulkhead_try_enter(&b), MNEMO_EBULKHEAD_FULL);

  /* Invalid: nothing changes. */
  cfg = config(0, 100);
  assert_int_equal(mnemo_bulkhead_reconfigure(&b, &cfg, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, "max_concurrent: expected integer >= 1, got 0");
  assert_int_equal(b.config.max_concurrent, 1);
  assert_int_equal(b.config.max_queue, 1);
  assert_int_equal(b.queued, 1);
}

static void test_validation(void **state) {
  mnemo_bulkhead_t b;
  mnemo_bulkhead_config_t cfg = config(0, 0);
  char err[128], small[8];
  (void)state;

  assert_int_equal(mnemo_bulkhead_config_validate(&cfg, err, sizeof(err)),
                   MNEMO_EINVAL);
  assert_string_equal(err, "max_concurrent: expected integer >= 1, got 0");
  assert_int_equal(mnemo_bulkhead_config_validate(&cfg, small, sizeof(small)),
                   MNEMO_EINVAL);
  assert_string_equal(small, "max_con");
  assert_int_equal(mnemo_bulkhead_config_validate(&cfg, NULL, 0), MNEMO_EINVAL);
  assert_int_equal(mnemo_bulkhead_init(&b, "x", &cfg), MNEMO_EINVAL);

  /* max_queue 0 and max_wait 0 (wait forever) are fine. */
  cfg = config(1, 0);
  assert_int_equal(mnemo_bulkhead_config_validate(&cfg, err, sizeof(err)), 0);
  assert_string_equal(err, "");
  cfg.max_wait_ns = 5000000000ull;
  assert_int_equal(mnemo_bulkhead_init(&b, NULL, &cfg), 0);
  assert_string_equal(b.name, "");
  assert_int_equal(b.config.max_wait_ns, 5000000000ull);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_admission),
      cmocka_unit_test(test_fifo_hand_off),
      cmocka_unit_test(test_full_queue),
      cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_reentrant_leave),
      cmocka_unit_test(test_no_overtaking),
      cmocka_unit_test(test_reconfigure),
      cmocka_unit_test(test_validation),
  };
  return cmocka_run_group_tests_name("bulkhead", tests, NULL, NULL);
}
