#include "lua_runtime.h"

#include <lauxlib.h>
#include <luv/luv.h>
#include <dlfcn.h>
#include <string.h>

#include "lua_luv.h"
#include "status.h"

/* The address of this variable is the runtime's registry key. */
static const char runtime_key = 'r';

const char *mnemo_rt_tostring(lua_State *L, int idx) {
  idx = idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
  if (luaL_callmeta(L, idx, "__tostring") && lua_isstring(L, -1))
    return lua_tostring(L, -1);
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
  case LUA_TNUMBER:
    lua_pushvalue(L, idx);
    lua_tostring(L, -1); /* converts numbers in place */
    break;
  case LUA_TNIL:
    lua_pushliteral(L, "nil");
    break;
  case LUA_TBOOLEAN:
    lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
    break;
  default:
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
    break;
  }
  return lua_tostring(L, -1);
}

int mnemo_rt_traceback(lua_State *L) {
  const char *msg = mnemo_rt_tostring(L, 1);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

void mnemo_rt_fail(mnemo_rt_t *rt, lua_State *L) {
  if (!rt->failed) {
    rt->failed = 1;
    rt->error_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    lua_pop(L, 1); /* the first error is the one worth reading */
  }
  if (rt->loop != NULL)
    uv_stop(rt->loop);
}

int mnemo_rt_take_error(mnemo_rt_t *rt, lua_State *L) {
  if (!rt->failed)
    return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->error_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, rt->error_ref);
  rt->error_ref = LUA_NOREF;
  rt->failed = 0;
  return 1;
}

int mnemo_rt_resume(mnemo_rt_t *rt, lua_State *co, int nargs) {
  int status = lua_resume(co, nargs);
  if (status == LUA_YIELD || status == 0) {
    lua_settop(co, 0);
    return status;
  }
  /* The coroutine is dead but its stack is intact: trace it from here. */
  luaL_traceback(rt->L, co, mnemo_rt_tostring(co, -1), 0);
  lua_settop(co, 0);
  mnemo_rt_fail(rt, rt->L);
  return status;
}

/* luv calls every callback through this, so an error in one is reported
 * with its traceback and ends the run, instead of luv's exit(-1). */
static int luv_callback_pcall(lua_State *L, int nargs, int nresults,
                              int flags) {
  int base = lua_gettop(L) - nargs; /* index of the function */
  int status;
  (void)flags;
  lua_pushcfunction(L, mnemo_rt_traceback);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  if (status == 0) {
    if (nresults == LUA_MULTRET)
      nresults = lua_gettop(L) - base + 1;
    return nresults;
  }
  mnemo_rt_fail(mnemo_rt_get(L), L);
  return -status;
}

const void *mnemo_lua_class(lua_State *L, const char *name,
                            const luaL_Reg *methods, lua_CFunction gc) {
  const void *mt;
  luaL_newmetatable(L, name);
  mt = lua_topointer(L, -1);
  if (methods != NULL) {
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
  }
  if (gc != NULL) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  return mt;
}

static int runtime_gc(lua_State *L) {
  mnemo_rt_close(lua_touserdata(L, 1));
  return 0;
}

void mnemo_rt_close(mnemo_rt_t *rt) {
  if (rt->closed)
    return;
  rt->closed = 1;
  mnemo_timers_close(&rt->timers);
  while (rt->n_at_close > 0)
    rt->at_close[--rt->n_at_close](rt);
}

int mnemo_rt_at_close(mnemo_rt_t *rt, void (*fn)(mnemo_rt_t *rt)) {
  if (rt->n_at_close >= (int)(sizeof(rt->at_close) / sizeof(*rt->at_close)))
    return MNEMO_ENOMEM;
  rt->at_close[rt->n_at_close++] = fn;
  return 0;
}

/* Returns luv's loop, loading luv first under plain luajit (luv then
 * creates and owns the loop), and gives luv's module the walk that skips
 * mnemo's handles. */
static uv_loop_t *shared_loop(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "luv");
  lua_call(L, 1, 1);
  if (lua_istable(L, -1))
    mnemo_luv_patch(L, -1);
  lua_pop(L, 1);
  return luv_loop(L);
}

/* Under plain luajit this code lives in mnemo_core.so, which lua_close
 * unloads before luv's loop finaliser runs the close callbacks that point
 * into it. Pinning the library (RTLD_NODELETE) keeps them valid. */
static void pin_this_library(void) {
  Dl_info info;
  if (dladdr((void *)&pin_this_library, &info) && info.dli_fname != NULL)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

mnemo_rt_t *mnemo_rt_get(lua_State *L) {
  mnemo_rt_t *rt;
  uv_loop_t *loop;
  int rc;

  lua_pushlightuserdata(L, (void *)&runtime_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (rt != NULL)
    return rt;

  pin_this_library();
  loop = shared_loop(L);
  if (loop == NULL)
    luaL_error(L, "mnemo: luv did not provide an event loop");

  rt = lua_newuserdata(L, sizeof(*rt));
  memset(rt, 0, sizeof(*rt));
  rt->loop = loop;
  rt->error_ref = LUA_NOREF;
  mnemo_clock_init(&rt->clock, loop);
  rc = mnemo_timers_init(&rt->timers, &rt->clock, loop);
  if (rc != 0) {
    rt->closed = 1;
    luaL_error(L, "mnemo: cannot create timer: %s", uv_strerror(rc));
  }
  lua_newtable(L); /* metatable */
  lua_pushcfunction(L, runtime_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);

  /* A private thread, anchored in the runtime's environment table. */
  lua_newtable(L);
  rt->L = lua_newthread(L);
  lua_rawseti(L, -2, 1);
  lua_setfenv(L, -2);

  lua_pushlightuserdata(L, (void *)&runtime_key);
  lua_insert(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);

  luv_set_callback(L, luv_callback_pcall);
  return rt;
}
