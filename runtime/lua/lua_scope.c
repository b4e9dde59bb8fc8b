/* Deadlines for Lua code: cancel scopes, parked tasks, and waking a parked
 * task with a TimeoutError when its scope expires.
 *
 * Every task (coroutine) that has used a scope or a wait has a task_state:
 * a userdata in a weak-keyed table, so finding it is one table lookup and
 * it goes away with its coroutine (its __gc stops the timers of scopes an
 * abandoned coroutine never left). A parked task is anchored explicitly.
 * Scopes nest per coroutine. A task waits only through a `wait` record; when
 * a scope expires, the owner's wait (if any, and not behind a shield) is
 * undone and the task resumed with (nil, TimeoutError), which the Lua side
 * raises at the wait, so the timed-out work unwinds through its own error
 * handling. Any later wait inside the expired scope fails at once, so the
 * work cannot keep waiting past its deadline. Scope and task records are
 * recycled through free lists: entering and leaving a scope allocates
 * nothing once warm. */
#include "lua_scope.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lua_runtime.h"
#include "lua_sandbox.h"

typedef struct scope scope_t;
typedef struct task_state task_state_t;
typedef struct wait wait_t;

struct task_state {
  lua_State *co;
  scope_t *top;
  wait_t *wait;
  mnemo_rt_t *rt;
  int co_ref; /* anchors the coroutine while it is parked */
};

struct scope {
  mnemo_deadline_t deadline;
  task_state_t *task;
  scope_t *below;
  mnemo_rt_t *rt;
  uint64_t coarse_start_ns; /* for the overrun check at leave */
  scope_t *next_free;
  scope_t *next_all;
  char operation[48]; /* copied: no reference to hold */
};

/* A parked task. Lives in a userdata anchored while parked. */
struct wait {
  mnemo_timer_t timer;
  mnemo_rt_t *rt;
  task_state_t *task;
  int self_ref;
  int parked;
  int nresults; /* values stored before parking by an early wake */
  int results_ref;
};

static const char tasks_key = 't';
static const char factory_key = 'f';
static const char hook_key = 'h';
static const char wait_mt[] = "mnemo.wait";
static const char task_mt[] = "mnemo.task";

/* Hot functions are closures over the runtime and the tasks table, which
 * saves a registry lookup for each on every call. */
#define UP_RT(L) ((mnemo_rt_t *)lua_touserdata((L), lua_upvalueindex(1)))
#define UP_TASKS lua_upvalueindex(2)

/* Recycled records, one pool per runtime; bounded by the peak number of
 * concurrent scopes and tasks, freed when the runtime closes. */
struct mnemo_scope_pool {
  scope_t *free_scopes;
  scope_t *all_scopes;
};

static void scope_pool_free(mnemo_rt_t *rt) {
  struct mnemo_scope_pool *pool = rt->scopes;
  if (pool == NULL)
    return;
  while (pool->all_scopes != NULL) {
    scope_t *s = pool->all_scopes;
    pool->all_scopes = s->next_all;
    mnemo_deadline_leave(&s->deadline);
    free(s);
  }
  free(pool);
  rt->scopes = NULL;
}

static struct mnemo_scope_pool *pool_of(lua_State *L, mnemo_rt_t *rt) {
  if (rt->closed)
    luaL_error(L, "mnemo: the runtime is shutting down");
  if (rt->scopes == NULL) {
    rt->scopes = calloc(1, sizeof(*rt->scopes));
    if (rt->scopes == NULL || mnemo_rt_at_close(rt, scope_pool_free) != 0)
      luaL_error(L, "mnemo: out of memory");
  }
  return rt->scopes;
}

static void push_tasks_table(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&tasks_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
}

/* The running coroutine's task, or NULL; `tasks` is the table's index. */
static task_state_t *task_find_in(lua_State *L, int tasks) {
  task_state_t *task;
  lua_pushthread(L);
  lua_rawget(L, tasks);
  task = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return task;
}

static task_state_t *task_find(lua_State *L) {
  task_state_t *task;
  push_tasks_table(L);
  task = task_find_in(L, lua_gettop(L));
  lua_pop(L, 1);
  return task;
}

static task_state_t *task_get_in(lua_State *L, int tasks, mnemo_rt_t *rt) {
  task_state_t *task = task_find_in(L, tasks);
  if (task != NULL)
    return task;
  task = lua_newuserdata(L, sizeof(*task));
  task->co = L;
  task->top = NULL;
  task->wait = NULL;
  task->rt = rt;
  task->co_ref = LUA_NOREF;
  luaL_getmetatable(L, task_mt);
  lua_setmetatable(L, -2);
  lua_pushthread(L);
  lua_insert(L, -2);
  lua_rawset(L, tasks);
  return task;
}

static task_state_t *task_get(lua_State *L) {
  task_state_t *task;
  push_tasks_table(L);
  task = task_get_in(L, lua_gettop(L), mnemo_rt_get(L));
  lua_pop(L, 1);
  return task;
}

static void scope_free(lua_State *L, scope_t *s);

/* A coroutine was collected: leave the scopes it never left. */
static int task_gc(lua_State *L) {
  task_state_t *task = lua_touserdata(L, 1);
  if (task->rt->closed)
    return 0; /* the runtime already freed every scope */
  while (task->top != NULL) {
    scope_t *s = task->top;
    task->top = s->below;
    mnemo_deadline_leave(&s->deadline);
    scope_free(L, s);
  }
  return 0;
}

mnemo_deadline_t *mnemo_lua_current_deadline(lua_State *L) {
  task_state_t *task = task_find(L);
  return task != NULL && task->top != NULL ? &task->top->deadline : NULL;
}

/* The innermost expired scope of the task, up to the nearest shield. */
static scope_t *expired_scope(task_state_t *task) {
  scope_t *s;
  for (s = task->top; s != NULL; s = s->below) {
    if (s->deadline.expired)
      return s;
    if (s->deadline.shielded)
      return NULL;
  }
  return NULL;
}

/* Pushes the TimeoutError for scope s, made by the Lua factory. */
static void push_timeout_error(lua_State *L, scope_t *s) {
  mnemo_rt_t *rt = s->rt;
  uint64_t now = mnemo_clock_now(&rt->clock);
  lua_pushlightuserdata(L, (void *)&factory_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (s->operation[0] != '\0')
    lua_pushstring(L, s->operation);
  else
    lua_pushnil(L);
  lua_pushnumber(L, (double)s->deadline.timeout_ns / 1e9);
  lua_pushnumber(L, (double)(now - s->deadline.started_ns) / 1e9);
  if (lua_pcall(L, 3, 1, 0) != 0 || lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "timeout");
  }
}

/* ---- waits ---- */

static void wait_unpark(wait_t *w) {
  lua_State *L = w->rt->L;
  task_state_t *task = w->task;
  mnemo_timer_stop(&w->timer);
  w->parked = 0;
  task->wait = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, w->self_ref);
  w->self_ref = LUA_NOREF;
  luaL_unref(L, LUA_REGISTRYINDEX, task->co_ref);
  task->co_ref = LUA_NOREF;
}

/* Resumes the parked task with the nvalues on top of rt->L's stack. */
static void wait_resume(wait_t *w, int nvalues) {
  mnemo_rt_t *rt = w->rt;
  lua_State *co = w->task->co;
  /* Anchor the coroutine on our thread: unpark may drop its last ref. */
  lua_pushthread(co);
  lua_xmove(co, rt->L, 1);
  lua_insert(rt->L, -nvalues - 1);
  wait_unpark(w);
  lua_xmove(rt->L, co, nvalues);
  mnemo_rt_resume(rt, co, nvalues);
  lua_pop(rt->L, 1);
}

static void on_scope_expire(mnemo_deadline_t *d) {
  scope_t *s = (scope_t *)d;
  mnemo_rt_t *rt = s->rt;
  task_state_t *task = s->task;
  lua_State *L = rt->L;

  /* Let Lua close what the work opened (luv handles) before anything. */
  lua_pushlightuserdata(L, (void *)&hook_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (lua_isfunction(L, -1)) {
    lua_pushlightuserdata(L, s);
    if (lua_pcall(L, 1, 0, 0) != 0)
      mnemo_rt_fail(rt, L);
  } else {
    lua_pop(L, 1);
  }
  if (task->wait != NULL && task->wait->parked && expired_scope(task) == s) {
    lua_pushnil(L);
    push_timeout_error(L, s);
    wait_resume(task->wait, 2);
  }
}

static void on_wait_timer(mnemo_timer_t *timer) {
  wait_t *w = timer->data;
  lua_pushboolean(w->rt->L, 1);
  wait_resume(w, 1);
}

static int wait_gc(lua_State *L) {
  wait_t *w = lua_touserdata(L, 1);
  mnemo_timer_stop(&w->timer);
  return 0;
}

static int in_task(lua_State *L, mnemo_rt_t *rt) {
  int is_main = lua_pushthread(L);
  lua_pop(L, 1);
  return !is_main && L != rt->L;
}

/* Parks the running task on w (already on the stack at index 1..), or
 * returns (nil, TimeoutError) at once if its scope has expired. */
static int park(lua_State *L, wait_t *w, uint64_t sleep_ns) {
  task_state_t *task;
  scope_t *expired;
  if (mnemo_sandbox_running(L))
    return luaL_error(L, "mnemo: cannot wait inside a sandboxed call "
                         "(hooks and policies run to completion)");
  task = task_get(L);
  expired = expired_scope(task);
  if (expired != NULL) {
    lua_pushnil(L);
    push_timeout_error(L, expired);
    return 2;
  }
  if (task->wait != NULL)
    return luaL_error(L, "mnemo: this task is already waiting");
  w->task = task;
  w->parked = 1;
  task->wait = w;
  lua_pushvalue(L, -1);
  w->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushthread(L);
  task->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (sleep_ns != MNEMO_DEADLINE_NONE) {
    mnemo_clock_update(&w->rt->clock);
    mnemo_timer_start(&w->rt->timers, &w->timer, sleep_ns);
  }
  return lua_yield(L, 0);
}

static wait_t *new_wait(lua_State *L, mnemo_rt_t *rt) {
  wait_t *w = lua_newuserdata(L, sizeof(*w));
  memset(w, 0, sizeof(*w));
  mnemo_timer_init(&w->timer, on_wait_timer, w);
  w->rt = rt;
  w->self_ref = LUA_NOREF;
  w->results_ref = LUA_NOREF;
  luaL_getmetatable(L, wait_mt);
  lua_setmetatable(L, -2);
  return w;
}

/* sleep(seconds, weak) -> true | nil, TimeoutError. A weak sleep does not
 * keep the process alive (background work such as health probes). */
static int l_sleep(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  double seconds = luaL_checknumber(L, 1);
  int weak = lua_toboolean(L, 2);
  if (!(seconds >= 0) || isinf(seconds))
    return luaL_argerror(L, 1, "expected a finite number of seconds >= 0");
  if (!in_task(L, rt))
    return luaL_error(L, "mnemo.sleep: not inside a task (wrap the caller "
                         "in mnemo.run or mnemo.spawn)");
  new_wait(L, rt);
  ((wait_t *)lua_touserdata(L, -1))->timer.weak = weak;
  return park(L, lua_touserdata(L, -1), mnemo_seconds_to_ns(seconds));
}

/* wait_new() -> wait: for mnemo.await, which hands `wake` to a callback. */
static int l_wait_new(lua_State *L) {
  new_wait(L, mnemo_rt_get(L));
  return 1;
}

/* wait_park(wait) -> true, values... | nil, TimeoutError */
static int l_wait_park(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  wait_t *w = luaL_checkudata(L, 1, wait_mt);
  if (!in_task(L, rt))
    return luaL_error(L, "mnemo.await: not inside a task (wrap the caller "
                         "in mnemo.run or mnemo.spawn)");
  if (w->results_ref != LUA_NOREF) { /* woken before it parked */
    int i, n = w->nresults;
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->results_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->results_ref);
    w->results_ref = LUA_NOREF;
    lua_pushboolean(L, 1);
    for (i = 1; i <= n; i++)
      lua_rawgeti(L, -1 - i, i);
    return n + 1;
  }
  lua_settop(L, 1);
  return park(L, w, MNEMO_DEADLINE_NONE);
}

/* wait_wake(wait, ...) -> true if it woke a parked task */
static int l_wait_wake(lua_State *L) {
  wait_t *w = luaL_checkudata(L, 1, wait_mt);
  int i, n = lua_gettop(L) - 1;
  if (w->parked) {
    lua_State *RL = w->rt->L;
    lua_pushboolean(RL, 1);
    for (i = 2; i <= n + 1; i++) {
      lua_pushvalue(L, i);
      lua_xmove(L, RL, 1);
    }
    wait_resume(w, n + 1);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (w->task == NULL && w->results_ref == LUA_NOREF) {
    /* Not parked yet: keep the values for wait_park. */
    lua_createtable(L, n, 0);
    for (i = 1; i <= n; i++) {
      lua_pushvalue(L, i + 1);
      lua_rawseti(L, -2, i);
    }
    w->nresults = n;
    w->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_pushboolean(L, 0);
  return 1;
}

/* ---- scopes ---- */

static scope_t *scope_alloc(lua_State *L, mnemo_rt_t *rt) {
  struct mnemo_scope_pool *pool = pool_of(L, rt);
  scope_t *s = pool->free_scopes;
  if (s != NULL) {
    pool->free_scopes = s->next_free;
    return s;
  }
  s = malloc(sizeof(*s));
  if (s == NULL)
    luaL_error(L, "mnemo: out of memory");
  mnemo_timer_init(&s->deadline.timer, NULL, NULL);
  s->next_all = pool->all_scopes;
  pool->all_scopes = s;
  return s;
}

static void scope_free(lua_State *L, scope_t *s) {
  struct mnemo_scope_pool *pool = pool_of(L, s->rt);
  s->next_free = pool->free_scopes;
  pool->free_scopes = s;
}

/* A cheap clock (about 10 ns, 4 ms resolution) to catch work that ran past
 * its deadline without yielding; virtual when the runtime's clock is. */
static uint64_t coarse_now(const mnemo_clock_t *clock) {
  struct timespec ts;
  if (clock->is_virtual)
    return clock->virtual_ns;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * MNEMO_NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* Enters a scope for the running task (the operation name at index
 * op_idx, or none if 0). */
static scope_t *enter_scope(lua_State *L, mnemo_rt_t *rt, uint64_t timeout_ns,
                            int op_idx, int shield) {
  task_state_t *task = task_get_in(L, UP_TASKS, rt);
  scope_t *s = scope_alloc(L, rt);
  mnemo_deadline_t *parent = task->top != NULL ? &task->top->deadline : NULL;
  size_t len = 0;
  const char *operation = op_idx ? lua_tolstring(L, op_idx, &len) : NULL;

  s->task = task;
  s->rt = rt;
  s->below = task->top;
  if (operation != NULL) {
    if (len >= sizeof(s->operation))
      len = sizeof(s->operation) - 1;
    memcpy(s->operation, operation, len);
    s->operation[len] = '\0';
  } else {
    s->operation[0] = '\0';
  }
  if (shield)
    mnemo_deadline_enter_shield(&s->deadline, &rt->timers, parent);
  else
    mnemo_deadline_enter(&s->deadline, &rt->timers, parent, timeout_ns,
                         on_scope_expire, s);
  s->coarse_start_ns = coarse_now(&rt->clock);
  s->deadline.started_ns = s->coarse_start_ns;
  task->top = s;
  return s;
}

/* scope_enter(seconds|nil, operation|nil, shield) -> scope */
static int l_scope_enter(lua_State *L) {
  uint64_t ns = lua_isnumber(L, 1) ? mnemo_seconds_to_ns(lua_tonumber(L, 1))
                                   : MNEMO_DEADLINE_NONE;
  lua_pushlightuserdata(L,
                        enter_scope(L, UP_RT(L), ns, lua_isstring(L, 2) ? 2 : 0,
                                    lua_toboolean(L, 3)));
  return 1;
}

/* Leaves scope s (at index idx) and pushes: expired, elapsed[, timeout,
 * operation]. `expired` is true if the deadline passed, whether or not its
 * timer got to fire (CPU-bound work does not yield to the loop). elapsed
 * comes from the coarse clock (4 ms resolution) unless it expired, when it
 * is precise; timeout and operation come only when it expired. Returns the
 * number of values pushed; *expired_out and *elapsed_out as well. */
static int leave_scope(lua_State *L, mnemo_rt_t *rt, int idx, int *expired_out,
                       uint64_t *elapsed_out) {
  scope_t *s = lua_touserdata(L, idx);
  task_state_t *task = task_find_in(L, UP_TASKS);
  uint64_t elapsed;
  int expired;

  if (s == NULL || task == NULL)
    return luaL_error(L, "mnemo: leaving a scope that is not active");
  /* Leave inner scopes a misbehaving coroutine switch left behind. */
  while (task->top != NULL && task->top != s) {
    scope_t *inner = task->top;
    mnemo_deadline_leave(&inner->deadline);
    task->top = inner->below;
    scope_free(L, inner);
  }
  if (task->top != s)
    return luaL_error(L, "mnemo: leaving a scope that is not active");
  mnemo_deadline_leave(&s->deadline);
  elapsed = coarse_now(&rt->clock) - s->coarse_start_ns;
  expired =
      s->deadline.expired ||
      (!s->deadline.shielded && s->deadline.timeout_ns != MNEMO_DEADLINE_NONE &&
       elapsed >= s->deadline.timeout_ns);
  *expired_out = expired;
  *elapsed_out = elapsed;
  lua_pushboolean(L, expired);
  task->top = s->below;
  scope_free(L, s);
  if (!expired) {
    lua_pushnumber(L, (double)elapsed / 1e9);
    return 2;
  }
  /* Rare: worth a precise reading for the report. */
  elapsed = mnemo_clock_now(&rt->clock) - s->coarse_start_ns;
  *elapsed_out = elapsed;
  lua_pushnumber(L, (double)elapsed / 1e9);
  lua_pushnumber(L, (double)s->deadline.timeout_ns / 1e9);
  if (s->operation[0] != '\0')
    lua_pushstring(L, s->operation);
  else
    lua_pushnil(L);
  return 4;
}

void *mnemo_scope_enter(lua_State *L, uint64_t timeout_ns, int op_idx) {
  return enter_scope(L, UP_RT(L), timeout_ns, op_idx, 0);
}

int mnemo_scope_leave(lua_State *L, int idx, int *expired, uint64_t *elapsed) {
  return leave_scope(L, UP_RT(L), idx, expired, elapsed);
}

/* scope_leave(scope) -> expired, elapsed[, timeout, operation] */
static int l_scope_leave(lua_State *L) {
  int expired;
  uint64_t elapsed;
  return leave_scope(L, UP_RT(L), 1, &expired, &elapsed);
}

/* remaining() -> seconds left in the running task's innermost scope
 * (math.huge if unbounded), and whether it has expired. */
static int l_remaining(lua_State *L) {
  mnemo_rt_t *rt = UP_RT(L);
  task_state_t *task = task_find_in(L, UP_TASKS);
  if (task == NULL || task->top == NULL) {
    lua_pushnumber(L, HUGE_VAL);
    lua_pushboolean(L, 0);
    return 2;
  }
  {
    uint64_t left = mnemo_deadline_remaining(&task->top->deadline,
                                             mnemo_clock_cached(&rt->clock));
    lua_pushnumber(L,
                   left == MNEMO_DEADLINE_NONE ? HUGE_VAL : (double)left / 1e9);
    lua_pushboolean(L, expired_scope(task) != NULL);
  }
  return 2;
}

static int l_set_timeout_factory(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushlightuserdata(L, (void *)&factory_key);
  lua_pushvalue(L, 1);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return 0;
}

static int l_set_cancel_hook(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushlightuserdata(L, (void *)&hook_key);
  lua_pushvalue(L, 1);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return 0;
}

/* current_scope() -> the running task's innermost scope or nil */
static int l_current_scope(lua_State *L) {
  task_state_t *task = task_find_in(L, UP_TASKS);
  if (task == NULL || task->top == NULL)
    return 0;
  lua_pushlightuserdata(L, task->top);
  return 1;
}

void mnemo_open_scope(lua_State *L) {
  static const luaL_Reg functions[] = {
      {"sleep", l_sleep},
      {"wait_new", l_wait_new},
      {"wait_park", l_wait_park},
      {"wait_wake", l_wait_wake},
      {"scope_enter", l_scope_enter},
      {"scope_leave", l_scope_leave},
      {"remaining", l_remaining},
      {"current_scope", l_current_scope},
      {"set_timeout_factory", l_set_timeout_factory},
      {"set_cancel_hook", l_set_cancel_hook},
      {NULL, NULL}};
  mnemo_lua_class(L, wait_mt, NULL, wait_gc);
  mnemo_lua_class(L, task_mt, NULL, task_gc);

  /* The tasks table: weak keys, so a task goes with its coroutine. */
  push_tasks_table(L);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushlightuserdata(L, (void *)&tasks_key);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
  }
  lua_pop(L, 1);
  mnemo_scope_register(L, functions);
}

void mnemo_scope_register(lua_State *L, const luaL_Reg *functions) {
  const luaL_Reg *f;
  push_tasks_table(L);
  for (f = functions; f->name != NULL; f++) {
    lua_pushlightuserdata(L, mnemo_rt_get(L));
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, f->func, 2);
    lua_setfield(L, -3, f->name);
  }
  lua_pop(L, 1);
}
