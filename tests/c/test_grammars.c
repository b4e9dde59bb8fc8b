/* The pinned tree-sitter grammars load into Debian's libtree-sitter (ABI
 * 13-14) and parse a definition of each language without errors. */
#include "testing.h"

#include <string.h>
#include <tree_sitter/api.h>

const TSLanguage *tree_sitter_python(void);
const TSLanguage *tree_sitter_javascript(void);
const TSLanguage *tree_sitter_c(void);
const TSLanguage *tree_sitter_lua(void);

static void check_parses(const TSLanguage *language, const char *source,
                         const char *definition_type) {
  TSParser *parser = ts_parser_new();
  TSTree *tree;
  TSNode root, first;

  assert_true(ts_language_version(language) >= 13);
  assert_true(ts_language_version(language) <= 14);
  assert_true(ts_parser_set_language(parser, language));
  tree = ts_parser_parse_string(parser, NULL, source, (uint32_t)strlen(source));
  assert_non_null(tree);
  root = ts_tree_root_node(tree);
  assert_false(ts_node_has_error(root));
  first = ts_node_named_child(root, 0);
  assert_string_equal(ts_node_type(first), definition_type);
  ts_tree_delete(tree);
  ts_parser_delete(parser);
}

static void test_python(void **state) {
  (void)state;
  check_parses(tree_sitter_python(), "def f(x):\n    return x\n",
               "function_definition");
}

static void test_javascript(void **state) {
  (void)state;
  check_parses(tree_sitter_javascript(), "function f(x) { return x; }\n",
               "function_declaration");
}

static void test_c(void **state) {
  (void)state;
  check_parses(tree_sitter_c(), "int f(int x) { return x; }\n",
               "function_definition");
}

static void test_lua(void **state) {
  (void)state;
  check_parses(tree_sitter_lua(), "local function f(x) return x end\n",
               "function_declaration");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_python),
      cmocka_unit_test(test_javascript),
      cmocka_unit_test(test_c),
      cmocka_unit_test(test_lua),
  };
  return cmocka_run_group_tests_name("grammars", tests, NULL, NULL);
}
