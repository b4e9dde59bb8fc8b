/* The hashing embedder and cosine similarity for Lua. Vectors travel as
 * PostgreSQL array literals ("{0.1,-0.2,...}"), the form real[] columns
 * take and give back, so nothing converts them twice. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed.h"
#include "text.h"
#include "lua_mnemo.h"

/* Writes v with 7 decimals, trailing zeros trimmed ("0", "-0.0421337").
 * Components of a unit vector lie in [-1, 1]: fixed point by integer
 * arithmetic is exact enough (1e-7) and about ten times faster than
 * snprintf("%.6g"), which took a quarter of the indexer's loop thread.
 * Anything else goes through snprintf. Returns the length. */
static int format_component(char *out, size_t cap, float v) {
  long long scaled;
  int len = 0, digits, i;
  char frac[7];
  if (!(v > -1.0f && v < 1.0f))
    return snprintf(out, cap, "%.6g", (double)v);
  scaled = llroundf(v * 1e7f);
  if (scaled == 0) {
    out[0] = '0';
    return 1;
  }
  if (scaled < 0) {
    out[len++] = '-';
    scaled = -scaled;
  }
  if (scaled >= 10000000) { /* rounded up to 1 */
    out[len++] = '1';
    return len;
  }
  for (i = 6; i >= 0; i--) {
    frac[i] = (char)('0' + scaled % 10);
    scaled /= 10;
  }
  for (digits = 7; frac[digits - 1] == '0'; digits--)
    ;
  out[len++] = '0';
  out[len++] = '.';
  memcpy(out + len, frac, (size_t)digits);
  return len + digits;
}

/* Pushes v as a PostgreSQL array literal. */
static void push_literal(lua_State *L, const float *v, int dims) {
  luaL_Buffer b;
  char num[32];
  int i;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, '{');
  for (i = 0; i < dims; i++) {
    if (i)
      luaL_addchar(&b, ',');
    luaL_addlstring(&b, num, (size_t)format_component(num, sizeof(num), v[i]));
  }
  luaL_addchar(&b, '}');
  luaL_pushresult(&b);
}

/* embed_hashing(text, dims) -> "{...}" */
static int l_embed_hashing(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  int dims = (int)luaL_optnumber(L, 2, MNEMO_EMBED_DEFAULT_DIMS);
  float *v;
  if (dims < MNEMO_EMBED_MIN_DIMS || dims > MNEMO_EMBED_MAX_DIMS)
    return luaL_argerror(L, 2, "dims out of range (16..4096)");
  v = lua_newuserdata(L, sizeof(float) * (size_t)dims); /* scratch, GC'd */
  mnemo_embed_hashing(text, len, v, dims);
  push_literal(L, v, dims);
  return 1;
}

/* Parses "{a,b,...}" into at most max floats; returns the count or -1. */
static int parse_literal(const char *s, float *out, int max) {
  int n = 0;
  char *end;
  if (*s++ != '{')
    return -1;
  while (*s != '}' && *s != '\0') {
    double d = strtod(s, &end);
    if (end == s || n >= max)
      return -1;
    out[n++] = (float)d;
    s = end;
    if (*s == ',')
      s++;
  }
  return *s == '}' ? n : -1;
}

/* cosine(literal_a, literal_b) -> number, or nil if they do not parse or
 * have different lengths. */
static int l_cosine(lua_State *L) {
  const char *a = luaL_checkstring(L, 1), *b = luaL_checkstring(L, 2);
  float *va = lua_newuserdata(L, sizeof(float) * MNEMO_EMBED_MAX_DIMS * 2);
  float *vb = va + MNEMO_EMBED_MAX_DIMS;
  int na = parse_literal(a, va, MNEMO_EMBED_MAX_DIMS);
  int nb = parse_literal(b, vb, MNEMO_EMBED_MAX_DIMS);
  if (na <= 0 || na != nb)
    return 0;
  lua_pushnumber(L, mnemo_embed_cosine(va, vb, na));
  return 1;
}

/* utf8_valid(s) -> true | false, offset_of_first_bad_byte (1-based) */
static int l_utf8_valid(lua_State *L) {
  size_t len, off = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  if (mnemo_utf8_valid(s, len, &off)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_pushnumber(L, (double)off + 1);
  return 2;
}

/* looks_binary(s) -> bool (a NUL in the first 8000 bytes, like git) */
static int l_looks_binary(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, mnemo_looks_binary(s, len, 8000));
  return 1;
}

/* hash64(s) -> 16 hex digits */
static int l_hash64(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char out[17];
  snprintf(out, sizeof(out), "%016llx",
           (unsigned long long)mnemo_hash64(s, len));
  lua_pushstring(L, out);
  return 1;
}

void mnemo_open_embed(lua_State *L) {
  lua_pushcfunction(L, l_utf8_valid);
  lua_setfield(L, -2, "utf8_valid");
  lua_pushcfunction(L, l_looks_binary);
  lua_setfield(L, -2, "looks_binary");
  lua_pushcfunction(L, l_hash64);
  lua_setfield(L, -2, "hash64");
  lua_pushcfunction(L, l_embed_hashing);
  lua_setfield(L, -2, "embed_hashing");
  lua_pushcfunction(L, l_cosine);
  lua_setfield(L, -2, "cosine");
}
