/* The embedding job on the uv thread pool (runtime/loop/embed_job.c): the
 * same literals as the inline embedder, cancellation between vectors that
 * frees the pool thread and every byte of the job, a job taken off the
 * queue, and the refused starts. Runs with UV_THREADPOOL_SIZE=1 (set
 * before the pool starts), so which job waits behind which is known. */
#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "embed.h"
#include "embed_job.h"
#include "status.h"

typedef struct box {
  mnemo_embed_job_t job;
  int calls, status;
  size_t done;
  char **literals; /* copies, when asked for */
  uint64_t done_ns;
} box_t;

static void on_job(mnemo_embed_job_t *job, int status) {
  box_t *box = job->data;
  size_t i, len;
  box->calls++;
  box->status = status;
  box->done = job->done;
  box->done_ns = uv_hrtime();
  if (status != 0) {
    /* the job holds nothing on a failure */
    assert_null(job->literals);
    assert_null(job->offsets);
    assert_null(mnemo_embed_job_literal(job, 0, NULL));
    return;
  }
  box->literals = calloc(job->done + 1, sizeof(char *));
  assert_non_null(box->literals);
  for (i = 0; i < job->done; i++) {
    const char *lit = mnemo_embed_job_literal(job, i, &len);
    assert_non_null(lit);
    assert_int_equal(strlen(lit), len);
    box->literals[i] = strdup(lit);
  }
  assert_null(mnemo_embed_job_literal(job, job->done, NULL));
  mnemo_embed_job_release(job);
  mnemo_embed_job_release(job); /* twice is harmless */
}

static void box_init(box_t *box) {
  memset(box, 0, sizeof(*box));
  box->job.data = box;
}

static void box_free(box_t *box) {
  size_t i;
  if (box->literals != NULL)
    for (i = 0; i < box->done; i++)
      free(box->literals[i]);
  free(box->literals);
  box->literals = NULL;
}

/* What embed.hashing made inline before the job existed. */
static char *inline_literal(const char *text, size_t len, int dims) {
  float *v = malloc(sizeof(float) * (size_t)dims);
  char *lit = malloc(MNEMO_EMBED_LITERAL_MAX(dims));
  assert_non_null(v);
  assert_non_null(lit);
  assert_int_equal(mnemo_embed_hashing(text, len, v, dims), 0);
  assert_true(mnemo_embed_literal(v, dims, lit, MNEMO_EMBED_LITERAL_MAX(dims)) >
              0);
  free(v);
  return lit;
}

static void test_literal_format(void **state) {
  float v[MNEMO_EMBED_MIN_DIMS] = {
      0.5f, -0.0421337f, 0.99999999f, 1e-8f,  1.0f,  -1.0f, 2.5f,       -0.25f,
      0.0f, 0.1234567f,  -0.9999f,    1e-30f, -0.0f, 0.3f,  0.0000001f, -0.5f};
  char out[MNEMO_EMBED_LITERAL_MAX(MNEMO_EMBED_MIN_DIMS)];
  size_t n;
  (void)state;
  n = mnemo_embed_literal(v, MNEMO_EMBED_MIN_DIMS, out, sizeof(out));
  assert_string_equal(out, "{0.5,-0.0421337,1,0,1,-1,2.5,-0.25,0,0.1234567,"
                           "-0.9999,0,0,0.3,0.0000001,-0.5}");
  assert_int_equal(n, strlen(out));
  /* too small a buffer: nothing written */
  out[0] = 'x';
  assert_int_equal(
      mnemo_embed_literal(v, MNEMO_EMBED_MIN_DIMS, out, sizeof(out) - 1), 0);
  assert_int_equal(out[0], 'x');
  assert_int_equal(mnemo_embed_literal(v, MNEMO_EMBED_MIN_DIMS, NULL, 1000), 0);
}

static const char ALPHABET[] =
    "parseHTTPRequest2 open_connection(dsn) \xc3\xa9\xff\n{}";

/* Texts of every shape: empty, NULL with length 0, UTF-8, invalid bytes,
 * NULs inside, a long one; three dimensions. */
static void test_results_equal_inline(void **state) {
  static const int dims[] = {MNEMO_EMBED_MIN_DIMS, MNEMO_EMBED_DEFAULT_DIMS,
                             MNEMO_EMBED_MAX_DIMS};
  enum { N = 40 };
  const char *texts[N];
  size_t lens[N], i;
  char *store[N];
  uv_loop_t loop;
  mnemo_cancel_token_t token;
  box_t box;
  unsigned d;
  (void)state;
  for (i = 0; i < N; i++) {
    size_t len = (i * 97) % 3000, j;
    store[i] = malloc(len + 1);
    assert_non_null(store[i]);
    for (j = 0; j < len; j++)
      store[i][j] = ALPHABET[(i + j * 7) % (sizeof(ALPHABET) - 1)];
    store[i][len] = '\0';
    texts[i] = store[i];
    lens[i] = len;
  }
  texts[3] = NULL;
  lens[3] = 0;
  lens[4] = 0; /* an empty text that has a pointer */
  memcpy(store[5], "a\0b\0cDef", 8);
  lens[5] = 8;
  assert_int_equal(uv_loop_init(&loop), 0);
  mnemo_cancel_token_reset(&token);
  for (d = 0; d < sizeof(dims) / sizeof(dims[0]); d++) {
    box_init(&box);
    assert_int_equal(mnemo_embed_job_start(&loop, &box.job, texts, lens, N,
                                           dims[d], &token, on_job),
                     0);
    /* the job has copies: the caller's texts may change at once */
    memset(store[10], 'z', lens[10]);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    for (i = 0; i < lens[10]; i++) /* text 10 as it was at the start */
      store[10][i] = ALPHABET[(10 + i * 7) % (sizeof(ALPHABET) - 1)];
    assert_int_equal(box.calls, 1);
    assert_int_equal(box.status, 0);
    assert_int_equal(box.done, N);
    assert_null(box.job.texts);
    for (i = 0; i < N; i++) {
      char *want = inline_literal(texts[i], lens[i], dims[d]);
      assert_string_equal(box.literals[i], want);
      free(want);
    }
    box_free(&box);
  }
  /* an empty batch is a job too */
  box_init(&box);
  assert_int_equal(mnemo_embed_job_start(&loop, &box.job, NULL, NULL, 0, 384,
                                         &token, on_job),
                   0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(box.calls, 1);
  assert_int_equal(box.status, 0);
  assert_int_equal(box.done, 0);
  box_free(&box);
  assert_int_equal(uv_loop_close(&loop), 0);
  for (i = 0; i < N; i++)
    free(store[i]);
}

/* A large batch, its token cancelled at 100 ms from a timer on the loop:
 * the worker stops between two vectors, long before the batch's end, the
 * callback comes with MNEMO_ECANCELED and the job holds nothing (ASan's
 * leak check sees the rest). A small job queued behind it (one pool
 * thread) then runs at once: the thread was freed. */
#define BIG_COUNT 8000
#define BIG_LEN 8192

typedef struct cancel_timer {
  uv_timer_t timer;
  mnemo_cancel_token_t *token;
  mnemo_embed_job_t *job;
  int cancel_rc;
  uint64_t fired_ns;
} cancel_timer_t;

/* As a deadline does: the token, and off the queue if it is still there
 * (it is not: it runs). */
static void on_cancel(uv_timer_t *timer) {
  cancel_timer_t *t = (cancel_timer_t *)timer;
  mnemo_cancel_token_cancel(t->token);
  t->cancel_rc = mnemo_embed_job_cancel(t->job);
  t->fired_ns = uv_hrtime();
}

static void test_cancel_mid_batch(void **state) {
  static const char *texts[BIG_COUNT];
  static size_t lens[BIG_COUNT];
  char *text = malloc(BIG_LEN);
  mnemo_cancel_token_t token, other;
  const char *small = "def f(): return 1";
  size_t small_len = strlen(small), i;
  uv_loop_t loop;
  cancel_timer_t t;
  box_t big, after;
  (void)state;
  assert_non_null(text);
  for (i = 0; i < BIG_LEN; i++)
    text[i] = "fooBar_baz qux(1, 2)\n"[i % 21];
  for (i = 0; i < BIG_COUNT; i++) {
    texts[i] = text;
    lens[i] = BIG_LEN - (i % 13);
  }
  assert_int_equal(uv_loop_init(&loop), 0);
  mnemo_cancel_token_reset(&token);
  mnemo_cancel_token_reset(&other);
  box_init(&big);
  box_init(&after);
  assert_int_equal(mnemo_embed_job_start(&loop, &big.job, texts, lens,
                                         BIG_COUNT, 384, &token, on_job),
                   0);
  free(text); /* the job has its copies */
  assert_int_equal(mnemo_embed_job_start(&loop, &after.job, &small, &small_len,
                                         1, 384, &other, on_job),
                   0);
  assert_int_equal(uv_timer_init(&loop, &t.timer), 0);
  t.token = &token;
  t.job = &big.job;
  t.cancel_rc = 0;
  t.fired_ns = 0;
  uv_update_time(&loop); /* 100 ms from now, not from before the copies */
  assert_int_equal(uv_timer_start(&t.timer, on_cancel, 100, 0), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(big.calls, 1);
  assert_int_equal(big.status, MNEMO_ECANCELED);
  assert_int_equal(t.cancel_rc, UV_EBUSY);
  /* BIG_COUNT vectors take seconds (1.5 s plain here, more under ASan):
   * some were made before the cancel, most were not */
  print_message("cancelled after %zu of %d vectors, %.1f ms after the "
                "cancel\n",
                big.done, BIG_COUNT, (double)(big.done_ns - t.fired_ns) / 1e6);
  assert_true(big.done > 0);
  assert_true(big.done < BIG_COUNT * 3 / 4);
  assert_true(big.done_ns - t.fired_ns < 500 * 1000000ull);
  assert_null(big.literals);
  assert_int_equal(after.calls, 1);
  assert_int_equal(after.status, 0);
  assert_true(after.done_ns - t.fired_ns < 500 * 1000000ull);
  {
    char *want = inline_literal(small, small_len, 384);
    assert_string_equal(after.literals[0], want);
    free(want);
  }
  box_free(&after);
  uv_close((uv_handle_t *)&t.timer, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A token cancelled before the start: no vector is made. A job still in
 * the queue (behind a running one, one pool thread) is taken off it. */
static void test_cancel_before_running(void **state) {
  enum { BLOCKER = 2000 };
  static const char *texts[BLOCKER];
  static size_t lens[BLOCKER];
  char text[BIG_LEN];
  const char *small = "x";
  size_t one = 1, i;
  mnemo_cancel_token_t token, blocker_token, queued_token;
  uv_loop_t loop;
  box_t box, blocker, queued;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  mnemo_cancel_token_reset(&token);
  mnemo_cancel_token_cancel(&token);
  box_init(&box);
  assert_int_equal(mnemo_embed_job_start(&loop, &box.job, &small, &one, 1, 384,
                                         &token, on_job),
                   0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(box.calls, 1);
  assert_int_equal(box.status, MNEMO_ECANCELED);
  assert_int_equal(box.done, 0);

  memset(text, 'a', sizeof(text));
  for (i = 0; i < BLOCKER; i++) {
    texts[i] = text;
    lens[i] = sizeof(text);
  }
  mnemo_cancel_token_reset(&blocker_token);
  mnemo_cancel_token_reset(&queued_token);
  box_init(&blocker);
  box_init(&queued);
  /* the blocker takes the only pool thread for about 130 ms (16 MB) */
  assert_int_equal(mnemo_embed_job_start(&loop, &blocker.job, texts, lens,
                                         BLOCKER, 384, &blocker_token, on_job),
                   0);
  assert_int_equal(mnemo_embed_job_start(&loop, &queued.job, &small, &one, 1,
                                         384, &queued_token, on_job),
                   0);
  assert_int_equal(mnemo_embed_job_cancel(&queued.job), 0);
  mnemo_cancel_token_cancel(&blocker_token);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(queued.calls, 1);
  assert_int_equal(queued.status, MNEMO_ECANCELED);
  assert_int_equal(queued.done, 0);
  assert_null(queued.job.texts);
  assert_int_equal(blocker.calls, 1);
  assert_int_equal(blocker.status, MNEMO_ECANCELED);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Refused starts: nothing queued, nothing kept, no callback. */
static void test_refused(void **state) {
  const char *texts[2] = {"a", "b"};
  const char *holes[2] = {"a", NULL};
  size_t lens[2] = {1, 1}, huge[2] = {SIZE_MAX, 1};
  mnemo_cancel_token_t token;
  uv_loop_t loop;
  box_t box;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  mnemo_cancel_token_reset(&token);
  box_init(&box);
#define START(l, j, t, n, c, d, tok, cb)                                       \
  mnemo_embed_job_start(l, j, t, n, c, d, tok, cb)
  assert_int_equal(START(NULL, &box.job, texts, lens, 2, 384, &token, on_job),
                   MNEMO_EINVAL);
  assert_int_equal(START(&loop, NULL, texts, lens, 2, 384, &token, on_job),
                   MNEMO_EINVAL);
  assert_int_equal(START(&loop, &box.job, texts, lens, 2, 384, NULL, on_job),
                   MNEMO_EINVAL);
  assert_int_equal(START(&loop, &box.job, texts, lens, 2, 384, &token, NULL),
                   MNEMO_EINVAL);
  assert_int_equal(START(&loop, &box.job, NULL, lens, 2, 384, &token, on_job),
                   MNEMO_EINVAL);
  assert_int_equal(START(&loop, &box.job, texts, NULL, 2, 384, &token, on_job),
                   MNEMO_EINVAL);
  assert_int_equal(START(&loop, &box.job, holes, lens, 2, 384, &token, on_job),
                   MNEMO_EINVAL);
  assert_int_equal(START(&loop, &box.job, texts, lens, 2,
                         MNEMO_EMBED_MIN_DIMS - 1, &token, on_job),
                   MNEMO_EINVAL);
  assert_int_equal(START(&loop, &box.job, texts, lens, 2,
                         MNEMO_EMBED_MAX_DIMS + 1, &token, on_job),
                   MNEMO_EINVAL);
  /* sizes that cannot be allocated, found before anything is read */
  assert_int_equal(START(&loop, &box.job, texts, huge, 2, 384, &token, on_job),
                   MNEMO_ENOMEM);
  assert_int_equal(
      START(&loop, &box.job, texts, lens, SIZE_MAX / 4, 384, &token, on_job),
      MNEMO_ENOMEM);
#undef START
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(box.calls, 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_literal_format),
      cmocka_unit_test(test_results_equal_inline),
      cmocka_unit_test(test_cancel_mid_batch),
      cmocka_unit_test(test_cancel_before_running),
      cmocka_unit_test(test_refused),
  };
  setenv("UV_THREADPOOL_SIZE", "1", 1); /* before the pool starts */
  return cmocka_run_group_tests_name("embed_job", tests, NULL, NULL);
}
