/* runtime/loop/http_server.c over real loopback sockets, server and clients on
 * one loop: keep-alive, pipelining, bodies (Content-Length and chunked),
 * malformed and oversize requests, slow and idle clients, a client that
 * leaves before its response, the connection limit, invalid responses,
 * addresses. Under ASan this also proves that no path leaks or touches a
 * connection after it was freed. */
#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_server.h"

#define GOT_MAX (64 * 1024)

typedef struct fixture fixture_t;

typedef struct client {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  fixture_t *fx;
  const char *send; /* written once connected (must outlive the write) */
  size_t send_len;
  int close_after_write; /* leave before the response */
  void (*on_data)(struct client *c);
  char got[GOT_MAX];
  size_t len;
  int eof;
  uint64_t started_ms, eof_ms;
  int sent_second;
} client_t;

struct fixture {
  uv_loop_t loop;
  mnemo_http_server_t server;
  uv_timer_t timer;
  int server_closed;
  int requests;
  int respond_rc;
  int respond_later; /* from a timer, not inside the callback */
  int hold;          /* keep the request, answer from the test */
  mnemo_http_request_t *held;
  char method[16], path[64], query[64], header[64], body[256];
  size_t body_len;
  int clients_done, clients_total, nclients;
  client_t *clients[4];
};

/* ---- helpers ---- */

static void on_server_closed(mnemo_http_server_t *s) {
  ((fixture_t *)s->data)->server_closed++;
}

/* Complete responses in buf (head + Content-Length bytes of body). */
static int count_responses(const char *buf, size_t len) {
  const char *p = buf, *end = buf + len;
  int n = 0;
  for (;;) {
    const char *head_end, *cl;
    size_t body = 0;
    char head[4096];
    if (p >= end || (head_end = strstr(p, "\r\n\r\n")) == NULL ||
        head_end >= end)
      return n;
    snprintf(head, sizeof(head), "%.*s", (int)(head_end - p), p);
    cl = strcasestr(head, "content-length:");
    if (cl != NULL)
      body = strtoul(cl + 15, NULL, 10);
    if ((size_t)(end - head_end - 4) < body)
      return n;
    p = head_end + 4 + body;
    n++;
  }
}

static void fixture_start(fixture_t *fx, const mnemo_http_options_t *o) {
  memset(fx, 0, sizeof(*fx));
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  assert_int_equal(uv_timer_init(&fx->loop, &fx->timer), 0);
  fx->respond_rc = 1; /* not called */
  (void)o;
}

static void fixture_finish(fixture_t *fx) {
  int i;
  uv_close((uv_handle_t *)&fx->timer, NULL);
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  assert_int_equal(fx->server_closed, 1);
  assert_int_equal(uv_loop_close(&fx->loop), 0);
  for (i = 0; i < 4; i++)
    free(fx->clients[i]);
}

static void client_done(client_t *c) {
  fixture_t *fx = c->fx;
  if (++fx->clients_done == fx->clients_total)
    mnemo_http_server_close(&fx->server, on_server_closed);
}

static void client_closed(uv_handle_t *h) {
  client_done((client_t *)h);
}

static void client_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  client_t *c = (client_t *)h;
  (void)size;
  *buf = uv_buf_init(c->got + c->len, (unsigned)(GOT_MAX - 1 - c->len));
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  client_t *c = (client_t *)s;
  (void)buf;
  if (n > 0) {
    c->len += (size_t)n;
    c->got[c->len] = '\0';
  } else if (n < 0) {
    c->eof = 1;
    c->eof_ms = uv_now(s->loop);
    uv_close((uv_handle_t *)s, client_closed);
  }
  if (c->on_data != NULL && n != 0)
    c->on_data(c);
}

static void client_written(uv_write_t *w, int status) {
  client_t *c = (client_t *)w->handle;
  (void)status;
  if (c->close_after_write && !uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, client_closed);
}

static void client_send(client_t *c, const char *data, size_t len) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  assert_int_equal(
      uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, client_written), 0);
}

static void client_connected(uv_connect_t *req, int status) {
  client_t *c = (client_t *)req->handle;
  assert_int_equal(status, 0);
  assert_int_equal(
      uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read), 0);
  if (c->send != NULL)
    client_send(c, c->send, c->send_len);
}

static client_t *client_start(fixture_t *fx, const char *send,
                              size_t send_len) {
  struct sockaddr_in addr;
  client_t *c = calloc(1, sizeof(*c));
  assert_non_null(c);
  assert_true(fx->nclients < 4);
  fx->clients[fx->nclients++] = c;
  fx->clients_total++;
  c->fx = fx;
  c->send = send;
  c->send_len = send_len;
  c->started_ms = uv_now(&fx->loop);
  uv_ip4_addr("127.0.0.1", fx->server.port, &addr);
  assert_int_equal(uv_tcp_init(&fx->loop, &c->tcp), 0);
  assert_int_equal(uv_tcp_connect(&c->connect, &c->tcp,
                                  (const struct sockaddr *)&addr,
                                  client_connected),
                   0);
  return c;
}

static void answer(fixture_t *fx, mnemo_http_request_t *req) {
  static const mnemo_http_header_t extra[] = {{"X-Served-By", 11, "test", 4}};
  char body[128];
  int n = snprintf(body, sizeof(body), "hello %s", req->path);
  fx->respond_rc =
      mnemo_http_respond(req, 200, "text/plain", extra, 1, body, (size_t)n);
}

static void answer_held(uv_timer_t *t) {
  fixture_t *fx = (fixture_t *)((char *)t - offsetof(fixture_t, timer));
  mnemo_http_request_t *req = fx->held;
  fx->held = NULL;
  answer(fx, req);
}

static void on_request(mnemo_http_server_t *s, mnemo_http_request_t *req) {
  fixture_t *fx = s->data;
  const char *h = mnemo_http_request_header(req, "x-test", NULL);
  fx->requests++;
  snprintf(fx->method, sizeof(fx->method), "%s", req->method);
  snprintf(fx->path, sizeof(fx->path), "%s", req->path);
  snprintf(fx->query, sizeof(fx->query), "%s", req->query);
  snprintf(fx->header, sizeof(fx->header), "%s", h ? h : "(none)");
  fx->body_len = req->body_len;
  snprintf(fx->body, sizeof(fx->body), "%.*s", (int)req->body_len, req->body);
  if (fx->hold) {
    fx->held = req;
  } else if (fx->respond_later) {
    fx->held = req;
    uv_timer_start(&fx->timer, answer_held, 10, 0);
  } else {
    answer(fx, req);
  }
}

static void listen_on(fixture_t *fx, const mnemo_http_options_t *o) {
  assert_int_equal(mnemo_http_server_listen(&fx->loop, &fx->server,
                                            "127.0.0.1:0", o, on_request),
                   0);
  fx->server.data = fx;
  assert_true(fx->server.port > 0);
  assert_string_equal(fx->server.host, "127.0.0.1");
  assert_null(fx->server.listener.data); /* luv shares the loop */
}

/* ---- tests ---- */

static const char keep_alive_1[] = "GET /a?x=1&y=%20 HTTP/1.1\r\n"
                                   "Host: t\r\nX-Test: Hello\r\n\r\n";
static const char keep_alive_2[] = "GET /b HTTP/1.1\r\nHost: t\r\n"
                                   "Connection: close\r\n\r\n";

static void keep_alive_data(client_t *c) {
  if (count_responses(c->got, c->len) == 1 && !c->sent_second) {
    c->sent_second = 1;
    client_send(c, keep_alive_2, sizeof(keep_alive_2) - 1);
  }
}

static void test_keep_alive_twice(void **state) {
  fixture_t fx;
  client_t *c;
  const char *second;
  (void)state;
  fixture_start(&fx, NULL);
  listen_on(&fx, NULL);
  fx.respond_later = 1;
  c = client_start(&fx, keep_alive_1, sizeof(keep_alive_1) - 1);
  c->on_data = keep_alive_data;
  uv_run(&fx.loop, UV_RUN_DEFAULT);

  assert_int_equal(fx.requests, 2);
  assert_int_equal(fx.respond_rc, 0);
  assert_true(c->eof);
  assert_int_equal(count_responses(c->got, c->len), 2);
  second = strstr(c->got + 1, "HTTP/1.1 200 OK\r\n");
  assert_non_null(second);
  assert_true(strncmp(c->got, "HTTP/1.1 200 OK\r\n", 17) == 0);
  assert_non_null(strstr(c->got, "Connection: keep-alive\r\n"));
  assert_true(strstr(c->got, "Connection: keep-alive\r\n") < second);
  assert_non_null(strstr(second, "Connection: close\r\n"));
  assert_non_null(strstr(c->got, "Content-Length: 8\r\n"));
  assert_non_null(strstr(c->got, "X-Served-By: test\r\n"));
  assert_non_null(strstr(c->got, "\r\n\r\nhello /a"));
  assert_non_null(strstr(second, "\r\n\r\nhello /b"));
  /* the last request seen */
  assert_string_equal(fx.method, "GET");
  assert_string_equal(fx.path, "/b");
  assert_string_equal(fx.header, "(none)");
  assert_int_equal(fx.server.requests, 2);
  fixture_finish(&fx);
}

static void test_request_fields_and_header_lookup(void **state) {
  fixture_t fx;
  client_t *c;
  (void)state;
  fixture_start(&fx, NULL);
  listen_on(&fx, NULL);
  c = client_start(&fx, keep_alive_1, sizeof(keep_alive_1) - 1);
  c->on_data = NULL;
  uv_run(&fx.loop, UV_RUN_NOWAIT);
  while (fx.requests == 0)
    uv_run(&fx.loop, UV_RUN_ONCE);
  assert_string_equal(fx.path, "/a");
  assert_string_equal(fx.query, "x=1&y=%20"); /* raw */
  assert_string_equal(fx.header, "Hello");    /* asked as "x-test" */
  mnemo_http_server_close(&fx.server, on_server_closed);
  fixture_finish(&fx);
}

/* Two requests in one write, answered inside the callback: responses in
 * order, the second after the first was written. */
static const char pipelined[] = "GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
                                "HEAD /2 HTTP/1.1\r\nHost: t\r\n\r\n"
                                "POST /3 HTTP/1.1\r\nHost: t\r\n"
                                "Transfer-Encoding: chunked\r\n"
                                "Connection: close\r\n\r\n"
                                "5\r\nhello\r\n6\r\n world\r\n0\r\n"
                                "X-Trailer: t\r\n\r\n";

static void test_pipelined_and_bodies(void **state) {
  fixture_t fx;
  client_t *c;
  const char *first, *second, *third;
  (void)state;
  fixture_start(&fx, NULL);
  listen_on(&fx, NULL);
  c = client_start(&fx, pipelined, sizeof(pipelined) - 1);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  assert_int_equal(fx.requests, 3);
  assert_true(c->eof);
  first = strstr(c->got, "hello /1");
  second = strstr(c->got, "HTTP/1.1 200 OK\r\n");
  second = second ? strstr(second + 1, "HTTP/1.1 200 OK\r\n") : NULL;
  third = second ? strstr(second + 1, "HTTP/1.1 200 OK\r\n") : NULL;
  assert_non_null(first);
  assert_non_null(second);
  assert_non_null(third);
  assert_true(first < second);
  /* HEAD: Content-Length of the body it would get, no body */
  assert_true(strncmp(strstr(second, "\r\n\r\n"), "\r\n\r\nHTTP/1.1", 12) == 0);
  assert_non_null(strstr(third, "hello /3"));
  assert_string_equal(fx.method, "POST");
  assert_string_equal(fx.body, "hello world");
  assert_int_equal(fx.body_len, 11);
  fixture_finish(&fx);
}

static const char malformed[] = "GARBAGE\r\n\r\n";

static void test_malformed_is_400_and_closed(void **state) {
  fixture_t fx;
  client_t *c;
  (void)state;
  fixture_start(&fx, NULL);
  listen_on(&fx, NULL);
  c = client_start(&fx, malformed, sizeof(malformed) - 1);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  assert_int_equal(fx.requests, 0);
  assert_true(c->eof);
  assert_true(strncmp(c->got, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
  assert_non_null(strstr(c->got, "Content-Type: application/json\r\n"));
  assert_non_null(strstr(c->got, "Connection: close\r\n"));
  assert_non_null(strstr(c->got, "{\"error\":\"bad_request\""));
  assert_int_equal(count_responses(c->got, c->len), 1);
  assert_int_equal(fx.server.bad_requests, 1);
  fixture_finish(&fx);
}

static void test_oversize_header_and_body(void **state) {
  fixture_t fx;
  client_t *big_head, *big_body, *chunked;
  static char head[24 * 1024];
  static const char body[] = "POST /up HTTP/1.1\r\nHost: t\r\n"
                             "Content-Length: 1000\r\n\r\n";
  static const char chunks[] = "POST /up HTTP/1.1\r\nHost: t\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n"
                               "50\r\n"
                               "0123456789012345678901234567890123456789"
                               "0123456789012345678901234567890123456789"
                               "\r\n50\r\n"
                               "0123456789012345678901234567890123456789"
                               "0123456789012345678901234567890123456789"
                               "\r\n0\r\n\r\n";
  mnemo_http_options_t o;
  int n;
  (void)state;
  mnemo_http_options_init(&o);
  o.max_body_bytes = 100;
  n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nX-Big: ");
  memset(head + n, 'a', 20 * 1024);
  n += 20 * 1024;
  n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n\r\n");
  fixture_start(&fx, NULL);
  listen_on(&fx, &o);
  big_head = client_start(&fx, head, (size_t)n);
  big_body = client_start(&fx, body, sizeof(body) - 1);
  chunked = client_start(&fx, chunks, sizeof(chunks) - 1);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  assert_int_equal(fx.requests, 0);
  assert_true(big_head->eof && big_body->eof && chunked->eof);
  assert_true(strncmp(big_head->got, "HTTP/1.1 400 ", 13) == 0);
  assert_non_null(strstr(big_head->got, "request header too large"));
  assert_true(strncmp(big_body->got, "HTTP/1.1 413 ", 13) == 0);
  assert_non_null(strstr(big_body->got, "{\"error\":\"payload_too_large\""));
  assert_true(strncmp(chunked->got, "HTTP/1.1 413 ", 13) == 0);
  fixture_finish(&fx);
}

static void test_slow_and_idle_clients_are_closed(void **state) {
  fixture_t fx;
  client_t *slow, *silent, *idle;
  static const char partial[] = "GET / HTTP/1.1\r\nHost: t\r\n";
  static const char whole[] = "GET /i HTTP/1.1\r\nHost: t\r\n\r\n";
  mnemo_http_options_t o;
  (void)state;
  mnemo_http_options_init(&o);
  o.request_timeout_ms = 100;
  o.idle_timeout_ms = 150;
  fixture_start(&fx, NULL);
  listen_on(&fx, &o);
  slow = client_start(&fx, partial, sizeof(partial) - 1);
  silent = client_start(&fx, NULL, 0);
  idle = client_start(&fx, whole, sizeof(whole) - 1);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  assert_true(slow->eof && silent->eof && idle->eof);
  assert_int_equal(slow->len, 0); /* closed, no response */
  assert_int_equal(silent->len, 0);
  assert_true(slow->eof_ms - slow->started_ms >= 90);
  assert_true(slow->eof_ms - slow->started_ms < 2000);
  assert_true(silent->eof_ms - silent->started_ms >= 90);
  /* answered, kept alive, then closed after the idle limit */
  assert_int_equal(count_responses(idle->got, idle->len), 1);
  assert_non_null(strstr(idle->got, "Connection: keep-alive"));
  assert_true(idle->eof_ms - idle->started_ms >= 140);
  assert_int_equal(fx.server.timeouts, 3);
  fixture_finish(&fx);
}

static void respond_to_gone_client(uv_timer_t *t) {
  fixture_t *fx = (fixture_t *)((char *)t - offsetof(fixture_t, timer));
  assert_non_null(fx->held);
  assert_false(mnemo_http_request_connected(fx->held));
  /* The request is still valid to read... */
  assert_string_equal(fx->held->path, "/gone");
  /* ...and the response is dropped. */
  fx->respond_rc =
      mnemo_http_respond(fx->held, 200, "text/plain", NULL, 0, "late", 4);
  fx->held = NULL;
  mnemo_http_server_close(&fx->server, on_server_closed);
}

static void wait_for_disconnect(uv_timer_t *t) {
  fixture_t *fx = (fixture_t *)((char *)t - offsetof(fixture_t, timer));
  if (fx->held == NULL || mnemo_http_request_connected(fx->held)) {
    uv_timer_start(t, wait_for_disconnect, 5, 0);
    return;
  }
  uv_timer_start(t, respond_to_gone_client, 20, 0);
}

static void test_client_leaves_before_response(void **state) {
  fixture_t fx;
  client_t *c;
  static const char req[] = "GET /gone HTTP/1.1\r\nHost: t\r\n\r\n";
  (void)state;
  fixture_start(&fx, NULL);
  listen_on(&fx, NULL);
  fx.hold = 1;
  c = client_start(&fx, req, sizeof(req) - 1);
  fx.clients_total += 1000; /* the server is closed by the timer */
  c->close_after_write = 1;
  uv_timer_start(&fx.timer, wait_for_disconnect, 5, 0);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  assert_int_equal(fx.requests, 1);
  assert_int_equal(fx.respond_rc, UV_ENOTCONN);
  assert_int_equal(fx.server.nconns, 0);
  fixture_finish(&fx);
}

static void close_server_holding(client_t *c) {
  (void)c;
}

/* The server closes with a request in the caller's hands; the request
 * outlives the server, and dropping it later is fine. */
static void test_close_with_request_held(void **state) {
  fixture_t fx;
  client_t *c;
  static const char req[] = "GET /held HTTP/1.1\r\nHost: t\r\n\r\n";
  (void)state;
  fixture_start(&fx, NULL);
  listen_on(&fx, NULL);
  fx.hold = 1;
  c = client_start(&fx, req, sizeof(req) - 1);
  c->on_data = close_server_holding;
  while (fx.held == NULL)
    uv_run(&fx.loop, UV_RUN_ONCE);
  assert_true(mnemo_http_request_connected(fx.held));
  mnemo_http_server_close(&fx.server, on_server_closed);
  mnemo_http_server_close(&fx.server, on_server_closed); /* once */
  assert_false(mnemo_http_request_connected(fx.held));
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  assert_int_equal(fx.server_closed, 1);
  assert_true(c->eof);
  assert_int_equal(c->len, 0);
  assert_string_equal(fx.held->path, "/held");
  mnemo_http_request_drop(fx.held);
  fx.held = NULL;
  fixture_finish(&fx);
}

static void second_client(uv_timer_t *t) {
  fixture_t *fx = (fixture_t *)((char *)t - offsetof(fixture_t, timer));
  client_start(fx, NULL, 0);
}

static void test_connection_limit(void **state) {
  fixture_t fx;
  client_t *first, *second;
  mnemo_http_options_t o;
  (void)state;
  mnemo_http_options_init(&o);
  o.max_connections = 1;
  o.request_timeout_ms = 300; /* the first, silent, ends by timing out */
  fixture_start(&fx, NULL);
  listen_on(&fx, &o);
  first = client_start(&fx, NULL, 0);
  uv_timer_start(&fx.timer, second_client, 50, 0);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  second = fx.clients[1];
  assert_non_null(second);
  assert_true(strncmp(second->got, "HTTP/1.1 503 ", 13) == 0);
  assert_non_null(strstr(second->got, "\"unavailable\""));
  assert_int_equal(first->len, 0);
  assert_int_equal(fx.server.rejected, 1);
  fixture_finish(&fx);
}

static void on_request_bad_response(mnemo_http_server_t *s,
                                    mnemo_http_request_t *req) {
  static const mnemo_http_header_t split[] = {{"X-A", 3, "1\r\nX-B: 2", 9}};
  fixture_t *fx = s->data;
  fx->requests++;
  fx->respond_rc = mnemo_http_respond(req, 200, "text/plain", split, 1, "x", 1);
}

static void test_invalid_response_becomes_500(void **state) {
  fixture_t fx;
  client_t *c;
  static const char req[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
  (void)state;
  fixture_start(&fx, NULL);
  assert_int_equal(mnemo_http_server_listen(&fx.loop, &fx.server, "localhost:0",
                                            NULL, on_request_bad_response),
                   0);
  fx.server.data = &fx;
  c = client_start(&fx, req, sizeof(req) - 1);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  assert_int_equal(fx.respond_rc, UV_EINVAL);
  assert_true(strncmp(c->got, "HTTP/1.1 500 ", 13) == 0);
  assert_null(strstr(c->got, "X-B"));
  assert_true(c->eof);
  fixture_finish(&fx);
}

static void test_addresses(void **state) {
  struct sockaddr_storage ss;
  fixture_t fx;
  mnemo_http_server_t other, v6;
  int rc;
  (void)state;
  assert_int_equal(mnemo_http_parse_addr("127.0.0.1:8088", &ss), 0);
  assert_int_equal(ss.ss_family, AF_INET);
  assert_int_equal(mnemo_http_parse_addr("[::1]:0", &ss), 0);
  assert_int_equal(ss.ss_family, AF_INET6);
  assert_int_equal(mnemo_http_parse_addr("localhost:65535", &ss), 0);
  assert_int_equal(mnemo_http_parse_addr("::1:80", &ss), UV_EINVAL);
  assert_int_equal(mnemo_http_parse_addr("127.0.0.1", &ss), UV_EINVAL);
  assert_int_equal(mnemo_http_parse_addr("127.0.0.1:65536", &ss), UV_EINVAL);
  assert_int_equal(mnemo_http_parse_addr("127.0.0.1:-1", &ss), UV_EINVAL);
  assert_int_equal(mnemo_http_parse_addr(":80", &ss), UV_EINVAL);
  assert_int_equal(mnemo_http_parse_addr("example.com:80", &ss), UV_EINVAL);
  assert_int_equal(mnemo_http_parse_addr("[::1]80", &ss), UV_EINVAL);
  assert_int_equal(mnemo_http_parse_addr(NULL, &ss), UV_EINVAL);

  fixture_start(&fx, NULL);
  listen_on(&fx, NULL);
  /* The same port twice: the error comes back, close still releases. */
  {
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", fx.server.port);
    other.data = &fx;
    assert_int_equal(
        mnemo_http_server_listen(&fx.loop, &other, addr, NULL, on_request),
        UV_EADDRINUSE);
    other.data = &fx;
    mnemo_http_server_close(&other, on_server_closed);
  }
  /* A bad address fails before anything opens: closed at once. */
  assert_int_equal(
      mnemo_http_server_listen(&fx.loop, &v6, "nowhere", NULL, on_request),
      UV_EINVAL);
  v6.data = &fx;
  mnemo_http_server_close(&v6, on_server_closed);
  assert_int_equal(fx.server_closed, 1);
  /* IPv6 loopback, where the machine has it. */
  rc = mnemo_http_server_listen(&fx.loop, &v6, "[::1]:0", NULL, on_request);
  v6.data = &fx;
  if (rc == 0) {
    assert_string_equal(v6.host, "::1");
    assert_true(v6.port > 0);
  }
  mnemo_http_server_close(&v6, on_server_closed);
  mnemo_http_server_close(&fx.server, on_server_closed);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  assert_int_equal(fx.server_closed, 4);
  fx.server_closed = 1;
  fixture_finish(&fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keep_alive_twice),
      cmocka_unit_test(test_request_fields_and_header_lookup),
      cmocka_unit_test(test_pipelined_and_bodies),
      cmocka_unit_test(test_malformed_is_400_and_closed),
      cmocka_unit_test(test_oversize_header_and_body),
      cmocka_unit_test(test_slow_and_idle_clients_are_closed),
      cmocka_unit_test(test_client_leaves_before_response),
      cmocka_unit_test(test_close_with_request_held),
      cmocka_unit_test(test_connection_limit),
      cmocka_unit_test(test_invalid_response_becomes_500),
      cmocka_unit_test(test_addresses),
  };
  return cmocka_run_group_tests_name("http_server", tests, NULL, NULL);
}
