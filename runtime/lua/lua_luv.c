/* Living with luv on a shared loop.
 *
 * luv assumes every handle on its loop is its own (handle->data points at
 * a luv_handle_t). mnemo's own handles keep data == NULL, and this file
 * gives luv a `walk` that skips them, plus the host's "close every luv
 * handle while the Lua state is still alive" step for shutdown. */
#include "lua_luv.h"

#include <lauxlib.h>
#include <luv/luv.h>
#include <luv/lhandle.h>

static void collect_luv_handle(uv_handle_t *handle, void *arg) {
  lua_State *L = arg;
  luv_handle_t *data = handle->data;
  if (data == NULL) /* one of mnemo's */
    return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, data->ref);
  if (lua_isuserdata(L, -1))
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
  else
    lua_pop(L, 1);
}

/* Pushes a list of the userdata of every luv handle on the loop. Collected
 * first and called after, so a callback may close or open handles. */
static void push_luv_handles(lua_State *L, uv_loop_t *loop) {
  lua_newtable(L);
  uv_walk(loop, collect_luv_handle, L);
}

/* uv.walk(fn): like luv's, over luv's handles only. */
static int safe_walk(lua_State *L) {
  int i, n;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  push_luv_handles(L, luv_loop(L));
  n = (int)lua_objlen(L, -1);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, 1);
    lua_rawgeti(L, -2, i);
    lua_call(L, 1, 0);
  }
  return 0;
}

void mnemo_luv_patch(lua_State *L, int luv_index) {
  luv_index = luv_index < 0 ? lua_gettop(L) + luv_index + 1 : luv_index;
  lua_pushcfunction(L, safe_walk);
  lua_setfield(L, luv_index, "walk");
}

int mnemo_luv_open(lua_State *L) {
  luaopen_luv(L);
  mnemo_luv_patch(L, -1);
  return 1;
}

static int close_all(lua_State *L) {
  int i, n;
  push_luv_handles(L, luv_loop(L));
  n = (int)lua_objlen(L, -1);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_getfield(L, -1, "is_closing");
    lua_pushvalue(L, -2);
    lua_call(L, 1, 1);
    if (!lua_toboolean(L, -1)) {
      lua_getfield(L, -2, "close");
      lua_pushvalue(L, -3);
      lua_call(L, 1, 0);
    }
    lua_pop(L, 2);
  }
  return 0;
}

int mnemo_luv_close_all(lua_State *L) {
  lua_pushcfunction(L, close_all);
  if (lua_pcall(L, 0, 0, 0) != 0) {
    lua_pop(L, 1);
    return -1;
  }
  return 0;
}
