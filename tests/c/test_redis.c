/* runtime/loop/redis.c against a real server ($MNEMO_REDIS_URL, started by
 * scripts/run-tests): connect, SET/GET of a binary value, an error reply,
 * pipelining, closing with commands in flight and from inside a reply
 * callback, a refused port — under ASan this also proves the connection
 * lifecycle leaks nothing. */
#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis.h"

typedef struct probe {
  mnemo_redis_t r;
  int connected;
  int replies;
  int nulls;
  int closed;
  int close_in_reply;
  char got[64];
  size_t got_len;
  char error_reply[128];
  long long integers[8];
} probe_t;

static char host[128];
static int port;

static void server(void) {
  const char *url = getenv("MNEMO_REDIS_URL");
  assert_non_null(url); /* scripts/run-tests starts a server */
  assert_int_equal(sscanf(url, "redis://%127[^:]:%d", host, &port), 2);
}

static void on_closed(mnemo_redis_t *r) {
  ((probe_t *)r)->closed++;
}

static int send3(mnemo_redis_t *r, const char *a, const char *b, const char *c,
                 size_t clen, mnemo_redis_reply_cb cb) {
  const char *argv[3] = {a, b, c};
  size_t argvlen[3] = {strlen(a), b ? strlen(b) : 0, clen};
  return mnemo_redis_command(r, c ? 3 : b ? 2 : 1, argv, argvlen, cb, NULL);
}

static void on_reply(mnemo_redis_t *r, redisReply *reply, void *arg) {
  probe_t *p = (probe_t *)r;
  (void)arg;
  p->replies++;
  assert_non_null(reply);
  switch (p->replies) {
  case 1: /* SET */
    assert_int_equal(reply->type, REDIS_REPLY_STATUS);
    assert_string_equal(reply->str, "OK");
    break;
  case 2: /* GET */
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_true(reply->len < sizeof(p->got));
    memcpy(p->got, reply->str, reply->len);
    p->got_len = reply->len;
    break;
  case 3: /* LPUSH on a string */
    assert_int_equal(reply->type, REDIS_REPLY_ERROR);
    snprintf(p->error_reply, sizeof(p->error_reply), "%s", reply->str);
    break;
  default: /* INCRs, pipelined */
    assert_int_equal(reply->type, REDIS_REPLY_INTEGER);
    p->integers[p->replies - 4] = reply->integer;
    if (p->replies == 6)
      mnemo_redis_close(r, on_closed);
  }
}

static void on_connected(mnemo_redis_t *r, int status) {
  static const char value[] = "a\0b\r\nc";
  probe_t *p = (probe_t *)r;
  assert_int_equal(status, 0);
  p->connected = 1;
  assert_int_equal(r->state, MNEMO_REDIS_CONNECTED);
  assert_int_equal(
      send3(r, "SET", "mnemo:c:bin", value, sizeof(value) - 1, on_reply), 0);
  assert_int_equal(send3(r, "GET", "mnemo:c:bin", NULL, 0, on_reply), 0);
  assert_int_equal(send3(r, "LPUSH", "mnemo:c:bin", "x", 1, on_reply), 0);
  assert_int_equal(send3(r, "DEL", "mnemo:c:n", NULL, 0, on_reply), 0);
  assert_int_equal(send3(r, "INCR", "mnemo:c:n", NULL, 0, on_reply), 0);
  assert_int_equal(send3(r, "INCR", "mnemo:c:n", NULL, 0, on_reply), 0);
  assert_int_equal(r->pending, 6);
}

static void test_command_cycle(void **state) {
  uv_loop_t loop;
  probe_t p;
  (void)state;
  server();
  memset(&p, 0, sizeof(p));
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(mnemo_redis_connect(&loop, &p.r, host, port, on_connected),
                   0);
  assert_null(p.r.poll.data); /* luv shares the loop */
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_true(p.connected);
  assert_int_equal(p.replies, 6);
  assert_int_equal(p.got_len, 6);
  assert_memory_equal(p.got, "a\0b\r\nc", 6);
  assert_non_null(strstr(p.error_reply, "WRONGTYPE"));
  assert_int_equal(p.integers[1], 1);
  assert_int_equal(p.integers[2], 2);
  assert_int_equal(p.closed, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void on_reply_counting(mnemo_redis_t *r, redisReply *reply, void *arg) {
  probe_t *p = (probe_t *)r;
  (void)arg;
  p->replies++;
  if (reply == NULL) {
    p->nulls++;
    assert_string_equal(r->error, "connection closed");
    /* No new commands on a closing connection. */
    assert_int_equal(send3(r, "PING", NULL, NULL, 0, on_reply_counting), -1);
    return;
  }
  if (p->close_in_reply) {
    /* The replies still to be read go to their callbacks as NULL. */
    mnemo_redis_close(r, on_closed);
    mnemo_redis_close(r, on_closed); /* once is enough */
  }
}

static probe_t *timer_probe;

static void close_from_timer(uv_timer_t *timer) {
  probe_t *p = timer_probe;
  uv_close((uv_handle_t *)timer, NULL);
  assert_int_equal(p->r.pending, 5);
  /* Outside hiredis, every command in flight fails before close returns. */
  mnemo_redis_close(&p->r, on_closed);
  assert_int_equal(p->nulls, 5);
  assert_int_equal(p->r.pending, 0);
}

static void on_connected_then_close(mnemo_redis_t *r, int status) {
  static uv_timer_t timer;
  probe_t *p = (probe_t *)r;
  int i;
  assert_int_equal(status, 0);
  for (i = 0; i < 5; i++)
    assert_int_equal(send3(r, "PING", NULL, NULL, 0, on_reply_counting), 0);
  if (!p->close_in_reply) {
    timer_probe = p;
    uv_timer_init(r->loop, &timer);
    uv_timer_start(&timer, close_from_timer, 0, 0);
  }
}

static void test_close_with_commands_in_flight(void **state) {
  uv_loop_t loop;
  probe_t p;
  (void)state;
  server();
  assert_int_equal(uv_loop_init(&loop), 0);
  memset(&p, 0, sizeof(p));
  assert_int_equal(
      mnemo_redis_connect(&loop, &p.r, host, port, on_connected_then_close), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(p.replies, 5);
  assert_int_equal(p.nulls, 5);
  assert_int_equal(p.closed, 1);

  memset(&p, 0, sizeof(p));
  p.close_in_reply = 1;
  assert_int_equal(
      mnemo_redis_connect(&loop, &p.r, host, port, on_connected_then_close), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(p.replies, 5);
  assert_int_equal(p.nulls, 4);
  assert_int_equal(p.closed, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void on_connected_close_at_once(mnemo_redis_t *r, int status) {
  assert_int_equal(status, 0);
  /* Inside hiredis' connect callback: the free waits until it is out. */
  mnemo_redis_close(r, on_closed);
}

static void test_close_in_connect_callback(void **state) {
  uv_loop_t loop;
  probe_t p;
  (void)state;
  server();
  assert_int_equal(uv_loop_init(&loop), 0);
  memset(&p, 0, sizeof(p));
  assert_int_equal(
      mnemo_redis_connect(&loop, &p.r, host, port, on_connected_close_at_once),
      0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(p.closed, 1);
  /* Closed while still connecting: no connect callback, close completes. */
  memset(&p, 0, sizeof(p));
  assert_int_equal(
      mnemo_redis_connect(&loop, &p.r, host, port, on_connected_close_at_once),
      0);
  mnemo_redis_close(&p.r, on_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(p.closed, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void on_refused(mnemo_redis_t *r, int status) {
  assert_int_equal(status, -1);
  assert_non_null(strstr(r->error, "refused"));
  assert_int_equal(r->err_type, REDIS_ERR_IO);
  assert_int_equal(r->state, MNEMO_REDIS_CLOSED);
  ((probe_t *)r)->connected = -1;
}

static void test_refused_and_unsupported(void **state) {
  uv_loop_t loop;
  probe_t p;
  const char *argv[2] = {"subscribe", "chan"};
  size_t argvlen[2] = {9, 4};
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  memset(&p, 0, sizeof(p));
  assert_int_equal(mnemo_redis_connect(&loop, &p.r, "127.0.0.1", 1, on_refused),
                   0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(p.connected, -1);
  /* A failed connection still wants close; later commands fail at once,
   * keeping the reason. */
  assert_int_equal(send3(&p.r, "PING", NULL, NULL, 0, on_reply_counting), -1);
  assert_non_null(strstr(p.r.error, "refused"));
  mnemo_redis_close(&p.r, on_closed);
  assert_int_equal(p.closed, 1); /* nothing left to release: at once */

  /* A connection that never started (no address to resolve). */
  memset(&p, 0, sizeof(p));
  assert_int_equal(mnemo_redis_connect(&loop, &p.r, "", 6379, on_refused), -1);
  assert_true(p.r.error[0] != '\0');
  mnemo_redis_close(&p.r, on_closed);
  assert_int_equal(p.closed, 1);

  /* Pub/sub is refused. */
  server();
  memset(&p, 0, sizeof(p));
  assert_int_equal(
      mnemo_redis_connect(&loop, &p.r, host, port, on_connected_close_at_once),
      0);
  assert_int_equal(
      mnemo_redis_command(&p.r, 2, argv, argvlen, on_reply_counting, NULL),
      -1); /* not connected yet */
  assert_non_null(strstr(p.r.error, "not connected"));
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(p.closed, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void on_connected_subscribe(mnemo_redis_t *r, int status) {
  const char *argv[2] = {"SUBSCRIBE", "chan"};
  size_t argvlen[2] = {9, 4};
  assert_int_equal(status, 0);
  assert_int_equal(
      mnemo_redis_command(r, 2, argv, argvlen, on_reply_counting, NULL), -1);
  assert_non_null(strstr(r->error, "not supported"));
  mnemo_redis_close(r, on_closed);
}

static void test_pubsub_refused(void **state) {
  uv_loop_t loop;
  probe_t p;
  (void)state;
  server();
  assert_int_equal(uv_loop_init(&loop), 0);
  memset(&p, 0, sizeof(p));
  assert_int_equal(
      mnemo_redis_connect(&loop, &p.r, host, port, on_connected_subscribe), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(p.closed, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_command_cycle),
      cmocka_unit_test(test_close_with_commands_in_flight),
      cmocka_unit_test(test_close_in_connect_callback),
      cmocka_unit_test(test_refused_and_unsupported),
      cmocka_unit_test(test_pubsub_refused),
  };
  return cmocka_run_group_tests_name("redis", tests, NULL, NULL);
}
