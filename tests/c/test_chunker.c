/* The chunker: names, name paths and exact line ranges per language, the
 * module chunk, splitting, refs, cancellation (also from another thread
 * and on the thread pool), and no crash on arbitrary bytes. */
#include "testing.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <tree_sitter/api.h>
#include <unistd.h>
#include <uv.h>

#include "chunk_job.h"
#include "chunker.h"
#include "status.h"

#define FIXTURES "tests/fixtures/chunker/"

/* Strong references: they pull the grammars out of the archive, for the
 * chunker's weak ones. */
const TSLanguage *tree_sitter_python(void);
const TSLanguage *tree_sitter_javascript(void);
const TSLanguage *tree_sitter_c(void);
const TSLanguage *tree_sitter_lua(void);

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf;
  long n;
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  n = ftell(f);
  rewind(f);
  buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static void chunk_file(const char *language, const char *path,
                       mnemo_chunk_list_t *out) {
  size_t len;
  char *src = read_file(path, &len);
  assert_int_equal(mnemo_chunk_source(language, src, len, NULL, NULL, out), 0);
  free(src);
}

static const mnemo_chunk_t *find(const mnemo_chunk_list_t *l,
                                 const char *name_path) {
  size_t i;
  for (i = 0; i < l->count; i++)
    if (strcmp(l->chunks[i].name_path, name_path) == 0)
      return &l->chunks[i];
  fail_msg("no chunk %s", name_path);
  return NULL;
}

static void expect(const mnemo_chunk_list_t *l, const char *name_path,
                   const char *kind, const char *name, uint32_t start,
                   uint32_t end) {
  const mnemo_chunk_t *c = find(l, name_path);
  assert_string_equal(c->kind, kind);
  assert_string_equal(c->name, name);
  assert_int_equal(c->start_line, start);
  assert_int_equal(c->end_line, end);
}

/* The refs of a chunk as "call:a import:b ..." */
static void expect_refs(const mnemo_chunk_list_t *l, const char *name_path,
                        const char *want) {
  const mnemo_chunk_t *c = find(l, name_path);
  char got[1024];
  size_t i, n = 0;
  got[0] = '\0';
  for (i = 0; i < c->nrefs; i++)
    n += (size_t)snprintf(got + n, sizeof(got) - n, "%s%s:%s", i ? " " : "",
                          c->refs[i].kind == MNEMO_CHUNK_REF_CALL ? "call"
                                                                  : "import",
                          c->refs[i].name);
  assert_string_equal(got, want);
}

static void expect_text(const mnemo_chunk_list_t *l, const char *name_path,
                        const char *want) {
  const mnemo_chunk_t *c = find(l, name_path);
  assert_int_equal(c->text_len, strlen(want));
  assert_memory_equal(c->text, want, c->text_len);
}

static void test_languages(void **state) {
  (void)state;
  assert_ptr_equal(mnemo_chunker_language("python"), tree_sitter_python());
  assert_ptr_equal(mnemo_chunker_language("javascript"),
                   tree_sitter_javascript());
  assert_ptr_equal(mnemo_chunker_language("c"), tree_sitter_c());
  assert_ptr_equal(mnemo_chunker_language("lua"), tree_sitter_lua());
  assert_null(mnemo_chunker_language("cobol"));
  assert_null(mnemo_chunker_language(NULL));
  assert_string_equal(mnemo_chunker_language_for_path("a/b.py"), "python");
  assert_string_equal(mnemo_chunker_language_for_path("x.js"), "javascript");
  assert_string_equal(mnemo_chunker_language_for_path("x.mjs"), "javascript");
  assert_string_equal(mnemo_chunker_language_for_path("x.cjs"), "javascript");
  assert_string_equal(mnemo_chunker_language_for_path("x.jsx"), "javascript");
  assert_string_equal(mnemo_chunker_language_for_path("src/x.c"), "c");
  assert_string_equal(mnemo_chunker_language_for_path("x.h"), "c");
  assert_string_equal(mnemo_chunker_language_for_path("init.lua"), "lua");
  assert_null(mnemo_chunker_language_for_path("README.md"));
  assert_null(mnemo_chunker_language_for_path("Makefile"));
  assert_null(mnemo_chunker_language_for_path("dir.py/Makefile"));
  assert_null(mnemo_chunker_language_for_path("x.PY"));
  assert_null(mnemo_chunker_language_for_path(".lua"));
  assert_null(mnemo_chunker_language_for_path(NULL));
}

static void test_python(void **state) {
  mnemo_chunk_list_t l;
  (void)state;
  chunk_file("python", FIXTURES "sample.py", &l);
  assert_int_equal(l.count, 7);
  assert_string_equal(l.chunks[0].name_path, "<module>");
  expect(&l, "<module>", "module", "<module>", 1, 34);
  expect(&l, "helper", "function", "helper", 9, 10);
  expect(&l, "outer", "function", "outer", 13, 19); /* with decorators */
  expect(&l, "outer.inner", "function", "inner", 16, 17);
  expect(&l, "Shape", "class", "Shape", 22, 31);
  expect(&l, "Shape.area", "method", "area", 27, 28);
  expect(&l, "Shape.draw", "method", "draw", 30, 31);
  expect_refs(&l, "<module>",
              "import:os import:json import:sys import:collections.abc "
              "call:print call:outer");
  expect_refs(&l, "helper", "call:os.path.join");
  expect_refs(&l, "outer", "call:other.decorator call:inner");
  expect_refs(&l, "outer.inner", "call:helper");
  expect_refs(&l, "Shape.area", "call:self.width call:compute");
  expect_refs(&l, "Shape.draw", "call:canvas.paint");
  expect_text(&l, "<module>",
              "\"\"\"A sample module for the chunker tests.\"\"\"\n"
              "import os\nimport json as j, sys\n"
              "from collections.abc import Mapping\n\nLIMIT = 10\n\n\n\n\n\n"
              "\n\n\nprint(outer(LIMIT))");
  expect_text(&l, "Shape.area",
              "    def area(self):\n"
              "        return self.width() * compute(self)");
  assert_int_equal(find(&l, "helper")->start_byte,
                   strstr(l.src, "def helper") - l.src);
  mnemo_chunk_list_free(&l);
  mnemo_chunk_list_free(&l); /* twice is harmless */
}

static void test_javascript(void **state) {
  mnemo_chunk_list_t l;
  (void)state;
  chunk_file("javascript", FIXTURES "sample.js", &l);
  assert_int_equal(l.count, 10);
  expect(&l, "<module>", "module", "<module>", 1, 39);
  expect(&l, "load", "function", "load", 5, 10);
  expect(&l, "load.resolve", "function", "resolve", 6, 8);
  expect(&l, "Store", "class", "Store", 12, 25);
  expect(&l, "Store.constructor", "method", "constructor", 13, 16);
  expect(&l, "Store.add", "method", "add", 18, 20);
  expect(&l, "Store.onChange", "method", "onChange", 22, 24);
  expect(&l, "double", "function", "double", 27, 27);
  expect(&l, "module.exports.clear", "method", "clear", 31, 33);
  expect(&l, "module.exports.size", "method", "size", 34, 36);
  expect_refs(&l, "<module>", "import:fs/promises import:path call:load");
  expect_refs(&l, "load", "call:readFile call:resolve");
  expect_refs(&l, "load.resolve", "call:path.join");
  expect_refs(&l, "Store.constructor", "call:Map");
  expect_refs(&l, "Store.add", "call:this.items.set");
  expect_refs(&l, "Store.onChange", "call:notify");
  expect_text(&l, "double", "const double = (x) => x * 2;");
  mnemo_chunk_list_free(&l);
}

static void test_c(void **state) {
  mnemo_chunk_list_t l;
  (void)state;
  chunk_file("c", FIXTURES "sample.c", &l);
  assert_int_equal(l.count, 6);
  expect(&l, "<module>", "module", "<module>", 1, 5);
  expect(&l, "point", "struct", "point", 7, 9);
  expect(&l, "polygon_t", "struct", "polygon_t", 11, 14); /* typedef name */
  expect(&l, "color", "enum", "color", 16, 16);
  expect(&l, "find", "function", "find", 18, 25);
  expect(&l, "main", "function", "main", 27, 31);
  expect_refs(&l, "<module>", "import:stdio.h import:sample.h");
  expect_refs(&l, "find", "");
  expect_refs(&l, "main", "call:printf call:find call:ops.run");
  mnemo_chunk_list_free(&l);
}

static void test_lua(void **state) {
  mnemo_chunk_list_t l;
  (void)state;
  chunk_file("lua", FIXTURES "sample.lua", &l);
  assert_int_equal(l.count, 7);
  expect(&l, "<module>", "module", "<module>", 1, 37);
  expect(&l, "helper", "function", "helper", 11, 13);
  expect(&l, "M.encode", "function", "encode", 15, 20);
  expect(&l, "M.encode.wrap", "function", "wrap", 16, 18);
  expect(&l, "M.close", "method", "close", 22, 25);
  expect(&l, "M.decode", "function", "decode", 27, 29);
  expect(&l, "M.handlers.on_data", "function", "on_data", 32, 34);
  expect_refs(&l, "<module>", "import:cjson import:luv");
  expect_refs(&l, "M.encode", "call:helper call:wrap");
  expect_refs(&l, "M.close", "call:self.handle.close call:uv.run");
  /* the commented-out function is text of the module, not a chunk */
  assert_non_null(strstr(find(&l, "<module>")->text, "not_a_function"));
  mnemo_chunk_list_free(&l);
}

static void test_module_chunk(void **state) {
  mnemo_chunk_list_t l;
  const char *all_defs = "\n\ndef f():\n    pass\n\n\ndef g():\n    pass\n";
  const char *gaps = "x = 1\ndef f():\n    pass\n\ny = 2\n\n";
  (void)state;
  /* only blank lines outside definitions: no module chunk */
  assert_int_equal(
      mnemo_chunk_source("python", all_defs, strlen(all_defs), NULL, NULL, &l),
      0);
  assert_int_equal(l.count, 2);
  expect(&l, "f", "function", "f", 3, 4);
  expect(&l, "g", "function", "g", 7, 8);
  mnemo_chunk_list_free(&l);
  /* first..last non-blank uncovered line; text without the definition */
  assert_int_equal(
      mnemo_chunk_source("python", gaps, strlen(gaps), NULL, NULL, &l), 0);
  expect(&l, "<module>", "module", "<module>", 1, 5);
  expect_text(&l, "<module>", "x = 1\n\ny = 2");
  mnemo_chunk_list_free(&l);
  /* empty and blank sources: nothing */
  assert_int_equal(mnemo_chunk_source("c", "", 0, NULL, NULL, &l), 0);
  assert_int_equal(l.count, 0);
  mnemo_chunk_list_free(&l);
  assert_int_equal(mnemo_chunk_source("lua", NULL, 0, NULL, NULL, &l), 0);
  assert_int_equal(l.count, 0);
  mnemo_chunk_list_free(&l);
  assert_int_equal(mnemo_chunk_source("lua", " \n\t\n", 4, NULL, NULL, &l), 0);
  assert_int_equal(l.count, 0);
  mnemo_chunk_list_free(&l);
}

/* "def big():" and n body lines "    vK = callK()" (K = i % 3) */
static char *big_function(int n, size_t *len) {
  size_t cap = 32 + (size_t)n * 32, at = 0;
  char *s = malloc(cap);
  int i;
  assert_non_null(s);
  at += (size_t)snprintf(s, cap, "def big():\n");
  for (i = 1; i <= n; i++)
    at += (size_t)snprintf(s + at, cap - at, "    v%d = call%d()\n", i, i % 3);
  at += (size_t)snprintf(s + at, cap - at, "tail()\n");
  *len = at;
  return s;
}

static void test_split(void **state) {
  mnemo_chunk_list_t l;
  mnemo_chunk_options_t opts = {0, 0};
  size_t len, i;
  char *src = big_function(449, &len); /* def + 449 lines = 450 lines */
  (void)state;
  assert_int_equal(mnemo_chunk_source("python", src, len, NULL, NULL, &l), 0);
  assert_int_equal(l.count, 4);
  expect(&l, "<module>", "module", "<module>", 451, 451);
  expect(&l, "big#1", "function", "big", 1, 200);
  expect(&l, "big#2", "function", "big", 201, 400);
  expect(&l, "big#3", "function", "big", 401, 450);
  assert_int_equal(find(&l, "big#3")->part, 3);
  expect_refs(&l, "big#1", "call:call1 call:call2 call:call0");
  expect_refs(&l, "big#3", "call:call1 call:call2 call:call0");
  expect_refs(&l, "<module>", "call:tail");
  /* the parts together are the definition's text */
  assert_ptr_equal(find(&l, "big#1")->text, l.src);
  assert_ptr_equal(find(&l, "big#2")->text,
                   find(&l, "big#1")->text + find(&l, "big#1")->text_len + 1);
  mnemo_chunk_list_free(&l);

  /* a byte limit, and a line limit from the options */
  opts.max_chunk_bytes = 1000;
  assert_int_equal(mnemo_chunk_source("python", src, len, NULL, &opts, &l), 0);
  for (i = 1; i < l.count; i++) {
    assert_true(l.chunks[i].text_len <= 1000);
    assert_int_equal(l.chunks[i].part, i);
    if (i > 1)
      assert_int_equal(l.chunks[i].start_line, l.chunks[i - 1].end_line + 1);
  }
  assert_int_equal(l.chunks[l.count - 1].end_line, 450);
  mnemo_chunk_list_free(&l);
  opts.max_chunk_bytes = 0;
  opts.max_chunk_lines = 100;
  assert_int_equal(mnemo_chunk_source("python", src, len, NULL, &opts, &l), 0);
  assert_int_equal(l.count, 6);
  expect(&l, "big#5", "function", "big", 401, 450);
  mnemo_chunk_list_free(&l);
  free(src);

  /* one line longer than the limit: slices on UTF-8 boundaries */
  {
    char line[5000];
    size_t n = (size_t)snprintf(line, sizeof(line), "function f() { ");
    while (n < 4000) {
      memcpy(line + n, "g(\"\xc3\xa9\"); ", 9);
      n += 9;
    }
    memcpy(line + n, "}\n", 3);
    n += 2;
    opts.max_chunk_lines = 0;
    opts.max_chunk_bytes = 1001;
    assert_int_equal(mnemo_chunk_source("javascript", line, n, NULL, &opts, &l),
                     0);
    assert_int_equal(l.count, 4); /* 4003 bytes */
    for (i = 0; i < l.count; i++) {
      const mnemo_chunk_t *c = &l.chunks[i];
      assert_int_equal(c->start_line, 1);
      assert_int_equal(c->end_line, 1);
      assert_true(c->text_len <= 1001);
      assert_true(((unsigned char)c->text[0] & 0xc0) != 0x80);
      assert_int_equal(c->end_byte - c->start_byte, c->text_len);
      if (i > 0)
        assert_int_equal(c->start_byte, l.chunks[i - 1].end_byte);
      assert_int_equal(c->nrefs, 1);
    }
    assert_int_equal(l.chunks[l.count - 1].end_byte, n - 1);
    mnemo_chunk_list_free(&l);
  }
}

static void test_refs_dedup(void **state) {
  mnemo_chunk_list_t l;
  const char *src = "local a = require('a')\nlocal b = require 'a'\n"
                    "function f()\n  g(); h(); g(); obj:m(); obj.m()\nend\n"
                    "require('a')\n";
  (void)state;
  assert_int_equal(mnemo_chunk_source("lua", src, strlen(src), NULL, NULL, &l),
                   0);
  expect_refs(&l, "<module>", "import:a");
  expect_refs(&l, "f", "call:g call:h call:obj.m");
  mnemo_chunk_list_free(&l);
}

static void test_invalid(void **state) {
  mnemo_chunk_list_t l;
  (void)state;
  assert_int_equal(mnemo_chunk_source("cobol", "x", 1, NULL, NULL, &l),
                   MNEMO_EINVAL);
  assert_int_equal(l.count, 0);
  assert_null(l.chunks);
  assert_int_equal(mnemo_chunk_source(NULL, "x", 1, NULL, NULL, &l),
                   MNEMO_EINVAL);
  assert_int_equal(mnemo_chunk_source("c", NULL, 3, NULL, NULL, &l),
                   MNEMO_EINVAL);
  mnemo_chunk_list_free(&l);
}

/* Unclosed nesting deep enough to break tree-sitter 0.20.7 is refused;
 * deep balanced nesting below the limit parses. */
static void test_too_deep(void **state) {
  mnemo_chunk_list_t l;
  size_t n = 20000, i;
  char *src = malloc(2 * n + 16);
  (void)state;
  assert_non_null(src);
  memcpy(src, "x = ", 4);
  for (i = 0; i < n; i++)
    memcpy(src + 4 + i, "(", 1);
  assert_int_equal(mnemo_chunk_source("python", src, 4 + n, NULL, NULL, &l),
                   MNEMO_CHUNK_ETOODEEP);
  assert_int_equal(l.count, 0);
  /* 4000 deep, balanced: fine */
  for (i = 0; i < 4000; i++) {
    src[4 + i] = '[';
    src[4 + 4000 + 1 + i] = ']';
  }
  src[4 + 4000] = '1';
  memcpy(src + 4 + 8001, "\n", 1);
  assert_int_equal(
      mnemo_chunk_source("javascript", src, 4 + 8002, NULL, NULL, &l), 0);
  assert_int_equal(l.count, 1);
  mnemo_chunk_list_free(&l);
  free(src);
}

static void test_cancel_preset(void **state) {
  mnemo_chunk_list_t l;
  size_t flag = 1;
  (void)state;
  assert_int_equal(
      mnemo_chunk_source("python", "def f(): pass\n", 14, &flag, NULL, &l),
      MNEMO_ECANCELED);
  assert_int_equal(l.count, 0);
  assert_null(l.chunks);
  flag = 0;
  assert_int_equal(
      mnemo_chunk_source("python", "def f(): pass\n", 14, &flag, NULL, &l), 0);
  assert_int_equal(l.count, 1);
  mnemo_chunk_list_free(&l);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Lines "x = ((((...1...))))" nested `depth` deep: slow to parse (about
 * a second per MB), never erroneous. */
static char *pathological(size_t lines, size_t depth, size_t *len) {
  size_t line = 4 + 2 * depth + 2, i;
  char *s = malloc(lines * line + 1), *p = s;
  assert_non_null(s);
  for (i = 0; i < lines; i++) {
    memcpy(p, "x = ", 4);
    memset(p + 4, '(', depth);
    p[4 + depth] = '1';
    memset(p + 5 + depth, ')', depth);
    p[5 + 2 * depth] = '\n';
    p += line;
  }
  *len = lines * line;
  return s;
}

typedef struct canceller {
  size_t *flag;
  unsigned delay_us;
} canceller_t;

static void *cancel_later(void *arg) {
  canceller_t *c = arg;
  usleep(c->delay_us);
  __atomic_store_n(c->flag, 1, __ATOMIC_RELEASE);
  return NULL;
}

static int parse_cancelled_after(const char *language, const char *src,
                                 size_t len, unsigned delay_us,
                                 uint64_t *after_ns) {
  mnemo_chunk_list_t l;
  size_t flag = 0;
  canceller_t c = {&flag, delay_us};
  pthread_t thread;
  uint64_t start = now_ns();
  int rc;
  assert_int_equal(pthread_create(&thread, NULL, cancel_later, &c), 0);
  rc = mnemo_chunk_source(language, src, len, &flag, NULL, &l);
  if (after_ns != NULL)
    *after_ns = now_ns() - start;
  assert_int_equal(pthread_join(thread, NULL), 0);
  mnemo_chunk_list_free(&l);
  return rc;
}

static void test_cancel_from_thread(void **state) {
  size_t len;
  char *src = pathological(1000, 1000, &len); /* 2 MB, ~2 s unbounded */
  uint64_t took;
  (void)state;
  assert_int_equal(parse_cancelled_after("python", src, len, 50 * 1000, &took),
                   MNEMO_ECANCELED);
  assert_true(took < 500 * 1000000ull); /* a generous bound for ASan */
  free(src);
}

/* Cancelling a Lua parse just after a comment crashed (NULL subtree in
 * tree-sitter 0.20.7): comments are blanked before parsing. */
static void test_cancel_lua_comments(void **state) {
  size_t cap = 400000, len = 0;
  char *src = malloc(cap);
  int i, cancelled = 0;
  (void)state;
  assert_non_null(src);
  while (len + 64 < cap)
    len += (size_t)snprintf(src + len, cap - len,
                            "-- c %zu\nlocal x = 1 -- t\n--[[ b ]] y()\n", len);
  srand(7);
  for (i = 0; i < 150; i++)
    cancelled +=
        parse_cancelled_after("lua", src, len, (unsigned)(rand() % 30000),
                              NULL) == MNEMO_ECANCELED;
  assert_true(cancelled > 0);
  free(src);
}

/* Random bytes, and fixtures with random damage: never a crash, and the
 * chunks stay well-formed. */
static void check_well_formed(const mnemo_chunk_list_t *l, const char *src,
                              size_t len) {
  size_t i, j, lines = 1;
  for (i = 0; i < len; i++)
    lines += src[i] == '\n';
  for (i = 0; i < l->count; i++) {
    const mnemo_chunk_t *c = &l->chunks[i];
    assert_true(c->start_line >= 1 && c->start_line <= c->end_line);
    assert_true(c->end_line <= lines);
    assert_true(c->start_byte <= c->end_byte && c->end_byte <= len);
    assert_non_null(c->kind);
    assert_non_null(c->name);
    assert_true(strlen(c->name_path) > 0);
    assert_true(c->text_len <= len);
    for (j = 0; j < c->nrefs; j++)
      assert_true(strlen(c->refs[j].name) > 0);
  }
}

static void test_random_bytes(void **state) {
  static const char *const langs[] = {"python", "javascript", "c", "lua"};
  static const char *const files[] = {FIXTURES "sample.py",
                                      FIXTURES "sample.js", FIXTURES "sample.c",
                                      FIXTURES "sample.lua"};
  static const char alphabet[] = "(){}[]<>;:,.=+-*/'\"`\\#@!?\n\t "
                                 "abcdefxyz019_\xc3\xa9\xff";
  char buf[2048]; /* junk parses slowly: ~5 us a byte */
  int lang, i;
  (void)state;
  srand(12345);
  for (lang = 0; lang < 4; lang++) {
    size_t flen;
    char *fixture = read_file(files[lang], &flen);
    for (i = 0; i < 150; i++) {
      mnemo_chunk_list_t l;
      size_t len = (size_t)(rand() % (int)sizeof(buf)), k;
      int mode = i % 3, rc;
      if (mode == 0) { /* any byte */
        for (k = 0; k < len; k++)
          buf[k] = (char)(rand() & 0xff);
      } else if (mode == 1) { /* code-ish characters */
        for (k = 0; k < len; k++)
          buf[k] = alphabet[rand() % (int)(sizeof(alphabet) - 1)];
      } else { /* the fixture, damaged */
        len = flen < sizeof(buf) ? flen : sizeof(buf);
        memcpy(buf, fixture, len);
        for (k = 0; k < 8; k++)
          buf[rand() % (int)len] =
              alphabet[rand() % (int)(sizeof(alphabet) - 1)];
        len = (size_t)(rand() % (int)len) + 1;
      }
      rc = mnemo_chunk_source(langs[lang], buf, len, NULL, NULL, &l);
      assert_int_equal(rc, 0);
      check_well_formed(&l, buf, len);
      mnemo_chunk_list_free(&l);
    }
    free(fixture);
  }
}

/* ---- on the thread pool ---- */

typedef struct job_box {
  mnemo_chunk_job_t job;
  int done, status;
  size_t count;
  uint64_t done_ns;
} job_box_t;

static void on_job(mnemo_chunk_job_t *job, int status) {
  job_box_t *box = job->data;
  box->done = 1;
  box->status = status;
  box->count = job->chunks.count;
  box->done_ns = now_ns();
  mnemo_chunk_list_free(&job->chunks);
}

static void on_deadline(uv_timer_t *timer) {
  mnemo_cancel_token_t *tokens = timer->data;
  int i;
  for (i = 0; i < 4; i++)
    mnemo_cancel_token_cancel(&tokens[i]);
}

static void test_job(void **state) {
  uv_loop_t loop;
  job_box_t box;
  mnemo_cancel_token_t token;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  mnemo_cancel_token_reset(&token);
  memset(&box, 0, sizeof(box));
  box.job.data = &box;
  assert_int_equal(
      mnemo_chunk_job_start(&loop, &box.job, "cobol", "x", 1, &token, on_job),
      MNEMO_EINVAL);
  assert_int_equal(mnemo_chunk_job_start(&loop, &box.job, "c",
                                         "int f(void) { return g(); }\n", 28,
                                         &token, on_job),
                   0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_true(box.done);
  assert_int_equal(box.status, 0);
  assert_int_equal(box.count, 1);
  /* a pre-cancelled token: the worker returns at once */
  memset(&box, 0, sizeof(box));
  box.job.data = &box;
  mnemo_cancel_token_cancel(&token);
  assert_int_equal(mnemo_chunk_job_start(&loop, &box.job, "c", "int x;\n", 7,
                                         &token, on_job),
                   0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(box.status, MNEMO_ECANCELED);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Four pathological parses fill the pool (UV_THREADPOOL_SIZE 4); their
 * tokens are cancelled at 100 ms; eight small jobs queued behind them all
 * finish right after: the pool threads were freed, not abandoned. */
static void test_job_cancel_frees_pool(void **state) {
  uv_loop_t loop;
  uv_timer_t timer;
  mnemo_cancel_token_t tokens[4], other;
  job_box_t slow[4], fast[8];
  size_t len;
  char *src = pathological(1000, 1000, &len);
  uint64_t start;
  int i;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  mnemo_cancel_token_reset(&other);
  start = now_ns();
  for (i = 0; i < 4; i++) {
    memset(&slow[i], 0, sizeof(slow[i]));
    slow[i].job.data = &slow[i];
    mnemo_cancel_token_reset(&tokens[i]);
    assert_int_equal(mnemo_chunk_job_start(&loop, &slow[i].job, "python", src,
                                           len, &tokens[i], on_job),
                     0);
  }
  free(src); /* the jobs have their own copies */
  for (i = 0; i < 8; i++) {
    memset(&fast[i], 0, sizeof(fast[i]));
    fast[i].job.data = &fast[i];
    assert_int_equal(mnemo_chunk_job_start(&loop, &fast[i].job, "lua",
                                           "local function f() end\n", 23,
                                           &other, on_job),
                     0);
  }
  assert_int_equal(uv_timer_init(&loop, &timer), 0);
  timer.data = tokens;
  assert_int_equal(uv_timer_start(&timer, on_deadline, 100, 0), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (i = 0; i < 4; i++) {
    assert_int_equal(slow[i].status, MNEMO_ECANCELED);
    assert_true(slow[i].done_ns - start < 1000 * 1000000ull);
  }
  for (i = 0; i < 8; i++) {
    assert_true(fast[i].done);
    assert_int_equal(fast[i].status, 0);
    assert_int_equal(fast[i].count, 1);
    assert_true(fast[i].done_ns - start < 1000 * 1000000ull);
  }
  uv_close((uv_handle_t *)&timer, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_languages),
      cmocka_unit_test(test_python),
      cmocka_unit_test(test_javascript),
      cmocka_unit_test(test_c),
      cmocka_unit_test(test_lua),
      cmocka_unit_test(test_module_chunk),
      cmocka_unit_test(test_split),
      cmocka_unit_test(test_refs_dedup),
      cmocka_unit_test(test_invalid),
      cmocka_unit_test(test_too_deep),
      cmocka_unit_test(test_cancel_preset),
      cmocka_unit_test(test_cancel_from_thread),
      cmocka_unit_test(test_cancel_lua_comments),
      cmocka_unit_test(test_random_bytes),
      cmocka_unit_test(test_job),
      cmocka_unit_test(test_job_cancel_frees_pool),
  };
  return cmocka_run_group_tests_name("chunker", tests, NULL, NULL);
}
