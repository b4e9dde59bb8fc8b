/* The hashing embedder: deterministic, normalised, and similar texts are
 * closer than unrelated ones. */
#include "testing.h"

#include <math.h>
#include <string.h>

#include "embed.h"
#include "status.h"

#define DIMS 384

static double norm(const float *v) {
  double s = 0;
  for (int i = 0; i < DIMS; i++)
    s += (double)v[i] * v[i];
  return sqrt(s);
}

static void embed(const char *text, float *v) {
  assert_int_equal(mnemo_embed_hashing(text, strlen(text), v, DIMS), 0);
}

static void test_deterministic_and_normalised(void **state) {
  float a[DIMS], b[DIMS];
  (void)state;
  embed("def parse_file(path): return open(path).read()", a);
  embed("def parse_file(path): return open(path).read()", b);
  assert_memory_equal(a, b, sizeof(a));
  assert_true(fabs(norm(a) - 1.0) < 1e-5);
}

static void test_empty_and_bad_dims(void **state) {
  float v[DIMS];
  (void)state;
  embed("   ...  ", v);
  assert_true(norm(v) == 0.0);
  assert_true(mnemo_embed_cosine(v, v, DIMS) == 0.0);
  assert_int_equal(mnemo_embed_hashing("x", 1, v, 8), MNEMO_EINVAL);
  assert_int_equal(mnemo_embed_hashing("x", 1, v, 100000), MNEMO_EINVAL);
}

static void test_identifier_subtokens_match(void **state) {
  float camel[DIMS], snake[DIMS], other[DIMS];
  (void)state;
  embed("parseHttpRequest", camel);
  embed("parse_http_request", snake);
  embed("renderWidgetTree", other);
  /* Same sub-tokens, different spelling: nearly the same vector. */
  assert_true(mnemo_embed_cosine(camel, snake, DIMS) > 0.99);
  assert_true(mnemo_embed_cosine(camel, other, DIMS) < 0.3);
}

static void test_related_code_is_closer(void **state) {
  float query[DIMS], hit[DIMS], miss[DIMS];
  (void)state;
  embed("open database connection", query);
  embed("def open_connection(dsn):\n    db = Database(dsn)\n    return "
        "db.connect()",
        hit);
  embed("function drawCircle(ctx, radius) { ctx.arc(0, 0, radius); }", miss);
  assert_true(mnemo_embed_cosine(query, hit, DIMS) >
              mnemo_embed_cosine(query, miss, DIMS) + 0.1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_deterministic_and_normalised),
      cmocka_unit_test(test_empty_and_bad_dims),
      cmocka_unit_test(test_identifier_subtokens_match),
      cmocka_unit_test(test_related_code_is_closer),
  };
  return cmocka_run_group_tests_name("embed", tests, NULL, NULL);
}
