/* The native half of the `mnemo` Lua module (mnemo_core). Each lua_*.c file
 * adds one group of functions to the module table on top of the stack. */
#ifndef MNEMO_LUA_MNEMO_H
#define MNEMO_LUA_MNEMO_H

#include <lua.h>

int luaopen_mnemo_core(lua_State *L);

void mnemo_open_tasks(lua_State *L);
void mnemo_open_retry(lua_State *L);
void mnemo_open_breaker(lua_State *L);
void mnemo_open_guard(lua_State *L);
void mnemo_open_bulkhead(lua_State *L);
void mnemo_open_errors(lua_State *L);
void mnemo_open_pg(lua_State *L);
void mnemo_open_embed(lua_State *L);
void mnemo_open_redis(lua_State *L);
void mnemo_open_cache(lua_State *L);
void mnemo_open_chunker(lua_State *L);
void mnemo_open_error_track(lua_State *L);
void mnemo_open_http(lua_State *L);
void mnemo_open_pattern(lua_State *L);

struct mnemo_breaker;
/* The breaker inside a mnemo.breaker userdata (raises if it is not one). */
struct mnemo_breaker *mnemo_lua_to_breaker(lua_State *L, int idx);

#endif
