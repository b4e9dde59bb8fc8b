/* Source chunking with tree-sitter: a file becomes a list of chunks (its
 * functions, methods, classes, structs... and one module chunk for what is
 * left), each with the names it calls and imports, for the embedding index
 * and the code graph.
 *
 * Pure C, no Lua, no libuv: mnemo_chunk_source() runs on any thread (the
 * uv thread pool, see chunk_job.h) and stops when its cancellation flag is
 * set (tree-sitter polls it every ~100 parse actions).
 *
 * Rules per language (see chunker.c for the details):
 *   python      function_definition ("function", or "method" directly in
 *               a class), class_definition ("class"); decorators included.
 *   javascript  function declarations, classes, methods, class fields and
 *               object properties holding a function ("method"), arrow
 *               functions / function expressions / classes assigned to a
 *               const/let/var or to a member (`obj.f = function`).
 *   c           function_definition ("function"), struct/union/enum
 *               specifiers with a body and a name (a typedef name counts).
 *   lua         function declarations (`function f`, `local function f`,
 *               `function M.f` -> M.f, `function M:f` -> "method" M.f) and
 *               function values assigned to names or table fields.
 * Refs: calls (callee written as a name or a dotted path: `os.path.join`,
 * `self.x`, `M:f` -> `M.f`) and imports (Python import / from, JS import,
 * export-from, require("x"), import("x"), C #include, Lua require "x"). */
#ifndef MNEMO_CHUNKER_H
#define MNEMO_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define MNEMO_CHUNK_DEFAULT_MAX_LINES 200
#define MNEMO_CHUNK_DEFAULT_MAX_BYTES (16 * 1024)

/* Bracket nesting beyond this is refused before parsing: Debian's
 * libtree-sitter 0.20.7 corrupts its heap when an ERROR node gets more
 * than 65535 children, which deep unclosed nesting produces (~11000
 * levels). No real source comes near it. */
#define MNEMO_CHUNK_MAX_NESTING 4096
/* The source nests too deeply (see above); an input error. */
#define MNEMO_CHUNK_ETOODEEP (-20101)

typedef enum mnemo_chunk_ref_kind {
  MNEMO_CHUNK_REF_CALL = 0,
  MNEMO_CHUNK_REF_IMPORT = 1
} mnemo_chunk_ref_kind_t;

typedef struct mnemo_chunk_ref {
  mnemo_chunk_ref_kind_t kind;
  const char *name;
} mnemo_chunk_ref_t;

typedef struct mnemo_chunk {
  const char *kind;      /* "function", "method", "class", "struct",
                            "union", "enum" or "module" (static strings) */
  const char *name;      /* "<module>" for the module chunk */
  const char *name_path; /* Class.method, outer.inner, M.f; a part of a
                            split definition ends in #1, #2... */
  uint32_t start_line;   /* 1-based, inclusive */
  uint32_t end_line;
  size_t start_byte; /* [start_byte, end_byte) of the definition (of the
                        part, for split ones; first..last line of the
                        module chunk) */
  size_t end_byte;
  const char *text; /* the chunk's source: its whole lines (the module
                       chunk: the uncovered lines, joined by newlines) */
  size_t text_len;
  mnemo_chunk_ref_t *refs; /* deduplicated, in order of first use */
  size_t nrefs;
  uint32_t part; /* 0, or k for name_path#k */
} mnemo_chunk_t;

/* Everything it points to (strings, texts, refs) is owned by the list. */
typedef struct mnemo_chunk_list {
  mnemo_chunk_t *chunks;
  size_t count;
  /* private */
  void *arena;
  char *src; /* the list's copy of the source; chunk texts point into it */
} mnemo_chunk_list_t;

typedef struct mnemo_chunk_options {
  uint32_t max_chunk_lines; /* 0: MNEMO_CHUNK_DEFAULT_MAX_LINES */
  size_t max_chunk_bytes;   /* 0: MNEMO_CHUNK_DEFAULT_MAX_BYTES */
} mnemo_chunk_options_t;

/* The tree-sitter language ("python", "javascript", "c", "lua"), as an
 * opaque `const TSLanguage *`, or NULL if unknown. */
const void *mnemo_chunker_language(const char *name);

/* The canonical language name for a path's extension (.py, .js .mjs .cjs
 * .jsx, .c .h, .lua), or NULL. The string is static. */
const char *mnemo_chunker_language_for_path(const char *path);

/* The canonical (static) name if `name` is a known language, else NULL. */
const char *mnemo_chunker_language_name(const char *name);

/* Parses src[0..len) and fills *out (always initialised, empty on error;
 * free it before reusing it).
 * cancel_flag may be NULL; once it reads non-zero the parse stops and
 * MNEMO_ECANCELED is returned (also when it is set before the call).
 * opts may be NULL (defaults). Returns 0, MNEMO_EINVAL (unknown language,
 * NULL src, len > 4 GiB), MNEMO_CHUNK_ETOODEEP, MNEMO_ENOMEM or
 * MNEMO_ECANCELED. Any bytes are accepted: invalid UTF-8 parses as errors,
 * never crashes. */
int mnemo_chunk_source(const char *language, const char *src, size_t len,
                       const size_t *cancel_flag,
                       const mnemo_chunk_options_t *opts,
                       mnemo_chunk_list_t *out);

/* Frees what the list owns and empties it. Safe on an empty list. */
void mnemo_chunk_list_free(mnemo_chunk_list_t *list);

#endif
