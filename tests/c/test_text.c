/* UTF-8 validation, binary detection, content hashes. */
#include "testing.h"

#include <string.h>

#include "text.h"

static int valid(const char *s, size_t n, size_t *off) {
  return mnemo_utf8_valid(s, n, off);
}

static void test_utf8(void **state) {
  size_t off = 99;
  (void)state;
  assert_true(valid("plain ascii", 11, NULL));
  assert_true(valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, NULL));
  assert_false(valid("ab\xff", 3, &off));
  assert_int_equal(off, 2);
  assert_false(valid("\xc0\xaf", 2, NULL));         /* overlong '/' */
  assert_false(valid("\xed\xa0\x80", 3, NULL));     /* surrogate */
  assert_false(valid("\xf4\x90\x80\x80", 4, NULL)); /* > U+10FFFF */
  assert_false(valid("x\xe2\x82", 3, &off));        /* truncated */
  assert_int_equal(off, 1);
  assert_false(valid("\x80", 1, NULL)); /* lone continuation */
  assert_true(valid("", 0, NULL));
}

static void test_binary_and_hash(void **state) {
  (void)state;
  assert_true(mnemo_looks_binary("ab\0cd", 5, 8000));
  assert_false(mnemo_looks_binary("abcd", 4, 8000));
  assert_false(mnemo_looks_binary("abc\0", 4, 3)); /* beyond the probe */
  assert_true(mnemo_hash64("a", 1) != mnemo_hash64("b", 1));
  assert_true(mnemo_hash64("same", 4) == mnemo_hash64("same", 4));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_utf8),
      cmocka_unit_test(test_binary_and_hash),
  };
  return cmocka_run_group_tests_name("text", tests, NULL, NULL);
}
