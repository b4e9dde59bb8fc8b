/* A small HTTP/1.1 server on the libuv loop. No Lua here (see lua_http.c).
 *
 * Requests are parsed by libhttp-parser (2.9), never by hand. Each complete
 * request goes to the caller's callback as a mnemo_http_request_t; the
 * caller answers later (asynchronously) with mnemo_http_respond(). One
 * request per connection is in the caller's hands at a time: bytes of a
 * pipelined next request are kept (parser paused) until the response has
 * been written, so responses leave in request order.
 *
 * Robustness rules, all per connection:
 * - request line + headers over max_header_bytes -> 400, body over
 *   max_body_bytes -> 413 (announced by Content-Length: before it is read),
 *   a malformed request -> 400; each with a JSON body and the connection
 *   closed after it;
 * - a request that is not complete within request_timeout_ms of its first
 *   byte (or of the accept) -> the connection is closed (a slow client, or
 *   one that connects and says nothing); the same limit bounds writing a
 *   response to a client that does not read;
 * - between keep-alive requests the connection may idle idle_timeout_ms;
 * - over max_connections, a new connection gets 503 and is closed.
 * While a request is in the caller's hands no timer runs (the caller has
 * its own deadlines); if the client closes its side meanwhile, the
 * connection is closed and the response will be dropped.
 *
 * Keep-alive follows the request (HTTP/1.1 default, `Connection: close`
 * honoured, HTTP/1.0 only with `Connection: keep-alive`). Closing is
 * graceful: after the last response the socket is shut down and unread
 * input drained for a moment, so the client reads the response instead of
 * a reset.
 *
 * Caller-owned structs and libuv-style int error codes. Every handle keeps
 * `data` NULL (luv shares the loop and takes non-NULL data for its own);
 * owners are found with container_of. */
#ifndef MNEMO_HTTP_SERVER_H
#define MNEMO_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mnemo_http_server mnemo_http_server_t;
typedef struct mnemo_http_request mnemo_http_request_t;
typedef struct mnemo_http_conn mnemo_http_conn_t; /* private */

/* A request arrived whole. The request belongs to the caller until it is
 * passed to mnemo_http_respond or mnemo_http_request_drop (exactly one of
 * them, exactly once), whatever happens to the connection meanwhile. */
typedef void (*mnemo_http_request_cb)(mnemo_http_server_t *server,
                                      mnemo_http_request_t *req);
typedef void (*mnemo_http_close_cb)(mnemo_http_server_t *server);

typedef struct mnemo_http_options {
  size_t max_header_bytes;     /* request line + headers; 16 KiB */
  size_t max_body_bytes;       /* 1 MiB */
  uint64_t request_timeout_ms; /* 10 s; 0: none */
  uint64_t idle_timeout_ms;    /* 5 s between keep-alive requests; 0: none */
  unsigned max_connections;    /* 128 */
} mnemo_http_options_t;

typedef struct mnemo_http_header {
  const char *name; /* as received; NUL-terminated */
  size_t name_len;
  const char *value; /* NUL-terminated */
  size_t value_len;
} mnemo_http_header_t;

/* Every string is NUL-terminated and lives as long as the request. */
struct mnemo_http_request {
  const char *method; /* "GET", "POST", ... */
  const char *path;   /* raw (not percent-decoded), without the query */
  size_t path_len;
  const char *query; /* raw, after '?', without a '#fragment'; "" if none */
  size_t query_len;
  const mnemo_http_header_t *headers; /* in arrival order, trailers last */
  size_t nheaders;
  const char *body; /* "" if none */
  size_t body_len;
  unsigned short http_major, http_minor;
  int keep_alive; /* the connection stays open after the response */
  void *data;     /* for the caller */
  /* private */
  mnemo_http_conn_t *conn; /* NULL once the connection is gone */
  char *url_buf, *head_buf, *body_buf;
  mnemo_http_header_t *header_array;
};

struct mnemo_http_server {
  uv_tcp_t listener; /* data stays NULL (luv shares the loop) */
  uv_loop_t *loop;
  mnemo_http_options_t options;
  mnemo_http_request_cb on_request;
  mnemo_http_close_cb on_close;
  mnemo_http_conn_t *conns; /* open connections, linked */
  unsigned nconns;          /* connections not yet released */
  char host[64];            /* the bound address, numeric */
  int port;                 /* the bound port (after listen) */
  int listener_open;        /* initialised, uv_close not called */
  int listener_closing;     /* uv_close called, its callback not run */
  int closing;              /* mnemo_http_server_close was called */
  int finished;             /* the close callback ran */
  /* counters, for metrics */
  uint64_t accepted, requests, rejected, bad_requests, timeouts;
  void *data;
};

/* Fills in the defaults above. */
void mnemo_http_options_init(mnemo_http_options_t *options);

/* Parses "HOST:PORT" (IPv4 "127.0.0.1:8088", IPv6 "[::1]:8088",
 * "localhost" = 127.0.0.1; the port 0..65535, 0 = any free port). Names
 * other than localhost are refused: resolving would block the loop.
 * Returns 0 or UV_EINVAL. */
int mnemo_http_parse_addr(const char *addr, struct sockaddr_storage *out);

/* Starts listening. Sets every field of `server` (set `data` after);
 * options NULL = defaults. Returns 0 or a libuv error (UV_EINVAL for a bad
 * address, UV_EADDRINUSE, ...). Either way, release it with
 * mnemo_http_server_close. */
int mnemo_http_server_listen(uv_loop_t *loop, mnemo_http_server_t *server,
                             const char *addr,
                             const mnemo_http_options_t *options,
                             mnemo_http_request_cb cb);

/* Stops accepting and closes every connection at once (requests still in
 * the caller's hands stay valid; their responses will be dropped). cb (may
 * be NULL) runs once libuv let go of every handle; until then the struct
 * must stay valid. cb may run before this returns if nothing was left to
 * release. Safe in any state; the second call does nothing. */
void mnemo_http_server_close(mnemo_http_server_t *server,
                             mnemo_http_close_cb cb);

/* The value of a request header, by name in any case, or NULL. With
 * repeated headers, the first. *len (may be NULL) gets its length. */
const char *mnemo_http_request_header(const mnemo_http_request_t *req,
                                      const char *name, size_t *len);

/* Whether the client is still there to receive a response. */
int mnemo_http_request_connected(const mnemo_http_request_t *req);

/* Sends the response and releases the request (always, whatever is
 * returned). Content-Length is always set (except for 204 and 304, which
 * must not have one), the body is left out for HEAD. An extra header
 * `Connection: close` closes the connection after the response;
 * Content-Length and Transfer-Encoding may not be given. content_type may
 * be NULL (no Content-Type). Returns 0; UV_ENOTCONN if the client is gone
 * (the response is dropped); UV_EINVAL for a status outside 200..599 or a
 * header name or value that would break the framing (CR, LF; then the
 * client gets a 500 instead); UV_ENOMEM (the connection is closed). */
int mnemo_http_respond(mnemo_http_request_t *req, int status,
                       const char *content_type,
                       const mnemo_http_header_t *headers, size_t nheaders,
                       const char *body, size_t body_len);

/* Releases the request without a response; the connection, if still
 * open, is closed. */
void mnemo_http_request_drop(mnemo_http_request_t *req);

#endif
