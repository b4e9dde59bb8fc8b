/* Error classes: names, and the mappings from errno / libuv, SQLSTATE, HTTP
 * status and hiredis errors. */
#include "testing.h"

#include <errno.h>
#include <limits.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "error_class.h"
#include "status.h"

static void test_name_parse_round_trip(void **state) {
  static const char *const names[MNEMO_EC_COUNT] = {"unknown",
                                                    "connection",
                                                    "timeout",
                                                    "deadlock",
                                                    "too_many_connections",
                                                    "http_5xx",
                                                    "rate_limited",
                                                    "busy",
                                                    "invalid_input",
                                                    "constraint",
                                                    "auth",
                                                    "not_found",
                                                    "circuit_open",
                                                    "bulkhead_full",
                                                    "cancelled"};
  mnemo_error_class_t c;
  int i;
  (void)state;

  for (i = 0; i < MNEMO_EC_COUNT; i++) {
    assert_string_equal(mnemo_error_class_name((mnemo_error_class_t)i),
                        names[i]);
    c = MNEMO_EC_COUNT;
    assert_int_equal(mnemo_error_class_parse(names[i], &c), 0);
    assert_int_equal(c, i);
  }
  assert_string_equal(mnemo_error_class_name(MNEMO_EC_COUNT), "unknown");
  assert_string_equal(mnemo_error_class_name((mnemo_error_class_t)-1),
                      "unknown");
  assert_int_equal(MNEMO_EC_ALL, (1u << MNEMO_EC_COUNT) - 1u);
  assert_true(MNEMO_EC_COUNT <= 32); /* fits a uint32_t bit set */
}

static void test_parse_rejects_unknown_names(void **state) {
  static const char *const bad[] = {
      "",    "Connection", "TIMEOUT",  "connection ", " busy",   "http5xx",
      "5xx", "canceled",   "notfound", "unknow",      "unknownx"};
  mnemo_error_class_t c = MNEMO_EC_BUSY;
  size_t i;
  (void)state;

  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(mnemo_error_class_parse(bad[i], &c), MNEMO_EINVAL);
  assert_int_equal(mnemo_error_class_parse(NULL, &c), MNEMO_EINVAL);
  assert_int_equal(c, MNEMO_EC_BUSY); /* untouched */
}

typedef struct errno_case {
  int err;
  mnemo_error_class_t cls;
} errno_case_t;

static void test_from_errno(void **state) {
  static const errno_case_t cases[] = {
      {ECONNREFUSED, MNEMO_EC_CONNECTION},
      {ECONNRESET, MNEMO_EC_CONNECTION},
      {ECONNABORTED, MNEMO_EC_CONNECTION},
      {EPIPE, MNEMO_EC_CONNECTION},
      {EHOSTUNREACH, MNEMO_EC_CONNECTION},
      {EHOSTDOWN, MNEMO_EC_CONNECTION},
      {ENETUNREACH, MNEMO_EC_CONNECTION},
      {ENETDOWN, MNEMO_EC_CONNECTION},
      {ENETRESET, MNEMO_EC_CONNECTION},
      {ENOTCONN, MNEMO_EC_CONNECTION},
      {ETIMEDOUT, MNEMO_EC_TIMEOUT},
      {ECANCELED, MNEMO_EC_CANCELLED},
      {ENOENT, MNEMO_EC_NOT_FOUND},
      {EACCES, MNEMO_EC_AUTH},
      {EPERM, MNEMO_EC_AUTH},
      {EINVAL, MNEMO_EC_INVALID_INPUT},
      {EAGAIN, MNEMO_EC_BUSY},
      {EWOULDBLOCK, MNEMO_EC_BUSY},
      {EBUSY, MNEMO_EC_BUSY},
      {EMFILE, MNEMO_EC_TOO_MANY_CONNECTIONS},
      {ENFILE, MNEMO_EC_TOO_MANY_CONNECTIONS},
      {ENOMEM, MNEMO_EC_UNKNOWN},
      {EIO, MNEMO_EC_UNKNOWN},
      {0, MNEMO_EC_UNKNOWN},
  };
  size_t i;
  (void)state;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    /* Positive errno and negative (libuv / mnemo) status alike. */
    assert_int_equal(mnemo_error_class_from_errno(cases[i].err), cases[i].cls);
    assert_int_equal(mnemo_error_class_from_errno(-cases[i].err), cases[i].cls);
  }
  assert_int_equal(mnemo_error_class_from_errno(UV_ECONNREFUSED),
                   MNEMO_EC_CONNECTION);
  assert_int_equal(mnemo_error_class_from_errno(UV_ETIMEDOUT),
                   MNEMO_EC_TIMEOUT);
  assert_int_equal(mnemo_error_class_from_errno(UV_ECANCELED),
                   MNEMO_EC_CANCELLED);
  assert_int_equal(mnemo_error_class_from_errno(MNEMO_ETIMEDOUT),
                   MNEMO_EC_TIMEOUT);
  assert_int_equal(mnemo_error_class_from_errno(MNEMO_ECANCELED),
                   MNEMO_EC_CANCELLED);
  assert_int_equal(mnemo_error_class_from_errno(MNEMO_EAGAIN), MNEMO_EC_BUSY);
  assert_int_equal(mnemo_error_class_from_errno(MNEMO_EINVAL),
                   MNEMO_EC_INVALID_INPUT);
  assert_int_equal(mnemo_error_class_from_errno(MNEMO_ECIRCUIT_OPEN),
                   MNEMO_EC_CIRCUIT_OPEN);
  assert_int_equal(mnemo_error_class_from_errno(MNEMO_EBULKHEAD_FULL),
                   MNEMO_EC_BULKHEAD_FULL);
  assert_int_equal(mnemo_error_class_from_errno(MNEMO_ERETRY_EXHAUSTED),
                   MNEMO_EC_UNKNOWN);
  assert_int_equal(mnemo_error_class_from_errno(INT_MIN), MNEMO_EC_UNKNOWN);
  assert_int_equal(mnemo_error_class_from_errno(INT_MAX), MNEMO_EC_UNKNOWN);
}

/* error_class.c spells libuv's getaddrinfo codes as numbers; these are the
 * real ones from uv.h. */
static void test_from_errno_uv_eai(void **state) {
  static const errno_case_t cases[] = {
      {UV_EAI_AGAIN, MNEMO_EC_CONNECTION},
      {UV_EAI_FAIL, MNEMO_EC_CONNECTION},
      {UV_EAI_NONAME, MNEMO_EC_CONNECTION},
      {UV_EAI_NODATA, MNEMO_EC_CONNECTION},
      {UV_EAI_ADDRFAMILY, MNEMO_EC_CONNECTION},
      {UV_EAI_CANCELED, MNEMO_EC_CANCELLED},
      {UV_EAI_BADFLAGS, MNEMO_EC_INVALID_INPUT},
      {UV_EAI_BADHINTS, MNEMO_EC_INVALID_INPUT},
      {UV_EAI_FAMILY, MNEMO_EC_INVALID_INPUT},
      {UV_EAI_SOCKTYPE, MNEMO_EC_INVALID_INPUT},
      {UV_EAI_SERVICE, MNEMO_EC_INVALID_INPUT},
      {UV_EAI_PROTOCOL, MNEMO_EC_INVALID_INPUT},
      {UV_EAI_MEMORY, MNEMO_EC_UNKNOWN},
      {UV_EAI_OVERFLOW, MNEMO_EC_UNKNOWN},
      {-3012, MNEMO_EC_UNKNOWN}, /* unassigned in the range */
  };
  size_t i;
  (void)state;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    assert_int_equal(mnemo_error_class_from_errno(cases[i].err), cases[i].cls);
}

typedef struct sqlstate_case {
  const char *sqlstate;
  mnemo_error_class_t cls;
} sqlstate_case_t;

static void test_from_sqlstate(void **state) {
  static const sqlstate_case_t cases[] = {
      {"40P01", MNEMO_EC_DEADLOCK}, /* deadlock_detected */
      {"40001", MNEMO_EC_DEADLOCK}, /* serialization_failure */
      {"40002", MNEMO_EC_UNKNOWN},  /* integrity constraint in commit */
      {"53300", MNEMO_EC_TOO_MANY_CONNECTIONS},
      {"08000", MNEMO_EC_CONNECTION},
      {"08003", MNEMO_EC_CONNECTION},
      {"08006", MNEMO_EC_CONNECTION},
      {"08001", MNEMO_EC_CONNECTION},
      {"08P01", MNEMO_EC_CONNECTION},
      {"57P01", MNEMO_EC_CONNECTION},
      {"57P02", MNEMO_EC_CONNECTION},
      {"57P03", MNEMO_EC_CONNECTION},
      {"57P04", MNEMO_EC_UNKNOWN}, /* database_dropped */
      {"57014", MNEMO_EC_TIMEOUT},
      {"57000", MNEMO_EC_UNKNOWN},
      {"23505", MNEMO_EC_CONSTRAINT},
      {"23503", MNEMO_EC_CONSTRAINT},
      {"23502", MNEMO_EC_CONSTRAINT},
      {"23000", MNEMO_EC_CONSTRAINT},
      {"28000", MNEMO_EC_AUTH},
      {"28P01", MNEMO_EC_AUTH},
      {"42501", MNEMO_EC_AUTH},
      {"42601", MNEMO_EC_INVALID_INPUT}, /* syntax_error */
      {"42P01", MNEMO_EC_INVALID_INPUT}, /* undefined_table */
      {"42703", MNEMO_EC_INVALID_INPUT},
      {"22001", MNEMO_EC_INVALID_INPUT},
      {"22P02", MNEMO_EC_INVALID_INPUT},
      {"22012", MNEMO_EC_INVALID_INPUT},
      {"53000", MNEMO_EC_BUSY},
      {"53100", MNEMO_EC_BUSY},
      {"53200", MNEMO_EC_BUSY},
      {"53400", MNEMO_EC_BUSY},
      {"00000", MNEMO_EC_UNKNOWN},
      {"XX000", MNEMO_EC_UNKNOWN},
      {"55P03", MNEMO_EC_UNKNOWN},
      {"", MNEMO_EC_UNKNOWN},
      {"4", MNEMO_EC_UNKNOWN},
      {"40P0", MNEMO_EC_UNKNOWN},
      {"08", MNEMO_EC_UNKNOWN},
      {"40P011", MNEMO_EC_UNKNOWN},
      {"23505 ", MNEMO_EC_UNKNOWN},
  };
  size_t i;
  (void)state;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    if (mnemo_error_class_from_sqlstate(cases[i].sqlstate) != cases[i].cls)
      fail_msg("SQLSTATE %s: got %s, expected %s", cases[i].sqlstate,
               mnemo_error_class_name(
                   mnemo_error_class_from_sqlstate(cases[i].sqlstate)),
               mnemo_error_class_name(cases[i].cls));
  }
  assert_int_equal(mnemo_error_class_from_sqlstate(NULL), MNEMO_EC_UNKNOWN);
}

static void test_from_http_status(void **state) {
  static const errno_case_t cases[] = {
      {500, MNEMO_EC_HTTP_5XX},      {502, MNEMO_EC_HTTP_5XX},
      {503, MNEMO_EC_HTTP_5XX},      {504, MNEMO_EC_HTTP_5XX},
      {599, MNEMO_EC_HTTP_5XX},      {429, MNEMO_EC_RATE_LIMITED},
      {401, MNEMO_EC_AUTH},          {403, MNEMO_EC_AUTH},
      {404, MNEMO_EC_NOT_FOUND},     {410, MNEMO_EC_NOT_FOUND},
      {408, MNEMO_EC_TIMEOUT},       {409, MNEMO_EC_CONSTRAINT},
      {400, MNEMO_EC_INVALID_INPUT}, {413, MNEMO_EC_INVALID_INPUT},
      {422, MNEMO_EC_INVALID_INPUT}, {499, MNEMO_EC_INVALID_INPUT},
      {200, MNEMO_EC_UNKNOWN},       {204, MNEMO_EC_UNKNOWN},
      {301, MNEMO_EC_UNKNOWN},       {399, MNEMO_EC_UNKNOWN},
      {100, MNEMO_EC_UNKNOWN},       {600, MNEMO_EC_UNKNOWN},
      {0, MNEMO_EC_UNKNOWN},         {-1, MNEMO_EC_UNKNOWN},
  };
  size_t i;
  (void)state;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    if (mnemo_error_class_from_http_status(cases[i].err) != cases[i].cls)
      fail_msg("HTTP %d: got %s, expected %s", cases[i].err,
               mnemo_error_class_name(
                   mnemo_error_class_from_http_status(cases[i].err)),
               mnemo_error_class_name(cases[i].cls));
  }
}

typedef struct redis_case {
  int err_type;
  const char *reply;
  mnemo_error_class_t cls;
} redis_case_t;

static void test_from_redis(void **state) {
  static const redis_case_t cases[] = {
      /* Context errors; the numbers are hiredis's own constants. */
      {REDIS_ERR_IO, NULL, MNEMO_EC_CONNECTION},
      {REDIS_ERR_EOF, NULL, MNEMO_EC_CONNECTION},
      {REDIS_ERR_IO, "ERR ignored: the context error wins",
       MNEMO_EC_CONNECTION},
      {REDIS_ERR_PROTOCOL, NULL, MNEMO_EC_UNKNOWN},
      {REDIS_ERR_OOM, NULL, MNEMO_EC_UNKNOWN},
      {REDIS_ERR_OTHER, NULL, MNEMO_EC_UNKNOWN},
      {6, NULL, MNEMO_EC_TIMEOUT}, /* REDIS_ERR_TIMEOUT, hiredis >= 1.0 */
      {0, NULL, MNEMO_EC_UNKNOWN},
      /* Error replies. */
      {0, "LOADING Redis is loading the dataset in memory", MNEMO_EC_BUSY},
      {0, "BUSY Redis is busy running a script.", MNEMO_EC_BUSY},
      {0, "MASTERDOWN Link with MASTER is down", MNEMO_EC_BUSY},
      {0, "TRYAGAIN Multiple keys request during rehashing of slot",
       MNEMO_EC_BUSY},
      {0, "OOM command not allowed when used memory > 'maxmemory'.",
       MNEMO_EC_BUSY},
      {0, "NOAUTH Authentication required.", MNEMO_EC_AUTH},
      {0, "WRONGPASS invalid username-password pair", MNEMO_EC_AUTH},
      {0, "NOPERM this user has no permissions", MNEMO_EC_AUTH},
      {0, "WRONGTYPE Operation against a key holding the wrong kind of value",
       MNEMO_EC_INVALID_INPUT},
      {0, "ERR unknown command 'FOO'", MNEMO_EC_INVALID_INPUT},
      {0, "ERR", MNEMO_EC_INVALID_INPUT},
      {0, "EXECABORT Transaction discarded", MNEMO_EC_INVALID_INPUT},
      {0, "ERR max number of clients reached", MNEMO_EC_TOO_MANY_CONNECTIONS},
      {0, "BUSYKEY Target key name already exists.", MNEMO_EC_CONSTRAINT},
      {0, "BUSYGROUP Consumer Group name already exists", MNEMO_EC_CONSTRAINT},
      {0, "NOSCRIPT No matching script.", MNEMO_EC_NOT_FOUND},
      /* Whole first word only. */
      {0, "ERRX something", MNEMO_EC_UNKNOWN},
      {0, "BUSYNESS", MNEMO_EC_UNKNOWN},
      {0, "LOAD", MNEMO_EC_UNKNOWN},
      {0, "loading lower case", MNEMO_EC_UNKNOWN},
      {0, "MOVED 3999 127.0.0.1:6381", MNEMO_EC_UNKNOWN},
      {0, "", MNEMO_EC_UNKNOWN},
      {REDIS_ERR_OTHER, "BUSY still classified by the reply", MNEMO_EC_BUSY},
  };
  size_t i;
  (void)state;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    mnemo_error_class_t got =
        mnemo_error_class_from_redis(cases[i].err_type, cases[i].reply);
    if (got != cases[i].cls)
      fail_msg("redis %d \"%s\": got %s, expected %s", cases[i].err_type,
               cases[i].reply ? cases[i].reply : "(null)",
               mnemo_error_class_name(got),
               mnemo_error_class_name(cases[i].cls));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_name_parse_round_trip),
      cmocka_unit_test(test_parse_rejects_unknown_names),
      cmocka_unit_test(test_from_errno),
      cmocka_unit_test(test_from_errno_uv_eai),
      cmocka_unit_test(test_from_sqlstate),
      cmocka_unit_test(test_from_http_status),
      cmocka_unit_test(test_from_redis),
  };
  return cmocka_run_group_tests_name("error_class", tests, NULL, NULL);
}
