/* fuzz_chunker — libFuzzer target for the tree-sitter chunker
 * (runtime/core/chunker.c) on arbitrary bytes.
 *
 * Each input is chunked as all four languages (python, javascript, c, lua).
 * For one of them, picked by the first byte, the options are tiny
 * (max_chunk_lines 1..8, max_chunk_bytes sometimes tiny too) so splitting
 * runs on every input; the other three use the defaults. A first byte of '!'
 * also calls once with the cancel flag already set (must be ECANCELED and
 * empty). Every result is checked for well-formedness (line and byte ranges
 * inside the source, non-empty names, refs with names) and freed; anything
 * else than 0 / MNEMO_CHUNK_ETOODEEP from a parse is a bug and abort()s.
 *
 * Build and run: `make fuzz` (clang -fsanitize=fuzzer,address,undefined,
 * FUZZ_SECONDS per target, corpus in build/fuzz/chunker/, seeded from
 * tests/fixtures/chunker/ and examples/sample-repo/). Crashing inputs
 * go to tests/corpus/chunker/, replayed by tests/c/test_corpus.c (which
 * #includes this file with MNEMO_FUZZ_NO_MAIN defined).
 *
 * Reproduce one input: build/fuzz/fuzz_chunker tests/corpus/chunker/FILE
 *
 * Slow, not a crash: tree-sitter-lua's error recovery is superlinear on long
 * junk (`1 + 1 + ...`, 80 KB: 8 s, 280 KB: 210 s without sanitizers); the
 * parse polls the cancel flag, so the tree_sitter_parse timeout bounds it.
 * Inputs stay under libFuzzer's default -max_len (4096) here. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunker.h"
#include "status.h"

static const char *const fuzz_chunker_langs[] = {"python", "javascript", "c",
                                                 "lua"};

#define FUZZ_CHECK(cond, ...)                                                  \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "fuzz_chunker: %s: ", #cond);                            \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static void fuzz_chunker_check_list(const char *lang,
                                    const mnemo_chunk_list_t *l,
                                    const char *src, size_t len) {
  size_t i, j, lines = 1;
  for (i = 0; i < len; i++)
    lines += src[i] == '\n';
  for (i = 0; i < l->count; i++) {
    const mnemo_chunk_t *c = &l->chunks[i];
    FUZZ_CHECK(c->start_line >= 1 && c->start_line <= c->end_line,
               "%s chunk %zu: lines %u..%u", lang, i, c->start_line,
               c->end_line);
    FUZZ_CHECK(c->end_line <= lines, "%s chunk %zu: end_line %u of %zu", lang,
               i, c->end_line, lines);
    FUZZ_CHECK(c->start_byte <= c->end_byte && c->end_byte <= len,
               "%s chunk %zu: bytes %zu..%zu of %zu", lang, i, c->start_byte,
               c->end_byte, len);
    FUZZ_CHECK(c->kind != NULL && c->name != NULL && c->name_path != NULL,
               "%s chunk %zu: NULL kind/name/name_path", lang, i);
    FUZZ_CHECK(c->name_path[0] != '\0', "%s chunk %zu: empty name_path", lang,
               i);
    FUZZ_CHECK(c->text_len <= len && (c->text != NULL || c->text_len == 0),
               "%s chunk %zu: text_len %zu of %zu", lang, i, c->text_len, len);
    FUZZ_CHECK(c->nrefs == 0 || c->refs != NULL, "%s chunk %zu: refs", lang, i);
    for (j = 0; j < c->nrefs; j++)
      FUZZ_CHECK(c->refs[j].name != NULL && c->refs[j].name[0] != '\0' &&
                     (c->refs[j].kind == MNEMO_CHUNK_REF_CALL ||
                      c->refs[j].kind == MNEMO_CHUNK_REF_IMPORT),
                 "%s chunk %zu ref %zu", lang, i, j);
  }
}

/* One input through every language; returns 0 (libFuzzer's convention). */
static int fuzz_chunker_one(const uint8_t *data, size_t size) {
  const char *src = (const char *)data;
  unsigned first = size > 0 ? data[0] : 0;
  unsigned last = size > 0 ? data[size - 1] : 0;
  size_t cancel = 0;
  int i, rc;
  /* NULL data with size 0 is legal for libFuzzer; the chunker rejects NULL
   * src, so give it an empty string instead. */
  if (src == NULL)
    src = "";
  for (i = 0; i < 4; i++) {
    mnemo_chunk_list_t l;
    mnemo_chunk_options_t tiny, *opts = NULL;
    if ((unsigned)i == first % 4) {
      tiny.max_chunk_lines = 1 + (first >> 2) % 8;
      tiny.max_chunk_bytes = (first & 0x80) ? 1 + (size_t)last * 8 : 0;
      opts = &tiny;
    }
    rc =
        mnemo_chunk_source(fuzz_chunker_langs[i], src, size, &cancel, opts, &l);
    FUZZ_CHECK(rc == 0 || rc == MNEMO_CHUNK_ETOODEEP, "%s: rc %d",
               fuzz_chunker_langs[i], rc);
    if (rc != 0)
      FUZZ_CHECK(l.count == 0 && l.chunks == NULL, "%s: rc %d, %zu chunks",
                 fuzz_chunker_langs[i], rc, l.count);
    fuzz_chunker_check_list(fuzz_chunker_langs[i], &l, src, size);
    mnemo_chunk_list_free(&l);
    FUZZ_CHECK(l.count == 0, "%s: list not emptied by free",
               fuzz_chunker_langs[i]);
  }
  if (first == '!') {
    mnemo_chunk_list_t l;
    cancel = 1;
    rc = mnemo_chunk_source(fuzz_chunker_langs[last % 4], src, size, &cancel,
                            NULL, &l);
    FUZZ_CHECK(rc == MNEMO_ECANCELED && l.count == 0, "cancelled: rc %d", rc);
    mnemo_chunk_list_free(&l);
  }
  return 0;
}

#ifndef MNEMO_FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_chunker_one(data, size);
}
#endif
