/* The step-bounded Lua pattern matcher (pattern.h). */
#include "testing.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pattern.h"

static mnemo_pattern_match_t m;

/* find(pattern, subject) from `init`, unlimited budget. */
static int find_at(const char *p, const char *s, size_t init) {
  uint64_t steps = UINT64_MAX;
  return mnemo_pattern_find(p, strlen(p), s, strlen(s), init, 0, &steps, &m);
}

static int find(const char *p, const char *s) {
  return find_at(p, s, 0);
}

/* The whole match as [start, end), or -1 -1 for none. */
static void assert_span(const char *p, const char *s, int start, int end) {
  int rc = find(p, s);
  if (start < 0) {
    assert_int_equal(rc, 0);
    return;
  }
  assert_int_equal(rc, 1);
  assert_int_equal(m.start, start);
  assert_int_equal(m.end, end);
}

/* The first match's capture i as a string. */
static void assert_capture(const char *s, int i, const char *want) {
  assert_true(i < m.ncaptures);
  assert_int_equal(m.captures[i].kind, MNEMO_PATTERN_CAPTURE_STRING);
  assert_int_equal(m.captures[i].len, strlen(want));
  assert_memory_equal(s + m.captures[i].start, want, strlen(want));
}

static void assert_error(const char *p, const char *s, const char *msg) {
  assert_int_equal(find(p, s), MNEMO_PATTERN_EPATTERN);
  assert_non_null(m.error);
  assert_string_equal(m.error, msg);
}

static double seconds_since(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void test_literals_and_dot(void **state) {
  (void)state;
  assert_span("lo w", "hello world", 3, 7);
  assert_span("l.x", "hello", -1, -1);
  assert_span("l.", "hello", 2, 4);
  assert_span("x", "hello", -1, -1);
  assert_span("", "hello", 0, 0);
  assert_span("", "", 0, 0);
  assert_span("a", "", -1, -1);
  assert_span(".", "", -1, -1);
  assert_span("%.", "a.b", 1, 2);
  assert_span("%%", "5%", 1, 2);
  assert_span("]", "a]", 1, 2);    /* ']' alone is ordinary */
  assert_span("a|b", "b", -1, -1); /* no alternation in Lua patterns */
}

static void test_classes(void **state) {
  static const struct {
    char cl;
    const char *in, *out;
  } cases[] = {
      {'a', "azAZ", "09_ \x80"},
      {'c', "\x01\x1f\x7f", "a \x80"},
      {'d', "09", "a/:"},
      {'g', "!~a0", " \x7f\x80"},
      {'l', "az", "AZ0"},
      {'p', "!/:@[`{~", "a0 \x80"},
      {'s', " \t\n\v\f\r", "a\x85\xa0"},
      {'u', "AZ", "az0"},
      {'w', "az09AZ", "_ \xe9"},
      {'x', "09afAF", "gG"},
  };
  size_t i, j;
  char p[3] = "%?", up[3] = "%?", s[2] = "?";
  (void)state;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    p[1] = cases[i].cl;
    up[1] = (char)(cases[i].cl - 'a' + 'A');
    for (j = 0; cases[i].in[j]; j++) {
      s[0] = cases[i].in[j];
      assert_int_equal(find(p, s), 1);
      assert_int_equal(find(up, s), 0);
    }
    for (j = 0; cases[i].out[j]; j++) {
      s[0] = cases[i].out[j];
      assert_int_equal(find(p, s), 0);
      assert_int_equal(find(up, s), 1);
    }
  }
}

/* Bytes >= 0x80 are in no class and compare as unsigned. */
static void test_high_bytes(void **state) {
  int c;
  uint64_t steps = UINT64_MAX;
  char s[1];
  (void)state;
  for (c = 0x80; c <= 0xff; c++) {
    s[0] = (char)c;
    assert_int_equal(mnemo_pattern_find("[%a%c%d%g%l%p%s%u%w%x]", 22, s, 1, 0,
                                        0, &steps, &m),
                     0);
    assert_int_equal(
        mnemo_pattern_find("[\x80-\xff]", 5, s, 1, 0, 0, &steps, &m), 1);
    assert_int_equal(mnemo_pattern_find(".", 1, s, 1, 0, 0, &steps, &m), 1);
  }
  assert_span("\xe9+", "caf\xe9\xe9!", 3, 5);
  assert_span("[^\x01-\x7f]+", "caf\xc3\xa9!", 3, 5);
}

/* %z (Lua 5.1) and NUL bytes: in the core, a NUL in the pattern is an
 * ordinary byte. */
static void test_nul(void **state) {
  uint64_t steps = UINT64_MAX;
  (void)state;
  assert_int_equal(mnemo_pattern_find("%z", 2, "ab\0c", 4, 0, 0, &steps, &m),
                   1);
  assert_int_equal(m.start, 2);
  assert_int_equal(mnemo_pattern_find("b\0c", 3, "ab\0c", 4, 0, 0, &steps, &m),
                   1);
  assert_int_equal(m.start, 1);
  assert_int_equal(m.end, 4);
  assert_int_equal(mnemo_pattern_find("%Z+", 3, "ab\0c", 4, 0, 0, &steps, &m),
                   1);
  assert_int_equal(m.end, 2);
}

static void test_sets(void **state) {
  (void)state;
  assert_span("[abc]+", "xxbcaz", 2, 5);
  assert_span("[^abc]+", "abxyzc", 2, 5);
  assert_span("[a-c]+", "zzabcd", 2, 5);
  assert_span("[%d_]+", "ab_12c", 2, 5);
  assert_span("[]]", "a]", 1, 2);      /* a first ']' is in the set */
  assert_span("[^]]+", "]]ab]", 2, 4); /* also after '^' */
  assert_span("[a-]+", "x-a-y", 1, 4); /* a final '-' is literal */
  assert_span("[%a-]+", "1a-b2", 1, 4);
  assert_span("[%]]", "a]", 1, 2);
  assert_span("[%w%.]+", " a.b ", 1, 4);
  assert_span("[^%s]+", "  ab ", 2, 4);
  assert_span("[z-a]", "abz", -1, -1); /* an empty range */
}

static void test_quantifiers(void **state) {
  const char *s;
  (void)state;
  assert_span("a*", "aaab", 0, 3);
  assert_span("a*", "baaa", 0, 0);
  assert_span("a+", "baaa", 1, 4);
  assert_span("a+", "bbb", -1, -1);
  assert_span("ba?b", "bb", 0, 2);
  assert_span("ba?b", "bab", 0, 3);
  assert_span("ba?b", "baab", -1, -1);
  assert_span("a-b", "aaab", 0, 4);
  assert_span("a.-b", "a1b2b", 0, 3); /* lazy */
  assert_span("a.*b", "a1b2b", 0, 5); /* greedy */
  s = "<a><b>";
  assert_int_equal(find("<(.-)>", s), 1);
  assert_capture(s, 0, "a");
  assert_int_equal(find("<(.*)>", s), 1);
  assert_capture(s, 0, "a><b");
  assert_span("a*$", "baa", 1, 3);
  assert_span("[ab]*c", "ababc", 0, 5);
  assert_span("x*", "", 0, 0);
}

static void test_anchors(void **state) {
  uint64_t steps = UINT64_MAX;
  (void)state;
  assert_span("^ab", "abab", 0, 2);
  assert_span("^b", "ab", -1, -1);
  assert_int_equal(find_at("^b", "ab", 1), 1); /* anchored at init */
  assert_int_equal(m.start, 1);
  assert_span("b$", "abab", 3, 4);
  assert_span("a$", "abab", -1, -1);
  assert_span("a$b", "a$b", 0, 3); /* '$' not at the end is literal */
  assert_span("a^b", "a^b", 0, 3); /* '^' not at the start too */
  assert_span("^$", "", 0, 0);
  assert_span("^", "abc", 0, 0);
  assert_span("$", "abc", 3, 3);
  /* gmatch's rule: a leading '^' is a character. */
  assert_int_equal(mnemo_pattern_find("^a", 2, "x^a", 3, 0,
                                      MNEMO_PATTERN_CARET_LITERAL, &steps, &m),
                   1);
  assert_int_equal(m.start, 1);
}

static void test_init(void **state) {
  (void)state;
  assert_int_equal(find_at("b", "abab", 2), 1);
  assert_int_equal(m.start, 3);
  assert_int_equal(find_at("", "abc", 3), 1); /* at the end */
  assert_int_equal(m.start, 3);
  assert_int_equal(find_at("", "abc", 4), 0); /* past it */
  assert_int_equal(find_at("a*", "abc", 99), 0);
  assert_int_equal(find_at("$", "abc", 3), 1);
}

static void test_captures(void **state) {
  const char *s = "key = value";
  (void)state;
  assert_int_equal(find("(%w+)%s*=%s*(%w+)", s), 1);
  assert_int_equal(m.ncaptures, 2);
  assert_capture(s, 0, "key");
  assert_capture(s, 1, "value");
  /* Numbered by their opening parenthesis. */
  s = "abc";
  assert_int_equal(find("((a)(b(c)))", s), 1);
  assert_int_equal(m.ncaptures, 4);
  assert_capture(s, 0, "abc");
  assert_capture(s, 1, "a");
  assert_capture(s, 2, "bc");
  assert_capture(s, 3, "c");
  /* Position captures. */
  assert_int_equal(find("()b()", s), 1);
  assert_int_equal(m.ncaptures, 2);
  assert_int_equal(m.captures[0].kind, MNEMO_PATTERN_CAPTURE_POSITION);
  assert_int_equal(m.captures[0].start, 1);
  assert_int_equal(m.captures[1].start, 2);
  assert_int_equal(find("()", ""), 1);
  assert_int_equal(m.captures[0].start, 0);
  /* An empty capture, a capture undone by backtracking. */
  assert_int_equal(find("a()(x*)b", "ab"), 1);
  assert_int_equal(m.captures[1].len, 0);
  assert_int_equal(find("(a*)(a)$", "aaa"), 1);
  assert_capture("aaa", 0, "aa");
  assert_capture("aaa", 1, "a");
}

/* "(a" matches; the capture is reported unfinished (Lua raises only when
 * it is used). */
static void test_unfinished_capture(void **state) {
  (void)state;
  assert_int_equal(find("(a", "ba"), 1);
  assert_int_equal(m.start, 1);
  assert_int_equal(m.ncaptures, 1);
  assert_int_equal(m.captures[0].kind, MNEMO_PATTERN_CAPTURE_UNFINISHED);
  assert_int_equal(find("(a)(b", "ab"), 1);
  assert_int_equal(m.captures[0].kind, MNEMO_PATTERN_CAPTURE_STRING);
  assert_int_equal(m.captures[1].kind, MNEMO_PATTERN_CAPTURE_UNFINISHED);
}

static void test_backrefs(void **state) {
  const char *s = "say \"hi\" or 'x'";
  (void)state;
  assert_int_equal(find("([\"'])(.-)%1", s), 1);
  assert_capture(s, 1, "hi");
  assert_span("(a+)b%1", "aabaa", 0, 5);
  assert_span("(a+)b%1$", "aaba", 1, 4);
  assert_span("(.)%1", "abccd", 2, 4);
  assert_span("(.)(.)%2%1", "xabbay", 1, 5);
  /* A position capture never matches again (as in LuaJIT). */
  assert_span("()a%1", "aa", -1, -1);
  assert_span("(a)%1", "a", -1, -1); /* past the end */
}

static void test_balance(void **state) {
  const char *s = "f(a(b)c) d";
  (void)state;
  assert_int_equal(find("%b()", s), 1);
  assert_int_equal(m.start, 1);
  assert_int_equal(m.end, 8);
  assert_span("%b()", "(()", 1, 3);
  assert_span("%b()", "((", -1, -1);
  assert_span("%b''", "x'a'b'", 1, 4); /* same open and close byte */
  assert_span("%b()x", "(a)x", 0, 4);
  assert_span("%b{}", "{}", 0, 2);
}

static void test_frontier(void **state) {
  (void)state;
  assert_span("%f[%w]%w+", "  hello world", 2, 7);
  assert_span("%f[%a]", "abc", 0, 0); /* before the start: NUL */
  assert_span("%f[%z]", "abc", 3, 3); /* at the end: NUL */
  assert_span("%f[^%z]", "abc", 0, 0);
  assert_span("%f[%w]the%f[%W]", "other the", 6, 9);
  assert_span("%f[a]", "aaa", 0, 0);
  assert_span("a%f[b]", "aab", 1, 2);
}

/* Lua's messages, and only where matching reaches the malformed part. */
static void test_errors(void **state) {
  char many[80];
  (void)state;
  assert_error("a%", "a", "malformed pattern (ends with '%')");
  assert_error("%", "", "malformed pattern (ends with '%')");
  assert_error("[a", "a", "malformed pattern (missing ']')");
  assert_error("[", "", "malformed pattern (missing ']')");
  assert_error("[]", "x", "malformed pattern (missing ']')");
  assert_error("[a%]", "x", "malformed pattern (missing ']')");
  assert_error("[^", "x", "malformed pattern (missing ']')");
  assert_error("%1", "a", "invalid capture index");
  assert_error("%0", "a", "invalid capture index");
  assert_error("(a%1)", "aa", "invalid capture index"); /* still open */
  assert_error("(a)%2", "aa", "invalid capture index");
  assert_error(")", "a", "invalid pattern capture");
  assert_error("(a))", "a", "invalid pattern capture");
  assert_error("%f", "a", "missing '[' after '%f' in pattern");
  assert_error("%fa", "a", "missing '[' after '%f' in pattern");
  assert_error("%f[a", "a", "malformed pattern (missing ']')");
  assert_error("%b", "a", "unbalanced pattern");
  assert_error("%b(", "(", "unbalanced pattern");
  memset(many, '(', 33);
  many[33] = '\0';
  assert_error(many, "", "too many captures");
  memset(many, '(', 32);
  memset(many + 32, ')', 32);
  many[64] = '\0';
  assert_int_equal(find(many, ""), 1); /* exactly 32 */
  assert_int_equal(m.ncaptures, 32);
  /* Lazy: not reached, not an error. */
  assert_int_equal(find("a%", "b"), 0);
  assert_int_equal(find("x[", "abc"), 0);
  assert_int_equal(find("a|%1", "b"), 0);
  assert_int_equal(find("a*)", "b"), MNEMO_PATTERN_EPATTERN);
}

/* "a?" x n recurses n + 1 deep: 199 is fine, 200 too complex (LuaJIT's
 * limit). A long pattern cannot exhaust the C stack. */
static void test_depth(void **state) {
  size_t n;
  char *p = malloc(200001), *s = malloc(100001);
  uint64_t steps = UINT64_MAX;
  (void)state;
  assert_non_null(p);
  assert_non_null(s);
  for (n = 0; n < 100000; n++) {
    p[2 * n] = 'a';
    p[2 * n + 1] = '?';
    s[n] = 'a';
  }
  assert_int_equal(mnemo_pattern_find(p, 2 * 199, s, 199, 0, 0, &steps, &m), 1);
  assert_int_equal(m.end, 199);
  assert_int_equal(mnemo_pattern_find(p, 2 * 200, s, 200, 0, 0, &steps, &m),
                   MNEMO_PATTERN_EPATTERN);
  assert_string_equal(m.error, "pattern too complex");
  assert_int_equal(
      mnemo_pattern_find(p, 2 * 100000, s, 100000, 0, 0, &steps, &m),
      MNEMO_PATTERN_EPATTERN);
  assert_string_equal(m.error, "pattern too complex");
  /* Quantified items nest the same way. */
  for (n = 0; n < 300; n++)
    p[2 * n + 1] = '*';
  assert_int_equal(mnemo_pattern_find(p, 2 * 300, s, 300, 0, 0, &steps, &m),
                   MNEMO_PATTERN_EPATTERN);
  assert_string_equal(m.error, "pattern too complex");
  free(p);
  free(s);
}

/* The pattern that never returns from LuaJIT's string.find: ends with
 * EBUDGET, in time proportional to the budget. */
static void test_budget_exponential(void **state) {
  char p[32], *s = malloc(30000);
  uint64_t steps = 16000000; /* a sandbox's default: 1e6 instructions */
  struct timespec t0;
  double took;
  int i;
  (void)state;
  assert_non_null(s);
  memset(s, 'a', 30000);
  for (i = 0; i < 12; i++) {
    p[2 * i] = 'a';
    p[2 * i + 1] = '*';
  }
  p[24] = 'b';
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(mnemo_pattern_find(p, 25, s, 30000, 0, 0, &steps, &m),
                   MNEMO_PATTERN_EBUDGET);
  took = seconds_since(&t0);
  assert_int_equal(steps, 0);
  assert_non_null(m.error);
  assert_true(took < 2.0);
  print_message("      16e6 steps spent in %.3f s\n", took);
  free(s);
}

/* Budget accounting: a search takes a fixed number of steps, succeeds
 * with exactly that many and fails with one less; no budget at all fails
 * at once. */
static void test_budget_exact(void **state) {
  const char *p = "(%w+)=(%w+)", *s = "  key=value  ";
  uint64_t steps = 1000000, need;
  (void)state;
  assert_int_equal(
      mnemo_pattern_find(p, strlen(p), s, strlen(s), 0, 0, &steps, &m), 1);
  need = 1000000 - steps;
  assert_true(need > 10); /* at least one per start and per test */
  assert_true(need < 200);
  steps = need;
  assert_int_equal(
      mnemo_pattern_find(p, strlen(p), s, strlen(s), 0, 0, &steps, &m), 1);
  assert_int_equal(steps, 0);
  steps = need - 1;
  assert_int_equal(
      mnemo_pattern_find(p, strlen(p), s, strlen(s), 0, 0, &steps, &m),
      MNEMO_PATTERN_EBUDGET);
  assert_int_equal(steps, 0);
  steps = 0;
  assert_int_equal(mnemo_pattern_find("", 0, "", 0, 0, 0, &steps, &m),
                   MNEMO_PATTERN_EBUDGET);
}

/* Scans cost by length: a long set tested often, %b over a long subject,
 * back-references over long captures. */
static void test_budget_long_items(void **state) {
  char *set = malloc(4003), *s = malloc(100000);
  uint64_t steps = 100000;
  (void)state;
  assert_non_null(set);
  assert_non_null(s);
  set[0] = '[';
  memset(set + 1, 'x', 4000);
  set[4001] = ']';
  set[4002] = '*';
  memset(s, 'a', 100000);
  /* 100000 start positions, each testing a 4000-byte set: 250 steps each. */
  assert_int_equal(mnemo_pattern_find(set, 4003, s, 100000, 0, 0, &steps, &m),
                   1); /* empty match at 0, cheap */
  assert_int_equal(mnemo_pattern_find(set, 4002, s, 100000, 0, 0, &steps, &m),
                   MNEMO_PATTERN_EBUDGET);
  s[0] = '(';
  steps = 1000;
  assert_int_equal(mnemo_pattern_find("%b()", 4, s, 100000, 0, 0, &steps, &m),
                   MNEMO_PATTERN_EBUDGET);
  free(set);
  free(s);
}

static void test_plain(void **state) {
  uint64_t steps = 1000;
  size_t pos = 99;
  (void)state;
  assert_int_equal(
      mnemo_pattern_find_plain("a.c", 3, "abc a.c", 7, 0, &steps, &pos), 1);
  assert_int_equal(pos, 4);
  assert_int_equal(steps, 1000 - 1);
  assert_int_equal(
      mnemo_pattern_find_plain("ab", 2, "abab", 4, 1, &steps, &pos), 1);
  assert_int_equal(pos, 2);
  assert_int_equal(mnemo_pattern_find_plain("", 0, "abc", 3, 3, &steps, &pos),
                   1);
  assert_int_equal(pos, 3);
  assert_int_equal(mnemo_pattern_find_plain("", 0, "abc", 3, 4, &steps, &pos),
                   0);
  assert_int_equal(mnemo_pattern_find_plain("x", 1, "abc", 3, 0, &steps, &pos),
                   0);
  assert_int_equal(
      mnemo_pattern_find_plain("b\0c", 3, "ab\0c", 4, 0, &steps, &pos), 1);
  assert_int_equal(pos, 1);
  steps = 0;
  assert_int_equal(mnemo_pattern_find_plain("a", 1, "a", 1, 0, &steps, &pos),
                   MNEMO_PATTERN_EBUDGET);
  assert_true(mnemo_pattern_has_specials("a.b", 3));
  assert_true(mnemo_pattern_has_specials("a\0-", 3));
  assert_false(mnemo_pattern_has_specials("a)]b", 4));
  assert_false(mnemo_pattern_has_specials("", 0));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_literals_and_dot),
      cmocka_unit_test(test_classes),
      cmocka_unit_test(test_high_bytes),
      cmocka_unit_test(test_nul),
      cmocka_unit_test(test_sets),
      cmocka_unit_test(test_quantifiers),
      cmocka_unit_test(test_anchors),
      cmocka_unit_test(test_init),
      cmocka_unit_test(test_captures),
      cmocka_unit_test(test_unfinished_capture),
      cmocka_unit_test(test_backrefs),
      cmocka_unit_test(test_balance),
      cmocka_unit_test(test_frontier),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_depth),
      cmocka_unit_test(test_budget_exponential),
      cmocka_unit_test(test_budget_exact),
      cmocka_unit_test(test_budget_long_items),
      cmocka_unit_test(test_plain),
  };
  return cmocka_run_group_tests_name("pattern", tests, NULL, NULL);
}
