/* Chunking with tree-sitter; see chunker.h for the rules.
 *
 * One pass over the syntax tree with a TSTreeCursor (iterative: a
 * pathological file can nest a million levels deep, recursion would blow
 * the stack). Definitions found on the way push a frame, which gives the
 * name path of what is inside and collects its refs. A node that names a
 * child it does not define itself (`const f = () => ...`, a decorator, a
 * typedef) leaves a *hint* for that child. Then line ranges, the module
 * chunk, the split of oversized chunks and the dedup of refs.
 *
 * Two defects of Debian's libtree-sitter 0.20.7 (both fixed upstream in
 * 0.20.8) are kept away here:
 * - cancelling a parse right after a non-terminal extra (tree-sitter-lua's
 *   comment rule) dereferences a NULL subtree: Lua comments are blanked
 *   with spaces before parsing, which changes no byte offset or line;
 * - a node with more than 65535 children corrupts the heap, which deep
 *   unclosed nesting produces: see MNEMO_CHUNK_MAX_NESTING. */
#include "chunker.h"

#include <stdlib.h>
#include <string.h>
#include <tree_sitter/api.h>

/* From build/grammars/libmnemo_grammars.a (mk/grammars.mk): every binary
 * holding this file links it after libmnemo.a. */
const TSLanguage *tree_sitter_python(void);
const TSLanguage *tree_sitter_javascript(void);
const TSLanguage *tree_sitter_c(void);
const TSLanguage *tree_sitter_lua(void);

enum lang { LANG_PYTHON, LANG_JAVASCRIPT, LANG_C, LANG_LUA };

static const struct language {
  const char *name;
  const TSLanguage *(*fn)(void);
  const char *const *extensions;
} languages[] = {
    {"python", tree_sitter_python, (const char *const[]){".py", NULL}},
    {"javascript", tree_sitter_javascript,
     (const char *const[]){".js", ".mjs", ".cjs", ".jsx", NULL}},
    {"c", tree_sitter_c, (const char *const[]){".c", ".h", NULL}},
    {"lua", tree_sitter_lua, (const char *const[]){".lua", NULL}},
};
#define NLANGUAGES (sizeof(languages) / sizeof(languages[0]))

#define NAME_CAP 200  /* longer names are cut (computed keys...) */
#define MAX_FRAMES 16 /* deeper definitions stay in their parent's chunk */
#define MAX_HINTS 32
#define MAX_SEGMENTS 16 /* a.b.c... longer paths are not names */
#define PATH_CAP (MAX_FRAMES * (NAME_CAP + 1) + 1)
#define CANCEL_CHECK_MASK 1023 /* nodes walked between flag checks */

static const char K_FUNCTION[] = "function";
static const char K_METHOD[] = "method";
static const char K_CLASS[] = "class";
static const char K_STRUCT[] = "struct";
static const char K_UNION[] = "union";
static const char K_ENUM[] = "enum";
static const char K_MODULE[] = "module";

/* ---- arena: every string and array the list hands out ---- */

typedef struct block {
  struct block *next;
  size_t used, cap;
  max_align_t data[];
} block_t;

static void *arena_alloc(void **arena, size_t size) {
  block_t *b = *arena;
  size = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
  if (b == NULL || b->cap - b->used < size) {
    size_t cap = size > 65536 ? size : 65536;
    b = malloc(sizeof(*b) + cap);
    if (b == NULL)
      return NULL;
    b->cap = cap;
    b->used = 0;
    b->next = *arena;
    *arena = b;
  }
  b->used += size;
  return (char *)b->data + b->used - size;
}

static void arena_free(void *arena) {
  while (arena != NULL) {
    block_t *b = arena;
    arena = b->next;
    free(b);
  }
}

/* ---- the walk's state ---- */

typedef struct raw_ref {
  uint32_t byte;
  mnemo_chunk_ref_kind_t kind;
  const char *name; /* in the arena */
} raw_ref_t;

typedef struct def {
  const char *kind, *name, *name_path;
  uint32_t start_byte, end_byte, start_row, end_row;
  raw_ref_t *refs;
  size_t nrefs, cap;
} def_t;

typedef struct frame {
  uint32_t depth;
  int def; /* index in defs, or -1 for a name scope (an object literal) */
  size_t path_len;
} frame_t;

typedef struct hint {
  const void *id; /* the node it is for */
  uint32_t start; /* and its start byte, to be sure */
  uint32_t depth; /* of the node that left it: dropped when that is left */
  const char *kind;
  int scope;    /* a name scope, not a definition */
  int consumed; /* defined by the node that left the hint */
  int has_range;
  uint32_t start_byte, end_byte, start_row, end_row;
  size_t name_len;
  char name[NAME_CAP + 1];
} hint_t;

typedef struct ctx {
  const char *src; /* what tree-sitter parsed */
  uint32_t len;
  enum lang lang;
  const size_t *cancel;
  void *arena;
  int nomem;
  def_t *defs;
  size_t ndefs, cap;
  def_t module; /* refs outside any definition */
  frame_t frames[MAX_FRAMES];
  size_t nframes;
  hint_t hints[MAX_HINTS];
  size_t nhints;
  char path[PATH_CAP];
} ctx_t;

static int is_cancelled(const size_t *flag) {
  return flag != NULL && __atomic_load_n(flag, __ATOMIC_ACQUIRE) != 0;
}

static int type_is(TSNode n, const char *type) {
  return strcmp(ts_node_type(n), type) == 0;
}

static TSNode field(TSNode n, const char *name) {
  return ts_node_child_by_field_name(n, name, (uint32_t)strlen(name));
}

/* Appends src[start, end) to buf (cap includes the NUL), control bytes as
 * spaces, cut at NAME_CAP on a UTF-8 boundary. Returns the new length. */
static size_t put_text(const ctx_t *c, char *buf, size_t len, size_t cap,
                       uint32_t start, uint32_t end) {
  uint32_t i;
  if (end > c->len)
    end = c->len;
  for (i = start; i < end && len + 1 < cap; i++) {
    unsigned char ch = (unsigned char)c->src[i];
    buf[len++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
  }
  if (i < end) { /* cut: do not leave half a character */
    size_t k = len;
    while (k > 0 && ((unsigned char)buf[k - 1] & 0xc0) == 0x80)
      k--;
    if (k > 0 && (unsigned char)buf[k - 1] >= 0xc0)
      len = k - 1;
  }
  buf[len] = '\0';
  return len;
}

static size_t node_text(const ctx_t *c, TSNode n, char *buf, size_t cap) {
  return put_text(c, buf, 0, cap, ts_node_start_byte(n), ts_node_end_byte(n));
}

/* A string literal's content: its text without the quotes. */
static size_t string_text(const ctx_t *c, TSNode n, char *buf, size_t cap) {
  uint32_t s = ts_node_start_byte(n), e = ts_node_end_byte(n);
  char q;
  if (e > c->len || e < s + 2)
    return 0;
  q = c->src[s];
  if ((q != '"' && q != '\'' && q != '<') ||
      c->src[e - 1] != (q == '<' ? '>' : q))
    return 0;
  return put_text(c, buf, 0, cap, s + 1, e - 1);
}

static int is_name_node(const char *t) {
  return strcmp(t, "identifier") == 0 ||
         strcmp(t, "property_identifier") == 0 ||
         strcmp(t, "field_identifier") == 0 ||
         strcmp(t, "type_identifier") == 0 ||
         strcmp(t, "private_property_identifier") == 0 ||
         strcmp(t, "shorthand_property_identifier") == 0 ||
         strcmp(t, "this") == 0;
}

/* A name or a member path written with identifiers (`a.b.c`, `a->b`,
 * `M:f`, `this.x`) as "a.b.c" in buf; 0 if it is anything else. */
static size_t dotted(const ctx_t *c, TSNode n, char *buf, size_t cap) {
  TSNode segs[MAX_SEGMENTS];
  size_t nseg = 0, len = 0;
  for (;;) {
    const char *t = ts_node_type(n);
    const char *obj, *fld;
    TSNode next, last;
    if (is_name_node(t)) {
      segs[nseg++] = n;
      break;
    }
    if (strcmp(t, "attribute") == 0) {
      obj = "object", fld = "attribute";
    } else if (strcmp(t, "member_expression") == 0) {
      obj = "object", fld = "property";
    } else if (strcmp(t, "field_expression") == 0) {
      obj = "argument", fld = "field";
    } else if (strcmp(t, "dot_index_expression") == 0) {
      obj = "table", fld = "field";
    } else if (strcmp(t, "method_index_expression") == 0) {
      obj = "table", fld = "method";
    } else {
      return 0;
    }
    last = field(n, fld);
    next = field(n, obj);
    if (ts_node_is_null(last) || ts_node_is_null(next) ||
        !is_name_node(ts_node_type(last)) || nseg + 2 > MAX_SEGMENTS)
      return 0;
    segs[nseg++] = last;
    n = next;
  }
  while (nseg > 0) {
    TSNode s = segs[--nseg];
    if (len > 0 && len + 1 < cap)
      buf[len++] = '.';
    len =
        put_text(c, buf, len, cap, ts_node_start_byte(s), ts_node_end_byte(s));
  }
  return len;
}

/* ---- frames, hints, refs ---- */

static def_t *current_def(ctx_t *c) {
  size_t i = c->nframes;
  while (i-- > 0)
    if (c->frames[i].def >= 0)
      return &c->defs[c->frames[i].def];
  return NULL;
}

static const hint_t *find_hint(const ctx_t *c, TSNode n) {
  size_t i = c->nhints;
  while (i-- > 0)
    if (c->hints[i].id == n.id && c->hints[i].start == ts_node_start_byte(n))
      return &c->hints[i];
  return NULL;
}

static hint_t *add_hint(ctx_t *c, TSNode target, uint32_t depth,
                        const char *kind, int scope, const char *name,
                        size_t name_len) {
  hint_t *h;
  if (c->nhints == MAX_HINTS || c->nframes == MAX_FRAMES ||
      ts_node_is_null(target))
    return NULL;
  h = &c->hints[c->nhints++];
  h->id = target.id;
  h->start = ts_node_start_byte(target);
  h->depth = depth;
  h->kind = kind;
  h->scope = scope;
  h->consumed = 0;
  h->has_range = 0;
  if (name_len > NAME_CAP)
    name_len = NAME_CAP;
  memcpy(h->name, name, name_len);
  h->name[name_len] = '\0';
  h->name_len = name_len;
  return h;
}

static void hint_range(hint_t *h, TSNode wider) {
  if (h == NULL)
    return;
  h->has_range = 1;
  h->start_byte = ts_node_start_byte(wider);
  h->end_byte = ts_node_end_byte(wider);
  h->start_row = ts_node_start_point(wider).row;
  h->end_row = ts_node_end_point(wider).row;
  if (ts_node_end_point(wider).column == 0 && h->end_row > h->start_row)
    h->end_row--; /* ends with its newline */
}

static char *arena_strdup(ctx_t *c, const char *s, size_t len) {
  char *p = arena_alloc(&c->arena, len + 1);
  if (p == NULL) {
    c->nomem = 1;
    return NULL;
  }
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

/* Extends the name path with `qname` (as written: "f" or "M.f"). */
static size_t extend_path(ctx_t *c, const char *qname, size_t qlen) {
  size_t len = c->nframes > 0 ? c->frames[c->nframes - 1].path_len : 0;
  if (len > 0)
    c->path[len++] = '.';
  memcpy(c->path + len, qname, qlen); /* PATH_CAP leaves room */
  len += qlen;
  c->path[len] = '\0';
  return len;
}

static void push_scope(ctx_t *c, uint32_t depth, const char *qname,
                       size_t qlen) {
  frame_t *f;
  if (c->nframes == MAX_FRAMES || qlen == 0)
    return;
  f = &c->frames[c->nframes];
  f->path_len = extend_path(c, qname, qlen);
  f->depth = depth;
  f->def = -1;
  c->nframes++;
}

/* A definition of node n, named `qname` as written. */
static void push_def(ctx_t *c, TSNode n, uint32_t depth, const char *kind,
                     const char *qname, size_t qlen, const hint_t *h) {
  const char *last;
  size_t plen;
  def_t *d;
  frame_t *f;
  if (c->nframes == MAX_FRAMES || qlen == 0)
    return;
  if (c->ndefs == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 64;
    def_t *defs = realloc(c->defs, cap * sizeof(*defs));
    if (defs == NULL) {
      c->nomem = 1;
      return;
    }
    c->defs = defs;
    c->cap = cap;
  }
  plen = extend_path(c, qname, qlen);
  last = memchr(qname, '.', qlen) ? strrchr(c->path, '.') + 1 : NULL;
  d = &c->defs[c->ndefs];
  memset(d, 0, sizeof(*d));
  d->kind = kind;
  d->name_path = arena_strdup(c, c->path, plen);
  d->name = last != NULL ? arena_strdup(c, last, strlen(last))
                         : arena_strdup(c, qname, qlen);
  if (c->nomem)
    return;
  if (h != NULL && h->has_range) {
    d->start_byte = h->start_byte;
    d->end_byte = h->end_byte;
    d->start_row = h->start_row;
    d->end_row = h->end_row;
  } else {
    d->start_byte = ts_node_start_byte(n);
    d->end_byte = ts_node_end_byte(n);
    d->start_row = ts_node_start_point(n).row;
    d->end_row = ts_node_end_point(n).row;
    if (ts_node_end_point(n).column == 0 && d->end_row > d->start_row)
      d->end_row--;
  }
  f = &c->frames[c->nframes++];
  f->depth = depth;
  f->def = (int)c->ndefs++;
  f->path_len = plen;
}

static void add_ref(ctx_t *c, mnemo_chunk_ref_kind_t kind, uint32_t byte,
                    const char *name, size_t len) {
  def_t *d = current_def(c);
  raw_ref_t *r;
  if (len == 0)
    return;
  if (d == NULL)
    d = &c->module;
  if (d->nrefs == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 8;
    raw_ref_t *refs = realloc(d->refs, cap * sizeof(*refs));
    if (refs == NULL) {
      c->nomem = 1;
      return;
    }
    d->refs = refs;
    d->cap = cap;
  }
  r = &d->refs[d->nrefs];
  r->byte = byte;
  r->kind = kind;
  r->name = arena_strdup(c, name, len);
  if (r->name != NULL)
    d->nrefs++;
}

static void call_ref(ctx_t *c, TSNode call, TSNode callee) {
  char buf[NAME_CAP + 1];
  size_t len;
  if (ts_node_is_null(callee))
    return;
  len = dotted(c, callee, buf, sizeof(buf));
  add_ref(c, MNEMO_CHUNK_REF_CALL, ts_node_start_byte(call), buf, len);
}

/* require("x") / require "x" / import("x"): the module name, else 0. */
static size_t required_module(const ctx_t *c, TSNode callee, TSNode args,
                              char *buf, size_t cap) {
  TSNode arg;
  int is_import = type_is(callee, "import");
  if (ts_node_is_null(args) || ts_node_is_null(callee))
    return 0;
  if (!is_import &&
      !(type_is(callee, "identifier") &&
        ts_node_end_byte(callee) - ts_node_start_byte(callee) == 7 &&
        memcmp(c->src + ts_node_start_byte(callee), "require", 7) == 0))
    return 0;
  arg = type_is(args, "string") ? args : ts_node_named_child(args, 0);
  if (ts_node_is_null(arg) || !type_is(arg, "string") ||
      ts_node_named_child_count(args) > 1)
    return 0;
  return string_text(c, arg, buf, cap);
}

/* ---- per language: what a named node means ---- */

static int is_js_function(TSNode n) {
  const char *t = ts_node_type(n);
  return strcmp(t, "arrow_function") == 0 ||
         strcmp(t, "function_expression") == 0 || strcmp(t, "function") == 0 ||
         strcmp(t, "generator_function") == 0;
}

/* Hint for a value assigned to `name`: a function, a class, an object. */
static void js_name_value(ctx_t *c, TSNode value, uint32_t depth,
                          const char *name, size_t len, const char *fn_kind) {
  if (ts_node_is_null(value) || len == 0)
    return;
  if (is_js_function(value))
    add_hint(c, value, depth, fn_kind, 0, name, len);
  else if (type_is(value, "class"))
    add_hint(c, value, depth, K_CLASS, 0, name, len);
  else if (type_is(value, "object"))
    add_hint(c, value, depth, NULL, 1, name, len);
}

/* A call node (JavaScript, Lua): `require("x")` / `import("x")` is an
 * import of x, anything else a call of its callee (the field named
 * callee_field). */
static void call_or_require(ctx_t *c, TSNode call, const char *callee_field) {
  char buf[NAME_CAP + 1];
  TSNode callee = field(call, callee_field);
  size_t len =
      required_module(c, callee, field(call, "arguments"), buf, sizeof(buf));
  if (len > 0)
    add_ref(c, MNEMO_CHUNK_REF_IMPORT, ts_node_start_byte(call), buf, len);
  else
    call_ref(c, call, callee);
}

static void visit_javascript(ctx_t *c, TSNode n, uint32_t depth,
                             const hint_t *h) {
  const char *t = ts_node_type(n);
  char buf[NAME_CAP + 1];
  size_t len;

  if (strcmp(t, "call_expression") == 0) {
    call_or_require(c, n, "function");
  } else if (strcmp(t, "new_expression") == 0) {
    call_ref(c, n, field(n, "constructor"));
  } else if (strcmp(t, "function_declaration") == 0 ||
             strcmp(t, "generator_function_declaration") == 0 ||
             strcmp(t, "class_declaration") == 0) {
    TSNode name = field(n, "name");
    if (!ts_node_is_null(name)) {
      len = node_text(c, name, buf, sizeof(buf));
      push_def(c, n, depth, t[0] == 'c' ? K_CLASS : K_FUNCTION, buf, len, h);
    }
  } else if (strcmp(t, "method_definition") == 0) {
    TSNode name = field(n, "name");
    if (!ts_node_is_null(name)) {
      len = type_is(name, "string") ? string_text(c, name, buf, sizeof(buf))
                                    : node_text(c, name, buf, sizeof(buf));
      push_def(c, n, depth, K_METHOD, buf, len, h);
    }
  } else if (h != NULL && (is_js_function(n) || strcmp(t, "class") == 0)) {
    push_def(c, n, depth, h->kind, h->name, h->name_len, h);
  } else if (h != NULL && h->scope && strcmp(t, "object") == 0) {
    push_scope(c, depth, h->name, h->name_len);
  } else if (strcmp(t, "variable_declarator") == 0) {
    TSNode name = field(n, "name");
    if (!ts_node_is_null(name) && type_is(name, "identifier")) {
      len = node_text(c, name, buf, sizeof(buf));
      js_name_value(c, field(n, "value"), depth, buf, len, K_FUNCTION);
    }
  } else if (strcmp(t, "assignment_expression") == 0) {
    TSNode left = field(n, "left");
    if (!ts_node_is_null(left)) {
      len = dotted(c, left, buf, sizeof(buf));
      js_name_value(c, field(n, "right"), depth, buf, len, K_FUNCTION);
    }
  } else if (strcmp(t, "pair") == 0 || strcmp(t, "field_definition") == 0) {
    TSNode key = field(n, t[0] == 'p' ? "key" : "property");
    if (!ts_node_is_null(key)) {
      len = type_is(key, "string") ? string_text(c, key, buf, sizeof(buf))
                                   : node_text(c, key, buf, sizeof(buf));
      js_name_value(c, field(n, "value"), depth, buf, len, K_METHOD);
    }
  } else if (strcmp(t, "export_statement") == 0) {
    TSNode source = field(n, "source");
    TSNode value = field(n, "value");
    if (!ts_node_is_null(source)) {
      len = string_text(c, source, buf, sizeof(buf));
      add_ref(c, MNEMO_CHUNK_REF_IMPORT, ts_node_start_byte(n), buf, len);
    }
    if (!ts_node_is_null(value) &&
        (is_js_function(value) || type_is(value, "class")))
      js_name_value(c, value, depth, "default", 7, K_FUNCTION);
  } else if (strcmp(t, "import_statement") == 0) {
    TSNode source = field(n, "source");
    if (!ts_node_is_null(source)) {
      len = string_text(c, source, buf, sizeof(buf));
      add_ref(c, MNEMO_CHUNK_REF_IMPORT, ts_node_start_byte(n), buf, len);
    }
  }
}

/* Pushes the function or class `def`, spanning `range`; 1 if it did. */
static int python_def(ctx_t *c, TSNode def, TSNode range, uint32_t depth) {
  TSNode name = field(def, "name");
  const char *kind = K_CLASS;
  char buf[NAME_CAP + 1];
  size_t len, before = c->ndefs;
  hint_t wide;
  if (ts_node_is_null(name))
    return 0;
  if (type_is(def, "function_definition")) {
    const def_t *parent = current_def(c);
    /* a method: directly in a class (the class is the innermost def) */
    kind = parent != NULL && parent->kind == K_CLASS ? K_METHOD : K_FUNCTION;
  } else if (!type_is(def, "class_definition")) {
    return 0;
  }
  hint_range(&wide, range);
  len = node_text(c, name, buf, sizeof(buf));
  push_def(c, def, depth, kind, buf, len, &wide);
  return c->ndefs > before;
}

static void visit_python(ctx_t *c, TSNode n, uint32_t depth, const hint_t *h) {
  const char *t = ts_node_type(n);
  char buf[NAME_CAP + 1];
  size_t len;

  if (strcmp(t, "call") == 0) {
    call_ref(c, n, field(n, "function"));
  } else if (strcmp(t, "function_definition") == 0 ||
             strcmp(t, "class_definition") == 0) {
    if (h == NULL || !h->consumed)
      python_def(c, n, n, depth);
  } else if (strcmp(t, "decorated_definition") == 0) {
    /* defined here, so the decorators (and their calls) belong to it */
    TSNode def = field(n, "definition");
    if (!ts_node_is_null(def) && python_def(c, def, n, depth)) {
      hint_t *consumed = add_hint(c, def, depth, NULL, 0, "", 0);
      if (consumed != NULL)
        consumed->consumed = 1;
    }
  } else if (strcmp(t, "import_statement") == 0) {
    uint32_t i, count = ts_node_named_child_count(n);
    for (i = 0; i < count && i < 256; i++) {
      TSNode name = ts_node_named_child(n, i);
      if (type_is(name, "aliased_import"))
        name = field(name, "name");
      if (!ts_node_is_null(name) && type_is(name, "dotted_name")) {
        len = node_text(c, name, buf, sizeof(buf));
        add_ref(c, MNEMO_CHUNK_REF_IMPORT, ts_node_start_byte(n), buf, len);
      }
    }
  } else if (strcmp(t, "import_from_statement") == 0) {
    TSNode module = field(n, "module_name");
    if (!ts_node_is_null(module)) {
      len = node_text(c, module, buf, sizeof(buf));
      add_ref(c, MNEMO_CHUNK_REF_IMPORT, ts_node_start_byte(n), buf, len);
    }
  }
}

/* The name a C declarator declares: through pointers, parentheses,
 * function and array declarators down to the identifier. */
static TSNode c_declared_name(TSNode d) {
  int i;
  for (i = 0; i < 64 && !ts_node_is_null(d); i++) {
    TSNode next;
    if (is_name_node(ts_node_type(d)))
      return d;
    next = field(d, "declarator");
    d = ts_node_is_null(next) ? ts_node_named_child(d, 0) : next;
  }
  return (TSNode){{0}, NULL, NULL};
}

static void visit_c(ctx_t *c, TSNode n, uint32_t depth, const hint_t *h) {
  const char *t = ts_node_type(n);
  char buf[NAME_CAP + 1];
  size_t len;

  if (strcmp(t, "call_expression") == 0) {
    call_ref(c, n, field(n, "function"));
  } else if (strcmp(t, "function_definition") == 0) {
    TSNode name = c_declared_name(field(n, "declarator"));
    if (!ts_node_is_null(name)) {
      len = node_text(c, name, buf, sizeof(buf));
      push_def(c, n, depth, K_FUNCTION, buf, len, h);
    }
  } else if (strcmp(t, "struct_specifier") == 0 ||
             strcmp(t, "union_specifier") == 0 ||
             strcmp(t, "enum_specifier") == 0) {
    TSNode name = field(n, "name");
    const char *kind = t[0] == 's' ? K_STRUCT : t[0] == 'u' ? K_UNION : K_ENUM;
    if (ts_node_is_null(field(n, "body")))
      return; /* a use (`struct point p`), not a definition */
    if (!ts_node_is_null(name)) {
      len = node_text(c, name, buf, sizeof(buf));
      push_def(c, n, depth, kind, buf, len, h);
    } else if (h != NULL && h->name_len > 0) {
      push_def(c, n, depth, kind, h->name, h->name_len, h);
    }
  } else if (strcmp(t, "type_definition") == 0) {
    /* typedef struct [tag] {...} name; the chunk is the whole typedef,
     * named by its tag, or by the typedef name if it has none */
    TSNode type = field(n, "type");
    TSNode name = c_declared_name(field(n, "declarator"));
    if (ts_node_is_null(type) || ts_node_is_null(field(type, "body")))
      return;
    len = ts_node_is_null(name) ? 0 : node_text(c, name, buf, sizeof(buf));
    hint_range(add_hint(c, type, depth, NULL, 0, buf, len), n);
  } else if (strcmp(t, "preproc_include") == 0) {
    TSNode path = field(n, "path");
    if (!ts_node_is_null(path)) {
      len = string_text(c, path, buf, sizeof(buf));
      add_ref(c, MNEMO_CHUNK_REF_IMPORT, ts_node_start_byte(n), buf, len);
    }
  }
}

/* Names the function (or table) values of `a, M.b = function ... end`. */
static void lua_assignment(ctx_t *c, TSNode n, uint32_t depth) {
  TSNode vars = {{0}, NULL, NULL}, values = {{0}, NULL, NULL};
  uint32_t i, count = ts_node_named_child_count(n);
  char buf[NAME_CAP + 1];
  for (i = 0; i < count && i < 4; i++) {
    TSNode k = ts_node_named_child(n, i);
    if (type_is(k, "variable_list"))
      vars = k;
    else if (type_is(k, "expression_list"))
      values = k;
  }
  if (ts_node_is_null(vars) || ts_node_is_null(values))
    return;
  count = ts_node_named_child_count(values);
  if (count > ts_node_named_child_count(vars))
    count = ts_node_named_child_count(vars);
  for (i = 0; i < count && i < 16; i++) {
    TSNode value = ts_node_named_child(values, i);
    int fn = type_is(value, "function_definition");
    if (fn || type_is(value, "table_constructor")) {
      size_t len = dotted(c, ts_node_named_child(vars, i), buf, sizeof(buf));
      if (len > 0)
        add_hint(c, value, depth, fn ? K_FUNCTION : NULL, !fn, buf, len);
    }
  }
}

static void visit_lua(ctx_t *c, TSNode n, uint32_t depth, const hint_t *h) {
  const char *t = ts_node_type(n);
  char buf[NAME_CAP + 1];
  size_t len;

  if (strcmp(t, "function_call") == 0) {
    call_or_require(c, n, "name");
  } else if (strcmp(t, "function_declaration") == 0) {
    TSNode name = field(n, "name");
    if (!ts_node_is_null(name)) {
      len = dotted(c, name, buf, sizeof(buf));
      push_def(c, n, depth,
               type_is(name, "method_index_expression") ? K_METHOD : K_FUNCTION,
               buf, len, h);
    }
  } else if (h != NULL && !h->scope && strcmp(t, "function_definition") == 0) {
    push_def(c, n, depth, h->kind, h->name, h->name_len, h);
  } else if (h != NULL && h->scope && strcmp(t, "table_constructor") == 0) {
    push_scope(c, depth, h->name, h->name_len);
  } else if (strcmp(t, "assignment_statement") == 0) {
    lua_assignment(c, n, depth);
  } else if (strcmp(t, "field") == 0) {
    TSNode name = field(n, "name"), value = field(n, "value");
    if (!ts_node_is_null(name) && !ts_node_is_null(value) &&
        type_is(name, "identifier")) {
      int fn = type_is(value, "function_definition");
      len = node_text(c, name, buf, sizeof(buf));
      if (fn || type_is(value, "table_constructor"))
        add_hint(c, value, depth, fn ? K_FUNCTION : NULL, !fn, buf, len);
    }
  }
}

static void leave(ctx_t *c, uint32_t depth) {
  while (c->nframes > 0 && c->frames[c->nframes - 1].depth >= depth)
    c->nframes--;
  while (c->nhints > 0 && c->hints[c->nhints - 1].depth >= depth)
    c->nhints--;
}

static int walk(ctx_t *c, TSNode root) {
  TSTreeCursor cur = ts_tree_cursor_new(root);
  uint32_t depth = 0;
  unsigned long visited = 0;
  int rc = MNEMO_OK;
  for (;;) {
    TSNode n = ts_tree_cursor_current_node(&cur);
    if ((++visited & CANCEL_CHECK_MASK) == 0 && is_cancelled(c->cancel)) {
      rc = MNEMO_ECANCELED;
      break;
    }
    if (ts_node_is_named(n)) {
      const hint_t *h = c->nhints > 0 ? find_hint(c, n) : NULL;
      switch (c->lang) {
      case LANG_PYTHON:
        visit_python(c, n, depth, h);
        break;
      case LANG_JAVASCRIPT:
        visit_javascript(c, n, depth, h);
        break;
      case LANG_C:
        visit_c(c, n, depth, h);
        break;
      case LANG_LUA:
        visit_lua(c, n, depth, h);
        break;
      }
      if (c->nomem) {
        rc = MNEMO_ENOMEM;
        break;
      }
    }
    if (ts_tree_cursor_goto_first_child(&cur)) {
      depth++;
      continue;
    }
    for (;;) {
      leave(c, depth);
      if (ts_tree_cursor_goto_next_sibling(&cur))
        break;
      if (!ts_tree_cursor_goto_parent(&cur))
        goto done;
      depth--;
    }
  }
done:
  ts_tree_cursor_delete(&cur);
  return rc;
}

/* ---- before parsing ---- */

/* Level of a Lua long bracket `[==[` at s[i], or -1. */
static long lua_long_bracket(const char *s, size_t len, size_t i) {
  size_t j = i + 1;
  if (i >= len || s[i] != '[')
    return -1;
  while (j < len && s[j] == '=')
    j++;
  return j < len && s[j] == '[' ? (long)(j - i - 1) : -1;
}

/* End of the long bracket of `level` opened at s[i] (past its `]==]`). */
static size_t lua_long_end(const char *s, size_t len, size_t i, long level) {
  for (i += (size_t)level + 2; i < len; i++) {
    if (s[i] == ']') {
      size_t j = i + 1;
      while (j < len && s[j] == '=')
        j++;
      if (j < len && s[j] == ']' && (long)(j - i - 1) == level)
        return j + 1;
    }
  }
  return len;
}

/* Replaces Lua comments with spaces (newlines kept), skipping strings. */
static void lua_blank_comments(char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    char ch = s[i];
    if (ch == '-' && i + 1 < len && s[i + 1] == '-') {
      size_t end = i + 2;
      long level = lua_long_bracket(s, len, end);
      if (level >= 0) {
        end = lua_long_end(s, len, end, level);
      } else {
        while (end < len && s[end] != '\n')
          end++;
      }
      for (; i < end; i++)
        if (s[i] != '\n')
          s[i] = ' ';
    } else if (ch == '"' || ch == '\'') {
      for (i++; i < len && s[i] != ch && s[i] != '\n'; i++)
        if (s[i] == '\\')
          i++;
      i++;
    } else if (ch == '[') {
      long level = lua_long_bracket(s, len, i);
      i = level >= 0 ? lua_long_end(s, len, i, level) : i + 1;
    } else {
      i++;
    }
  }
}

/* Bracket depth, naive (strings and comments count too, which can only
 * overestimate): enough to keep tree-sitter 0.20.7 away from its
 * 65535-children limit. */
static int too_deep(const char *s, size_t len) {
  size_t i, depth = 0;
  for (i = 0; i < len; i++) {
    char ch = s[i];
    if (ch == '(' || ch == '[' || ch == '{') {
      if (++depth > MNEMO_CHUNK_MAX_NESTING)
        return 1;
    } else if ((ch == ')' || ch == ']' || ch == '}') && depth > 0) {
      depth--;
    }
  }
  return 0;
}

/* ---- after the walk: lines, module chunk, splitting, refs ---- */

typedef struct out_ctx {
  const char *src; /* the list's copy */
  size_t len;
  uint32_t *line_start; /* nlines + 1 entries; the last is len + 1 */
  uint32_t nlines;
  uint32_t max_lines;
  size_t max_bytes;
  void **arena;
  mnemo_chunk_t *chunks;
  size_t count, cap;
} out_ctx_t;

static size_t line_end(const out_ctx_t *o, uint32_t row) {
  return o->line_start[row + 1] - 1; /* before its '\n' (or at len) */
}

static uint32_t row_of(const out_ctx_t *o, size_t byte) {
  uint32_t lo = 0, hi = o->nlines; /* line_start[lo] <= byte */
  while (hi - lo > 1) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (o->line_start[mid] <= byte)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

static int is_blank(const out_ctx_t *o, uint32_t row) {
  size_t i;
  for (i = o->line_start[row]; i < line_end(o, row); i++) {
    char ch = o->src[i];
    if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\f' && ch != '\v')
      return 0;
  }
  return 1;
}

static mnemo_chunk_t *new_chunk(out_ctx_t *o) {
  if (o->count == o->cap) {
    size_t cap = o->cap ? o->cap * 2 : 16;
    mnemo_chunk_t *chunks = realloc(o->chunks, cap * sizeof(*chunks));
    if (chunks == NULL)
      return NULL;
    o->chunks = chunks;
    o->cap = cap;
  }
  memset(&o->chunks[o->count], 0, sizeof(o->chunks[0]));
  return &o->chunks[o->count++];
}

typedef struct sort_ref {
  const raw_ref_t *ref;
  size_t index;
} sort_ref_t;

static int cmp_ref(const void *a, const void *b) {
  const sort_ref_t *x = a, *y = b;
  int d;
  if (x->ref->kind != y->ref->kind)
    return x->ref->kind < y->ref->kind ? -1 : 1;
  d = strcmp(x->ref->name, y->ref->name);
  if (d != 0)
    return d;
  return x->index < y->index ? -1 : x->index > y->index;
}

/* Sets chunk->refs to the refs[i] with keep(i), deduplicated in order of
 * first use. */
static int set_refs(out_ctx_t *o, mnemo_chunk_t *chunk, const raw_ref_t *refs,
                    const size_t *picked, size_t n) {
  sort_ref_t *sorted;
  unsigned char *dup;
  size_t i, out = 0;
  if (n == 0)
    return 0;
  sorted = malloc(n * sizeof(*sorted));
  dup = calloc(n, 1);
  chunk->refs = arena_alloc(o->arena, n * sizeof(*chunk->refs));
  if (sorted == NULL || dup == NULL || chunk->refs == NULL) {
    free(sorted);
    free(dup);
    return MNEMO_ENOMEM;
  }
  for (i = 0; i < n; i++) {
    sorted[i].ref = &refs[picked[i]];
    sorted[i].index = i;
  }
  qsort(sorted, n, sizeof(*sorted), cmp_ref);
  for (i = 1; i < n; i++)
    if (sorted[i].ref->kind == sorted[i - 1].ref->kind &&
        strcmp(sorted[i].ref->name, sorted[i - 1].ref->name) == 0)
      dup[sorted[i].index] = 1;
  for (i = 0; i < n; i++) {
    if (dup[i])
      continue;
    chunk->refs[out].kind = refs[picked[i]].kind;
    chunk->refs[out].name = refs[picked[i]].name;
    out++;
  }
  chunk->nrefs = out;
  free(sorted);
  free(dup);
  return 0;
}

/* Text of rows[0..n) (joined by newlines unless contiguous in the
 * source, when it points into the copy). */
static int set_text(out_ctx_t *o, mnemo_chunk_t *ch, const uint32_t *rows,
                    size_t n) {
  size_t i, total = 0;
  char *p;
  if (rows[n - 1] - rows[0] == n - 1) {
    ch->text = o->src + o->line_start[rows[0]];
    ch->text_len = line_end(o, rows[n - 1]) - o->line_start[rows[0]];
    return 0;
  }
  for (i = 0; i < n; i++)
    total += line_end(o, rows[i]) - o->line_start[rows[i]] + 1;
  p = arena_alloc(o->arena, total);
  if (p == NULL)
    return MNEMO_ENOMEM;
  ch->text = p;
  for (i = 0; i < n; i++) {
    size_t l = line_end(o, rows[i]) - o->line_start[rows[i]];
    memcpy(p, o->src + o->line_start[rows[i]], l);
    p += l;
    if (i + 1 < n)
      *p++ = '\n';
  }
  ch->text_len = total - 1;
  return 0;
}

static char *part_name(out_ctx_t *o, const char *path, uint32_t part) {
  size_t len = strlen(path);
  char *s = arena_alloc(o->arena, len + 12);
  if (s == NULL)
    return NULL;
  memcpy(s, path, len);
  s[len] = '#';
  len++;
  {
    char digits[11];
    int n = 0;
    do {
      digits[n++] = (char)('0' + part % 10);
      part /= 10;
    } while (part > 0);
    while (n > 0)
      s[len++] = digits[--n];
  }
  s[len] = '\0';
  return s;
}

/* Emits the chunk(s) for rows[0..n) of `d` (split if oversized), with the
 * refs of d spread over the parts by position. */
static int emit(out_ctx_t *o, const def_t *d, const uint32_t *rows, size_t n,
                size_t start_byte, size_t end_byte) {
  size_t first_chunk = o->count, nparts, i, total = 0;
  size_t *picked;
  int rc = 0;

  for (i = 0; i < n; i++)
    total += line_end(o, rows[i]) - o->line_start[rows[i]] + (i > 0);
  if (n <= o->max_lines && total <= o->max_bytes) {
    mnemo_chunk_t *ch = new_chunk(o);
    if (ch == NULL || set_text(o, ch, rows, n) != 0)
      return MNEMO_ENOMEM;
    ch->start_byte = start_byte;
    ch->end_byte = end_byte;
  } else {
    /* Parts of whole lines, at most max_lines and max_bytes; a line
     * longer than max_bytes is cut into slices on UTF-8 boundaries. */
    size_t at = 0;
    while (at < n) {
      size_t k = 0, bytes = 0;
      mnemo_chunk_t *ch;
      while (at + k < n && k < o->max_lines) {
        size_t l = line_end(o, rows[at + k]) - o->line_start[rows[at + k]];
        if (bytes + l + (k > 0) > o->max_bytes)
          break;
        bytes += l + (k > 0);
        k++;
      }
      if (k > 0) {
        ch = new_chunk(o);
        if (ch == NULL || set_text(o, ch, rows + at, k) != 0)
          return MNEMO_ENOMEM;
        ch->start_byte = o->line_start[rows[at]];
        ch->end_byte = line_end(o, rows[at + k - 1]);
        at += k;
        continue;
      }
      { /* one line too long for a part */
        size_t s = o->line_start[rows[at]], e = line_end(o, rows[at]);
        while (s < e) {
          size_t cut = e - s > o->max_bytes ? s + o->max_bytes : e;
          if (cut < e) {
            size_t back = cut;
            while (back > s && ((unsigned char)o->src[back] & 0xc0) == 0x80)
              back--;
            if (back > s)
              cut = back;
          }
          ch = new_chunk(o);
          if (ch == NULL)
            return MNEMO_ENOMEM;
          ch->text = o->src + s;
          ch->text_len = cut - s;
          ch->start_byte = s;
          ch->end_byte = cut;
          s = cut;
        }
        at++;
      }
    }
  }
  nparts = o->count - first_chunk;
  for (i = first_chunk; i < o->count; i++) {
    mnemo_chunk_t *ch = &o->chunks[i];
    ch->kind = d->kind;
    ch->name = d->name;
    ch->start_line = row_of(o, ch->start_byte) + 1;
    ch->end_line = row_of(o, ch->end_byte) + 1;
    if (nparts > 1) {
      ch->part = (uint32_t)(i - first_chunk + 1);
      ch->name_path = part_name(o, d->name_path, ch->part);
      if (ch->name_path == NULL)
        return MNEMO_ENOMEM;
    } else {
      ch->name_path = d->name_path;
      ch->start_line = rows[0] + 1;
      ch->end_line = rows[n - 1] + 1;
    }
  }
  if (d->nrefs == 0)
    return 0;
  /* refs, in order, to the part that holds them (or the nearest) */
  picked = malloc(d->nrefs * sizeof(*picked));
  if (picked == NULL)
    return MNEMO_ENOMEM;
  for (i = first_chunk; i < o->count && rc == 0; i++) {
    size_t np = 0, j;
    const mnemo_chunk_t *ch = &o->chunks[i];
    int last = i + 1 == o->count;
    for (j = 0; j < d->nrefs; j++) {
      size_t b = d->refs[j].byte;
      int mine;
      if (nparts == 1)
        mine = 1;
      else if (last)
        mine = b >= ch->start_byte || i == first_chunk;
      else if (i == first_chunk)
        mine = b < o->chunks[i + 1].start_byte;
      else
        mine = b >= ch->start_byte && b < o->chunks[i + 1].start_byte;
      if (mine)
        picked[np++] = j;
    }
    rc = set_refs(o, &o->chunks[i], d->refs, picked, np);
  }
  free(picked);
  return rc;
}

static int build(ctx_t *c, const mnemo_chunk_options_t *opts,
                 mnemo_chunk_list_t *out) {
  out_ctx_t o;
  unsigned char *covered = NULL;
  uint32_t *rows = NULL;
  size_t i, nrows;
  uint32_t row, first = UINT32_MAX, last = 0;
  long max_end = -1;
  int rc = MNEMO_ENOMEM;

  memset(&o, 0, sizeof(o));
  o.src = out->src;
  o.len = c->len;
  o.arena = &c->arena;
  o.max_lines = opts && opts->max_chunk_lines ? opts->max_chunk_lines
                                              : MNEMO_CHUNK_DEFAULT_MAX_LINES;
  o.max_bytes = opts && opts->max_chunk_bytes ? opts->max_chunk_bytes
                                              : MNEMO_CHUNK_DEFAULT_MAX_BYTES;
  o.nlines = 1;
  for (i = 0; i < c->len; i++)
    o.nlines += o.src[i] == '\n';
  o.line_start = malloc(((size_t)o.nlines + 1) * sizeof(*o.line_start));
  covered = calloc(o.nlines, 1);
  rows = malloc((size_t)o.nlines * sizeof(*rows));
  if (o.line_start == NULL || covered == NULL || rows == NULL)
    goto fail;
  o.line_start[0] = 0;
  for (i = 0, row = 1; i < c->len; i++)
    if (o.src[i] == '\n')
      o.line_start[row++] = (uint32_t)i + 1;
  o.line_start[o.nlines] = c->len + 1;

  /* Lines covered by a definition; defs come in order of start. */
  for (i = 0; i < c->ndefs; i++) {
    def_t *d = &c->defs[i];
    long r;
    if (d->end_row >= o.nlines)
      d->end_row = o.nlines - 1;
    if (d->start_row > d->end_row)
      d->start_row = d->end_row;
    for (r = (long)d->start_row > max_end + 1 ? (long)d->start_row
                                              : max_end + 1;
         r <= (long)d->end_row; r++)
      covered[r] = 1;
    if ((long)d->end_row > max_end)
      max_end = d->end_row;
  }
  for (row = 0; row < o.nlines; row++) {
    if (!covered[row] && !is_blank(&o, row)) {
      if (first == UINT32_MAX)
        first = row;
      last = row;
    }
  }
  if (first != UINT32_MAX) {
    c->module.kind = K_MODULE;
    c->module.name = "<module>";
    c->module.name_path = "<module>";
    for (nrows = 0, row = first; row <= last; row++)
      if (!covered[row])
        rows[nrows++] = row;
    rc = emit(&o, &c->module, rows, nrows, o.line_start[first],
              line_end(&o, last));
    if (rc != 0)
      goto fail;
  }
  for (i = 0; i < c->ndefs; i++) {
    const def_t *d = &c->defs[i];
    for (nrows = 0, row = d->start_row; row <= d->end_row; row++)
      rows[nrows++] = row;
    rc = emit(&o, d, rows, nrows, d->start_byte, d->end_byte);
    if (rc != 0)
      goto fail;
  }
  out->chunks = o.chunks;
  out->count = o.count;
  rc = 0;
fail:
  if (rc != 0)
    free(o.chunks);
  free(o.line_start);
  free(covered);
  free(rows);
  return rc;
}

/* ---- public ---- */

static const struct language *find_language(const char *name) {
  size_t i;
  if (name == NULL)
    return NULL;
  for (i = 0; i < NLANGUAGES; i++)
    if (strcmp(languages[i].name, name) == 0)
      return &languages[i];
  return NULL;
}

const void *mnemo_chunker_language(const char *name) {
  const struct language *l = find_language(name);
  return l != NULL ? l->fn() : NULL;
}

const char *mnemo_chunker_language_name(const char *name) {
  const struct language *l = find_language(name);
  return l != NULL ? l->name : NULL;
}

const char *mnemo_chunker_language_for_path(const char *path) {
  const char *dot, *slash;
  size_t i, j;
  if (path == NULL)
    return NULL;
  dot = strrchr(path, '.');
  slash = strrchr(path, '/');
  if (dot == NULL || (slash != NULL && dot < slash) || dot == path ||
      (slash != NULL && dot == slash + 1))
    return NULL; /* no extension, or a dotfile such as ".lua" */
  for (i = 0; i < NLANGUAGES; i++)
    for (j = 0; languages[i].extensions[j] != NULL; j++)
      if (strcmp(dot, languages[i].extensions[j]) == 0)
        return languages[i].name;
  return NULL;
}

void mnemo_chunk_list_free(mnemo_chunk_list_t *list) {
  free(list->chunks);
  arena_free(list->arena);
  free(list->src);
  memset(list, 0, sizeof(*list));
}

static void free_defs(ctx_t *c) {
  size_t i;
  for (i = 0; i < c->ndefs; i++)
    free(c->defs[i].refs);
  free(c->defs);
  free(c->module.refs);
}

int mnemo_chunk_source(const char *language, const char *src, size_t len,
                       const size_t *cancel_flag,
                       const mnemo_chunk_options_t *opts,
                       mnemo_chunk_list_t *out) {
  const struct language *l = find_language(language);
  char *copy, *parsed = NULL;
  TSParser *parser;
  TSTree *tree;
  ctx_t *c;
  int rc;

  memset(out, 0, sizeof(*out));
  if (l == NULL || (src == NULL && len > 0) || len >= UINT32_MAX)
    return MNEMO_EINVAL;
  if (is_cancelled(cancel_flag))
    return MNEMO_ECANCELED;
  copy = malloc(len + 1);
  c = calloc(1, sizeof(*c));
  if (copy == NULL || c == NULL) {
    free(copy);
    free(c);
    return MNEMO_ENOMEM;
  }
  if (len > 0)
    memcpy(copy, src, len);
  copy[len] = '\0';
  c->src = copy;
  c->len = (uint32_t)len;
  c->lang = (enum lang)(l - languages);
  c->cancel = cancel_flag;
  if (c->lang == LANG_LUA) {
    parsed = malloc(len + 1);
    if (parsed == NULL) {
      rc = MNEMO_ENOMEM;
      goto out;
    }
    memcpy(parsed, copy, len + 1);
    lua_blank_comments(parsed, len);
    c->src = parsed;
  }
  if (too_deep(c->src, len)) {
    rc = MNEMO_CHUNK_ETOODEEP;
    goto out;
  }

  parser = ts_parser_new();
  if (!ts_parser_set_language(parser, l->fn())) {
    ts_parser_delete(parser);
    rc = MNEMO_EINVAL;
    goto out;
  }
  ts_parser_set_cancellation_flag(parser, cancel_flag);
  tree = ts_parser_parse_string(parser, NULL, c->src, (uint32_t)len);
  ts_parser_delete(parser);
  if (tree == NULL) {
    rc = is_cancelled(cancel_flag) ? MNEMO_ECANCELED : MNEMO_EINVAL;
    goto out;
  }
  rc = walk(c, ts_tree_root_node(tree));
  ts_tree_delete(tree);
  if (rc == 0 && is_cancelled(cancel_flag))
    rc = MNEMO_ECANCELED;
  if (rc == 0) {
    out->src = copy;
    copy = NULL;
    rc = build(c, opts, out);
  }
out:
  if (rc == 0) {
    out->arena = c->arena;
  } else {
    arena_free(c->arena);
    free(out->src);
    memset(out, 0, sizeof(*out));
  }
  free_defs(c);
  free(c);
  free(copy);
  free(parsed);
  return rc;
}
