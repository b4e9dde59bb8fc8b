/* pattern_find, pattern_match, pattern_gmatch, pattern_gsub: LuaJIT's
 * string.find/match/gmatch/gsub, argument handling and results included,
 * on the step-bounded matcher of pattern.h, for the sandbox's string table.
 * Each call takes what is left of the sandbox run's budget, charges what
 * it used before returning or raising (a call that raises has still spent
 * its CPU), and raises the budget error when the matcher ran out.
 *
 * Unlike LuaJIT's gsub:
 *   - a function replacement is refused: calling Lua from inside gsub is
 *     what lets a policy recurse on the C stack until it overflows;
 *   - a table replacement is read with rawget, for the same reason (an
 *     __index metamethod is a call into Lua). */
#include <lauxlib.h>
#include <string.h>

#include "lua_mnemo.h"
#include "lua_sandbox.h"
#include "pattern.h"

/* A gsub replacement costs one step per this many bytes it expands to. */
#define REPLACEMENT_BYTES_PER_STEP 16

typedef struct budget {
  uint64_t left;  /* at the start of the call */
  uint64_t steps; /* left now */
  int settled;
} budget_t;

static void budget_start(lua_State *L, budget_t *b) {
  b->left = b->steps = mnemo_sandbox_steps_left(L);
  b->settled = 0;
}

/* Charges the steps used so far to the sandbox run (may raise its budget
 * error). Once per call. */
static void budget_settle(lua_State *L, budget_t *b) {
  if (b->settled)
    return;
  b->settled = 1;
  mnemo_sandbox_charge(L, b->left - b->steps);
}

static int raise_budget(lua_State *L, budget_t *b) {
  b->settled = 1;
  /* One step more than the run had: the sandbox raises its budget error. */
  mnemo_sandbox_charge(L, b->left == UINT64_MAX ? b->left : b->left + 1);
  return luaL_error(L, "pattern step budget exhausted");
}

/* Raises Lua's message for a matcher error, after charging. */
static int raise_match_error(lua_State *L, budget_t *b, int rc,
                             const mnemo_pattern_match_t *m) {
  if (rc == MNEMO_PATTERN_EBUDGET)
    return raise_budget(L, b);
  budget_settle(L, b);
  return luaL_error(L, "%s", m->error);
}

static int raise_message(lua_State *L, budget_t *b, const char *msg) {
  budget_settle(L, b);
  return luaL_error(L, "%s", msg);
}

/* LuaJIT's matcher stops at a pattern's first NUL (its strings end in
 * one); pattern.c takes the whole length, so cut the pattern there. */
static size_t pattern_len(const char *p, size_t len) {
  const char *nul = memchr(p, '\0', len);
  return nul ? (size_t)(nul - p) : len;
}

/* An optional int argument as LuaJIT's string library converts it:
 * truncated, and INT32_MIN for NaN or out of the int32 range (what its
 * conversion gives on x86-64). */
static int32_t opt_int32(lua_State *L, int idx, int32_t def) {
  lua_Number n;
  if (lua_isnoneornil(L, idx))
    return def;
  n = luaL_checknumber(L, idx);
  if (n > -2147483649.0 && n < 2147483648.0)
    return (int32_t)n;
  return INT32_MIN;
}

/* Capture i of the match (the whole match if i == 0 and there is no
 * capture), pushed as a string or a position. */
static void push_capture(lua_State *L, budget_t *b, const char *s,
                         const mnemo_pattern_match_t *m, int i) {
  const mnemo_pattern_capture_t *c;
  if (i >= m->ncaptures) {
    if (i != 0)
      raise_message(L, b, MNEMO_PATTERN_MSG_CAPTURE_INDEX);
    lua_pushlstring(L, s + m->start, m->end - m->start);
    return;
  }
  c = &m->captures[i];
  if (c->kind == MNEMO_PATTERN_CAPTURE_UNFINISHED)
    raise_message(L, b, MNEMO_PATTERN_MSG_UNFINISHED);
  if (c->kind == MNEMO_PATTERN_CAPTURE_POSITION)
    lua_pushinteger(L, (lua_Integer)c->start + 1);
  else
    lua_pushlstring(L, s + c->start, c->len);
}

/* All captures; with `whole`, the whole match when there is none. */
static int push_captures(lua_State *L, budget_t *b, const char *s,
                         const mnemo_pattern_match_t *m, int whole) {
  int n = (m->ncaptures == 0 && whole) ? 1 : m->ncaptures, i;
  luaL_checkstack(L, n, "too many captures");
  for (i = 0; i < n; i++)
    push_capture(L, b, s, m, i);
  return n;
}

static int find_aux(lua_State *L, int find) {
  size_t slen, plen, start, pos;
  const char *s = luaL_checklstring(L, 1, &slen);
  const char *p = luaL_checklstring(L, 2, &plen);
  int64_t init = opt_int32(L, 3, 1);
  mnemo_pattern_match_t m;
  budget_t b;
  int rc;

  init = init < 0 ? init + (int64_t)slen : init - 1;
  start = init < 0 ? 0 : (size_t)init > slen ? slen : (size_t)init;
  budget_start(L, &b);
  if (find && (lua_toboolean(L, 4) || !mnemo_pattern_has_specials(p, plen))) {
    rc = mnemo_pattern_find_plain(p, plen, s, slen, start, &b.steps, &pos);
    if (rc < 0)
      return raise_budget(L, &b);
    budget_settle(L, &b);
    if (rc == 0)
      goto none;
    lua_pushinteger(L, (lua_Integer)pos + 1);
    lua_pushinteger(L, (lua_Integer)(pos + plen));
    return 2;
  }
  rc = mnemo_pattern_find(p, pattern_len(p, plen), s, slen, start, 0, &b.steps,
                          &m);
  if (rc < 0)
    return raise_match_error(L, &b, rc, &m);
  budget_settle(L, &b);
  if (rc == 0)
    goto none;
  if (!find)
    return push_captures(L, &b, s, &m, 1);
  lua_pushinteger(L, (lua_Integer)m.start + 1);
  lua_pushinteger(L, (lua_Integer)m.end);
  return push_captures(L, &b, s, &m, 0) + 2;
none:
  lua_pushnil(L);
  return 1;
}

/* pattern_find(s, pattern [, init [, plain]]): string.find. */
static int l_find(lua_State *L) {
  return find_aux(L, 1);
}

/* pattern_match(s, pattern [, init]): string.match. */
static int l_match(lua_State *L) {
  return find_aux(L, 0);
}

/* The iterator: upvalues subject, pattern, next offset (past the end once
 * nothing more matches). A leading '^' is literal, as in Lua 5.1. */
static int gmatch_next(lua_State *L) {
  size_t slen, plen, pos, next;
  const char *s = lua_tolstring(L, lua_upvalueindex(1), &slen);
  const char *p = lua_tolstring(L, lua_upvalueindex(2), &plen);
  mnemo_pattern_match_t m;
  budget_t b;
  int rc;

  pos = (size_t)lua_tonumber(L, lua_upvalueindex(3));
  if (pos > slen)
    return 0;
  budget_start(L, &b);
  rc = mnemo_pattern_find(p, pattern_len(p, plen), s, slen, pos,
                          MNEMO_PATTERN_CARET_LITERAL, &b.steps, &m);
  if (rc < 0)
    return raise_match_error(L, &b, rc, &m);
  budget_settle(L, &b);
  /* After an empty match, the next search starts one byte further. */
  next = rc == 0 ? slen + 1 : m.end == m.start ? m.end + 1 : m.end;
  lua_pushnumber(L, (lua_Number)next);
  lua_replace(L, lua_upvalueindex(3));
  return rc == 0 ? 0 : push_captures(L, &b, s, &m, 1);
}

/* pattern_gmatch(s, pattern): string.gmatch. */
static int l_gmatch(lua_State *L) {
  luaL_checkstring(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  lua_pushnumber(L, 0);
  lua_pushcclosure(L, gmatch_next, 3);
  return 1;
}

typedef struct gsub_state {
  lua_State *L;
  budget_t *b;
  const char *src;
  luaL_Buffer buf;
} gsub_state_t;

/* Takes n steps for output work; raises the budget error if there are not
 * that many left. */
static void spend(gsub_state_t *g, uint64_t n) {
  if (g->b->steps < n) {
    g->b->steps = 0;
    raise_budget(g->L, g->b);
  }
  g->b->steps -= n;
}

/* A string replacement: %0-%9 are captures (%0 the whole match), % before
 * anything else that byte (and a final % a NUL, as LuaJIT reads the
 * string's terminator). */
static void add_string(gsub_state_t *g, const mnemo_pattern_match_t *m) {
  lua_State *L = g->L;
  size_t len, i;
  const char *r = lua_tolstring(L, 3, &len);
  spend(g, 1 + len / REPLACEMENT_BYTES_PER_STEP);
  for (i = 0; i < len; i++) {
    char c = r[i];
    if (c != '%') {
      luaL_addchar(&g->buf, c);
      continue;
    }
    c = ++i < len ? r[i] : '\0';
    if (c < '0' || c > '9') {
      luaL_addchar(&g->buf, c);
    } else if (c == '0') {
      luaL_addlstring(&g->buf, g->src + m->start, m->end - m->start);
    } else {
      push_capture(L, g->b, g->src, m, c - '1');
      luaL_addvalue(&g->buf);
    }
  }
}

/* A table replacement: t[first capture or whole match], read raw; nil or
 * false keeps the match. */
static void add_from_table(gsub_state_t *g, const mnemo_pattern_match_t *m) {
  lua_State *L = g->L;
  size_t len;
  push_capture(L, g->b, g->src, m, 0);
  lua_rawget(L, 3);
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    lua_pushlstring(L, g->src + m->start, m->end - m->start);
  } else if (!lua_isstring(L, -1)) {
    budget_settle(L, g->b);
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  }
  lua_tolstring(L, -1, &len);
  spend(g, 1 + len / REPLACEMENT_BYTES_PER_STEP);
  luaL_addvalue(&g->buf);
}

/* pattern_gsub(s, pattern, repl [, n]): string.gsub, with repl a string,
 * a number or a table. */
static int l_gsub(lua_State *L) {
  size_t slen, plen, pos = 0;
  const char *s = luaL_checklstring(L, 1, &slen);
  const char *p = luaL_checklstring(L, 2, &plen);
  int repl = lua_type(L, 3);
  int max_n = luaL_optint(L, 4, (int)(slen + 1)), n = 0, anchor, rc;
  mnemo_pattern_match_t m;
  gsub_state_t g;
  budget_t b;

  if (repl != LUA_TNUMBER && repl != LUA_TSTRING && repl != LUA_TTABLE &&
      repl != LUA_TFUNCTION)
    return luaL_argerror(L, 3, "string/function/table expected");
  if (repl == LUA_TFUNCTION)
    return luaL_error(L, "gsub: a function as replacement is not allowed in "
                         "a policy (use a string or a table)");
  plen = pattern_len(p, plen);
  anchor = plen > 0 && p[0] == '^';
  g.L = L;
  g.b = &b;
  g.src = s;
  budget_start(L, &b);
  luaL_buffinit(L, &g.buf);
  while (n < max_n) {
    rc = mnemo_pattern_find(p, plen, s, slen, pos, 0, &b.steps, &m);
    if (rc < 0)
      return raise_match_error(L, &b, rc, &m);
    if (rc == 0)
      break;
    luaL_addlstring(&g.buf, s + pos, m.start - pos);
    n++;
    if (repl == LUA_TTABLE)
      add_from_table(&g, &m);
    else
      add_string(&g, &m);
    if (m.end > m.start) {
      pos = m.end;
    } else if (m.start < slen) { /* an empty match: keep the next byte */
      luaL_addchar(&g.buf, s[m.start]);
      pos = m.start + 1;
    } else {
      pos = slen;
      break;
    }
    if (anchor)
      break;
  }
  luaL_addlstring(&g.buf, s + pos, slen - pos);
  budget_settle(L, &b);
  luaL_pushresult(&g.buf);
  lua_pushinteger(L, n);
  return 2;
}

void mnemo_open_pattern(lua_State *L) {
  static const luaL_Reg functions[] = {{"pattern_find", l_find},
                                       {"pattern_match", l_match},
                                       {"pattern_gmatch", l_gmatch},
                                       {"pattern_gsub", l_gsub},
                                       {NULL, NULL}};
  luaL_register(L, NULL, functions);
}
