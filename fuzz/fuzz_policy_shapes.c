/* fuzz_policy_shapes — structure-aware libFuzzer target for the sandbox:
 * the input's bytes are choices in a grammar of hostile Lua shapes, the
 * program built from them is checked exactly as fuzz_policy checks a
 * policy text (fuzz_policy.c, included: check_source, then every hook of
 * an accepted policy called through hooks.call, with the same oracle).
 *
 * The grammar (gen_stmt and the gen_* helpers below): loops that never end
 * (while true, numeric for with huge or infinite bounds, repeat), pcall and
 * xpcall nested, with handlers that loop, raise or are C functions,
 * recursion (direct, tail, through __index, __newindex, __tostring,
 * __concat, __lt, __le, __eq, __call, __unm, __add, table.sort comparators,
 * string.format("%s")), string growth (s .. s, string.rep with and without
 * a separator, string.format, table.concat, gsub with string, table and
 * function replacements), table growth, the pattern functions with random
 * patterns and subjects (find, match, gmatch, gsub; quantifiers, captures,
 * back-references, %b, %f, sets, anchors, malformed ones), the library
 * tables rewritten (setmetatable, rawset, getmetatable), and error values
 * with metatables. The program either returns a policy table, or a policy
 * whose hooks (should_retry, next_delay, fallback, health_probe,
 * on_transition) are made of the same shapes: the harness then calls each
 * hook several times, so shapes that keep state in upvalues across calls
 * are exercised too.
 *
 * The input is read one byte per choice; once it runs out every choice is
 * 0 (the shortest alternative), so every input gives a program. The first
 * choice picks the mode (policy, hooks, both).
 *
 * To see the program an input makes (for a crash-, timeout- or oom- file):
 *   MNEMO_FUZZ_PRINT=1 build/fuzz/fuzz_policy_shapes FILE
 * prints it on stderr before it runs; fuzz_policy's abort messages print it
 * too. A finding is kept as that program (minimised by hand) in
 * tests/corpus/policy/, where fuzz_policy and test_corpus replay it. */
#define FUZZ_POLICY_SHAPES
#include "fuzz_policy.c"

#include <stdarg.h>

#define MAX_SOURCE 65536
#define MAX_DEPTH 4
#define MAX_STMTS 48

typedef struct gen {
  const uint8_t *in;
  size_t left;
  char *out;
  size_t len;
  int stmts;  /* statements emitted */
  int loops;  /* enclosing loops (for break) */
  int in_fn;  /* inside a function body (for return) */
  int locals; /* `local` names made, for fresh names */
} gen_t;

static char gen_buf[MAX_SOURCE + 1];

/* The next choice in [0, n). */
static unsigned pick(gen_t *g, unsigned n) {
  if (g->left == 0 || n <= 1)
    return 0;
  g->left--;
  return *g->in++ % n;
}

static void emit(gen_t *g, const char *text) {
  size_t n = strlen(text);
  if (g->len + n > MAX_SOURCE)
    n = MAX_SOURCE - g->len;
  memcpy(g->out + g->len, text, n);
  g->len += n;
}

static void emitf(gen_t *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void emitf(gen_t *g, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  emit(g, tmp);
}

static const char *choose(gen_t *g, const char *const *list, unsigned n) {
  return list[pick(g, n)];
}
#define CHOOSE(g, list) choose(g, list, sizeof(list) / sizeof(list[0]))

/* Counts: small, huge, infinite, odd. */
static const char *const counts[] = {
    "3",    "100",   "1e4",       "1e6", "2^24",    "2^31 - 1", "2^31",
    "2^53", "1e300", "math.huge", "0/0", "-1",      "1e9",      "n",
    "#s",   "#t",    "2^30",      "6e7", "-(2^31)", "2^32 + 1",
};

static void gen_count(gen_t *g) {
  emit(g, CHOOSE(g, counts));
}

/* A pattern item: a class with an optional quantifier, or a special. */
static const char *const pattern_atoms[] = {
    "a",  ".",  "%a", "%d", "%s",   "%w",   "[a-z]",  "[^b]",   "[%a%d]",
    "b",  "x",  "%%", "%z", "[]]",  "[^]]", "%.",     "(",      ")",
    "()", "%1", "%2", "%0", "%b()", "%bab", "%f[%w]", "%f[^a]", "^",
    "$",  "[a", "%",  "%f", "%b",   "[",    "[%",     "%g",     "%x",
    "%l", "%u", "%p", "%c", "\\0",  "-",    "+",      "*",
};
static const char *const quantifiers[] = {"", "", "*", "-", "+", "?"};

static void gen_pattern(gen_t *g) {
  unsigned suffix = pick(g, 6), n = pick(g, 12), i;
  emit(g, suffix == 1 ? "('" : "'");
  if (pick(g, 4) == 0)
    emit(g, "^");
  for (i = 0; i < n; i++) {
    emit(g, CHOOSE(g, pattern_atoms));
    emit(g, CHOOSE(g, quantifiers));
  }
  emit(g, "'");
  if (suffix == 1)
    emitf(g, "):rep(%u)", 1 + pick(g, 16));
  else if (suffix == 2)
    emit(g, " .. 'b'");
}

static const char *const subjects[] = {
    "s",
    "('a'):rep(30000)",
    "('a'):rep(30000) .. 'b'",
    "('ab'):rep(5000)",
    "('('):rep(3000) .. (')'):rep(3000)",
    "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaab'",
    "''",
    "'x'",
    "tostring(n)",
    "('a b c d '):rep(2000)",
    "string.rep('a', 1e5, 'b')",
    "table.concat(t, ',')",
    "('\\0a'):rep(1000)",
};

static void gen_subject(gen_t *g) {
  emit(g, CHOOSE(g, subjects));
}

static void gen_block(gen_t *g, int depth);

/* A function value: a body of shapes, maybe returning what it is given. */
static void gen_function(gen_t *g, int depth, const char *params,
                         const char *ret) {
  int in_fn = g->in_fn, loops = g->loops;
  emitf(g, "function(%s) ", params);
  g->in_fn = 1;
  g->loops = 0;
  gen_block(g, depth + 1);
  g->in_fn = in_fn;
  g->loops = loops;
  if (ret != NULL)
    emitf(g, " return %s", ret);
  emit(g, " end");
}

static const char *const replacements[] = {
    "'%0%0'",
    "'%1'",
    "'x'",
    "''",
    "'%2%1'",
    "'%'",
    "'%%'",
    "t",
    "u",
    "{ a = 'yy', x = s }",
    "1",
    "{}",
    "s",
    "'%9'",
    "setmetatable({}, { __index = function() while true do end end })",
};

static void gen_replacement(gen_t *g, int depth) {
  if (pick(g, 8) == 0) {
    gen_function(g, depth, "c", "c");
    return;
  }
  emit(g, CHOOSE(g, replacements));
}

/* One call of a pattern function. */
static void gen_pattern_call(gen_t *g, int depth) {
  switch (pick(g, 6)) {
  case 0:
    emit(g, "n = string.find(");
    gen_subject(g);
    emit(g, ", ");
    gen_pattern(g);
    if (pick(g, 3) == 0) {
      emit(g, ", ");
      gen_count(g);
      if (pick(g, 2))
        emit(g, ", true");
    }
    emit(g, ") or 0");
    break;
  case 1:
    emit(g, "u.m = string.match(");
    gen_subject(g);
    emit(g, ", ");
    gen_pattern(g);
    emit(g, ")");
    break;
  case 2:
    emit(g, "for a, b in (");
    gen_subject(g);
    emit(g, "):gmatch(");
    gen_pattern(g);
    emit(g, ") do ");
    g->loops++;
    gen_block(g, depth + 1);
    g->loops--;
    emit(g, " end");
    break;
  case 3:
    emit(g, "s = (");
    gen_subject(g);
    emit(g, "):gsub(");
    gen_pattern(g);
    emit(g, ", ");
    gen_replacement(g, depth);
    if (pick(g, 3) == 0) {
      emit(g, ", ");
      gen_count(g);
    }
    emit(g, ")");
    break;
  case 4:
    emit(g, "s = s:gsub(");
    gen_pattern(g);
    emit(g, ", ");
    gen_replacement(g, depth);
    emit(g, ")");
    break;
  default:
    emit(g, "u.f = { (");
    gen_subject(g);
    emit(g, "):find(");
    gen_pattern(g);
    emit(g, ") }");
    break;
  }
}

/* String growth. */
static const char *const growths[] = {
    "s = s .. s",
    "s = s .. s .. s .. s",
    "s = string.format('%s%s', s, s)",
    "s = string.format('%-99s%s', s, s)",
    "s = table.concat({ s, s, s })",
    "s = table.concat(t, s)",
    "s = s:rep(2)",
    "s = s:rep(3, s)",
    "s = (s:gsub('.', '%0%0'))",
    "s = (s:gsub('', s))",
    "s = string.format('%q', s)",
    "s = s:upper():lower():reverse()",
    "s = tostring(n) .. s",
};

static void gen_growth(gen_t *g) {
  switch (pick(g, 3)) {
  case 0:
    emit(g, "s = string.rep(s, ");
    gen_count(g);
    if (pick(g, 2)) {
      emit(g, ", ");
      emit(g, pick(g, 2) ? "s" : "'xy'");
    }
    emit(g, ")");
    break;
  default:
    emit(g, CHOOSE(g, growths));
    break;
  }
}

/* Table growth. */
static const char *const table_growths[] = {
    "t[#t + 1] = s",
    "t[#t + 1] = { t }",
    "t = { t, t }",
    "t[#t + 1] = s .. #t",
    "table.insert(t, s)",
    "table.insert(t, 1, #t)",
    "t = { unpack(t) }",
    "t[n] = t",
    "u[#u + 1] = { s, t, u }",
    "t[s] = #t",
    "rawset(t, #t + 1, {})",
    "t = { s:byte(1, -1) }",
};

static void gen_table_growth(gen_t *g) {
  if (pick(g, 3) == 0) {
    emit(g, "for i = 1, ");
    gen_count(g);
    emit(g, " do ");
    emit(g, CHOOSE(g, table_growths));
    emit(g, " end");
    return;
  }
  emit(g, CHOOSE(g, table_growths));
}

/* Metamethods: the event, what triggers it. */
static const struct {
  const char *event, *params, *body, *trigger;
} metamethods[] = {
    {"__index", "a, k", "return a[k]", "n = #tostring(u.x)"},
    {"__newindex", "a, k, v", "a[k] = v", "u.y = 1"},
    {"__tostring", "a", "return tostring(a)", "s = tostring(u)"},
    {"__tostring", "a", "return string.format('%s', a)",
     "s = string.format('%s', u)"},
    {"__concat", "a, b", "return a .. b", "s = u .. 'x'"},
    {"__lt", "a, b", "return a < b", "n = (u < u) and 1 or 0"},
    {"__le", "a, b", "return a <= b", "n = (u <= u) and 1 or 0"},
    {"__eq", "a, b", "return a == b",
     "n = (u == setmetatable({}, mt)) and 1 or 0"},
    {"__call", "a, ...", "return a(...)", "u()"},
    {"__unm", "a", "return -a", "u.z = -u"},
    {"__add", "a, b", "return a + b", "u.z = u + 1"},
    {"__index", "a, k", "return string.rep(k, 2^20)", "s = u[s]"},
    {"__tostring", "a", "return a", "s = tostring(u)"},
};

static void gen_metamethod(gen_t *g, int depth) {
  unsigned m = pick(g, sizeof(metamethods) / sizeof(metamethods[0]));
  int in_fn = g->in_fn, loops = g->loops;
  emitf(g, "mt.%s = function(%s) ", metamethods[m].event,
        metamethods[m].params);
  g->in_fn = 1;
  g->loops = 0;
  gen_block(g, depth + 1);
  g->in_fn = in_fn;
  g->loops = loops;
  emitf(g, " %s end setmetatable(u, mt) %s", metamethods[m].body,
        metamethods[m].trigger);
}

static const char *const sort_lists[] = {
    "{ 3, 1, 2, 5, 4, 9, 8, 7, 6, 0 }",
    "t",
    "{ s:byte(1, -1) }",
    "{ u, u, u, u }",
};

static void gen_sort(gen_t *g, int depth) {
  emit(g, "table.sort(");
  emit(g, CHOOSE(g, sort_lists));
  switch (pick(g, 4)) {
  case 0:
    emit(g, ")");
    return;
  case 1:
    emit(g, ", function(a, b) return true end)");
    return;
  case 2:
    emit(g, ", ");
    gen_function(g, depth, "a, b", "a < b");
    emit(g, ")");
    return;
  default:
    emit(g, ", function(a, b) table.sort({ 2, 1, 3 }, function(x, y) ");
    gen_block(g, depth + 1);
    emit(g, " return x > y end) return a > b end)");
    return;
  }
}

/* Handlers for xpcall: loop, raise, C functions, nothing. */
static const char *const handlers[] = {
    "error",
    "function(e) error(e, 0) end",
    "function(e) while true do end end",
    "function(e) return xpcall(error, error) end",
    "pcall",
    "tostring",
    "string.rep",
    "function(e) s = s .. s return e end",
    "function(e) return setmetatable({}, mt) end",
    "print",
    "nil",
};

static void gen_protected(gen_t *g, int depth) {
  if (pick(g, 2) == 0) {
    emit(g, "pcall(");
    gen_function(g, depth, "...", NULL);
    emit(g, ")");
    return;
  }
  emit(g, "xpcall(");
  gen_function(g, depth, "", NULL);
  emit(g, ", ");
  if (pick(g, 3) == 0)
    gen_function(g, depth, "e", "e");
  else
    emit(g, CHOOSE(g, handlers));
  emit(g, ")");
}

static void gen_recursion(gen_t *g, int depth) {
  int in_fn = g->in_fn, loops = g->loops;
  unsigned kind = pick(g, 4);
  g->locals++;
  emitf(g, "local function r%d(x) ", g->locals);
  g->in_fn = 1;
  g->loops = 0;
  gen_block(g, depth + 1);
  g->in_fn = in_fn;
  g->loops = loops;
  switch (kind) {
  case 0:
    emitf(g, " return r%d(x + 1) end r%d(1)", g->locals, g->locals);
    break;
  case 1:
    emitf(g, " return 1 + r%d(x) end r%d(1)", g->locals, g->locals);
    break;
  case 2:
    emitf(g, " return pcall(r%d, x) end r%d(1)", g->locals, g->locals);
    break;
  default:
    emitf(g,
          " return select('#', r%d(x, x, x, x, x, x, x, x)) end "
          "r%d(1)",
          g->locals, g->locals);
    break;
  }
}

/* The library tables rewritten: the policy's own copies (and the shared
 * string metatable, which must stay out of reach). */
static const char *const poisons[] = {
    "setmetatable(string, mt)",
    "rawset(string, 'rep', function(...) while true do end end)",
    "rawset(math, 'min', nil)",
    "string.find = string.gsub",
    "mt.__index = string setmetatable(u, mt)",
    "n = getmetatable('') and 1 or 0",
    "u.g = getmetatable(string)",
    "rawset(table, 'concat', string.rep)",
    "setmetatable(math, { __index = function(a, k) return a[k] end })",
    "u.mt = getmetatable(setmetatable({}, { __metatable = mt }))",
    "string.format = function(...) return s .. s end",
    "tostring = function(x) return s end",
    "pcall = error",
    "error = pcall",
    "setmetatable = rawset",
    "table.sort = table.insert",
    "u.s = ('').rep",
    "n = #tostring(('x').len)",
};

static const char *const error_values[] = {
    "setmetatable({}, mt)",
    "s",
    "nil",
    "u",
    "t",
    "0/0",
    "function() end",
    "setmetatable({}, { __tostring = function() return s end })",
    "setmetatable({}, { __index = function(a, k) return a[k] end })",
};

static void gen_error(gen_t *g, int depth) {
  unsigned kind = pick(g, 3);
  if (kind == 0) {
    int in_fn = g->in_fn, loops = g->loops;
    emit(g, "mt.__tostring = function(a) ");
    g->in_fn = 1;
    g->loops = 0;
    gen_block(g, depth + 1);
    g->in_fn = in_fn;
    g->loops = loops;
    emit(g, " return 'e' end ");
  }
  emitf(g, "error(%s, %u)", CHOOSE(g, error_values), pick(g, 3));
}

static const char *const simple[] = {
    "n = n + 1",
    "s = s .. 'x'",
    "u.x = n",
    "collectgarbage()",
    "n = #s",
    "u.k = next(t)",
    "n = select('#', unpack(t))",
    "u.t = { pcall(error) }",
};

/* One statement. */
static void gen_stmt(gen_t *g, int depth) {
  unsigned kind;
  if (g->stmts++ >= MAX_STMTS || g->len >= MAX_SOURCE - 1024) {
    emit(g, "n = n + 1");
    return;
  }
  kind = pick(g, depth >= MAX_DEPTH ? 6 : 17);
  switch (kind) {
  case 0:
    emit(g, CHOOSE(g, simple));
    break;
  case 1:
    gen_growth(g);
    break;
  case 2:
    gen_table_growth(g);
    break;
  case 3:
    gen_pattern_call(g, depth);
    break;
  case 4:
    emit(g, CHOOSE(g, poisons));
    break;
  case 5:
    if (g->loops > 0 && pick(g, 2))
      emit(g, "break");
    else if (g->in_fn && pick(g, 2))
      emit(g, "do return s end");
    else
      emit(g, "n = n * 2");
    break;
  case 6:
    emit(g, "while true do ");
    g->loops++;
    gen_block(g, depth + 1);
    g->loops--;
    emit(g, " end");
    break;
  case 7:
    if (pick(g, 2)) {
      emit(g, "for i = 1, ");
      gen_count(g);
      emit(g, pick(g, 3) ? " do " : ", 0.5 do ");
    } else {
      emit(g, "for i = -1, -(");
      gen_count(g);
      emit(g, "), -1 do ");
    }
    g->loops++;
    gen_block(g, depth + 1);
    g->loops--;
    emit(g, " end");
    break;
  case 8:
    emit(g, "repeat ");
    g->loops++;
    gen_block(g, depth + 1);
    g->loops--;
    emit(g, pick(g, 2) ? " until false" : " until n > 1e300");
    break;
  case 9:
  case 10:
    gen_protected(g, depth);
    break;
  case 11:
    gen_recursion(g, depth);
    break;
  case 12:
    gen_metamethod(g, depth);
    break;
  case 13:
    gen_sort(g, depth);
    break;
  case 14:
    gen_error(g, depth);
    break;
  case 15:
    emit(g, "for k, v in pairs(");
    emit(g, pick(g, 2) ? "t" : "string");
    emit(g, ") do ");
    g->loops++;
    gen_block(g, depth + 1);
    g->loops--;
    emit(g, " end");
    break;
  default:
    emit(g, "do local s = s ");
    gen_block(g, depth + 1);
    emit(g, " end");
    break;
  }
}

static void gen_block(gen_t *g, int depth) {
  unsigned n = pick(g, 3), i;
  for (i = 0; i < n; i++) {
    if (i > 0)
      emit(g, " ");
    gen_stmt(g, depth);
  }
}

/* What a hook returns after its shapes. */
static const char *const hook_results[] = {
    "true",
    "false",
    "nil",
    "0.01",
    "0/0",
    "-1",
    "math.huge",
    "s",
    "t",
    "u",
    "{}",
    "{ t = t }",
    "n",
    "r",
    "setmetatable({}, mt)",
    "function() end",
    "{ { { { { {} } } } } }",
};

static void gen_hook(gen_t *g, const char *key, const char *params) {
  emitf(g, "      %s = function(%s) ", key, params);
  g->in_fn = 1;
  g->loops = 0;
  gen_block(g, 1);
  g->in_fn = 0;
  emitf(g, " return %s end,\n", CHOOSE(g, hook_results));
}

static const char *const results[] = {
    "{ timeouts = { x = 1 } }",
    "{}",
    "u",
    "t",
    "{ timeouts = { x = n } }",
    "{ s }",
    "{ retry = { r = { attempts = n } } }",
    "setmetatable({}, mt)",
    "s",
    "{ operations = { o = { timeout = 1, fallback = r } } }",
    "{ include = 'base.lua' }",
    "{ sandbox = { budget = 1e8, hook_budget = 1e7 } }",
};

/* The whole program for the input. */
static size_t gen_program(const uint8_t *data, size_t size) {
  gen_t g = {0};
  unsigned mode;
  g.in = data;
  g.left = size;
  g.out = gen_buf;
  mode = pick(&g, 3); /* 0: policy, 1: hooks, 2: both */
  emit(&g, "local s, t, u, n, mt, r = 'x', {}, {}, 0, {}, nil\n");
  if (mode != 1) {
    gen_block(&g, 0);
    emit(&g, "\n");
  }
  if (mode == 0) {
    emitf(&g, "return %s\n", CHOOSE(&g, results));
  } else {
    emit(&g, "return {\n"
             "  retry = { r = { attempts = 3, base = 0.01, max = 0.02, "
             "jitter = 'none', on = { 'connection' } } },\n"
             "  breakers = { b = { failure_threshold = 1,\n");
    gen_hook(&g, "health_probe", "");
    gen_hook(&g, "on_transition", "name, from, to");
    emit(&g, "  } },\n"
             "  operations = { x = { retry = 'r', idempotent = true, "
             "breaker = 'b',\n");
    gen_hook(&g, "should_retry", "err, attempt");
    gen_hook(&g, "next_delay", "attempt, err, proposed");
    gen_hook(&g, "fallback", "err, ctx");
    emit(&g, "  } },\n}\n");
  }
  gen_buf[g.len] = '\0';
  return g.len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t len = gen_program(data, size);
  static int print = -1;
  if (print < 0)
    print = getenv("MNEMO_FUZZ_PRINT") != NULL;
  if (print)
    fprintf(stderr, "---- program (%zu bytes)\n%s----\n", len, gen_buf);
  return fuzz_policy_one((const uint8_t *)gen_buf, len);
}
