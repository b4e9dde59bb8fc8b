/* runtime/pg.c against a real server ($MNEMO_PG_DSN, started by
 * scripts/run-tests): connect, query, SQL error, bad DSN, close — under
 * ASan this also proves the connection lifecycle leaks nothing. */
#include "testing.h"

#include <stdlib.h>
#include <string.h>

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
  const char *dsn = getenv("MNEMO_PG_DSN");
  (void)state;
  assert_non_null(dsn); /* scripts/run-tests starts a server */
  memset(&p, 0, sizeof(p));
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(mnemo_pg_connect(&loop, &p.conn, dsn, on_connected), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
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
                                    "postgresql://x@127.0.0.1:1/x", on_refused),
                   0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_true(p.closed);

  memset(&p, 0, sizeof(p));
  assert_int_equal(mnemo_pg_connect(&loop, &p.conn, "nonsense dsn", on_refused),
                   -1);
  assert_non_null(strstr(p.conn.error, "missing \"=\""));
  mnemo_pg_close(&p.conn, on_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_true(p.closed);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_query_cycle),
      cmocka_unit_test(test_refused_and_bad_dsn),
  };
  return cmocka_run_group_tests_name("pg", tests, NULL, NULL);
}
