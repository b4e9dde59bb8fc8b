#include "pg.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CONN_OF(handle) ((mnemo_pg_conn_t *)(handle))

static mnemo_pg_conn_t *conn_of_timer(void *timer) {
  return (mnemo_pg_conn_t *)((char *)timer - offsetof(mnemo_pg_conn_t, timer));
}

static void on_poll(uv_poll_t *handle, int status, int events);

static void set_error(mnemo_pg_conn_t *conn, const char *what) {
  const char *detail = conn->pg ? PQerrorMessage(conn->pg) : "";
  size_t n;
  snprintf(conn->error, sizeof(conn->error), "%s%s%s", what,
           detail && *detail ? ": " : "", detail ? detail : "");
  /* libpq ends its messages with a newline. */
  n = strlen(conn->error);
  while (n > 0 && (conn->error[n - 1] == '\n' || conn->error[n - 1] == ' '))
    conn->error[--n] = '\0';
}

/* Watches the connection's socket for `events`.
 *
 * The poll is on a dup() of libpq's socket, which only we close (after
 * libuv let go of it). libpq closes its own descriptor as soon as it sees
 * the connection lost; a new connection may then get the same number, and
 * closing our old poll later would remove the NEW socket from epoll (the
 * registration is by number): that connection's next query then waited
 * forever. */
static int watch(mnemo_pg_conn_t *conn, int events) {
  int fd = PQsocket(conn->pg);
  int rc;
  if (fd < 0) {
    set_error(conn, "no socket");
    return -1;
  }
  if (conn->poll_active && conn->pq_socket != fd) {
    /* Not possible to re-point a uv_poll: stop it and use a fresh one
     * once the old one is closed; in practice libpq only switches while
     * connecting, where we poll again right after. */
    uv_poll_stop(&conn->poll);
    snprintf(conn->error, sizeof(conn->error),
             "connection socket changed during connect (several hosts in "
             "the DSN are not supported)");
    return -1;
  }
  if (!conn->poll_active) {
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0) {
      snprintf(conn->error, sizeof(conn->error), "dup: %s", strerror(errno));
      return -1;
    }
    rc = uv_poll_init(conn->loop, &conn->poll, own);
    if (rc != 0) {
      close(own);
      snprintf(conn->error, sizeof(conn->error), "uv_poll_init: %s",
               uv_strerror(rc));
      return -1;
    }
    conn->poll.data = NULL;
    conn->poll_active = 1;
    conn->socket = own;
    conn->pq_socket = fd;
  }
  rc = uv_poll_start(&conn->poll, events, on_poll);
  if (rc != 0) {
    snprintf(conn->error, sizeof(conn->error), "uv_poll_start: %s",
             uv_strerror(rc));
    return -1;
  }
  return 0;
}

static void stop_deadline(mnemo_pg_conn_t *conn) {
  if (conn->timer_active)
    uv_timer_stop(&conn->timer);
}

static void fail_connect(mnemo_pg_conn_t *conn) {
  conn->state = MNEMO_PG_CLOSED;
  if (conn->poll_active)
    uv_poll_stop(&conn->poll);
  stop_deadline(conn);
  conn->on_connect(conn, -1);
}

/* The connect deadline: libpq is left where it is (its socket is closed
 * by mnemo_pg_close, which the callback's owner calls after a failure). */
static void on_connect_timeout(uv_timer_t *timer) {
  mnemo_pg_conn_t *conn = conn_of_timer(timer);
  if (conn->state != MNEMO_PG_CONNECTING)
    return;
  conn->timed_out = 1;
  snprintf(conn->error, sizeof(conn->error), "timed out after %g s",
           (double)conn->connect_timeout_ms / 1000.0);
  fail_connect(conn);
}

/* NOTICEs ("relation already exists, skipping") are not errors, and
 * libpq's default prints them on stderr, between our JSON log lines. */
static void ignore_notice(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static void continue_connect(mnemo_pg_conn_t *conn) {
  switch (PQconnectPoll(conn->pg)) {
  case PGRES_POLLING_READING:
    if (watch(conn, UV_READABLE) != 0)
      fail_connect(conn);
    return;
  case PGRES_POLLING_WRITING:
    if (watch(conn, UV_WRITABLE) != 0)
      fail_connect(conn);
    return;
  case PGRES_POLLING_OK:
    stop_deadline(conn);
    conn->state = MNEMO_PG_IDLE;
    PQsetNoticeProcessor(conn->pg, ignore_notice, NULL);
    if (PQsetnonblocking(conn->pg, 1) != 0) {
      set_error(conn, "cannot set non-blocking mode");
      fail_connect(conn);
      return;
    }
    uv_poll_stop(&conn->poll);
    conn->on_connect(conn, 0);
    return;
  case PGRES_POLLING_FAILED:
  default:
    set_error(conn, "connection failed");
    fail_connect(conn);
    return;
  }
}

static void finish_query(mnemo_pg_conn_t *conn, PGresult *result) {
  mnemo_pg_result_cb cb = conn->on_result;
  conn->on_result = NULL;
  conn->result = NULL;
  uv_poll_stop(&conn->poll);
  if (result == NULL)
    conn->state = MNEMO_PG_CLOSED; /* the connection broke */
  else
    conn->state = MNEMO_PG_IDLE;
  cb(conn, result);
}

/* Reads what arrived; hands over the query's last result once libpq has
 * them all. */
static void read_results(mnemo_pg_conn_t *conn) {
  PGresult *r;
  if (!PQconsumeInput(conn->pg)) {
    set_error(conn, "connection lost");
    if (conn->result != NULL)
      PQclear(conn->result);
    conn->result = NULL;
    finish_query(conn, NULL);
    return;
  }
  while (!PQisBusy(conn->pg)) {
    r = PQgetResult(conn->pg);
    if (r == NULL) {
      finish_query(conn, conn->result);
      return;
    }
    /* Keep the last result; with one statement there is one. */
    if (conn->result != NULL)
      PQclear(conn->result);
    conn->result = r;
  }
}

static void flush_query(mnemo_pg_conn_t *conn) {
  int rc = PQflush(conn->pg);
  if (rc < 0) {
    set_error(conn, "sending the query failed");
    finish_query(conn, NULL);
    return;
  }
  conn->flushing = rc == 1;
  if (watch(conn, UV_READABLE | (conn->flushing ? UV_WRITABLE : 0)) != 0)
    finish_query(conn, NULL);
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  mnemo_pg_conn_t *conn = CONN_OF(handle);
  if (status < 0) {
    /* libuv reports POLLERR as an error status; libpq knows the cause
     * (connection refused, reset) and says it when asked to go on. */
    uv_poll_stop(&conn->poll);
    if (conn->state == MNEMO_PG_CONNECTING)
      continue_connect(conn);
    else if (conn->state == MNEMO_PG_BUSY)
      read_results(conn);
    return;
  }
  if (conn->state == MNEMO_PG_CONNECTING) {
    continue_connect(conn);
    return;
  }
  if (conn->state != MNEMO_PG_BUSY)
    return;
  if ((events & UV_WRITABLE) && conn->flushing) {
    flush_query(conn);
    if (conn->state != MNEMO_PG_BUSY)
      return;
  }
  if (events & UV_READABLE)
    read_results(conn);
}

int mnemo_pg_connect(uv_loop_t *loop, mnemo_pg_conn_t *conn, const char *dsn,
                     uint64_t timeout_ms, mnemo_pg_connect_cb cb) {
  int rc;
  memset(conn, 0, sizeof(*conn));
  conn->loop = loop;
  conn->on_connect = cb;
  conn->connect_timeout_ms =
      timeout_ms > 0 ? timeout_ms : MNEMO_PG_CONNECT_TIMEOUT_MS;
  conn->pg = PQconnectStart(dsn);
  if (conn->pg == NULL) {
    snprintf(conn->error, sizeof(conn->error), "out of memory");
    return -1;
  }
  if (PQstatus(conn->pg) == CONNECTION_BAD) {
    /* A malformed string, or a Unix socket that failed at once. */
    set_error(conn, "connection failed");
    return -1;
  }
  rc = uv_timer_init(loop, &conn->timer);
  if (rc != 0) {
    snprintf(conn->error, sizeof(conn->error), "uv_timer_init: %s",
             uv_strerror(rc));
    return -1;
  }
  conn->timer.data = NULL;
  conn->timer_active = 1;
  conn->state = MNEMO_PG_CONNECTING;
  /* The first poll is for writing, as libpq documents. */
  if (watch(conn, UV_WRITABLE) != 0) {
    conn->state = MNEMO_PG_CLOSED;
    return -1;
  }
  /* Counted from now, not from the loop's cached time (which lags after a
   * long iteration: the deadline would come early), and one ms more: the
   * loop's time is whole ms, rounded down. */
  uv_update_time(loop);
  uv_timer_start(&conn->timer, on_connect_timeout, conn->connect_timeout_ms + 1,
                 0);
  return 0;
}

int mnemo_pg_query(mnemo_pg_conn_t *conn, const char *sql, int nparams,
                   const char *const *params, mnemo_pg_result_cb cb) {
  if (conn->state != MNEMO_PG_IDLE) {
    snprintf(conn->error, sizeof(conn->error),
             "connection is not ready for a query");
    return -1;
  }
  /* Without parameters, the simple protocol: several statements allowed
   * (migrations). With them, the extended one: values never touch SQL. */
  if (!(nparams == 0 ? PQsendQuery(conn->pg, sql)
                     : PQsendQueryParams(conn->pg, sql, nparams, NULL, params,
                                         NULL, NULL, 0))) {
    set_error(conn, "cannot send the query");
    return -1;
  }
  conn->state = MNEMO_PG_BUSY;
  conn->on_result = cb;
  flush_query(conn);
  return 0;
}

static void release(mnemo_pg_conn_t *conn) {
  if (conn->pg != NULL) {
    PQfinish(conn->pg); /* closes the socket */
    conn->pg = NULL;
  }
  conn->state = MNEMO_PG_CLOSED;
  if (conn->on_close != NULL)
    conn->on_close(conn);
}

/* Our descriptor is closed only after libuv let go of it; libpq's
 * connection is released once both handles are closed. */
static void on_poll_closed(uv_handle_t *handle) {
  mnemo_pg_conn_t *conn = CONN_OF(handle);
  close(conn->socket);
  conn->socket = -1;
  if (--conn->handles_open == 0)
    release(conn);
}

static void on_timer_closed(uv_handle_t *handle) {
  mnemo_pg_conn_t *conn = conn_of_timer(handle);
  if (--conn->handles_open == 0)
    release(conn);
}

void mnemo_pg_close(mnemo_pg_conn_t *conn, mnemo_pg_close_cb cb) {
  if (conn->state == MNEMO_PG_CLOSING)
    return;
  conn->state = MNEMO_PG_CLOSING;
  conn->on_close = cb;
  if (conn->result != NULL) {
    PQclear(conn->result);
    conn->result = NULL;
  }
  conn->handles_open = conn->poll_active + conn->timer_active;
  if (conn->poll_active) {
    uv_poll_stop(&conn->poll);
    uv_close((uv_handle_t *)&conn->poll, on_poll_closed);
  }
  if (conn->timer_active) {
    uv_timer_stop(&conn->timer);
    uv_close((uv_handle_t *)&conn->timer, on_timer_closed);
  }
  if (conn->handles_open == 0)
    release(conn);
}

const char *mnemo_pg_sqlstate(const PGresult *result) {
  return result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : NULL;
}
