/* luv on a loop it shares with mnemo's own handles; see lua_luv.c. */
#ifndef MNEMO_LUA_LUV_H
#define MNEMO_LUA_LUV_H

#include <lua.h>

/* package.preload.luv for the host: luaopen_luv plus mnemo_luv_patch. */
int mnemo_luv_open(lua_State *L);

/* Replaces the module table's `walk` (at luv_index) with one that skips
 * mnemo's handles, which luv's own walk would crash on. */
void mnemo_luv_patch(lua_State *L, int luv_index);

/* Calls :close() on every open luv handle; 0, or -1 if one raised. */
int mnemo_luv_close_all(lua_State *L);

#endif
