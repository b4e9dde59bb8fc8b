/* Tasks and time for Lua: mnemo.spawn, mnemo.sleep, mnemo.now, mnemo.clock
 * and the library-mode loop driver used by mnemo.run. */
#include "lua_mnemo.h"

#include <lauxlib.h>
#include <math.h>

#include "lua_runtime.h"

/* A coroutine parked on a timer. Lives in a userdata so Lua frees it even
 * if the state closes while it is pending; its __gc unlinks the timer. */
typedef struct task_sleep {
  mnemo_timer_t timer;
  mnemo_rt_t *rt;
  lua_State *co;
  int self_ref;
  int co_ref;
} task_sleep_t;

static const char sleep_mt[] = "mnemo.sleep";

static int in_task(lua_State *L) {
  int is_main = lua_pushthread(L);
  lua_pop(L, 1);
  return !is_main;
}

static void on_sleep_done(mnemo_timer_t *timer) {
  task_sleep_t *sleep = timer->data;
  mnemo_rt_t *rt = sleep->rt;
  lua_State *co = sleep->co;
  int co_ref = sleep->co_ref;

  /* Keep the coroutine anchored on our thread while it runs; the sleep
   * record itself may be collected from here on. */
  lua_rawgeti(rt->L, LUA_REGISTRYINDEX, co_ref);
  luaL_unref(rt->L, LUA_REGISTRYINDEX, co_ref);
  luaL_unref(rt->L, LUA_REGISTRYINDEX, sleep->self_ref);
  sleep->co_ref = sleep->self_ref = LUA_NOREF;
  if (lua_status(co) == LUA_YIELD)
    mnemo_rt_resume(rt, co, 0);
  lua_pop(rt->L, 1);
}

static int sleep_gc(lua_State *L) {
  task_sleep_t *sleep = lua_touserdata(L, 1);
  mnemo_timer_stop(&sleep->timer);
  return 0;
}

static double check_seconds(lua_State *L, int idx) {
  double seconds = luaL_checknumber(L, idx);
  if (!(seconds >= 0) || isinf(seconds))
    luaL_argerror(L, idx, "expected a finite number of seconds >= 0");
  return seconds;
}

static int l_sleep(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  double seconds = check_seconds(L, 1);
  task_sleep_t *sleep;

  if (!in_task(L) || L == rt->L)
    return luaL_error(L, "mnemo.sleep: not inside a task (wrap the caller "
                         "in mnemo.run or mnemo.spawn)");
  sleep = lua_newuserdata(L, sizeof(*sleep));
  mnemo_timer_init(&sleep->timer, on_sleep_done, sleep);
  sleep->rt = rt;
  sleep->co = L;
  luaL_getmetatable(L, sleep_mt);
  lua_setmetatable(L, -2);
  sleep->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushthread(L);
  sleep->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  /* Sleeping is rare enough to afford a fresh clock read, so the delay is
   * measured from now rather than from the start of this loop turn. */
  mnemo_clock_update(&rt->clock);
  mnemo_timer_start(&rt->timers, &sleep->timer, mnemo_seconds_to_ns(seconds));
  return lua_yield(L, 0);
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
  lua_pushnumber(
      L, (double)mnemo_timers_advance(&rt->timers, mnemo_seconds_to_ns(seconds)));
  return 1;
}

static int l_clock_pending(lua_State *L) {
  lua_pushnumber(L, (double)mnemo_timers_count(&mnemo_rt_get(L)->timers));
  return 1;
}

void mnemo_open_tasks(lua_State *L) {
  static const luaL_Reg functions[] = {
      {"sleep", l_sleep},         {"now", l_now},
      {"spawn", l_spawn},         {"run_until", l_run_until},
      {"hosted", l_hosted},       {"in_task", l_in_task},
      {NULL, NULL}};
  static const luaL_Reg clock_functions[] = {
      {"virtual", l_clock_set_virtual},
      {"is_virtual", l_clock_is_virtual},
      {"advance", l_clock_advance},
      {"pending", l_clock_pending},
      {NULL, NULL}};

  luaL_newmetatable(L, sleep_mt);
  lua_pushcfunction(L, sleep_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);

  luaL_register(L, NULL, functions);
  lua_newtable(L);
  luaL_register(L, NULL, clock_functions);
  lua_setfield(L, -2, "clock");
}
