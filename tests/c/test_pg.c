/* runtime/loop/pg.c against a real server ($MNEMO_PG_DSN, started by
 * scripts/run-tests): connect, query, SQL error, bad DSN, close, and the
 * connect deadline against a server that never answers — under ASan this
 * also proves the connection lifecycle leaks nothing. */
#include "testing.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pg.h"

typedef struct probe {
  mnemo_pg_conn_t conn;
  int connected;
  int results;
  int closed;
  char value[64];
  char sqlstate[8];
} probe_t;

static void on_closed(mnemo_pg_conn_t *conn) {
  ((probe_t *)conn)->closed = 1;
}

static void on_result(mnemo_pg_conn_t *conn, PGresult *r) {
  probe_t *p = (probe_t *)conn;
  p->results++;
  assert_non_null(r);
  if (PQresultStatus(r) == PGRES_TUPLES_OK) {
    snprintf(p->value, sizeof(p->value), "%s", PQgetvalue(r, 0, 0));
  } else {
    const char *state = mnemo_pg_sqlstate(r);
    snprintf(p->sqlstate, sizeof(p->sqlstate), "%s", state ? state : "");
  }
  PQclear(r);
  if (p->results == 1) {
    const char *params[] = {"21"};
    assert_int_equal(
        mnemo_pg_query(conn, "SELECT $1::int * 2", 1, params, on_result), 0);
  } else if (p->results == 2) {
    assert_int_equal(
        mnemo_pg_query(conn, "SELECT * FROM no_such_table", 0, NULL, on_result),
        0);
  } else {
    mnemo_pg_close(conn, on_closed);
  }
}

static void on_connected(mnemo_pg_conn_t *conn, int status) {
  probe_t *p = (probe_t *)conn;
  assert_int_equal(status, 0);
  p->connected = 1;
  /* Busy: a second query is refused until the first is answered. */
  assert_int_equal(mnemo_pg_query(conn, "SELECT 1", 0, NULL, on_result), 0);
  assert_int_equal(mnemo_pg_query(conn, "SELECT 2", 0, NULL, on_result), -1);
  assert_non_null(strstr(conn->error, "not ready"));
}

static void test_query_cycle(void **state) {
  uv_loop_t loop;
  probe_t p;
  uint64_t t0;
  const char *dsn = getenv("MNEMO_PG_DSN");
  (void)state;
  assert_non_null(dsn); /* scripts/run-tests starts a server */
  memset(&p, 0, sizeof(p));
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(mnemo_pg_connect(&loop, &p.conn, dsn, 0, on_connected), 0);
  /* The connect deadline (10 s) is stopped once connected: the loop ends
   * when the work does. */
  t0 = uv_hrtime();
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_true(uv_hrtime() - t0 < 5000000000ull);
  assert_true(p.connected);
  assert_int_equal(p.results, 3);
  assert_string_equal(p.value, "42");
  assert_string_equal(p.sqlstate, "42P01");
  assert_true(p.closed);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void on_refused(mnemo_pg_conn_t *conn, int status) {
  assert_int_equal(status, -1);
  assert_non_null(strstr(conn->error, "refused"));
  mnemo_pg_close(conn, on_closed);
}

static void test_refused_and_bad_dsn(void **state) {
  uv_loop_t loop;
  probe_t p;
  (void)state;
  memset(&p, 0, sizeof(p));
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(mnemo_pg_connect(&loop, &p.conn,
                                    "postgresql://x@127.0.0.1:1/x", 0,
                                    on_refused),
                   0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_true(p.closed);

  memset(&p, 0, sizeof(p));
  assert_int_equal(
      mnemo_pg_connect(&loop, &p.conn, "nonsense dsn", 0, on_refused), -1);
  assert_non_null(strstr(p.conn.error, "missing \"=\""));
  mnemo_pg_close(&p.conn, on_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_true(p.closed);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A TCP listener on 127.0.0.1 that never accepts: the kernel completes
 * the handshake, libpq sends its first packet and waits for ever. */
static int black_hole(int *port) {
  struct sockaddr_in a;
  socklen_t n = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(fd, 8), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &n), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

/* The lowest descriptor free now (to see none is left open). */
static int next_fd(void) {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  close(fd);
  return fd;
}

typedef struct timed {
  mnemo_pg_conn_t conn;
  int status, called, closed;
  char error[512];
} timed_t;

static void on_timed_closed(mnemo_pg_conn_t *conn) {
  ((timed_t *)conn)->closed = 1;
}

static void on_timed(mnemo_pg_conn_t *conn, int status) {
  timed_t *t = (timed_t *)conn;
  t->called++;
  t->status = status;
  snprintf(t->error, sizeof(t->error), "%s", conn->error);
  mnemo_pg_close(conn, on_timed_closed);
}

static void test_connect_deadline(void **state) {
  uv_loop_t loop;
  timed_t t;
  char dsn[128];
  int port, listener, fd_before;
  uint64_t t0, elapsed;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  listener = black_hole(&port);
  fd_before = next_fd();
  snprintf(dsn, sizeof(dsn), "postgresql://x@127.0.0.1:%d/x", port);
  memset(&t, 0, sizeof(t));
  t0 = uv_hrtime();
  assert_int_equal(mnemo_pg_connect(&loop, &t.conn, dsn, 200, on_timed), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  elapsed = uv_hrtime() - t0;
  assert_int_equal(t.called, 1);
  assert_int_equal(t.status, -1);
  assert_true(t.conn.timed_out);
  assert_string_equal(t.error, "timed out after 0.2 s");
  assert_true(t.closed);
  assert_true(elapsed >= 200000000ull);
  assert_true(elapsed < 2000000000ull);
  /* Both descriptors (libpq's and our dup) are closed. */
  assert_int_equal(next_fd(), fd_before);

  /* Closed while connecting, before its deadline: the timer goes too (the
   * loop would otherwise wait for it). */
  memset(&t, 0, sizeof(t));
  t0 = uv_hrtime();
  assert_int_equal(mnemo_pg_connect(&loop, &t.conn, dsn, 10000, on_timed), 0);
  mnemo_pg_close(&t.conn, on_timed_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_true(uv_hrtime() - t0 < 2000000000ull);
  assert_int_equal(t.called, 0);
  assert_true(t.closed);
  assert_int_equal(next_fd(), fd_before);
  close(listener);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_query_cycle),
      cmocka_unit_test(test_refused_and_bad_dsn),
      cmocka_unit_test(test_connect_deadline),
  };
  return cmocka_run_group_tests_name("pg", tests, NULL, NULL);
}
