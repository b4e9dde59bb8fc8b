/* Tasks and time for Lua: mnemo.spawn, mnemo.now, mnemo.clock and the
 * library-mode loop driver used by mnemo.run. Waiting is in lua_scope.c. */
#include "lua_mnemo.h"

#include <lauxlib.h>
#include <math.h>

#include "lua_runtime.h"

static int in_task(lua_State *L) {
  int is_main = lua_pushthread(L);
  lua_pop(L, 1);
  return !is_main;
}

static double check_seconds(lua_State *L, int idx) {
  double seconds = luaL_checknumber(L, idx);
  if (!(seconds >= 0) || isinf(seconds))
    luaL_argerror(L, idx, "expected a finite number of seconds >= 0");
  return seconds;
}

static int l_now(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  lua_pushnumber(L, (double)mnemo_clock_now(&rt->clock) / 1e9);
  return 1;
}

static int l_spawn(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  int nargs = lua_gettop(L) - 1;
  lua_State *co;

  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  lua_insert(L, 1); /* keep the thread below fn and args */
  lua_xmove(L, co, nargs + 1);
  mnemo_rt_resume(rt, co, nargs);
  return 1; /* the thread */
}

/* run_until(done): drives the loop one turn at a time until done()
 * returns true. Library mode only: under mnemo-run the loop already runs. */
static int l_run_until(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  int more = 1;

  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (rt->hosted || rt->run_depth > 0)
    return luaL_error(L, "mnemo.run: the loop is already running here "
                         "(use mnemo.spawn)");
  rt->run_depth++;
  for (;;) {
    int done;
    lua_pushvalue(L, 1);
    lua_call(L, 0, 1);
    done = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (rt->failed || done || !more)
      break;
    more = uv_run(rt->loop, UV_RUN_ONCE);
  }
  rt->run_depth--;
  if (mnemo_rt_take_error(rt, L))
    return lua_error(L);
  lua_pushvalue(L, 1);
  lua_call(L, 0, 1);
  if (!lua_toboolean(L, -1)) {
    lua_pushliteral(L, "mnemo.run: the task is still waiting but the loop "
                       "has nothing left to run (deadlock?)");
    return lua_error(L);
  }
  return 0;
}

static int l_hosted(lua_State *L) {
  lua_pushboolean(L, mnemo_rt_get(L)->hosted);
  return 1;
}

static int l_in_task(lua_State *L) {
  lua_pushboolean(L, in_task(L) && L != mnemo_rt_get(L)->L);
  return 1;
}

static int l_clock_set_virtual(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  mnemo_clock_set_virtual(&rt->clock, lua_toboolean(L, 1));
  mnemo_timers_rearm(&rt->timers);
  return 0;
}

static int l_clock_is_virtual(lua_State *L) {
  lua_pushboolean(L, mnemo_rt_get(L)->clock.is_virtual);
  return 1;
}

static int l_clock_advance(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  double seconds = check_seconds(L, 1);
  if (!rt->clock.is_virtual)
    return luaL_error(L, "mnemo.clock.advance: the clock is not virtual "
                         "(call mnemo.clock.virtual(true) first)");
  lua_pushnumber(L, (double)mnemo_timers_advance(&rt->timers,
                                                 mnemo_seconds_to_ns(seconds)));
  return 1;
}

/* clock.next() -> seconds until the earliest pending timer, or nil */
static int l_clock_next(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  mnemo_heap_node_t *head = mnemo_heap_min(&rt->timers.heap);
  uint64_t now = mnemo_clock_cached(&rt->clock), due;
  if (head == NULL)
    return 0;
  due = ((mnemo_timer_t *)head)->due_ns;
  lua_pushnumber(L, due > now ? (double)(due - now) / 1e9 : 0.0);
  return 1;
}

static int l_clock_pending(lua_State *L) {
  lua_pushnumber(L, (double)mnemo_timers_count(&mnemo_rt_get(L)->timers));
  return 1;
}

void mnemo_open_tasks(lua_State *L) {
  static const luaL_Reg functions[] = {
      {"now", l_now},       {"spawn", l_spawn},     {"run_until", l_run_until},
      {"hosted", l_hosted}, {"in_task", l_in_task}, {NULL, NULL}};
  static const luaL_Reg clock_functions[] = {
      {"virtual", l_clock_set_virtual}, {"is_virtual", l_clock_is_virtual},
      {"advance", l_clock_advance},     {"pending", l_clock_pending},
      {"next", l_clock_next},           {NULL, NULL}};

  luaL_register(L, NULL, functions);
  lua_newtable(L);
  luaL_register(L, NULL, clock_functions);
  lua_setfield(L, -2, "clock");
}
