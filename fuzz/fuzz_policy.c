/* fuzz_policy — libFuzzer target for the policy loader and validator
 * (lua/mnemo/policy.lua check_source -> sandbox.lua -> config.lua).
 *
 * LuaJIT is embedded once (LLVMFuzzerInitialize): standard libraries,
 * package.path = <root>/lua/?.lua, package.cpath = <root>/build/?.so (for
 * mnemo_core.so, built by `make`) before the defaults (for luv, cjson).
 * <root> is $MNEMO_FUZZ_ROOT, else the current directory (the repository).
 * Each input is then checked as the text of a policy file named
 * policies/examples/fuzz-input.lua (so `include = "base.lua"` resolves to a
 * real file):
 *   policy.check_source(text, name)
 * must return the table, or nil and a non-empty problem text (a clear
 * rejection). Anything else is a bug and abort()s: a Lua error escaping
 * check_source (e.g. "attempt to index a nil value" inside the validator),
 * a wrong result shape, or the sandbox's count hook / string metatable left
 * behind. A hang past the instruction budget shows up as a libFuzzer
 * timeout (`make fuzz` passes -timeout=10).
 *
 * Build and run: `make fuzz` (corpus in build/fuzz/policy/, seeded from
 * tests/corpus/policy/, policies/ and tests/fixtures/policies/). Crashing
 * inputs go to tests/corpus/policy/, replayed by tests/c/test_corpus.c
 * (which #includes this file with MNEMO_FUZZ_NO_MAIN defined).
 *
 * Coverage: libFuzzer only sees C edges, and the validator is Lua. So the
 * fuzzer build (not the regression test) turns the JIT off and installs a
 * line hook that counts (previous line, line) pairs of the lua/mnemo files in
 * libFuzzer's extra counters. The sandbox swaps in its own count hook while
 * policy code runs: debug.sethook/gethook are wrapped (before sandbox.lua
 * captures them) so that "no hook" means "the coverage hook" to it.
 *
 * Not caught: memory. The sandbox bounds instructions, not bytes, so
 * `("x"):rep(2^30)` a few times exceeds libFuzzer's -rss_limit_mb (an
 * "oom-" file); see the report of issue 7.
 *
 * Reproduce one input (from the repository root, or set MNEMO_FUZZ_ROOT):
 *   build/fuzz/fuzz_policy tests/corpus/policy/FILE */
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_POLICY_NAME "policies/examples/fuzz-input.lua"

static lua_State *fuzz_policy_L;
static int fuzz_policy_check_ref = LUA_NOREF;    /* policy.check_source */
static int fuzz_policy_string_index = LUA_NOREF; /* ("").__index, at start */

static void fuzz_policy_die(const char *what, const char *detail) {
  fprintf(stderr, "fuzz_policy: %s: %s\n", what, detail ? detail : "");
  abort();
}

static int fuzz_policy_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
  return 1;
}

#ifndef MNEMO_FUZZ_NO_MAIN
/* ---- Lua line coverage as libFuzzer extra counters ---- */
#define FUZZ_COV_SIZE 65536
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t
    fuzz_cov_counters[FUZZ_COV_SIZE];
static uintptr_t fuzz_cov_prev;

static void fuzz_cov_hook(lua_State *L, lua_Debug *ar) {
  uintptr_t here;
  if (!lua_getinfo(L, "S", ar) || ar->source == NULL ||
      strstr(ar->source, "/lua/mnemo/") == NULL)
    return;
  here = ((uintptr_t)ar->source >> 4) * 31u + (uintptr_t)ar->currentline;
  fuzz_cov_counters[((fuzz_cov_prev << 1) ^ here) * 2654435761u %
                    FUZZ_COV_SIZE]++;
  fuzz_cov_prev = here;
}

static void fuzz_cov_install(lua_State *L) {
  lua_sethook(L, fuzz_cov_hook, LUA_MASKLINE, 0);
}

/* debug.sethook(nil) reinstalls the coverage hook; a Lua hook replaces it. */
static int fuzz_cov_sethook(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    fuzz_cov_install(L);
    return 0;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 0);
  return 0;
}

/* While the coverage hook is in place, there is "no hook". */
static int fuzz_cov_gethook(lua_State *L) {
  if (lua_gethook(L) == fuzz_cov_hook)
    return 0;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_call(L, 0, LUA_MULTRET);
  return lua_gettop(L);
}

static void fuzz_cov_setup(lua_State *L) {
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "sethook");
  lua_pushcclosure(L, fuzz_cov_sethook, 1);
  lua_setfield(L, -2, "sethook");
  lua_getfield(L, -1, "gethook");
  lua_pushcclosure(L, fuzz_cov_gethook, 1);
  lua_setfield(L, -2, "gethook");
  lua_pop(L, 1);
  fuzz_cov_install(L);
}
#define FUZZ_HOOK_IDLE(L) (lua_gethook(L) == fuzz_cov_hook)
#else
#define fuzz_cov_setup(L) ((void)(L))
#define FUZZ_HOOK_IDLE(L) (lua_gethook(L) == NULL)
#endif

/* Sets up the Lua state once; returns 0. */
static int fuzz_policy_init(void) {
  lua_State *L;
  const char *root = getenv("MNEMO_FUZZ_ROOT");
  if (fuzz_policy_L != NULL)
    return 0;
  if (root == NULL || root[0] == '\0')
    root = ".";
  L = luaL_newstate();
  if (L == NULL)
    fuzz_policy_die("init", "luaL_newstate failed");
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", root, root);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_pushfstring(L, "%s/build/?.so;", root);
  lua_getfield(L, -2, "cpath");
  lua_concat(L, 2);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  fuzz_cov_setup(L);

  lua_pushcfunction(L, fuzz_policy_traceback);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "mnemo.policy");
  if (lua_pcall(L, 1, 1, -3) != 0)
    fuzz_policy_die("require mnemo.policy", lua_tostring(L, -1));
  lua_getfield(L, -1, "check_source");
  if (!lua_isfunction(L, -1))
    fuzz_policy_die("init", "mnemo.policy has no check_source");
  fuzz_policy_check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 2);

  lua_pushliteral(L, "");
  if (!lua_getmetatable(L, -1))
    fuzz_policy_die("init", "strings have no metatable");
  lua_getfield(L, -1, "__index");
  fuzz_policy_string_index = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 2);
  fuzz_policy_L = L;
  return 0;
}

#ifdef MNEMO_FUZZ_NO_MAIN
static void fuzz_policy_close(void) {
  if (fuzz_policy_L != NULL) {
    lua_close(fuzz_policy_L);
    fuzz_policy_L = NULL;
    fuzz_policy_check_ref = fuzz_policy_string_index = LUA_NOREF;
  }
}
#endif

/* One input; returns 0 (libFuzzer's convention). */
static int fuzz_policy_one(const uint8_t *data, size_t size) {
  lua_State *L;
  int top;
  fuzz_policy_init();
  L = fuzz_policy_L;
  top = lua_gettop(L);
  lua_pushcfunction(L, fuzz_policy_traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, fuzz_policy_check_ref);
  lua_pushlstring(L, data ? (const char *)data : "", size);
  lua_pushliteral(L, FUZZ_POLICY_NAME);
  if (lua_pcall(L, 2, 2, top + 1) != 0)
    fuzz_policy_die("check_source raised an error (not a clear rejection)",
                    lua_tostring(L, -1));
  if (lua_istable(L, -2)) {
    if (!lua_isstring(L, -1))
      fuzz_policy_die("accepted, but the second result is not the text",
                      luaL_typename(L, -1));
  } else {
    size_t n = 0;
    if (!lua_isnil(L, -2))
      fuzz_policy_die("first result neither a table nor nil",
                      luaL_typename(L, -2));
    if (lua_type(L, -1) != LUA_TSTRING || (lua_tolstring(L, -1, &n), n == 0))
      fuzz_policy_die("rejected without a problem text", luaL_typename(L, -1));
  }
  if (!FUZZ_HOOK_IDLE(L))
    fuzz_policy_die("sandbox", "the count hook was left installed");
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);
  lua_getfield(L, -1, "__index");
  lua_rawgeti(L, LUA_REGISTRYINDEX, fuzz_policy_string_index);
  if (!lua_rawequal(L, -1, -2))
    fuzz_policy_die("sandbox", "strings' __index was not restored");
  lua_settop(L, top);
  return 0;
}

#ifndef MNEMO_FUZZ_NO_MAIN
/* The Lua state lives until exit (libFuzzer never returns): no leak report
 * for what it and the modules it loaded hold. LuaJIT allocates with its own
 * mmap allocator, so per-input leak checks would see nothing anyway. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "detect_leaks=0";
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  return fuzz_policy_init();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_policy_one(data, size);
}
#endif
