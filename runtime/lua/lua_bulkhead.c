/* Bulkheads for Lua: a userdata around mnemo_bulkhead_t and waiters whose
 * admission calls a Lua function (mnemo.await's wake). The waiting itself
 * is in lua/mnemo/bulkhead.lua. */
#include <lauxlib.h>
#include <string.h>

#include "bulkhead.h"
#include "lua_mnemo.h"
#include "lua_runtime.h"
#include "status.h"

typedef struct lua_bulkhead {
  mnemo_bulkhead_t bulkhead;
  mnemo_rt_t *rt;
} lua_bulkhead_t;

typedef struct lua_waiter {
  mnemo_bulkhead_waiter_t waiter;
  lua_bulkhead_t *owner;
  int wake_ref;
  int self_ref; /* anchored while queued */
} lua_waiter_t;

static const char bulkhead_mt[] = "mnemo.bulkhead";
static const char waiter_mt[] = "mnemo.bulkhead_waiter";

static int read_config(lua_State *L, int t, mnemo_bulkhead_config_t *cfg) {
  lua_getfield(L, t, "max_concurrent");
  cfg->max_concurrent = (uint32_t)luaL_optnumber(L, -1, 1);
  lua_getfield(L, t, "max_queue");
  cfg->max_queue = (uint32_t)luaL_optnumber(L, -1, 0);
  lua_getfield(L, t, "max_wait");
  cfg->max_wait_ns = mnemo_seconds_to_ns(luaL_optnumber(L, -1, 0));
  lua_pop(L, 3);
  return 0;
}

static int l_bulkhead_new(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  mnemo_bulkhead_config_t cfg;
  lua_bulkhead_t *lb;
  char err[256];
  luaL_checktype(L, 2, LUA_TTABLE);
  read_config(L, 2, &cfg);
  err[0] = '\0';
  if (mnemo_bulkhead_config_validate(&cfg, err, sizeof(err)) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lb = lua_newuserdata(L, sizeof(*lb));
  memset(lb, 0, sizeof(*lb));
  lb->rt = mnemo_rt_get(L);
  mnemo_bulkhead_init(&lb->bulkhead, name, &cfg);
  luaL_getmetatable(L, bulkhead_mt);
  lua_setmetatable(L, -2);
  return 1;
}

static lua_bulkhead_t *check(lua_State *L) {
  return luaL_checkudata(L, 1, bulkhead_mt);
}

/* bh:try_enter() -> "ok" | "wait" | "full" */
static int l_try_enter(lua_State *L) {
  int rc = mnemo_bulkhead_try_enter(&check(L)->bulkhead);
  lua_pushstring(L, rc == 0 ? "ok" : rc == MNEMO_EAGAIN ? "wait" : "full");
  return 1;
}

static void release_waiter(lua_State *L, lua_waiter_t *w) {
  luaL_unref(L, LUA_REGISTRYINDEX, w->wake_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, w->self_ref);
  w->wake_ref = w->self_ref = LUA_NOREF;
}

static void on_admit(mnemo_bulkhead_waiter_t *waiter) {
  lua_waiter_t *w = (lua_waiter_t *)waiter;
  lua_State *L = w->owner->rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->wake_ref);
  release_waiter(L, w);
  lua_pushboolean(L, 1);
  if (lua_pcall(L, 1, 0, 0) != 0)
    mnemo_rt_fail(w->owner->rt, L);
}

/* bh:enqueue(wake) -> waiter: wake(true) is called when a slot is handed
 * over. Only after try_enter() said "wait". */
static int l_enqueue(lua_State *L) {
  lua_bulkhead_t *lb = check(L);
  lua_waiter_t *w;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  w = lua_newuserdata(L, sizeof(*w));
  memset(w, 0, sizeof(*w));
  w->owner = lb;
  mnemo_bulkhead_waiter_init(&w->waiter, on_admit, NULL);
  luaL_getmetatable(L, waiter_mt);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, 2);
  w->wake_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  w->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 1); /* keep the bulkhead alive as long as the waiter */
  lua_setfenv(L, -2);
  mnemo_bulkhead_enqueue(&lb->bulkhead, &w->waiter);
  return 1;
}

/* bh:cancel(waiter): the waiter gave up (deadline, max_wait) */
static int l_cancel(lua_State *L) {
  lua_bulkhead_t *lb = check(L);
  lua_waiter_t *w = luaL_checkudata(L, 2, waiter_mt);
  if (w->waiter.queued) {
    mnemo_bulkhead_cancel(&lb->bulkhead, &w->waiter);
    release_waiter(L, w);
  }
  return 0;
}

static int l_leave(lua_State *L) {
  mnemo_bulkhead_leave(&check(L)->bulkhead);
  return 0;
}

static int l_stats(lua_State *L) {
  mnemo_bulkhead_t *b = &check(L)->bulkhead;
  lua_createtable(L, 0, 8);
  lua_pushnumber(L, b->active);
  lua_setfield(L, -2, "active");
  lua_pushnumber(L, b->queued);
  lua_setfield(L, -2, "queued");
  lua_pushnumber(L, (double)b->admitted);
  lua_setfield(L, -2, "admitted");
  lua_pushnumber(L, (double)b->rejected);
  lua_setfield(L, -2, "rejected");
  lua_pushnumber(L, (double)b->timed_out);
  lua_setfield(L, -2, "timed_out");
  lua_pushnumber(L, b->config.max_concurrent);
  lua_setfield(L, -2, "max_concurrent");
  lua_pushnumber(L, b->config.max_queue);
  lua_setfield(L, -2, "max_queue");
  lua_pushnumber(L, (double)b->config.max_wait_ns / 1e9);
  lua_setfield(L, -2, "max_wait");
  return 1;
}

static int l_reconfigure(lua_State *L) {
  lua_bulkhead_t *lb = check(L);
  mnemo_bulkhead_config_t cfg;
  char err[256];
  luaL_checktype(L, 2, LUA_TTABLE);
  read_config(L, 2, &cfg);
  err[0] = '\0';
  if (mnemo_bulkhead_reconfigure(&lb->bulkhead, &cfg, err, sizeof(err)) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

void mnemo_open_bulkhead(lua_State *L) {
  static const luaL_Reg methods[] = {{"try_enter", l_try_enter},
                                     {"enqueue", l_enqueue},
                                     {"cancel", l_cancel},
                                     {"leave", l_leave},
                                     {"stats", l_stats},
                                     {"reconfigure", l_reconfigure},
                                     {NULL, NULL}};
  mnemo_lua_class(L, bulkhead_mt, methods, NULL);
  mnemo_lua_class(L, waiter_mt, NULL, NULL);
  lua_pushcfunction(L, l_bulkhead_new);
  lua_setfield(L, -2, "bulkhead_new");
}
