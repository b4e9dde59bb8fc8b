/* Cancel scopes and waits for Lua tasks; see lua_scope.c. */
#ifndef MNEMO_LUA_SCOPE_H
#define MNEMO_LUA_SCOPE_H

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#include "deadline.h"

/* The innermost deadline of the running coroutine, or NULL. For C code
 * that hands a cancellation token to work on the thread pool. */
mnemo_deadline_t *mnemo_lua_current_deadline(lua_State *L);

void mnemo_open_scope(lua_State *L);

/* For bindings that open a scope around their own work (lua_guard.c's
 * attempt): functions registered through mnemo_scope_register get the
 * runtime and the tasks table as upvalues, and only from those may
 * mnemo_scope_enter / mnemo_scope_leave be called (they read them).
 *
 * mnemo_scope_enter: a deadline scope for the running task, timeout_ns
 * (MNEMO_DEADLINE_NONE: none), named by the string at op_idx (0: none).
 * mnemo_scope_leave: leaves the scope at stack index idx and pushes
 * expired, elapsed[, timeout, operation]; returns how many it pushed. */
void mnemo_scope_register(lua_State *L, const luaL_Reg *functions);
void *mnemo_scope_enter(lua_State *L, uint64_t timeout_ns, int op_idx);
int mnemo_scope_leave(lua_State *L, int idx, int *expired, uint64_t *elapsed);

#endif
