/* The per-Lua-state runtime: the shared uv loop, the clock, the timers, and
 * the rules for resuming coroutines ("tasks") from C and for errors nobody
 * caught.
 *
 * There is one runtime per lua_State, created on first use. It always runs
 * on luv's loop: under mnemo-run the host hands its loop to luv before luv
 * opens; under plain luajit the runtime takes the loop luv created. */
#ifndef MNEMO_LUA_RUNTIME_H
#define MNEMO_LUA_RUNTIME_H

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "clock.h"
#include "timer.h"

typedef struct mnemo_rt {
  uv_loop_t *loop;
  lua_State *L; /* a private thread of the state, never running Lua code
                   that yields: safe to push on from any C callback */
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  int hosted;    /* 1 under mnemo-run: the script already is a task */
  int failed;    /* an uncaught error is waiting to be reported */
  int error_ref; /* registry ref of that error's text, with traceback */
  int exit_code; /* for the host: set by signals */
  int run_depth; /* nesting of mnemo.run in library mode */
  int closed;
  struct mnemo_scope_pool *scopes;          /* lua_scope.c's recycled records */
  void (*at_close[4])(struct mnemo_rt *rt); /* mnemo_rt_at_close */
  int n_at_close;
} mnemo_rt_t;

/* Returns the state's runtime, creating it (and loading luv if needed) on
 * first use. Raises a Lua error if the loop cannot be set up. */
mnemo_rt_t *mnemo_rt_get(lua_State *L);

/* Resumes a suspended task with nargs values already pushed on `co`.
 * Values the task yields or returns are dropped; an error is recorded with
 * mnemo_rt_fail. Returns the lua_resume status. */
int mnemo_rt_resume(mnemo_rt_t *rt, lua_State *co, int nargs);

/* Records the error at the top of L's stack (popped) as uncaught and stops
 * the loop, so the host or mnemo.run reports it. The first error wins. */
void mnemo_rt_fail(mnemo_rt_t *rt, lua_State *L);

/* Pushes the pending uncaught error text and clears it; 0 if none. */
int mnemo_rt_take_error(mnemo_rt_t *rt, lua_State *L);

/* Message handler for lua_pcall: turns any error value into text (using
 * __tostring for tables) followed by a stack traceback. */
int mnemo_rt_traceback(lua_State *L);

/* Pushes tostring(value at idx) with __tostring honoured. */
const char *mnemo_rt_tostring(lua_State *L, int idx);

/* Registers the metatable `name` for a userdata type: `methods` (may be
 * NULL) as its __index table, `gc` (may be NULL) as __gc. Returns the
 * metatable's address (for cheap type checks on hot paths); the stack is
 * left as it was. */
const void *mnemo_lua_class(lua_State *L, const char *name,
                            const luaL_Reg *methods, lua_CFunction gc);

/* Stops timers and releases the loop's handles held by the runtime. */
void mnemo_rt_close(mnemo_rt_t *rt);

/* Registers fn to run once at mnemo_rt_close, after the timers are closed,
 * last registered first: how a binding frees what it keeps per runtime
 * without the runtime calling into it. 0, or MNEMO_ENOMEM when the few
 * slots are taken. */
int mnemo_rt_at_close(mnemo_rt_t *rt, void (*fn)(mnemo_rt_t *rt));

#endif
