/* PostgreSQL on the libuv loop: one libpq connection in non-blocking mode,
 * driven by a uv_poll on its socket. No Lua here (see lua_pg.c).
 *
 * The struct is caller-owned and must stay valid until the close callback.
 * One query at a time per connection; a pool is built on top. */
#ifndef MNEMO_PG_H
#define MNEMO_PG_H

#include <libpq-fe.h>
#include <stdint.h>
#include <uv.h>

typedef struct mnemo_pg_conn mnemo_pg_conn_t;

/* status 0, or -1 with conn->error set. */
typedef void (*mnemo_pg_connect_cb)(mnemo_pg_conn_t *conn, int status);
/* The last result of the query (the caller owns it: PQclear), or NULL with
 * conn->error set when the connection failed. A result can itself be an
 * error (PQresultStatus, PG_DIAG_SQLSTATE). */
typedef void (*mnemo_pg_result_cb)(mnemo_pg_conn_t *conn, PGresult *result);
typedef void (*mnemo_pg_close_cb)(mnemo_pg_conn_t *conn);

enum mnemo_pg_state {
  MNEMO_PG_CLOSED = 0,
  MNEMO_PG_CONNECTING,
  MNEMO_PG_IDLE,
  MNEMO_PG_BUSY,
  MNEMO_PG_CLOSING
};

/* The connect deadline when the caller gives none (0). */
#define MNEMO_PG_CONNECT_TIMEOUT_MS 10000

struct mnemo_pg_conn {
  uv_poll_t poll;   /* data stays NULL (luv shares the loop) */
  uv_timer_t timer; /* the connect deadline; data stays NULL too */
  uv_loop_t *loop;
  PGconn *pg;
  enum mnemo_pg_state state;
  int timer_active; /* timer is initialised */
  int timed_out;    /* the connect failed at its deadline */
  int handles_open; /* being closed (mnemo_pg_close) */
  uint64_t connect_timeout_ms;
  int poll_active; /* poll is initialised on `socket` */
  int socket;      /* ours: a dup of libpq's, polled (see watch in pg.c) */
  int pq_socket;   /* libpq's, to notice it changing while connecting */
  int flushing;    /* a query is still being sent */
  PGresult *result;
  mnemo_pg_connect_cb on_connect;
  mnemo_pg_result_cb on_result;
  mnemo_pg_close_cb on_close;
  void *data;
  char error[512];
};

/* Starts connecting (PQconnectStart). Returns 0, or -1 with conn->error
 * set (then no callback comes; call mnemo_pg_close to release).
 *
 * The connect has a deadline of timeout_ms (0: MNEMO_PG_CONNECT_TIMEOUT_MS)
 * on the loop's own timer: libpq's connect_timeout holds only for its
 * blocking connects (PQconnectdb), never for PQconnectPoll, so a server
 * that accepts the TCP connection and never answers would otherwise be
 * waited for for ever. Past it, cb gets -1 with conn->timed_out set and
 * conn->error "timed out after N s"; as after any failure, the caller
 * then calls mnemo_pg_close, which closes the socket and frees libpq's
 * connection. */
int mnemo_pg_connect(uv_loop_t *loop, mnemo_pg_conn_t *conn, const char *dsn,
                     uint64_t timeout_ms, mnemo_pg_connect_cb cb);

/* Sends a query with text parameters (NULL entries are SQL NULL). Only in
 * the IDLE state. Returns 0, or -1 with conn->error set. */
int mnemo_pg_query(mnemo_pg_conn_t *conn, const char *sql, int nparams,
                   const char *const *params, mnemo_pg_result_cb cb);

/* Closes the connection (a running query is abandoned: the server notices
 * the closed socket). cb (may be NULL) runs once the poll handle is closed;
 * until then conn must stay valid. Safe in any state, once. */
void mnemo_pg_close(mnemo_pg_conn_t *conn, mnemo_pg_close_cb cb);

/* The 5-character SQLSTATE of an error result, or NULL. */
const char *mnemo_pg_sqlstate(const PGresult *result);

#endif
