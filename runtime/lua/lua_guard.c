/* The guard's per-attempt path for mnemo.guard (lua/mnemo/guard.lua): one
 * C call to admit an attempt (breaker permit, then the attempt's deadline
 * scope) and one to settle it (scope left, breaker told the outcome), so
 * the success path stays two calls. The bulkhead slot is taken before,
 * in Lua, as runtime/guard.c does: retry( bulkhead( deadline_per_attempt(
 * breaker( call ) ) ) ). */
#include "lua_mnemo.h"

#include <lauxlib.h>

#include "breaker.h"
#include "lua_runtime.h"
#include "lua_scope.h"

/* Registered through mnemo_scope_register: upvalue 1 is the runtime. */
#define UP_RT(L) ((mnemo_rt_t *)lua_touserdata((L), lua_upvalueindex(1)))

/* attempt_begin(seconds, operation, breaker|nil) -> scope | false,
 * retry_after. One call for the hot path of a guarded attempt: breaker
 * admission, then the per-attempt scope. */
static int l_attempt_begin(lua_State *L) {
  mnemo_rt_t *rt = UP_RT(L);
  uint64_t ns = lua_isnumber(L, 1) ? mnemo_seconds_to_ns(lua_tonumber(L, 1))
                                   : MNEMO_DEADLINE_NONE;
  if (!lua_isnoneornil(L, 3)) {
    mnemo_breaker_t *b = mnemo_lua_to_breaker(L, 3);
    uint64_t retry_after = 0;
    if (mnemo_breaker_acquire(b, mnemo_clock_cached(&rt->clock),
                              &retry_after) != 0) {
      lua_pushboolean(L, 0);
      lua_pushnumber(L, (double)retry_after / 1e9);
      return 2;
    }
  }
  lua_pushlightuserdata(L,
                        mnemo_scope_enter(L, ns, lua_isstring(L, 2) ? 2 : 0));
  return 1;
}

/* attempt_end(scope, ok, ignored, breaker|nil) -> expired, elapsed[,
 * timeout, operation]: leaves the scope and settles the breaker permit
 * (success, failure, or ignored for errors that say nothing about the
 * dependency; an overrun success counts as a failure). */
static int l_attempt_end(lua_State *L) {
  mnemo_rt_t *rt = UP_RT(L);
  int ok = lua_toboolean(L, 2), ignored = lua_toboolean(L, 3), expired, n;
  uint64_t elapsed;
  mnemo_breaker_t *b =
      lua_isnoneornil(L, 4) ? NULL : mnemo_lua_to_breaker(L, 4);
  n = mnemo_scope_leave(L, 1, &expired, &elapsed);
  if (b != NULL) {
    uint64_t now = mnemo_clock_cached(&rt->clock);
    if (ok && !expired)
      mnemo_breaker_on_success(b, now, elapsed);
    else if (!ok && ignored && !expired)
      mnemo_breaker_on_ignored(b, now);
    else
      mnemo_breaker_on_failure(b, now, elapsed);
  }
  return n;
}

void mnemo_open_guard(lua_State *L) {
  static const luaL_Reg functions[] = {{"attempt_begin", l_attempt_begin},
                                       {"attempt_end", l_attempt_end},
                                       {NULL, NULL}};
  mnemo_scope_register(L, functions);
}
