/* Error classes for Lua, from the same tables the C code uses. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>

#include "error_class.h"
#include "lua_mnemo.h"

static int push_class(lua_State *L, mnemo_error_class_t c) {
  lua_pushstring(L, mnemo_error_class_name(c));
  return 1;
}

static int l_from_errno(lua_State *L) {
  return push_class(L,
                    mnemo_error_class_from_errno((int)luaL_checknumber(L, 1)));
}

static int l_from_sqlstate(lua_State *L) {
  return push_class(L, mnemo_error_class_from_sqlstate(luaL_checkstring(L, 1)));
}

static int l_from_http_status(lua_State *L) {
  return push_class(
      L, mnemo_error_class_from_http_status((int)luaL_checknumber(L, 1)));
}

static int l_from_redis(lua_State *L) {
  return push_class(L,
                    mnemo_error_class_from_redis((int)luaL_optnumber(L, 1, 0),
                                                 luaL_optstring(L, 2, NULL)));
}

/* hash(text) -> 8 hex digits (FNV-1a, 32 bit): tells two versions of a
 * policy file apart in status reports. Not for security. */
static int l_hash(lua_State *L) {
  size_t len, i;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
  uint32_t h = 2166136261u;
  char out[9];
  for (i = 0; i < len; i++) {
    h ^= s[i];
    h *= 16777619u;
  }
  snprintf(out, sizeof(out), "%08x", h);
  lua_pushstring(L, out);
  return 1;
}

void mnemo_open_errors(lua_State *L) {
  static const luaL_Reg functions[] = {
      {"class_from_errno", l_from_errno},
      {"class_from_sqlstate", l_from_sqlstate},
      {"class_from_http_status", l_from_http_status},
      {"class_from_redis", l_from_redis},
      {"hash", l_hash},
      {NULL, NULL}};
  luaL_register(L, NULL, functions);
}
