/* luaopen_mnemo_core: builds the native module table. Loaded by
 * lua/mnemo/init.lua both under mnemo-run (linked in) and from plain luajit
 * (build/mnemo_core.so). */
#include "lua_mnemo.h"

#include <fcntl.h>
#include <lauxlib.h>

#include "lua_runtime.h"
#include "lua_sandbox.h"
#include "lua_scope.h"
#include "version.h"

/* open(2) flags for uv.fs_open's integer form, from the system's headers:
 * luv 1.44's `constants` lack O_NOFOLLOW and O_NOCTTY, whose values differ
 * between architectures. In mnemo_core rather than patched into luv, so
 * they do not depend on which copy of the luv module a script loaded. */
static void push_open_flags(lua_State *L) {
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, O_RDONLY);
  lua_setfield(L, -2, "O_RDONLY");
  lua_pushinteger(L, O_NONBLOCK);
  lua_setfield(L, -2, "O_NONBLOCK");
  lua_pushinteger(L, O_NOCTTY);
  lua_setfield(L, -2, "O_NOCTTY");
  lua_pushinteger(L, O_NOFOLLOW);
  lua_setfield(L, -2, "O_NOFOLLOW");
}

LUALIB_API int luaopen_mnemo_core(lua_State *L) {
  mnemo_rt_get(L);
  lua_newtable(L);
  lua_pushliteral(L, MNEMO_VERSION);
  lua_setfield(L, -2, "version");
  push_open_flags(L);
  lua_setfield(L, -2, "open_flags");
  mnemo_open_tasks(L);
  mnemo_open_scope(L);
  mnemo_open_retry(L);
  mnemo_open_breaker(L);
  mnemo_open_guard(L);
  mnemo_open_bulkhead(L);
  mnemo_open_errors(L);
  mnemo_open_pg(L);
  mnemo_open_embed(L);
  mnemo_open_redis(L);
  mnemo_open_cache(L);
  mnemo_open_chunker(L);
  mnemo_open_error_track(L);
  mnemo_open_http(L);
  mnemo_open_sandbox(L);
  mnemo_open_pattern(L);
  return 1;
}
