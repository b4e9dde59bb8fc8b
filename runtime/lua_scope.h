/* Cancel scopes and waits for Lua tasks; see lua_scope.c. */
#ifndef MNEMO_LUA_SCOPE_H
#define MNEMO_LUA_SCOPE_H

#include <lua.h>

#include "deadline.h"

/* The innermost deadline of the running coroutine, or NULL. For C code
 * that hands a cancellation token to work on the thread pool. */
mnemo_deadline_t *mnemo_lua_current_deadline(lua_State *L);

void mnemo_open_scope(lua_State *L);

struct mnemo_rt;
/* Frees the runtime's scope and task records (at runtime close). */
void mnemo_scope_pool_free(struct mnemo_rt *rt);

#endif
