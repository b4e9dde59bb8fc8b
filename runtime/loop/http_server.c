/* HTTP/1.1 server on the libuv loop: see http_server.h for the rules.
 *
 * A connection moves through these states:
 *   READING   parsing a request (timer: request or keep-alive idle limit)
 *   HANDLING  a request is in the caller's hands (no timer, parser paused,
 *             pipelined bytes kept in `pending`)
 *   WRITING   a response is being written (timer: request limit)
 *   LINGERING the last response is out, the socket shut down; input is
 *             drained until EOF or a short timer, so that closing does not
 *             reset the connection under a response the client has not
 *             read yet
 *   CLOSING   uv_close called on both handles; freed when both are closed
 * The struct is freed only from libuv's close callbacks, which never run
 * inside another callback, so nothing here can free a connection that a
 * caller up the stack (the parser, a read callback) is still using. */
#include "http_server.h"

#include <arpa/inet.h>
#include <http_parser.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define container_of(ptr, type, member)                                        \
  ((type *)((char *)(ptr)-offsetof(type, member)))

#define READ_BUF_SIZE 8192
/* Bytes of pipelined requests kept while one is handled; past this, reading
 * pauses until the response is out (back-pressure, bounded memory). */
#define PENDING_MAX (64 * 1024)
/* How long a closing connection drains unread input at most. */
#define LINGER_MS 2000
#define LISTEN_BACKLOG 128

typedef struct buf {
  char *p; /* NUL-terminated when non-NULL */
  size_t len, cap;
} buf_t;

/* A header of the request being parsed, as offsets into `head` (which may
 * move while it grows). */
typedef struct hdr_off {
  size_t name, name_len, value, value_len;
} hdr_off_t;

enum conn_state {
  CONN_READING,
  CONN_HANDLING,
  CONN_WRITING,
  CONN_LINGERING,
  CONN_CLOSING
};

enum hdr_state { H_NONE, H_FIELD, H_VALUE };

struct mnemo_http_conn {
  uv_tcp_t tcp;     /* data stays NULL */
  uv_timer_t timer; /* data stays NULL */
  uv_write_t write_req;
  uv_write_t continue_req;
  uv_shutdown_t shutdown_req;
  http_parser parser;
  mnemo_http_server_t *server;
  mnemo_http_conn_t *prev, *next;
  enum conn_state state;
  int handles_open; /* closed when it drops to 0 */
  int reading;      /* uv_read_start is in effect */
  int keep_alive;   /* of the response being written */
  int peer_eof;     /* the client closed its side */
  int idle;         /* between keep-alive requests */
  int continue_busy;
  /* the request being parsed */
  buf_t url, head, body;
  hdr_off_t *hdrs;
  size_t nhdrs, hdrs_cap;
  enum hdr_state hstate;
  size_t header_bytes;
  int err_status; /* why a parser callback failed: the status to send */
  const char *err_message;
  buf_t pending;             /* bytes received while the parser is paused */
  char *out;                 /* the response being written */
  mnemo_http_request_t *req; /* in the caller's hands */
  char read_buf[READ_BUF_SIZE];
};

static void conn_close(mnemo_http_conn_t *c);
static void feed(mnemo_http_conn_t *c, const char *data, size_t len);
static void respond_error(mnemo_http_conn_t *c, int status,
                          const char *message);

/* ---- buffers ---- */

static int buf_reserve(buf_t *b, size_t extra) {
  size_t need = b->len + extra + 1, cap = b->cap ? b->cap : 256;
  char *p;
  if (need <= b->cap)
    return 0;
  while (cap < need)
    cap *= 2;
  p = realloc(b->p, cap);
  if (p == NULL)
    return UV_ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

static int buf_append(buf_t *b, const char *data, size_t n) {
  if (buf_reserve(b, n) != 0)
    return UV_ENOMEM;
  if (n > 0)
    memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

static int buf_puts(buf_t *b, const char *s) {
  return buf_append(b, s, strlen(s));
}

static void buf_free(buf_t *b) {
  free(b->p);
  memset(b, 0, sizeof(*b));
}

/* Hands the memory over: a NUL-terminated string ("" if empty), or NULL
 * when out of memory. The buffer is left empty. */
static char *buf_take(buf_t *b) {
  char *p;
  if (b->p == NULL && buf_reserve(b, 0) != 0)
    return NULL;
  if (b->len == 0)
    b->p[0] = '\0';
  p = b->p;
  memset(b, 0, sizeof(*b));
  return p;
}

/* ---- options, addresses ---- */

void mnemo_http_options_init(mnemo_http_options_t *options) {
  options->max_header_bytes = 16 * 1024;
  options->max_body_bytes = 1024 * 1024;
  options->request_timeout_ms = 10000;
  options->idle_timeout_ms = 5000;
  options->max_connections = 128;
}

static int parse_port(const char *s) {
  size_t n = strlen(s);
  long port;
  if (n == 0 || n > 5 || strspn(s, "0123456789") != n)
    return -1;
  port = strtol(s, NULL, 10);
  return port <= 65535 ? (int)port : -1;
}

int mnemo_http_parse_addr(const char *addr, struct sockaddr_storage *out) {
  char host[64];
  const char *start, *end, *port_s;
  int port, v6 = 0;

  if (addr == NULL)
    return UV_EINVAL;
  if (addr[0] == '[') {
    start = addr + 1;
    end = strchr(start, ']');
    if (end == NULL || end[1] != ':')
      return UV_EINVAL;
    port_s = end + 2;
    v6 = 1;
  } else {
    start = addr;
    end = strrchr(addr, ':');
    if (end == NULL || memchr(addr, ':', (size_t)(end - addr)) != NULL)
      return UV_EINVAL; /* no port, or IPv6 without brackets */
    port_s = end + 1;
  }
  if (end == start || (size_t)(end - start) >= sizeof(host))
    return UV_EINVAL;
  memcpy(host, start, (size_t)(end - start));
  host[end - start] = '\0';
  if ((port = parse_port(port_s)) < 0)
    return UV_EINVAL;
  memset(out, 0, sizeof(*out));
  if (v6)
    return uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) ? UV_EINVAL : 0;
  if (strcmp(host, "localhost") == 0)
    strcpy(host, "127.0.0.1");
  return uv_ip4_addr(host, port, (struct sockaddr_in *)out) ? UV_EINVAL : 0;
}

/* ---- connection plumbing ---- */

static void on_timeout(uv_timer_t *timer) {
  mnemo_http_conn_t *c = container_of(timer, mnemo_http_conn_t, timer);
  if (c->state == CONN_READING || c->state == CONN_WRITING)
    c->server->timeouts++;
  conn_close(c);
}

/* (Re)starts the connection's one timer; 0 ms means no limit. */
static void arm(mnemo_http_conn_t *c, uint64_t ms) {
  if (ms == 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_timeout, ms, 0);
}

static void maybe_finish(mnemo_http_server_t *s) {
  if (s->closing && !s->listener_closing && s->nconns == 0 && !s->finished) {
    s->finished = 1;
    if (s->on_close != NULL)
      s->on_close(s); /* may free s: nothing after this */
  }
}

static void conn_release(mnemo_http_conn_t *c) {
  mnemo_http_server_t *s = c->server;
  if (--c->handles_open > 0)
    return;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  buf_free(&c->url);
  buf_free(&c->head);
  buf_free(&c->body);
  buf_free(&c->pending);
  free(c->hdrs);
  free(c->out);
  free(c);
  s->nconns--;
  maybe_finish(s);
}

static void on_tcp_closed(uv_handle_t *h) {
  conn_release(container_of(h, mnemo_http_conn_t, tcp));
}

static void on_timer_closed(uv_handle_t *h) {
  conn_release(container_of(h, mnemo_http_conn_t, timer));
}

/* Closes at once. A request in the caller's hands is detached: its
 * response will be dropped. */
static void conn_close(mnemo_http_conn_t *c) {
  if (c->state == CONN_CLOSING)
    return;
  c->state = CONN_CLOSING;
  if (c->req != NULL) {
    c->req->conn = NULL;
    c->req = NULL;
  }
  uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  mnemo_http_conn_t *c = container_of(h, mnemo_http_conn_t, tcp);
  (void)suggested;
  /* Every read is consumed (parsed or copied) before the next one. */
  *buf = uv_buf_init(c->read_buf, sizeof(c->read_buf));
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf);

static int start_reading(mnemo_http_conn_t *c) {
  int rc;
  if (c->reading)
    return 0;
  rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (rc == 0)
    c->reading = 1;
  return rc;
}

static void stop_reading(mnemo_http_conn_t *c) {
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

/* Keeps bytes that arrive while the parser is paused, for later. */
static void keep(mnemo_http_conn_t *c, const char *data, size_t len) {
  if (c->state == CONN_WRITING && !c->keep_alive)
    return; /* the connection ends with this response */
  if (buf_append(&c->pending, data, len) != 0) {
    conn_close(c);
    return;
  }
  if (c->pending.len >= PENDING_MAX)
    stop_reading(c);
}

/* EOF or a read error. */
static void read_ended(mnemo_http_conn_t *c, int status) {
  c->reading = 0; /* libuv stopped reading */
  if (status != UV_EOF) {
    conn_close(c); /* reset: nobody to answer */
    return;
  }
  c->peer_eof = 1;
  /* While writing, finish the response, then close. Otherwise there is
   * nothing more to do: idle or mid-request there is nothing to answer,
   * and a client that leaves while its request is handled is gone (a
   * half-closing HTTP client is rare; this frees the slot at once). */
  if (c->state != CONN_WRITING)
    conn_close(c);
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
  mnemo_http_conn_t *c = container_of(stream, mnemo_http_conn_t, tcp);
  if (n < 0) {
    read_ended(c, (int)n);
    return;
  }
  if (n == 0) /* EAGAIN; and a length of 0 would mean EOF to the parser */
    return;
  switch (c->state) {
  case CONN_READING:
    feed(c, buf->base, (size_t)n);
    break;
  case CONN_HANDLING:
  case CONN_WRITING:
    keep(c, buf->base, (size_t)n);
    break;
  default: /* lingering: drained; closing: ignored */
    break;
  }
}

/* ---- writing ---- */

static void on_shutdown(uv_shutdown_t *req, int status) {
  mnemo_http_conn_t *c = container_of(req, mnemo_http_conn_t, shutdown_req);
  if (c->state == CONN_CLOSING)
    return;
  if (status < 0 || c->peer_eof)
    conn_close(c);
  /* else: wait for the client's EOF (read_ended) or the timer */
}

static void linger(mnemo_http_conn_t *c) {
  uint64_t ms = LINGER_MS, limit = c->server->options.request_timeout_ms;
  c->state = CONN_LINGERING;
  buf_free(&c->pending);
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  arm(c, limit != 0 && limit < ms ? limit : ms);
  if (!c->peer_eof && start_reading(c) != 0)
    conn_close(c);
}

/* Back to reading after a keep-alive response: first what arrived
 * meanwhile, then the socket. */
static void resume(mnemo_http_conn_t *c) {
  buf_t kept = c->pending;
  memset(&c->pending, 0, sizeof(c->pending));
  c->state = CONN_READING;
  c->idle = 1;
  arm(c, c->server->options.idle_timeout_ms);
  http_parser_pause(&c->parser, 0);
  if (kept.len > 0)
    feed(c, kept.p, kept.len);
  free(kept.p);
  if ((c->state == CONN_READING || c->state == CONN_HANDLING) &&
      start_reading(c) != 0)
    conn_close(c);
}

static void on_written(uv_write_t *req, int status) {
  mnemo_http_conn_t *c = container_of(req, mnemo_http_conn_t, write_req);
  free(c->out);
  c->out = NULL;
  if (c->state == CONN_CLOSING)
    return;
  if (status < 0)
    conn_close(c);
  else if (!c->keep_alive || c->peer_eof)
    linger(c);
  else
    resume(c);
}

/* Takes `out` (malloc'd). */
static void start_write(mnemo_http_conn_t *c, char *out, size_t len,
                        int keep_alive) {
  uv_buf_t b = uv_buf_init(out, (unsigned int)len);
  c->out = out;
  c->keep_alive = keep_alive;
  c->state = CONN_WRITING;
  arm(c, c->server->options.request_timeout_ms);
  if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    free(out);
    c->out = NULL;
    conn_close(c);
  }
}

/* ---- building responses ---- */

typedef struct response {
  int status;
  const char *content_type; /* may be NULL */
  const mnemo_http_header_t *headers;
  size_t nheaders;
  const char *body;
  size_t body_len;
  int head_only;  /* HEAD: Content-Length, no body */
  int keep_alive; /* in: what the request allows; out: what is sent */
} response_t;

static int is_tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int valid_name(const char *s, size_t n) {
  size_t i;
  if (n == 0)
    return 0;
  for (i = 0; i < n; i++)
    if (!is_tchar((unsigned char)s[i]))
      return 0;
  return 1;
}

/* CR, LF or NUL in a value would end the header early (response
 * splitting). */
static int valid_value(const char *s, size_t n) {
  return memchr(s, '\r', n) == NULL && memchr(s, '\n', n) == NULL &&
         memchr(s, '\0', n) == NULL;
}

static int name_is(const mnemo_http_header_t *h, const char *name) {
  return h->name_len == strlen(name) &&
         strncasecmp(h->name, name, h->name_len) == 0;
}

/* Checks the caller's part of the response; sees `Connection: close`. */
static int check_response(response_t *r) {
  size_t i;
  if (r->status < 200 || r->status > 599)
    return UV_EINVAL;
  if (r->content_type != NULL &&
      !valid_value(r->content_type, strlen(r->content_type)))
    return UV_EINVAL;
  if ((r->status == 204 || r->status == 304) && r->body_len > 0)
    return UV_EINVAL;
  if (r->body_len > UINT_MAX / 2)
    return UV_EINVAL;
  for (i = 0; i < r->nheaders; i++) {
    const mnemo_http_header_t *h = &r->headers[i];
    if (h->name == NULL || h->value == NULL ||
        !valid_name(h->name, h->name_len) ||
        !valid_value(h->value, h->value_len))
      return UV_EINVAL;
    /* The framing is ours to state. */
    if (name_is(h, "content-length") || name_is(h, "transfer-encoding"))
      return UV_EINVAL;
    if (name_is(h, "connection") && h->value_len == 5 &&
        strncasecmp(h->value, "close", 5) == 0)
      r->keep_alive = 0;
  }
  return 0;
}

static const char *reason_phrase(int status) {
  const char *s = http_status_str((enum http_status)status);
  return s != NULL && s[0] != '<' ? s : ""; /* "<unknown>" */
}

static int build_response(response_t *r, char **out, size_t *out_len) {
  buf_t b = {NULL, 0, 0};
  char line[96];
  size_t i;
  int rc = check_response(r);
  if (rc != 0)
    return rc;
  rc = buf_reserve(&b, 256 + r->body_len);
  snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", r->status,
           reason_phrase(r->status));
  rc = rc ? rc : buf_puts(&b, line);
  if (r->content_type != NULL && rc == 0) {
    rc = buf_puts(&b, "Content-Type: ");
    rc = rc ? rc : buf_puts(&b, r->content_type);
    rc = rc ? rc : buf_puts(&b, "\r\n");
  }
  if (r->status != 204 && r->status != 304 && rc == 0) {
    snprintf(line, sizeof(line), "Content-Length: %zu\r\n", r->body_len);
    rc = buf_puts(&b, line);
  }
  if (rc == 0)
    rc = buf_puts(&b, r->keep_alive ? "Connection: keep-alive\r\n"
                                    : "Connection: close\r\n");
  for (i = 0; i < r->nheaders && rc == 0; i++) {
    const mnemo_http_header_t *h = &r->headers[i];
    if (name_is(h, "connection"))
      continue; /* stated above */
    rc = buf_append(&b, h->name, h->name_len);
    rc = rc ? rc : buf_puts(&b, ": ");
    rc = rc ? rc : buf_append(&b, h->value, h->value_len);
    rc = rc ? rc : buf_puts(&b, "\r\n");
  }
  rc = rc ? rc : buf_puts(&b, "\r\n");
  if (!r->head_only && rc == 0)
    rc = buf_append(&b, r->body, r->body_len);
  if (rc != 0) {
    buf_free(&b);
    return rc;
  }
  *out_len = b.len;
  *out = b.p;
  return 0;
}

static const char *error_code(int status) {
  switch (status) {
  case 400:
    return "bad_request";
  case 413:
    return "payload_too_large";
  case 503:
    return "unavailable";
  default:
    return "internal_error";
  }
}

/* Sends a JSON error and closes the connection after it. The messages are
 * ours or http_parser's: plain text, but quotes are dropped to be safe. */
static void respond_error(mnemo_http_conn_t *c, int status,
                          const char *message) {
  char body[256], clean[160];
  size_t i, j = 0;
  char *out;
  size_t out_len;
  response_t r;

  for (i = 0; message[i] != '\0' && j < sizeof(clean) - 1; i++)
    if (message[i] != '"' && message[i] != '\\' &&
        (unsigned char)message[i] >= 0x20)
      clean[j++] = message[i];
  clean[j] = '\0';
  snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"}\n",
           error_code(status), clean);
  memset(&r, 0, sizeof(r));
  r.status = status;
  r.content_type = "application/json";
  r.body = body;
  r.body_len = strlen(body);
  if (c->req != NULL) { /* cannot happen: one request at a time */
    c->req->conn = NULL;
    c->req = NULL;
  }
  if (build_response(&r, &out, &out_len) != 0) {
    conn_close(c);
    return;
  }
  start_write(c, out, out_len, 0);
}

/* ---- parsing ---- */

static int fail(mnemo_http_conn_t *c, int status, const char *message) {
  c->err_status = status;
  c->err_message = message;
  return -1; /* also an error for on_headers_complete (1 and 2 are not) */
}

static int count_header_bytes(mnemo_http_conn_t *c, size_t n) {
  c->header_bytes += n;
  if (c->header_bytes > c->server->options.max_header_bytes)
    return fail(c, 400, "request header too large");
  return 0;
}

/* Ends the header being parsed: NUL after its name and its value. A
 * header with an empty value gets no on_header_value at all. */
static int finish_header(mnemo_http_conn_t *c) {
  hdr_off_t *h = c->nhdrs > 0 ? &c->hdrs[c->nhdrs - 1] : NULL;
  int rc = 0;
  if (c->hstate == H_FIELD) {
    h->name_len = c->head.len - h->name;
    rc = buf_append(&c->head, "", 1);
    h->value = c->head.len;
    h->value_len = 0;
    rc = rc ? rc : buf_append(&c->head, "", 1);
  } else if (c->hstate == H_VALUE) {
    h->value_len = c->head.len - h->value;
    rc = buf_append(&c->head, "", 1);
  }
  c->hstate = H_NONE;
  return rc ? fail(c, 500, "out of memory") : 0;
}

static const char *conn_header(const mnemo_http_conn_t *c, const char *name) {
  size_t i, n = strlen(name);
  for (i = 0; i < c->nhdrs; i++) {
    const hdr_off_t *h = &c->hdrs[i];
    if (h->name_len == n && strncasecmp(c->head.p + h->name, name, n) == 0)
      return c->head.p + h->value;
  }
  return NULL;
}

static int on_message_begin(http_parser *p) {
  mnemo_http_conn_t *c = p->data;
  c->header_bytes = 0;
  c->nhdrs = 0;
  c->hstate = H_NONE;
  if (c->idle) {
    /* From its first byte, the request must arrive whole in time; the
     * idle limit is over. (A new connection's limit runs from accept.) */
    c->idle = 0;
    arm(c, c->server->options.request_timeout_ms);
  }
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  mnemo_http_conn_t *c = p->data;
  if (count_header_bytes(c, n) != 0)
    return -1;
  return buf_append(&c->url, at, n) ? fail(c, 500, "out of memory") : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  mnemo_http_conn_t *c = p->data;
  if (count_header_bytes(c, n) != 0)
    return -1;
  if (c->hstate != H_FIELD) {
    if (finish_header(c) != 0)
      return -1;
    if (c->nhdrs == c->hdrs_cap) {
      size_t cap = c->hdrs_cap ? c->hdrs_cap * 2 : 16;
      hdr_off_t *h = realloc(c->hdrs, cap * sizeof(*h));
      if (h == NULL)
        return fail(c, 500, "out of memory");
      c->hdrs = h;
      c->hdrs_cap = cap;
    }
    memset(&c->hdrs[c->nhdrs], 0, sizeof(c->hdrs[0]));
    c->hdrs[c->nhdrs++].name = c->head.len;
    c->hstate = H_FIELD;
  }
  return buf_append(&c->head, at, n) ? fail(c, 500, "out of memory") : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  mnemo_http_conn_t *c = p->data;
  if (count_header_bytes(c, n) != 0)
    return -1;
  if (c->hstate == H_FIELD) {
    hdr_off_t *h = &c->hdrs[c->nhdrs - 1];
    h->name_len = c->head.len - h->name;
    if (buf_append(&c->head, "", 1) != 0)
      return fail(c, 500, "out of memory");
    h->value = c->head.len;
    c->hstate = H_VALUE;
  }
  return buf_append(&c->head, at, n) ? fail(c, 500, "out of memory") : 0;
}

static void on_continue_written(uv_write_t *req, int status) {
  mnemo_http_conn_t *c = container_of(req, mnemo_http_conn_t, continue_req);
  c->continue_busy = 0;
  if (status < 0 && c->state != CONN_CLOSING)
    conn_close(c);
}

/* `Expect: 100-continue`: the client waits for this before the body
 * (curl does for bodies over 1 KiB, for a second). */
static void maybe_continue(mnemo_http_conn_t *c) {
  static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
  const char *expect = conn_header(c, "expect");
  uv_buf_t b;
  if (expect == NULL || strcasecmp(expect, "100-continue") != 0 ||
      c->continue_busy || c->parser.http_major != 1 || c->parser.http_minor < 1)
    return;
  b = uv_buf_init((char *)line, sizeof(line) - 1);
  if (uv_write(&c->continue_req, (uv_stream_t *)&c->tcp, &b, 1,
               on_continue_written) == 0)
    c->continue_busy = 1;
}

static int on_headers_complete(http_parser *p) {
  mnemo_http_conn_t *c = p->data;
  if (finish_header(c) != 0)
    return -1;
  if (p->method == HTTP_CONNECT)
    return fail(c, 400, "CONNECT is not supported");
  /* Refuse an announced oversize body before reading any of it. */
  if ((p->flags & F_CONTENTLENGTH) &&
      p->content_length > c->server->options.max_body_bytes)
    return fail(c, 413, "request body too large");
  maybe_continue(c);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  mnemo_http_conn_t *c = p->data;
  if (c->body.len + n > c->server->options.max_body_bytes)
    return fail(c, 413, "request body too large"); /* chunked */
  return buf_append(&c->body, at, n) ? fail(c, 500, "out of memory") : 0;
}

static void free_request(mnemo_http_request_t *req) {
  free(req->url_buf);
  free(req->head_buf);
  free(req->body_buf);
  free(req->header_array);
  free(req);
}

/* Splits the request target into path and query, in place (the '?' and
 * '#' separators become NULs). An absolute-form target
 * ("http://host/p?q") keeps only its path and query. */
static int split_target(mnemo_http_request_t *req, size_t url_len) {
  struct http_parser_url u;
  char *url = req->url_buf;
  http_parser_url_init(&u);
  if (http_parser_parse_url(url, url_len, 0, &u) != 0)
    return UV_EINVAL;
  req->path = "/";
  req->query = "";
  if (u.field_set & (1 << UF_PATH)) {
    req->path = url + u.field_data[UF_PATH].off;
    req->path_len = u.field_data[UF_PATH].len;
  } else {
    req->path_len = 1;
  }
  if (u.field_set & (1 << UF_QUERY)) {
    req->query = url + u.field_data[UF_QUERY].off;
    req->query_len = u.field_data[UF_QUERY].len;
    url[u.field_data[UF_QUERY].off + req->query_len] = '\0';
  }
  if (u.field_set & (1 << UF_PATH))
    url[u.field_data[UF_PATH].off + req->path_len] = '\0';
  return 0;
}

/* Moves the parsed request out of the connection into a new request. */
static int make_request(mnemo_http_conn_t *c, mnemo_http_request_t **out) {
  mnemo_http_request_t *req = calloc(1, sizeof(*req));
  size_t i, url_len = c->url.len, body_len = c->body.len;
  if (req == NULL)
    return UV_ENOMEM;
  req->url_buf = buf_take(&c->url);
  req->head_buf = buf_take(&c->head);
  req->body_buf = buf_take(&c->body);
  req->header_array = calloc(c->nhdrs ? c->nhdrs : 1, sizeof(*req->headers));
  if (!req->url_buf || !req->head_buf || !req->body_buf || !req->header_array) {
    free_request(req);
    return UV_ENOMEM;
  }
  for (i = 0; i < c->nhdrs; i++) {
    req->header_array[i].name = req->head_buf + c->hdrs[i].name;
    req->header_array[i].name_len = c->hdrs[i].name_len;
    req->header_array[i].value = req->head_buf + c->hdrs[i].value;
    req->header_array[i].value_len = c->hdrs[i].value_len;
  }
  req->headers = req->header_array;
  req->nheaders = c->nhdrs;
  c->nhdrs = 0;
  req->body = req->body_buf;
  req->body_len = body_len;
  if (split_target(req, url_len) != 0) {
    free_request(req);
    return UV_EINVAL;
  }
  req->method = http_method_str((enum http_method)c->parser.method);
  req->http_major = c->parser.http_major;
  req->http_minor = c->parser.http_minor;
  /* No protocol switch here: an Upgrade request is answered, then the
   * connection ends. */
  req->keep_alive = http_should_keep_alive(&c->parser) && !c->parser.upgrade;
  *out = req;
  return 0;
}

static int on_message_complete(http_parser *p) {
  mnemo_http_conn_t *c = p->data;
  mnemo_http_request_t *req;
  int rc;
  if (finish_header(c) != 0) /* a chunked body's trailers */
    return -1;
  rc = make_request(c, &req);
  if (rc != 0)
    return rc == UV_EINVAL ? fail(c, 400, "invalid request target")
                           : fail(c, 500, "out of memory");
  /* The rest of the input waits until this request is answered. */
  http_parser_pause(p, 1);
  uv_timer_stop(&c->timer);
  c->state = CONN_HANDLING;
  c->req = req;
  req->conn = c;
  c->server->requests++;
  c->server->on_request(c->server, req); /* may respond, or close it all */
  return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void feed(mnemo_http_conn_t *c, const char *data, size_t len) {
  size_t used = http_parser_execute(&c->parser, &parser_settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (c->state == CONN_CLOSING)
    return;
  if (e == HPE_PAUSED) { /* a request went out: keep what follows it */
    if (used < len)
      keep(c, data + used, len - used);
    return;
  }
  if (e != HPE_OK) {
    c->server->bad_requests++;
    respond_error(c, c->err_status ? c->err_status : 400,
                  c->err_message ? c->err_message : http_errno_description(e));
  }
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *listener, int status) {
  mnemo_http_server_t *s =
      container_of(listener, mnemo_http_server_t, listener);
  const mnemo_http_options_t *o = &s->options;
  mnemo_http_conn_t *c;
  if (status < 0 || s->closing)
    return;
  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return; /* libuv pauses accepting until a later uv_accept: none */
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = NULL;
  c->timer.data = NULL;
  c->handles_open = 2;
  c->server = s;
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->state = CONN_READING;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
      start_reading(c) != 0) {
    conn_close(c);
    return;
  }
  s->accepted++;
  uv_tcp_nodelay(&c->tcp, 1);
  if (o->max_connections != 0 && s->nconns > o->max_connections) {
    s->rejected++;
    respond_error(c, 503, "too many connections");
    return;
  }
  arm(c, o->request_timeout_ms);
}

/* A write to a client that has just reset the connection raises SIGPIPE,
 * whose default action ends the process; EPIPE is all we need. A handler
 * someone installed is left alone. */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

static void record_address(mnemo_http_server_t *s,
                           const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    uv_ip6_name(a, s->host, sizeof(s->host));
    s->port = ntohs(a->sin6_port);
  } else {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    uv_ip4_name(a, s->host, sizeof(s->host));
    s->port = ntohs(a->sin_port);
  }
}

int mnemo_http_server_listen(uv_loop_t *loop, mnemo_http_server_t *s,
                             const char *addr,
                             const mnemo_http_options_t *options,
                             mnemo_http_request_cb cb) {
  struct sockaddr_storage ss;
  int rc, len = (int)sizeof(ss);

  memset(s, 0, sizeof(*s));
  s->loop = loop;
  s->on_request = cb;
  mnemo_http_options_init(&s->options);
  if (options != NULL) {
    s->options = *options;
    /* A size of 0 means the default; a time or count of 0, no limit. */
    if (s->options.max_header_bytes == 0)
      s->options.max_header_bytes = 16 * 1024;
    if (s->options.max_body_bytes == 0)
      s->options.max_body_bytes = 1024 * 1024;
  }
  if (cb == NULL || (rc = mnemo_http_parse_addr(addr, &ss)) != 0)
    return UV_EINVAL;
  if ((rc = uv_tcp_init(loop, &s->listener)) != 0)
    return rc;
  s->listener.data = NULL;
  s->listener_open = 1;
  ignore_sigpipe();
  if ((rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG,
                      on_connection)) != 0 ||
      (rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len)) !=
          0)
    return rc;
  record_address(s, &ss);
  return 0;
}

static void on_listener_closed(uv_handle_t *h) {
  mnemo_http_server_t *s = container_of(h, mnemo_http_server_t, listener);
  s->listener_closing = 0;
  maybe_finish(s);
}

void mnemo_http_server_close(mnemo_http_server_t *s, mnemo_http_close_cb cb) {
  mnemo_http_conn_t *c;
  if (s->closing)
    return;
  s->closing = 1;
  s->on_close = cb;
  if (s->listener_open) {
    s->listener_open = 0;
    s->listener_closing = 1;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
  }
  /* conn_close only marks and calls uv_close: the list stays intact. */
  for (c = s->conns; c != NULL; c = c->next)
    conn_close(c);
  maybe_finish(s);
}

/* ---- requests ---- */

const char *mnemo_http_request_header(const mnemo_http_request_t *req,
                                      const char *name, size_t *len) {
  size_t i, n = strlen(name);
  for (i = 0; i < req->nheaders; i++) {
    const mnemo_http_header_t *h = &req->headers[i];
    if (h->name_len == n && strncasecmp(h->name, name, n) == 0) {
      if (len != NULL)
        *len = h->value_len;
      return h->value;
    }
  }
  return NULL;
}

int mnemo_http_request_connected(const mnemo_http_request_t *req) {
  return req->conn != NULL;
}

int mnemo_http_respond(mnemo_http_request_t *req, int status,
                       const char *content_type,
                       const mnemo_http_header_t *headers, size_t nheaders,
                       const char *body, size_t body_len) {
  mnemo_http_conn_t *c = req->conn;
  response_t r;
  char *out = NULL;
  size_t out_len = 0;
  int rc;

  if (c == NULL) {
    free_request(req);
    return UV_ENOTCONN;
  }
  r.status = status;
  r.content_type = content_type;
  r.headers = headers;
  r.nheaders = nheaders;
  r.body = body != NULL ? body : "";
  r.body_len = body != NULL ? body_len : 0;
  r.head_only = strcmp(req->method, "HEAD") == 0;
  r.keep_alive = req->keep_alive;
  /* Built before the request is freed: the body may point into it. */
  rc = build_response(&r, &out, &out_len);
  c->req = NULL;
  free_request(req);
  if (rc == UV_EINVAL) {
    respond_error(c, 500, "the handler gave an invalid response");
    return rc;
  }
  if (rc != 0) {
    conn_close(c);
    return rc;
  }
  start_write(c, out, out_len, r.keep_alive);
  return 0;
}

void mnemo_http_request_drop(mnemo_http_request_t *req) {
  mnemo_http_conn_t *c = req->conn;
  free_request(req);
  if (c != NULL) {
    c->req = NULL;
    conn_close(c);
  }
}
