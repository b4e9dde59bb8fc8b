/* runtime/core/error_track.c: scrubbing (home directories, DSN passwords,
 * bearer tokens, key=value secrets), aggregation within a window, the bounded
 * queue (the oldest dropped and counted), batches taken, committed and
 * requeued, the batch JSON, and a random run checking that every event is
 * accounted for: recorded = flushed + dropped + pending. */
#include "testing.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error_track.h"

#define SEC 1000000LL
/* 2024-06-10T12:00:00Z, a window boundary for 60 s windows. */
#define T0 (1718020800LL * SEC)

/* ---- scrubbing ---- */

static char *scrub(const char *in) {
  static char buf[4096];
  size_t n = mnemo_scrub(in, strlen(in), buf, sizeof(buf) - 1);
  assert_true(n < sizeof(buf));
  buf[n] = '\0';
  return buf;
}

static const char *const CASES[][2] = {
    /* home directories */
    {"open /home/alice/src/app.lua failed", "open ~/src/app.lua failed"},
    {"/home/bob.smith/x:12: boom", "~/x:12: boom"},
    {"/root/.config/mnemo", "~/.config/mnemo"},
    {"cd /root", "cd ~"},
    {"HOME=/home/carol", "HOME=~"},
    {"file:///home/dave/a.txt", "file://~/a.txt"},
    {"/Users/erin/code", "~/code"},
    {"/srv/home/frank/x", "/srv/home/frank/x"}, /* not a home directory */
    {"/rootfs/etc", "/rootfs/etc"},
    {"/home/", "/home/"},
    {"a.lua:3: in /home/g/b.lua\n\t/root/c.lua:4",
     "a.lua:3: in ~/b.lua\n\t~/c.lua:4"},
    /* DSN passwords */
    {"postgresql://mnemo:s3cr3t@db:5432/mnemo",
     "postgresql://mnemo:***@db:5432/mnemo"},
    {"connect redis://:hunter2@127.0.0.1:6379 refused",
     "connect redis://:***@127.0.0.1:6379 refused"},
    {"postgres://u:p@ss@host/db", "postgres://u:***@host/db"},
    {"postgresql://mnemo@127.0.0.1:5432/mnemo",
     "postgresql://mnemo@127.0.0.1:5432/mnemo"},
    {"http://host:8080/path?q=1", "http://host:8080/path?q=1"},
    {"host=db port=5432 user=mnemo password=secret dbname=x",
     "host=db port=5432 user=mnemo password=*** dbname=x"},
    {"password='two words' host=db", "password='***' host=db"},
    {"PGPASSWORD=abc", "PGPASSWORD=***"},
    {"sslpassword = xyz", "sslpassword = ***"},
    /* every DSN form */
    {"postgres://u:S3cretPW9@h/db", "postgres://u:***@h/db"},
    {"postgresql://u:S3cr%65t%2FPW9@h:5432/db", "postgresql://u:***@h:5432/db"},
    {"postgresql://u@h/db?sslmode=disable&password=S3cretPW9&x=1",
     "postgresql://u@h/db?sslmode=disable&password=***&x=1"},
    {"postgresql://u@h/db?password=S3cr%65tPW9",
     "postgresql://u@h/db?password=***"},
    {"host=db password='quoted value with spaces' user=u",
     "host=db password='***' user=u"},
    {"host=db password = S3cretPW9 user=u", "host=db password = *** user=u"},
    {"PASSWORD=S3cretPW9 host=db", "PASSWORD=*** host=db"},
    {"host=db dbname=x password=S3cretPW9", "host=db dbname=x password=***"},
    {"password=S3cretPW9", "password=***"},
    /* an unquoted value with spaces: the words up to the next name= */
    {"host=x password=S3cret PW9 dbname=y", "host=x password=*** dbname=y"},
    {"password=x is wrong", "password=*** is wrong"},
    {"password=x, then", "password=***, then"},
    /* a password with '/', '?', '#' or '@' in it, a DSN cut short */
    {"bad: \"postgresql://u:S3c/retPW9@h/db\"",
     "bad: \"postgresql://u:***@h/db\""},
    {"postgresql://u:S3c?ret#PW9@h/db", "postgresql://u:***@h/db"},
    {"postgresql://u:S3c@ret@PW9@h/db", "postgresql://u:***@h/db"},
    {"invalid URI: \"postgresql://u:S3cretPW9\"",
     "invalid URI: \"postgresql://u:***\""},
    {"invalid URI: \"postgresql://u:S3cretP",
     "invalid URI: \"postgresql://u:***"},
    {"postgresql://u:S3c/ret", "postgresql://u:***"},
    {"password='S3cret PW", "password='***"},
    /* ... but a port is no password */
    {"http://[::1]:80/x", "http://[::1]:80/x"},
    {"postgresql://h1:5432,h2:5433/db", "postgresql://h1:5432,h2:5433/db"},
    {"postgresql://[::1", "postgresql://[::1"},
    {"postgresql://h:5432", "postgresql://h:5432"},
    /* bearer tokens */
    {"Authorization: Bearer eyJhbGciOi.J9.x-_y", "Authorization: Bearer ***"},
    {"bearer abc123, then", "bearer ***, then"},
    {"Bearer", "Bearer"},
    /* key=value secrets */
    {"GET /v1?api_key=AKIA123&x=1", "GET /v1?api_key=***&x=1"},
    {"token=abc key=def secret=ghi", "token=*** key=*** secret=***"},
    {"access_token=t1; client_secret=t2",
     "access_token=***; client_secret=***"},
    {"{\"password\": \"pw\", \"user\": \"u\"}",
     "{\"password\": \"***\", \"user\": \"u\"}"},
    {"{\\\"token\\\":\\\"abc\\\"}", "{\\\"token\\\":\\\"***\\\"}"},
    {"X-Api-Key: k123", "X-Api-Key: ***"},
    {"password: hunter2", "password: ***"},
    {"unexpected token: '}' near key: x", "unexpected token: '}' near key: x"},
    {"Key (id)=(1) already exists", "Key (id)=(1) already exists"},
    {"monkey=banana sslkey=/etc/k", "monkey=banana sslkey=/etc/k"},
    {"password=", "password="},
    {"password=''", "password=''"},
    /* nothing to do */
    {"", ""},
    {"relation \"no_such_table\" does not exist",
     "relation \"no_such_table\" does not exist"},
};

static void test_scrub_cases(void **state) {
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
    const char *got = scrub(CASES[i][0]);
    if (strcmp(got, CASES[i][1]) != 0)
      fail_msg("scrub(%s)\n  got      %s\n  expected %s", CASES[i][0], got,
               CASES[i][1]);
  }
}

/* A message about a DSN (libpq's own, as PostgreSQL 15's libpq words
 * them), the DSN, what is left once scrubbed with it. */
static const char *const DSN_CASES[][3] = {
    /* a password with '/' read as a port, with '@' as a host */
    {"invalid integer value \"S3c\" for connection option \"port\"",
     "postgresql://u:S3c/retPW9@127.0.0.1/db",
     "invalid integer value \"***\" for connection option \"port\""},
    {"could not translate host name \"retPW9@127.0.0.1\" to address: Name "
     "or service not known",
     "postgresql://u:S3c@retPW9@127.0.0.1/db",
     "could not translate host name \"***\" to address: Name or service not "
     "known"},
    /* a value libpq cannot decode: in the userinfo, in the query */
    {"invalid percent-encoded token: \"S3cr%zzetPW9\"",
     "postgresql://u:S3cr%zzetPW9@127.0.0.1/db",
     "invalid percent-encoded token: \"***\""},
    {"forbidden value %00 in percent-encoded value: \"S3cr%00etPW9\"",
     "postgresql://u:S3cr%00etPW9@127.0.0.1/db",
     "forbidden value %00 in percent-encoded value: \"***\""},
    {"invalid percent-encoded token: \"S3cr%zzetPW9\"",
     "postgresql://u@127.0.0.1/db?password=S3cr%zzetPW9",
     "invalid percent-encoded token: \"***\""},
    {"missing key/value separator \"=\" in URI query parameter: "
     "\"S3cretPW9\"",
     "postgresql://u@127.0.0.1/db?S3cretPW9",
     "missing key/value separator \"=\" in URI query parameter: \"***\""},
    /* a DSN cut short: "user:password" taken for host:port */
    {"invalid integer value \"S3cretPW9\" for connection option \"port\"",
     "postgresql://u:S3cretPW9",
     "invalid integer value \"***\" for connection option \"port\""},
    /* the whole URI quoted */
    {"IPv6 host address may not be empty in URI: "
     "\"postgresql://u:S3c/retPW9@[]/db\"",
     "postgresql://u:S3c/retPW9@[]/db",
     "IPv6 host address may not be empty in URI: \"postgresql://u:***@[]/db\""},
    /* name=value: the words of an unquoted password, a bare word */
    {"missing \"=\" after \"PW9\" in connection info string",
     "host=x password=S3cret PW9 dbname=y",
     "missing \"=\" after \"***\" in connection info string"},
    {"invalid connection option \"PW9\"",
     "host=x password=S3cret PW9=x dbname=y",
     "invalid connection option \"***\""},
    {"missing \"=\" after \"PW9\" in connection info string",
     "host=x PASSWORD = 'S3cret' PW9",
     "missing \"=\" after \"***\" in connection info string"},
    {"missing \"=\" after \"S3cretPW9\" in connection info string", "S3cretPW9",
     "missing \"=\" after \"***\" in connection info string"},
    {"bad value S3cretPW9 here", "host=db password=S3cretPW9",
     "bad value *** here"},
    /* what is no secret stays */
    {"missing \"=\" after \"nonsense\" in connection info string",
     "nonsense dsn",
     "missing \"=\" after \"nonsense\" in connection info string"},
    {"missing \"=\" after \"junk\" in connection info string",
     "host=127.0.0.1 password='S3cret PW9 x' junk",
     "missing \"=\" after \"junk\" in connection info string"},
    {"missing \"=\" after \"password\" in connection info string",
     "host=x password S3cretPW9",
     "missing \"=\" after \"password\" in connection info string"},
    {"connection to server at \"127.0.0.1\", port 5432 failed: Connection "
     "refused",
     "postgresql://u:S3cretPW9@127.0.0.1:5432/db",
     "connection to server at \"127.0.0.1\", port 5432 failed: Connection "
     "refused"},
    {"role \"mnemo\" does not exist", "postgresql://mnemo@127.0.0.1:5432/db",
     "role \"mnemo\" does not exist"},
    {"role \"u\" does not exist", "postgresql://u:us3r@127.0.0.1:5432/db",
     "role \"u\" does not exist"},
    {"unexpected character \"x\" at position 31 in URI (expected \":\" or "
     "\"/\"): \"postgresql://u:S3cretPW9@[::1]x/db\"",
     "postgresql://u:S3cretPW9@[::1]x/db",
     "unexpected character \"x\" at position 31 in URI (expected \":\" or "
     "\"/\"): \"postgresql://u:***@[::1]x/db\""},
};

static char *scrub_dsn(const char *in, const char *dsn) {
  static char buf[4096];
  size_t n =
      mnemo_scrub_dsn(in, strlen(in), dsn, strlen(dsn), buf, sizeof(buf) - 1);
  assert_true(n < sizeof(buf));
  buf[n] = '\0';
  return buf;
}

static void test_scrub_dsn_cases(void **state) {
  size_t i;
  char once[4096];
  (void)state;
  for (i = 0; i < sizeof(DSN_CASES) / sizeof(DSN_CASES[0]); i++) {
    const char *in = DSN_CASES[i][0], *dsn = DSN_CASES[i][1];
    const char *got = scrub_dsn(in, dsn);
    if (strcmp(got, DSN_CASES[i][2]) != 0)
      fail_msg("scrub_dsn(%s, %s)\n  got      %s\n  expected %s", in, dsn, got,
               DSN_CASES[i][2]);
    assert_true(mnemo_scrub_dsn(in, strlen(in), dsn, strlen(dsn), NULL, 0) <=
                3 * strlen(in));
    strcpy(once, got);
    assert_string_equal(scrub_dsn(once, dsn), once);
  }
  /* The DSN itself, scrubbed with itself (what a timeout message shows). */
  assert_string_equal(scrub_dsn("postgresql://u:S3c/retPW9@127.0.0.1:1/db",
                                "postgresql://u:S3c/retPW9@127.0.0.1:1/db"),
                      "postgresql://u:***@127.0.0.1:1/db");
  assert_string_equal(scrub_dsn("host=x password=S3cret PW9 port=1",
                                "host=x password=S3cret PW9 port=1"),
                      "host=x password=*** port=1");
  /* Without secrets in the DSN it is mnemo_scrub. */
  assert_string_equal(scrub_dsn("token=abc /home/u/x", "host=db"),
                      "token=*** ~/x");
  assert_string_equal(scrub_dsn("a \"b\" c", ""), "a \"b\" c");
}

/* Scrubbing what is already scrubbed changes nothing, and the output is
 * never longer than 3 * the input. */
static void test_scrub_idempotent_and_bounded(void **state) {
  size_t i;
  char once[4096];
  (void)state;
  for (i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
    size_t n = strlen(CASES[i][0]);
    assert_true(mnemo_scrub(CASES[i][0], n, NULL, 0) <= 3 * n);
    strcpy(once, scrub(CASES[i][0]));
    assert_string_equal(scrub(once), once);
  }
  assert_true(mnemo_scrub("key=a", 5, NULL, 0) <= 15);
  assert_true(mnemo_scrub("a://b:c@d", 9, NULL, 0) <= 27);
}

/* Like snprintf: the whole length is returned, at most cap bytes written. */
static void test_scrub_cut_output(void **state) {
  char buf[8];
  const char *in = "password=abcdef tail";
  size_t n;
  (void)state;
  memset(buf, 'Z', sizeof(buf));
  n = mnemo_scrub(in, strlen(in), buf, 5);
  assert_int_equal(n, strlen("password=*** tail"));
  assert_memory_equal(buf, "passw", 5);
  assert_int_equal(buf[5], 'Z');
  /* A secret at the very end of the input, and NULs inside it. */
  assert_string_equal(scrub("x token=y"), "x token=***");
  n = mnemo_scrub("a\0b=1", 5, buf, sizeof(buf));
  assert_int_equal(n, 5);
  assert_memory_equal(buf, "a\0b=1", 5);
}

static void test_names(void **state) {
  mnemo_severity_t s;
  mnemo_error_category_t c;
  (void)state;
  assert_int_equal(mnemo_severity_parse("CRITICAL", 8, &s), 0);
  assert_int_equal(s, MNEMO_SEV_CRITICAL);
  assert_string_equal(mnemo_severity_name(MNEMO_SEV_WARNING), "WARNING");
  assert_int_equal(mnemo_severity_parse("warning", 7, &s), MNEMO_EINVAL);
  assert_int_equal(mnemo_severity_parse("ERRORS", 6, &s), MNEMO_EINVAL);
  assert_int_equal(mnemo_error_category_parse("circuit_breaker", 15, &c), 0);
  assert_int_equal(c, MNEMO_CAT_CIRCUIT_BREAKER);
  assert_int_equal(mnemo_error_category_parse("db", 2, &c), MNEMO_EINVAL);
  assert_string_equal(mnemo_error_category_name(MNEMO_CAT_UNKNOWN), "unknown");
  assert_null(mnemo_severity_name(MNEMO_SEV_COUNT));
  assert_null(mnemo_error_category_name(MNEMO_CAT_COUNT));
  assert_non_null(strstr(mnemo_severity_list(), "CRITICAL"));
  assert_non_null(strstr(mnemo_error_category_list(), "circuit_breaker"));
}

/* ---- the queue ---- */

static mnemo_str_t S(const char *s) {
  mnemo_str_t r = {s, s ? strlen(s) : 0};
  return r;
}

static void init(mnemo_error_tracker_t *t, size_t capacity) {
  mnemo_error_config_t cfg;
  mnemo_error_config_default(&cfg);
  cfg.capacity = capacity;
  cfg.seed[0] = 0x0123456789abcdefull;
  cfg.seed[1] = 0xfedcba9876543210ull;
  assert_int_equal(mnemo_error_tracker_init(t, &cfg), 0);
}

static mnemo_error_event_t event(const char *message) {
  mnemo_error_event_t ev;
  memset(&ev, 0, sizeof(ev));
  ev.severity = MNEMO_SEV_ERROR;
  ev.category = MNEMO_CAT_DATABASE;
  ev.service = S("indexer");
  ev.operation = S("db_write");
  ev.error_type = S("ConnectionError");
  ev.message = S(message);
  return ev;
}

static int record(mnemo_error_tracker_t *t, const char *message, int64_t at) {
  mnemo_error_event_t ev = event(message);
  return mnemo_error_record(t, &ev, at);
}

static mnemo_error_view_t view(const mnemo_error_entry_t *e) {
  mnemo_error_view_t v;
  assert_non_null(e);
  mnemo_error_view(e, &v);
  return v;
}

/* The queue's messages, oldest first, joined by spaces. */
static const char *messages(const mnemo_error_tracker_t *t) {
  static char out[1024];
  const mnemo_error_entry_t *e;
  out[0] = '\0';
  for (e = mnemo_error_oldest(t); e != NULL; e = mnemo_error_next(e)) {
    if (out[0])
      strcat(out, " ");
    strcat(out, view(e).message);
  }
  return out;
}

static void check_accounting(const mnemo_error_tracker_t *t,
                             uint64_t out_in_batches) {
  const mnemo_error_entry_t *e;
  uint64_t held = 0;
  size_t n = 0;
  for (e = mnemo_error_oldest(t); e != NULL; e = mnemo_error_next(e)) {
    held += view(e).count;
    n++;
  }
  assert_int_equal(n, t->stats.entries);
  /* Every byte charged is given back: a sample's growth is charged too. */
  if (n == 0)
    assert_int_equal(t->stats.bytes, 0);
  assert_true(t->stats.entries <= t->config.capacity);
  assert_true(t->stats.bytes <= t->config.max_bytes);
  assert_int_equal(t->stats.pending, held + out_in_batches);
  assert_int_equal(t->stats.recorded,
                   t->stats.flushed + t->stats.dropped + t->stats.pending);
}

static void test_identical_events_aggregate(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_view_t v;
  int i;
  (void)state;
  init(&t, 100);
  for (i = 0; i < 100; i++)
    assert_int_equal(record(&t, "connection refused", T0 + i * 1000), 0);
  assert_int_equal(t.stats.entries, 1);
  assert_int_equal(t.stats.recorded, 100);
  assert_int_equal(t.stats.aggregated, 99);
  v = view(mnemo_error_oldest(&t));
  assert_int_equal(v.count, 100);
  assert_int_equal(v.first_us, T0);
  assert_int_equal(v.last_us, T0 + 99 * 1000);
  assert_int_equal(v.window_start_us, T0);
  assert_string_equal(v.service, "indexer");
  assert_string_equal(v.operation, "db_write");
  assert_null(v.traceback);
  assert_string_equal(v.context_json, "{}");
  check_accounting(&t, 0);
  mnemo_error_tracker_free(&t);
}

/* Messages that differ only in a secret are the same event once scrubbed;
 * every field of the identity tells events apart. */
static void test_identity(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_event_t ev;
  mnemo_error_ctx_t repo = {
      {"repository", 10}, MNEMO_CTX_STRING, {"sample", 6}, 0, 0};
  (void)state;
  init(&t, 100);
  record(&t, "auth failed for postgresql://u:one@h/db", T0);
  record(&t, "auth failed for postgresql://u:two@h/db", T0 + 1);
  assert_int_equal(t.stats.entries, 1);
  assert_string_equal(view(mnemo_error_oldest(&t)).message,
                      "auth failed for postgresql://u:***@h/db");

  ev = event("m");
  mnemo_error_record(&t, &ev, T0);
  ev.severity = MNEMO_SEV_WARNING;
  mnemo_error_record(&t, &ev, T0);
  ev = event("m");
  ev.category = MNEMO_CAT_CACHE;
  mnemo_error_record(&t, &ev, T0);
  ev = event("m");
  ev.service = S("api");
  mnemo_error_record(&t, &ev, T0);
  ev = event("m");
  ev.operation = S(NULL); /* absent is not "" */
  mnemo_error_record(&t, &ev, T0);
  ev.operation = S("");
  mnemo_error_record(&t, &ev, T0);
  ev = event("m");
  ev.error_type = S("TimeoutError");
  mnemo_error_record(&t, &ev, T0);
  ev = event("m");
  ev.context = &repo;
  ev.ncontext = 1;
  mnemo_error_record(&t, &ev, T0);
  assert_int_equal(t.stats.entries, 9);
  assert_int_equal(t.stats.aggregated, 1);
  /* The same again: all aggregate. */
  mnemo_error_record(&t, &ev, T0 + 5);
  assert_int_equal(t.stats.entries, 9);
  assert_int_equal(t.stats.aggregated, 2);
  assert_string_equal(view(t.newest).repository, "sample");
  mnemo_error_tracker_free(&t);
}

static size_t calls;
static size_t fill_context(void *ud, mnemo_error_ctx_t *out, size_t max) {
  const char *file = ud;
  assert_int_equal(max, MNEMO_ERROR_MAX_CTX_FIELDS);
  calls++;
  memset(out, 0, 2 * sizeof(*out));
  out[0].key = S("repository");
  out[0].str = S("sample");
  out[1].key = S("file_path");
  out[1].str = S(file);
  return 2;
}

/* A context gathered by a callback is gathered only for a new entry; the
 * identity's repository is then the one given with the event. */
static void test_context_callback(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_event_t ev = event("m");
  (void)state;
  init(&t, 10);
  calls = 0;
  ev.context_fn = fill_context;
  ev.context_ud = (void *)"/home/eve/a.py";
  ev.repository = S("sample");
  assert_int_equal(mnemo_error_record(&t, &ev, T0), 0);
  assert_int_equal(mnemo_error_record(&t, &ev, T0 + 1), 0);
  assert_int_equal(calls, 1);
  assert_string_equal(view(mnemo_error_oldest(&t)).context_json,
                      "{\"repository\":\"sample\",\"file_path\":\"~/a.py\"}");
  assert_string_equal(view(mnemo_error_oldest(&t)).repository, "sample");
  ev.repository = S("other");
  mnemo_error_record(&t, &ev, T0 + 2);
  assert_int_equal(calls, 2);
  assert_int_equal(t.stats.entries, 2);
  mnemo_error_tracker_free(&t);
}

/* Repeated messages come from the memo: still scrubbed, still told apart,
 * also when more of them alternate than the memo holds. */
static void test_memo(void **state) {
  mnemo_error_tracker_t t;
  static const char *const msgs[] = {
      "password=a", "password=b", "m1", "m2", "m3", "m4", "token=x /home/u/f"};
  const mnemo_error_entry_t *e;
  int round, i;
  (void)state;
  init(&t, 100);
  for (round = 0; round < 5; round++)
    for (i = 0; i < 7; i++)
      assert_int_equal(record(&t, msgs[i], T0 + round), 0);
  assert_int_equal(t.stats.entries, 6); /* password=a and =b: one event */
  assert_int_equal(t.stats.recorded, 35);
  for (e = mnemo_error_oldest(&t); e != NULL; e = mnemo_error_next(e)) {
    mnemo_error_view_t v = view(e);
    if (strcmp(v.message, "password=***") == 0)
      assert_int_equal(v.count, 10);
    else
      assert_int_equal(v.count, 5);
    assert_null(strstr(v.message, "home"));
  }
  assert_string_equal(messages(&t), "password=*** m1 m2 m3 m4 token=*** ~/f");
  mnemo_error_tracker_free(&t);
}

static void test_windows(void **state) {
  mnemo_error_tracker_t t;
  const mnemo_error_entry_t *e;
  (void)state;
  init(&t, 100);
  record(&t, "x", T0 + 59 * SEC);
  record(&t, "x", T0 + 60 * SEC); /* the next window */
  record(&t, "x", T0 + 119 * SEC);
  assert_int_equal(t.stats.entries, 2);
  e = mnemo_error_oldest(&t);
  assert_int_equal(view(e).window_start_us, T0);
  assert_int_equal(view(e).count, 1);
  e = mnemo_error_next(e);
  assert_int_equal(view(e).window_start_us, T0 + 60 * SEC);
  assert_int_equal(view(e).count, 2);
  assert_int_equal(view(e).first_us, T0 + 60 * SEC);
  assert_int_equal(view(e).last_us, T0 + 119 * SEC);
  mnemo_error_tracker_free(&t);
}

static void test_overflow_keeps_newest(void **state) {
  mnemo_error_tracker_t t;
  char m[16];
  int i;
  (void)state;
  init(&t, 5);
  for (i = 0; i < 8; i++) {
    snprintf(m, sizeof(m), "e%d", i);
    assert_int_equal(record(&t, m, T0 + i), 0);
  }
  assert_int_equal(t.stats.entries, 5);
  assert_int_equal(t.stats.dropped, 3);
  assert_string_equal(messages(&t), "e3 e4 e5 e6 e7");
  /* An event seen again is among the newest: e4 goes before e3 now. */
  record(&t, "e3", T0 + 10);
  record(&t, "e8", T0 + 11);
  assert_string_equal(messages(&t), "e5 e6 e7 e3 e8");
  assert_int_equal(t.stats.dropped, 4);
  /* Drops are counted in events: an entry of 3 occurrences is 3. */
  record(&t, "e5", T0 + 12);
  record(&t, "e5", T0 + 13);
  record(&t, "e6", T0 + 14);
  record(&t, "e9", T0 + 15);  /* drops e7 (1) */
  record(&t, "e10", T0 + 16); /* drops e3 (2) */
  assert_int_equal(t.stats.dropped, 7);
  assert_string_equal(messages(&t), "e8 e5 e6 e9 e10");
  check_accounting(&t, 0);
  mnemo_error_tracker_free(&t);
}

static void test_bytes_bound(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_config_t cfg;
  char big[MNEMO_ERROR_MAX_MESSAGE];
  int i;
  (void)state;
  mnemo_error_config_default(&cfg);
  cfg.max_bytes = MNEMO_ERROR_MIN_BYTES;
  assert_int_equal(mnemo_error_tracker_init(&t, &cfg), 0);
  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  for (i = 0; i < 100; i++) {
    big[0] = (char)('A' + i % 26);
    big[1] = (char)('A' + i / 26);
    assert_int_equal(record(&t, big, T0 + i), 0);
  }
  assert_true(t.stats.bytes <= MNEMO_ERROR_MIN_BYTES);
  assert_true(t.stats.entries < 40 && t.stats.entries > 20);
  assert_int_equal(t.stats.dropped, 100 - t.stats.entries);
  /* The newest survive. */
  assert_int_equal(view(t.newest).message[0], 'A' + 99 % 26);
  check_accounting(&t, 0);
  mnemo_error_tracker_free(&t);
}

static void test_take_commit(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_batch_t b;
  (void)state;
  init(&t, 100);
  record(&t, "a", T0);
  record(&t, "a", T0 + 1);
  record(&t, "b", T0 + 2);
  record(&t, "c", T0 + 3);
  assert_int_equal(mnemo_error_take(&t, &b, 2), 2);
  assert_int_equal(b.entries, 2);
  assert_int_equal(b.events, 3);
  assert_string_equal(view(mnemo_error_batch_first(&b)).message, "a");
  assert_string_equal(messages(&t), "c");
  check_accounting(&t, b.events);
  mnemo_error_batch_commit(&t, &b);
  assert_int_equal(t.stats.flushed, 3);
  assert_int_equal(t.stats.pending, 1);
  assert_null(b.first);
  assert_int_equal(mnemo_error_take(&t, &b, 10), 1);
  mnemo_error_batch_commit(&t, &b);
  assert_int_equal(mnemo_error_take(&t, &b, 10), 0);
  assert_int_equal(t.stats.flushed, 4);
  check_accounting(&t, 0);
  mnemo_error_tracker_free(&t);
}

/* A failed write puts the batch back first, merged with what was
 * recorded meanwhile (so one flush never holds the same event twice). */
static void test_requeue_merges_and_keeps_order(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_batch_t b;
  mnemo_error_view_t v;
  (void)state;
  init(&t, 100);
  record(&t, "a", T0 + 10);
  record(&t, "b", T0 + 20);
  record(&t, "c", T0 + 30);
  mnemo_error_take(&t, &b, 2);
  record(&t, "a", T0 + 40); /* a new entry while a is out */
  record(&t, "d", T0 + 50);
  assert_string_equal(messages(&t), "c a d");
  mnemo_error_batch_requeue(&t, &b);
  assert_int_equal(t.stats.flush_failures, 1);
  assert_string_equal(messages(&t), "b c a d");
  v = view(mnemo_error_next(mnemo_error_next(mnemo_error_oldest(&t))));
  assert_string_equal(v.message, "a");
  assert_int_equal(v.count, 2);
  assert_int_equal(v.first_us, T0 + 10);
  assert_int_equal(v.last_us, T0 + 40);
  assert_int_equal(t.stats.entries, 4);
  check_accounting(&t, 0);
  /* The merged entry is still found by the next identical event. */
  record(&t, "a", T0 + 41);
  assert_int_equal(t.stats.entries, 4);
  assert_int_equal(view(t.newest).count, 3);
  mnemo_error_tracker_free(&t);
}

/* PostgreSQL down for long: the requeued (oldest) are the ones dropped. */
static void test_requeue_into_full_queue(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_batch_t b;
  char m[16];
  int i;
  (void)state;
  init(&t, 4);
  for (i = 0; i < 4; i++) {
    snprintf(m, sizeof(m), "old%d", i);
    record(&t, m, T0 + i);
  }
  mnemo_error_take(&t, &b, 3);
  for (i = 0; i < 3; i++) {
    snprintf(m, sizeof(m), "new%d", i);
    record(&t, m, T0 + 10 + i);
  }
  mnemo_error_batch_requeue(&t, &b);
  assert_string_equal(messages(&t), "old3 new0 new1 new2");
  assert_int_equal(t.stats.dropped, 3);
  check_accounting(&t, 0);
  /* A batch the server refuses is dropped and counted. */
  mnemo_error_take(&t, &b, 2);
  mnemo_error_batch_drop(&t, &b);
  assert_int_equal(t.stats.dropped, 5);
  check_accounting(&t, 0);
  mnemo_error_tracker_free(&t);
}

static void test_scrubbed_when_stored(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_event_t ev = event("login as bob with password=hunter2");
  mnemo_error_ctx_t ctx[5];
  mnemo_error_view_t v;
  (void)state;
  init(&t, 10);
  memset(ctx, 0, sizeof(ctx));
  ctx[0].key = S("file_path");
  ctx[0].str = S("/home/bob/repo/a.py");
  ctx[1].key = S("dsn");
  ctx[1].str = S("postgresql://bob:pw@db/x");
  ctx[2].key = S("attempt");
  ctx[2].kind = MNEMO_CTX_NUMBER;
  ctx[2].number = 3;
  ctx[3].key = S("retried");
  ctx[3].kind = MNEMO_CTX_BOOL;
  ctx[3].boolean = 1;
  ctx[4].key = S("ratio");
  ctx[4].kind = MNEMO_CTX_NUMBER;
  ctx[4].number = 0.1;
  ev.context = ctx;
  ev.ncontext = 5;
  ev.traceback = S("stack traceback:\n\t/home/bob/x.lua:1: in main chunk");
  ev.correlation_id = S("req-42");
  assert_int_equal(mnemo_error_record(&t, &ev, T0), 0);
  v = view(mnemo_error_oldest(&t));
  assert_string_equal(v.message, "login as bob with password=***");
  assert_string_equal(v.traceback,
                      "stack traceback:\n\t~/x.lua:1: in main chunk");
  assert_string_equal(v.context_json,
                      "{\"file_path\":\"~/repo/a.py\","
                      "\"dsn\":\"postgresql://bob:***@db/x\",\"attempt\":3,"
                      "\"retried\":true,\"ratio\":0.1}");
  assert_string_equal(v.correlation_id, "req-42");
  mnemo_error_tracker_free(&t);
}

static void test_batch_json(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_batch_t b;
  mnemo_error_event_t ev;
  mnemo_error_ctx_t ctx = {{"n", 1}, MNEMO_CTX_NUMBER, {NULL, 0}, 0, 0};
  char *json;
  size_t len;
  const char bad[] = "quote\" back\\ nl\n nul\0 bad\xff\xc3 ok\xc3\xa9";
  (void)state;
  init(&t, 10);
  ev = event("plain");
  ev.operation = S(NULL);
  ctx.number = NAN;
  ev.context = &ctx;
  ev.ncontext = 1;
  mnemo_error_record(&t, &ev, T0 + 1500000);
  ev = event("x");
  ev.message.s = bad;
  ev.message.n = sizeof(bad) - 1;
  mnemo_error_record(&t, &ev, T0 - 1);
  mnemo_error_record(&t, &ev, T0 - 1);
  mnemo_error_take(&t, &b, 10);
  assert_int_equal(mnemo_error_batch_json(&b, &json, &len), 0);
  assert_int_equal(strlen(json), len);
  assert_string_equal(
      json,
      "[{\"severity\":\"ERROR\",\"category\":\"database\",\"service\":"
      "\"indexer\",\"operation\":null,\"error_type\":\"ConnectionError\","
      "\"message\":\"plain\",\"correlation_id\":null,"
      "\"correlation_ids\":[],\"correlation_ids_omitted\":0,\"traceback\":null,"
      "\"context\":{\"n\":null},\"occurrences\":1,\"first_seen\":"
      "1718020801.500000,\"last_seen\":1718020801.500000,\"window_start\":"
      "1718020800.000000},"
      "{\"severity\":\"ERROR\",\"category\":\"database\",\"service\":"
      "\"indexer\",\"operation\":\"db_write\",\"error_type\":"
      "\"ConnectionError\",\"message\":\"quote\\\" back\\\\ nl\\n "
      "nul\\ufffd bad\\ufffd\\ufffd ok\xc3\xa9\",\"correlation_id\":null,"
      "\"correlation_ids\":[],\"correlation_ids_omitted\":0,"
      "\"traceback\":null,\"context\":{},\"occurrences\":2,\"first_seen\":"
      "1718020799.999999,\"last_seen\":1718020799.999999,\"window_start\":"
      "1718020740.000000}]");
  free(json);
  mnemo_error_batch_commit(&t, &b);
  mnemo_error_tracker_free(&t);
}

/* Long texts are cut at a character boundary; a context that would be too
 * large keeps the fields that fit and says it was cut. */
static void test_limits(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_event_t ev;
  mnemo_error_ctx_t ctx[8];
  char *msg = malloc(3 * MNEMO_ERROR_MAX_MESSAGE);
  char *val = malloc(MNEMO_ERROR_MAX_CTX_VALUE * 2);
  mnemo_error_view_t v;
  size_t i, n;
  (void)state;
  init(&t, 10);
  /* "é" is 2 bytes: an odd cut would split one. */
  msg[0] = 'x';
  for (i = 1; i + 1 < 3 * MNEMO_ERROR_MAX_MESSAGE - 1; i += 2) {
    msg[i] = '\xc3';
    msg[i + 1] = '\xa9';
  }
  msg[i] = '\0';
  ev = event(msg);
  memset(val, 'v', MNEMO_ERROR_MAX_CTX_VALUE * 2 - 1);
  val[MNEMO_ERROR_MAX_CTX_VALUE * 2 - 1] = '\0';
  memset(ctx, 0, sizeof(ctx));
  for (i = 0; i < 8; i++) {
    static const char *const keys[] = {"k0", "k1", "k2", "k3",
                                       "k4", "k5", "k6", "small"};
    ctx[i].key = S(keys[i]);
    ctx[i].str = S(i == 7 ? "s" : val);
  }
  ev.context = ctx;
  ev.ncontext = 8;
  assert_int_equal(mnemo_error_record(&t, &ev, T0), 0);
  v = view(mnemo_error_oldest(&t));
  n = strlen(v.message);
  assert_true(n <= MNEMO_ERROR_MAX_MESSAGE && n >= MNEMO_ERROR_MAX_MESSAGE - 1);
  assert_int_equal(n % 2, 1); /* 'x' + whole characters */
  assert_true(strlen(v.context_json) <= MNEMO_ERROR_MAX_CONTEXT);
  assert_non_null(strstr(v.context_json, "\"small\":\"s\""));
  assert_non_null(strstr(v.context_json, "\"_truncated\":true}"));
  assert_non_null(strstr(v.context_json, "\"k0\":\"vvv"));
  assert_null(strstr(v.context_json, "\"k6\""));
  free(msg);
  free(val);
  mnemo_error_tracker_free(&t);
}

static void test_invalid(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_config_t cfg;
  mnemo_error_event_t ev = event("m");
  (void)state;
  mnemo_error_config_default(&cfg);
  cfg.capacity = 0;
  assert_int_equal(mnemo_error_tracker_init(&t, &cfg), MNEMO_EINVAL);
  mnemo_error_tracker_free(&t);
  init(&t, 3);
  ev.severity = MNEMO_SEV_COUNT;
  assert_int_equal(mnemo_error_record(&t, &ev, T0), MNEMO_EINVAL);
  ev = event("m");
  ev.category = (mnemo_error_category_t)99;
  assert_int_equal(mnemo_error_record(&t, &ev, T0), MNEMO_EINVAL);
  ev = event(NULL);
  assert_int_equal(mnemo_error_record(&t, &ev, T0), MNEMO_EINVAL);
  ev = event("m");
  ev.service = S(NULL);
  assert_int_equal(mnemo_error_record(&t, &ev, T0), MNEMO_EINVAL);
  assert_int_equal(t.stats.recorded, 0);
  /* Reconfigure: a smaller capacity drops the oldest; bad values change
   * nothing. */
  record(&t, "a", T0);
  record(&t, "b", T0);
  record(&t, "c", T0);
  mnemo_error_config_default(&cfg);
  cfg.capacity = 1;
  cfg.window_us = 0;
  assert_int_equal(mnemo_error_tracker_configure(&t, &cfg), MNEMO_EINVAL);
  assert_int_equal(t.stats.entries, 3);
  cfg.window_us = 10 * SEC;
  assert_int_equal(mnemo_error_tracker_configure(&t, &cfg), 0);
  assert_string_equal(messages(&t), "c");
  assert_int_equal(t.stats.dropped, 2);
  record(&t, "c", T0 + 10 * SEC); /* a new 10 s window */
  assert_string_equal(messages(&t), "c");
  assert_int_equal(t.stats.dropped, 3);
  mnemo_error_tracker_free(&t);
}

static void test_clear(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_batch_t b;
  (void)state;
  init(&t, 10);
  record(&t, "a", T0);
  record(&t, "a", T0);
  record(&t, "b", T0);
  mnemo_error_take(&t, &b, 1); /* a (2 events) stays out */
  mnemo_error_tracker_clear(&t);
  assert_int_equal(t.stats.entries, 0);
  assert_int_equal(t.stats.recorded, 0);
  assert_int_equal(t.stats.dropped, 0);
  assert_int_equal(t.stats.pending, 2);
  assert_null(mnemo_error_oldest(&t));
  record(&t, "b", T0); /* the table is empty too: a new entry */
  assert_int_equal(t.stats.aggregated, 0);
  assert_int_equal(t.stats.entries, 1);
  mnemo_error_batch_requeue(&t, &b);
  assert_string_equal(messages(&t), "a b");
  assert_int_equal(t.stats.pending, 3);
  mnemo_error_tracker_free(&t);
}

static void test_pending_by_severity(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_event_t ev = event("m");
  uint64_t counts[MNEMO_SEV_COUNT];
  (void)state;
  init(&t, 10);
  ev.severity = MNEMO_SEV_CRITICAL;
  mnemo_error_record(&t, &ev, T0);
  mnemo_error_record(&t, &ev, T0 + 1);
  ev.severity = MNEMO_SEV_WARNING;
  mnemo_error_record(&t, &ev, T0 - 5 * SEC);
  mnemo_error_pending_by_severity(&t, T0 - SEC, counts);
  assert_int_equal(counts[MNEMO_SEV_CRITICAL], 2);
  assert_int_equal(counts[MNEMO_SEV_WARNING], 0);
  mnemo_error_pending_by_severity(&t, 0, counts);
  assert_int_equal(counts[MNEMO_SEV_WARNING], 1);
  assert_int_equal(counts[MNEMO_SEV_ERROR], 0);
  mnemo_error_tracker_free(&t);
}

/* ---- correlation ids ---- */

static int record_id(mnemo_error_tracker_t *t, const char *message,
                     const char *id, int64_t at) {
  mnemo_error_event_t ev = event(message);
  ev.correlation_id = S(id);
  return mnemo_error_record(t, &ev, at);
}

/* The entry's sample, joined by spaces. */
static const char *ids_of(const mnemo_error_entry_t *e) {
  static char out[8192];
  size_t i, len, n = view(e).ncorrelation_ids;
  out[0] = '\0';
  for (i = 0; i < n; i++) {
    const char *id = mnemo_error_correlation_id(e, i, &len);
    assert_non_null(id);
    assert_int_equal(strlen(id), len);
    if (i > 0)
      strcat(out, " ");
    strcat(out, id);
  }
  assert_null(mnemo_error_correlation_id(e, n, &len));
  return out;
}

static const mnemo_error_entry_t *entry_of(const mnemo_error_tracker_t *t,
                                           const char *message) {
  const mnemo_error_entry_t *e;
  for (e = mnemo_error_oldest(t); e != NULL; e = mnemo_error_next(e))
    if (strcmp(view(e).message, message) == 0)
      return e;
  fail_msg("no entry %s", message);
  return NULL;
}

/* An aggregated group keeps the distinct ids of its occurrences, not only
 * the first: up to the bound, in the order first seen; the rest counted. */
static void test_correlation_sample(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_view_t v;
  char id[32], want[1024];
  size_t bytes_one;
  int i;
  (void)state;
  init(&t, 10);
  assert_int_equal(record_id(&t, "refused", "req-1", T0), 0);
  bytes_one = t.stats.bytes;
  /* The same id again: nothing to keep, nothing allocated. */
  assert_int_equal(record_id(&t, "refused", "req-1", T0 + 1), 0);
  assert_int_equal(t.stats.bytes, bytes_one);
  assert_string_equal(ids_of(t.oldest), "req-1");
  want[0] = '\0';
  strcat(want, "req-1");
  for (i = 2; i <= 20; i++) {
    snprintf(id, sizeof(id), "req-%d", i);
    assert_int_equal(record_id(&t, "refused", id, T0 + i), 0);
    assert_int_equal(record_id(&t, "refused", id, T0 + i), 0); /* twice */
    if (i <= MNEMO_ERROR_MAX_CORRELATION_IDS) {
      strcat(want, " ");
      strcat(want, id);
    }
  }
  assert_int_equal(record(&t, "refused", T0 + 30), 0);        /* no id */
  assert_int_equal(record_id(&t, "refused", "", T0 + 31), 0); /* none */
  assert_int_equal(t.stats.entries, 1);
  v = view(t.oldest);
  assert_int_equal(v.count, 2 + 19 * 2 + 2);
  assert_int_equal(v.ncorrelation_ids, MNEMO_ERROR_MAX_CORRELATION_IDS);
  assert_string_equal(ids_of(t.oldest), want);
  assert_string_equal(v.correlation_id, "req-1");
  /* req-17 .. req-20, each seen twice. */
  assert_int_equal(v.correlation_ids_omitted, 8);
  assert_true(t.stats.bytes > bytes_one);
  check_accounting(&t, 0);
  mnemo_error_tracker_free(&t);

  /* A group whose first event had no id takes the first one that comes. */
  init(&t, 10);
  record(&t, "x", T0);
  assert_null(view(t.oldest).correlation_id);
  assert_int_equal(view(t.oldest).ncorrelation_ids, 0);
  record_id(&t, "x", "late-1", T0 + 1);
  record_id(&t, "x", "late-2", T0 + 2);
  v = view(t.oldest);
  assert_string_equal(v.correlation_id, "late-1");
  assert_string_equal(ids_of(t.oldest), "late-1 late-2");
  /* An empty id starts no sample either. */
  record_id(&t, "y", "", T0);
  assert_null(view(t.newest).correlation_id);
  check_accounting(&t, 0);
  mnemo_error_tracker_free(&t);
}

/* The sample in the batch's JSON, and long ids cut like names. */
static void test_correlation_json(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_batch_t b;
  char *json, longid[600];
  size_t len, idlen;
  int i;
  (void)state;
  init(&t, 10);
  record_id(&t, "m", "a\"1", T0);
  record_id(&t, "m", "b-2", T0 + 1);
  record(&t, "n", T0);
  record_id(&t, "n", "c-3", T0 + 1);
  memset(longid, 'z', sizeof(longid) - 1);
  longid[sizeof(longid) - 1] = '\0';
  record_id(&t, "m", longid, T0 + 2);
  for (i = 0; i < 3; i++)
    longid[i] = 'y';
  /* Distinct only past the cut: the same id once cut. */
  record_id(&t, "m", longid, T0 + 3);
  assert_int_equal(view(entry_of(&t, "m")).ncorrelation_ids, 4);
  longid[0] = 'z';
  longid[1] = 'z';
  longid[2] = 'z';
  longid[sizeof(longid) - 2] = 'q';
  record_id(&t, "m", longid, T0 + 4);
  assert_int_equal(view(entry_of(&t, "m")).ncorrelation_ids, 4);
  assert_non_null(mnemo_error_correlation_id(entry_of(&t, "m"), 2, &idlen));
  assert_int_equal(idlen, MNEMO_ERROR_MAX_NAME);
  mnemo_error_take(&t, &b, 10);
  assert_int_equal(mnemo_error_batch_json(&b, &json, &len), 0);
  assert_non_null(strstr(json,
                         "\"correlation_id\":\"a\\\"1\",\"correlation_ids\":"
                         "[\"a\\\"1\",\"b-2\",\"zzz"));
  assert_non_null(strstr(json, "\"],\"correlation_ids_omitted\":0,"));
  assert_non_null(strstr(json, "\"correlation_id\":\"c-3\",\"correlation_ids\":"
                               "[\"c-3\"],\"correlation_ids_omitted\":0,"));
  free(json);
  mnemo_error_batch_commit(&t, &b);
  check_accounting(&t, 0);
  mnemo_error_tracker_free(&t);
}

/* A requeued batch merged with what was recorded meanwhile keeps the ids
 * of both, bounded. */
static void test_correlation_requeue(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_batch_t b;
  mnemo_error_view_t v;
  char id[32];
  int i;
  (void)state;
  init(&t, 10);
  record_id(&t, "a", "old-1", T0);
  record_id(&t, "a", "old-2", T0 + 1);
  mnemo_error_take(&t, &b, 10);
  record_id(&t, "a", "new-1", T0 + 2);
  record_id(&t, "a", "old-2", T0 + 3);
  mnemo_error_batch_requeue(&t, &b);
  assert_int_equal(t.stats.entries, 1);
  assert_string_equal(ids_of(t.oldest), "new-1 old-2 old-1");
  check_accounting(&t, 0);
  /* Full on both sides: what does not fit is counted. */
  mnemo_error_take(&t, &b, 10);
  for (i = 0; i < MNEMO_ERROR_MAX_CORRELATION_IDS + 2; i++) {
    snprintf(id, sizeof(id), "later-%d", i);
    record_id(&t, "a", id, T0 + 10 + i);
  }
  v = view(t.oldest);
  assert_int_equal(v.correlation_ids_omitted, 2);
  mnemo_error_batch_requeue(&t, &b);
  v = view(t.oldest);
  assert_int_equal(v.ncorrelation_ids, MNEMO_ERROR_MAX_CORRELATION_IDS);
  assert_int_equal(v.correlation_ids_omitted, 2 + 3);
  assert_int_equal(v.count, 4 + MNEMO_ERROR_MAX_CORRELATION_IDS + 2);
  check_accounting(&t, 0);
  mnemo_error_take(&t, &b, 10);
  mnemo_error_batch_commit(&t, &b);
  check_accounting(&t, 0);
  mnemo_error_tracker_free(&t);
}

/* Samples count against max_bytes: many groups with many long ids stay
 * within it, the oldest dropped. */
static void test_correlation_bytes_bound(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_config_t cfg;
  char m[32], id[MNEMO_ERROR_MAX_NAME + 1];
  int i, j;
  (void)state;
  mnemo_error_config_default(&cfg);
  cfg.max_bytes = MNEMO_ERROR_MIN_BYTES;
  assert_int_equal(mnemo_error_tracker_init(&t, &cfg), 0);
  memset(id, 'i', sizeof(id) - 1);
  id[sizeof(id) - 1] = '\0';
  for (i = 0; i < 40; i++) {
    snprintf(m, sizeof(m), "group %d", i);
    for (j = 0; j < MNEMO_ERROR_MAX_CORRELATION_IDS + 4; j++) {
      snprintf(id, sizeof(id), "%03d-%03d", i, j);
      id[7] = 'x'; /* keep it long */
      assert_int_equal(record_id(&t, m, id, T0 + i * 100 + j), 0);
      assert_true(t.stats.bytes <= cfg.max_bytes);
    }
  }
  assert_true(t.stats.entries < 40);
  assert_int_equal(view(t.newest).ncorrelation_ids,
                   MNEMO_ERROR_MAX_CORRELATION_IDS);
  check_accounting(&t, 0);
  mnemo_error_tracker_free(&t);
}

/* Random records, takes, commits, requeues and drops against the
 * invariants: nothing is lost without being counted, the bounds hold, and
 * an event never has two entries in the queue. */
static void test_random_accounting(void **state) {
  mnemo_error_tracker_t t;
  mnemo_error_batch_t batches[4];
  int nb = 0, i, j;
  uint64_t out = 0;
  unsigned seed = 12345;
  (void)state;
  init(&t, 50);
  memset(batches, 0, sizeof(batches));
  for (i = 0; i < 20000; i++) {
    unsigned r;
    seed = seed * 1103515245u + 12345u;
    r = (seed >> 16) % 100;
    if (r < 80) {
      char m[16], id[16];
      snprintf(m, sizeof(m), "m%u", (seed >> 8) % 120);
      snprintf(id, sizeof(id), "id%u", (seed >> 3) % 40);
      assert_int_equal(
          record_id(&t, m, r < 60 ? id : NULL, T0 + (int64_t)i * 100000), 0);
    } else if (r < 88 && nb < 4) {
      mnemo_error_take(&t, &batches[nb], 1 + (seed >> 4) % 20);
      out += batches[nb].events;
      nb++;
    } else if (nb > 0) {
      mnemo_error_batch_t *b = &batches[--nb];
      out -= b->events;
      if (r < 93)
        mnemo_error_batch_commit(&t, b);
      else if (r < 98)
        mnemo_error_batch_requeue(&t, b);
      else
        mnemo_error_batch_drop(&t, b);
    }
    check_accounting(&t, out);
  }
  /* No two queued entries share an identity. */
  {
    const mnemo_error_entry_t *a, *b2;
    for (a = mnemo_error_oldest(&t); a; a = mnemo_error_next(a))
      for (b2 = mnemo_error_next(a); b2; b2 = mnemo_error_next(b2)) {
        mnemo_error_view_t va = view(a), vb = view(b2);
        assert_false(strcmp(va.message, vb.message) == 0 &&
                     va.window_start_us == vb.window_start_us);
      }
  }
  for (j = 0; j < nb; j++)
    mnemo_error_batch_free(&batches[j]);
  mnemo_error_tracker_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scrub_cases),
      cmocka_unit_test(test_scrub_idempotent_and_bounded),
      cmocka_unit_test(test_scrub_cut_output),
      cmocka_unit_test(test_scrub_dsn_cases),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_identical_events_aggregate),
      cmocka_unit_test(test_identity),
      cmocka_unit_test(test_context_callback),
      cmocka_unit_test(test_memo),
      cmocka_unit_test(test_windows),
      cmocka_unit_test(test_overflow_keeps_newest),
      cmocka_unit_test(test_bytes_bound),
      cmocka_unit_test(test_take_commit),
      cmocka_unit_test(test_requeue_merges_and_keeps_order),
      cmocka_unit_test(test_requeue_into_full_queue),
      cmocka_unit_test(test_scrubbed_when_stored),
      cmocka_unit_test(test_batch_json),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_invalid),
      cmocka_unit_test(test_clear),
      cmocka_unit_test(test_pending_by_severity),
      cmocka_unit_test(test_correlation_sample),
      cmocka_unit_test(test_correlation_json),
      cmocka_unit_test(test_correlation_requeue),
      cmocka_unit_test(test_correlation_bytes_bound),
      cmocka_unit_test(test_random_accounting),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
