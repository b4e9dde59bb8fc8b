/* mnemo_core.sandbox_run and its helpers: the budget, memory limit and
 * string-method switch of one sandboxed evaluation (see lua_sandbox.h). */
#include "lua_sandbox.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <time.h>

/* The count hook fires every STEP instructions; once the budget is spent,
 * or once instructions are found to be expensive (below), on every
 * instruction, so nothing runs between two raises. */
#define STEP 1000

/* CPU time an instruction is worth. Some single instructions do work that
 * grows with their data, bounded only by the memory limit: comparing two
 * long strings (a < b), a concatenation whose result is already interned.
 * A count of STEP instructions that took longer than STEP times this on
 * the wall clock is checked against the thread's CPU time, and the run is
 * charged that CPU time at this rate where it exceeds the instructions
 * counted; from then on the hook fires on every instruction (and one
 * instruction is checked once it took SLOW_NS more: the hook's own cost is
 * not what is measured). Honest code runs at a few ns per instruction, so
 * it is never charged more (code allocating as fast as it can, the
 * collector included, ran at about 160 ns). */
#define NS_PER_INSTRUCTION 500
#define SLOW_NS 10000

enum { RUN_OK = 0, RUN_BUDGET = 1, RUN_MEMORY = 2 };

typedef struct sandbox_run {
  uint64_t budget; /* instructions */
  uint64_t used;
  size_t memory; /* bytes of growth allowed */
  size_t limit;  /* absolute: the allocator refuses past this */
  size_t outer_limit;
  int exhausted;   /* RUN_* */
  int collected;   /* the one emergency collection was done */
  int message_ref; /* the budget error, made before the run starts */
  struct sandbox_run *outer;

  int step;             /* the count hook's period now: STEP or 1 */
  uint64_t clock;       /* CLOCK_MONOTONIC at the last count, ns */
  uint64_t cpu;         /* thread CPU time at the last CPU check, ns */
  uint64_t used_at_cpu; /* `used` then */
} sandbox_run_t;

/* Per Lua state (global state): the wrapped allocator and the innermost
 * run. Found through the allocator's userdata, so any coroutine of the
 * state reaches it. */
typedef struct sandbox_state {
  lua_Alloc orig;
  void *orig_ud;
  size_t used;  /* bytes the state holds, as the allocator saw them */
  size_t limit; /* SIZE_MAX outside a run */
  sandbox_run_t *run;
} sandbox_state_t;

static const char SENTINEL_KEY[] = "mnemo.sandbox.state";
static const char ENVS_KEY[] = "mnemo.sandbox.environments";

/* Counts every byte; past the limit refuses the growth (LuaJIT raises "not
 * enough memory" where the allocation was asked). Shrinking and freeing
 * never fail. Must not touch the Lua state: it runs inside allocations. */
static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sandbox_state_t *s = ud;
  void *p;
  if (ptr == NULL)
    osize = 0;
  if (nsize > osize && s->used + (nsize - osize) > s->limit) {
    if (s->run != NULL && s->run->exhausted == RUN_OK)
      s->run->exhausted = RUN_MEMORY;
    return NULL;
  }
  p = s->orig(s->orig_ud, ptr, osize, nsize);
  if (p != NULL || nsize == 0) {
    s->used -= osize < s->used ? osize : s->used;
    s->used += nsize;
  }
  return p;
}

static sandbox_state_t *state_of(lua_State *L) {
  void *ud;
  if (lua_getallocf(L, &ud) != limited_alloc)
    return NULL;
  return ud;
}

/* At lua_close (finalizers run before the objects are freed): hand the
 * original allocator back, then free the state. Blocks allocated through
 * the wrapper are the original allocator's blocks, so it frees them. */
static int sentinel_gc(lua_State *L) {
  sandbox_state_t *s = state_of(L);
  if (s != NULL) {
    lua_setallocf(L, s->orig, s->orig_ud);
    free(s);
  }
  return 0;
}

static void install(lua_State *L) {
  sandbox_state_t *s;
  if (state_of(L) != NULL)
    return;
  s = calloc(1, sizeof(*s));
  if (s == NULL)
    luaL_error(L, "sandbox: out of memory");
  s->orig = lua_getallocf(L, &s->orig_ud);
  s->used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 +
            (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
  s->limit = SIZE_MAX;
  lua_newuserdata(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, sentinel_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY);
  lua_setallocf(L, limited_alloc, s);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, ENVS_KEY);
}

static sandbox_run_t *current_run(lua_State *L) {
  sandbox_state_t *s = state_of(L);
  return s != NULL ? s->run : NULL;
}

/* True when the function running at `ar` is sandboxed code: its
 * environment is one sandbox_register was given. The sandbox's own
 * wrappers (pcall, xpcall's handler guard) are host code and are never
 * interrupted: they pass an exhausted run on by returning or raising
 * themselves, which an xpcall handler interrupted again and again could
 * not (LuaJIT calls the handler anew for an error raised inside it). */
static int running_sandboxed(lua_State *L, lua_Debug *ar) {
  int sandboxed;
  if (!lua_getinfo(L, "f", ar))
    return 0;
  lua_getfenv(L, -1);
  lua_getfield(L, LUA_REGISTRYINDEX, ENVS_KEY);
  lua_pushvalue(L, -2);
  lua_rawget(L, -2);
  sandboxed = lua_toboolean(L, -1);
  lua_pop(L, 4);
  return sandboxed;
}

static void raise_exhausted(lua_State *L, sandbox_run_t *run) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, run->message_ref);
  lua_error(L);
}

static uint64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void count_hook(lua_State *L, lua_Debug *ar);

static void set_step(lua_State *L, sandbox_run_t *run, int step) {
  if (run->step != step) {
    run->step = step;
    lua_sethook(L, count_hook, LUA_MASKCOUNT, step);
  }
}

/* NS_PER_INSTRUCTION: a slow count (wall clock: cheap) is checked against
 * the CPU time since the last check (a system call), which a stopped or
 * descheduled process does not accumulate. */
static void charge_time(lua_State *L, sandbox_run_t *run) {
  uint64_t now = clock_ns(CLOCK_MONOTONIC), cpu, worth, counted;
  int slow =
      now - run->clock > (uint64_t)run->step * NS_PER_INSTRUCTION + SLOW_NS;
  run->clock = now;
  if (!slow)
    return;
  cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID);
  worth = (cpu - run->cpu) / NS_PER_INSTRUCTION;
  counted = run->used - run->used_at_cpu;
  if (worth > counted) {
    run->used += worth - counted;
    set_step(L, run, 1);
  }
  run->cpu = cpu;
  run->used_at_cpu = run->used;
}

/* Counts instructions; raises once the budget or the memory is spent. Near
 * the memory limit it collects once, so garbage alone does not end a run
 * that holds little. */
static void count_hook(lua_State *L, lua_Debug *ar) {
  sandbox_run_t *run = current_run(L);
  sandbox_state_t *s;
  if (run == NULL)
    return;
  run->used += (uint64_t)run->step;
  if (run->exhausted == RUN_OK)
    charge_time(L, run);
  if (run->exhausted == RUN_OK && run->used > run->budget)
    run->exhausted = RUN_BUDGET;
  if (run->exhausted != RUN_OK) {
    set_step(L, run, 1);
    if (running_sandboxed(L, ar))
      raise_exhausted(L, run);
    return;
  }
  s = state_of(L);
  if (!run->collected && s->used > run->limit - run->memory / 4) {
    run->collected = 1;
    lua_gc(L, LUA_GCCOLLECT, 0);
  }
}

int mnemo_sandbox_running(lua_State *L) {
  return current_run(L) != NULL;
}

uint64_t mnemo_sandbox_steps_left(lua_State *L) {
  sandbox_run_t *run = current_run(L);
  if (run == NULL)
    return MNEMO_SANDBOX_UNLIMITED;
  if (run->exhausted || run->used >= run->budget)
    return 0;
  return (run->budget - run->used) * MNEMO_SANDBOX_STEPS_PER_INSTRUCTION;
}

void mnemo_sandbox_charge(lua_State *L, uint64_t steps) {
  sandbox_run_t *run = current_run(L);
  uint64_t instructions;
  if (run == NULL)
    return;
  instructions = steps / MNEMO_SANDBOX_STEPS_PER_INSTRUCTION + 1;
  run->used += instructions;
  if (run->exhausted == RUN_OK && run->used > run->budget)
    run->exhausted = RUN_BUDGET;
  if (run->exhausted != RUN_OK)
    raise_exhausted(L, run);
}

static void push_limit_message(lua_State *L, const sandbox_run_t *run) {
  if (run->exhausted == RUN_MEMORY) {
    if (run->memory % (1024 * 1024) == 0)
      lua_pushfstring(L, "memory limit of %d MiB exceeded",
                      (int)(run->memory / (1024 * 1024)));
    else
      lua_pushfstring(L, "memory limit of %f bytes exceeded",
                      (lua_Number)run->memory);
  } else {
    lua_pushfstring(L, "instruction budget of %f exceeded",
                    (lua_Number)run->budget);
  }
}

static uint64_t check_count(lua_State *L, int idx, double max) {
  double v = luaL_checknumber(L, idx);
  luaL_argcheck(L, v >= 1 && v <= max, idx, "out of range");
  return (uint64_t)v;
}

/* sandbox_run(budget, memory, string_index, fn, ...) -> true, results... |
 * false, err. `string_index` is what strings' methods resolve to during the
 * call. An exhausted budget or memory limit is reported as such, whatever
 * the code raised or caught meanwhile. Runs nest: an inner run gets no more
 * than what is left of the outer one. */
static int l_sandbox_run(lua_State *L) {
  sandbox_state_t *s = state_of(L);
  sandbox_run_t run = {0};
  lua_Hook old_hook = lua_gethook(L);
  int old_mask = lua_gethookmask(L), old_count = lua_gethookcount(L);
  int nargs = lua_gettop(L) - 4, base, status, i;

  run.budget = check_count(L, 1, 1e12);
  run.memory = (size_t)check_count(L, 2, 1e12);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  if (s == NULL)
    return luaL_error(L, "sandbox: allocator not installed");
  run.outer = s->run;
  if (run.outer != NULL) {
    if (run.outer->exhausted)
      raise_exhausted(L, run.outer);
    if (run.outer->budget - run.outer->used < run.budget)
      run.budget = run.outer->budget - run.outer->used;
  }
  push_limit_message(L, &run); /* exhausted is RUN_OK: the budget's */
  run.message_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  /* The string metatable and its __index in force: slots base, base+1. */
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);
  lua_remove(L, -2);
  lua_getfield(L, -1, "__index");
  base = lua_gettop(L) - 1;
  lua_pushvalue(L, 3);
  lua_setfield(L, base, "__index");
  for (i = 4; i <= nargs + 4; i++)
    lua_pushvalue(L, i);

  run.outer_limit = s->limit;
  run.limit = s->used + run.memory;
  if (run.limit < s->used || run.limit > s->limit)
    run.limit = s->limit;
  s->limit = run.limit;
  s->run = &run;
  run.step = STEP;
  run.clock = clock_ns(CLOCK_MONOTONIC);
  run.cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID);
  lua_sethook(L, count_hook, LUA_MASKCOUNT, STEP);
  status = lua_pcall(L, nargs, LUA_MULTRET, 0);
  if (status == LUA_ERRMEM && run.exhausted == RUN_OK)
    run.exhausted = RUN_MEMORY; /* refused before the allocator was asked */
  if (run.exhausted == RUN_OK && run.used > run.budget)
    run.exhausted = RUN_BUDGET; /* spent by a nested run or a C call */
  /* Restored here, in C: no Lua instruction runs under this run's hook. */
  lua_sethook(L, old_hook, old_mask, old_count);
  s->run = run.outer;
  s->limit = run.outer_limit;
  if (run.outer != NULL)
    run.outer->used += run.used;
  lua_pushvalue(L, base + 1);
  lua_setfield(L, base, "__index");
  luaL_unref(L, LUA_REGISTRYINDEX, run.message_ref);

  if (status == 0 && run.exhausted == RUN_OK) {
    lua_pushboolean(L, 1);
    lua_replace(L, base + 1);
    lua_remove(L, base);
    return lua_gettop(L) - base + 1;
  }
  lua_settop(L, base + 2); /* the error value, or nil */
  lua_pushboolean(L, 0);
  if (run.exhausted != RUN_OK) {
    if (run.exhausted == RUN_MEMORY)
      lua_gc(L, LUA_GCCOLLECT, 0);
    push_limit_message(L, &run);
  } else {
    lua_pushvalue(L, base + 2);
  }
  return 2;
}

/* sandbox_register(env): code whose environment is env is sandboxed (the
 * table is weak: environments go with their functions). */
static int l_sandbox_register(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, LUA_REGISTRYINDEX, ENVS_KEY);
  lua_pushvalue(L, 1);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  return 0;
}

/* sandbox_exhausted() -> true while the innermost run's budget or memory
 * is spent: the sandbox's pcall re-raises instead of returning. */
static int l_sandbox_exhausted(lua_State *L) {
  sandbox_run_t *run = current_run(L);
  lua_pushboolean(L, run != NULL && run->exhausted != RUN_OK);
  return 1;
}

/* sandbox_charge(bytes): charges the work of a C function on `bytes`
 * bytes (or elements) to the innermost run, one step per 16, as the
 * pattern functions do; raises the budget error past the budget. For the
 * sandbox's wrappers of library functions whose work grows with their data
 * (sandbox.lua). Outside a run: nothing. */
static int l_sandbox_charge(lua_State *L) {
  lua_Number n = luaL_checknumber(L, 1);
  uint64_t steps = n >= 1e15 ? UINT64_MAX / 2 : n > 0 ? (uint64_t)n / 16 : 0;
  mnemo_sandbox_charge(L, steps);
  return 0;
}

/* The default order of table.sort, as a C comparator that charges every
 * comparison (one step per 16 bytes of the shorter of two strings) before
 * comparing as lua_lessthan does: LuaJIT's own sort compares in C, where
 * the count hook never fires, and sorting a few hundred long strings that
 * share a long prefix takes seconds in one call. */
static int charged_less(lua_State *L) {
  size_t a = 0, b = 0;
  if (lua_type(L, 1) == LUA_TSTRING && lua_type(L, 2) == LUA_TSTRING) {
    lua_tolstring(L, 1, &a);
    lua_tolstring(L, 2, &b);
  }
  mnemo_sandbox_charge(L, 1 + (a < b ? a : b) / 16);
  lua_pushboolean(L, lua_lessthan(L, 1, 2));
  return 1;
}

/* sandbox_sort(t [, comp]): table.sort (the upvalue), with charged_less
 * when there is no comparator. */
static int l_sandbox_sort(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2))
    luaL_checktype(L, 2, LUA_TFUNCTION);
  else {
    lua_settop(L, 1);
    lua_pushcfunction(L, charged_less);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 0);
  return 0;
}

/* sandbox_memory() -> bytes the state holds, the limit in force (or nil). */
static int l_sandbox_memory(lua_State *L) {
  sandbox_state_t *s = state_of(L);
  if (s == NULL)
    return 0;
  lua_pushnumber(L, (lua_Number)s->used);
  if (s->limit == SIZE_MAX)
    lua_pushnil(L);
  else
    lua_pushnumber(L, (lua_Number)s->limit);
  return 2;
}

void mnemo_open_sandbox(lua_State *L) {
  static const luaL_Reg fns[] = {{"sandbox_run", l_sandbox_run},
                                 {"sandbox_exhausted", l_sandbox_exhausted},
                                 {"sandbox_memory", l_sandbox_memory},
                                 {"sandbox_register", l_sandbox_register},
                                 {"sandbox_charge", l_sandbox_charge},
                                 {NULL, NULL}};
  install(L);
  luaL_register(L, NULL, fns);
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushcclosure(L, l_sandbox_sort, 1);
  lua_setfield(L, -3, "sandbox_sort");
  lua_pop(L, 1);
}
