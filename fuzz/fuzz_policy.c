/* fuzz_policy — libFuzzer target for the policy loader and validator
 * (lua/mnemo/policy.lua check_source -> sandbox.lua -> config.lua) and for
 * the decision hooks of an accepted policy (lua/mnemo/hooks.lua call).
 *
 * LuaJIT is embedded once (LLVMFuzzerInitialize): standard libraries,
 * package.path = <root>/lua/?.lua, and package.preload for mnemo_core and
 * luv: the mnemo_core this binary is linked with (the Makefile builds the
 * Lua bindings and libmnemo with the fuzzer's sanitizers and coverage, so
 * the sandbox's C half — runtime/lua/lua_sandbox.c, lua_pattern.c, pattern.c —
 * runs instrumented), never build/mnemo_core.so. <root> is
 * $MNEMO_FUZZ_ROOT, else the current directory (the repository).
 * Each input is then checked as the text of a policy file named
 * policies/examples/fuzz-input.lua (so `include = "base.lua"` resolves to a
 * real file):
 *   policy.check_source(text, name)
 * must return the table, or nil and a non-empty problem text (a clear
 * rejection). An accepted policy's hooks (operations.*.should_retry,
 * next_delay, fallback; breakers.*.health_probe, on_transition) are then
 * called HOOK_CALLS times each through hooks.call, as the guard and the
 * breakers call them, with the default hook budget and a hook memory
 * limit of 8 MiB (HOOK_MEMORY: small, so that what a hook keeps across
 * calls shows within HOOK_CALLS calls): each call must give
 * ok and a plain value that passes the hook's check, or a failure that is
 * counted and logged (hook_failed, with a reason). Anything else is a bug
 * and abort()s: a Lua error escaping check_source or hooks.call, a wrong
 * result shape, the sandbox's count hook, memory limit or string metatable
 * left behind, a run still marked exhausted, or hooks holding more memory
 * after their calls (after a full collection) than twice the hook memory
 * limit (a hook growing a table it keeps, call after call; the second half:
 * LuaJIT's string buffer, which a collection does not always shrink).
 * A hang shows up as a libFuzzer timeout, growth past the sandbox's limits
 * as an "oom-" file (`fuzz/run` passes -timeout=5 -rss_limit_mb=1536).
 *
 * fuzz/fuzz_policy_shapes.c is a second target on the same checks: it
 * builds the Lua text from the input's bytes out of a grammar of hostile
 * shapes (see there) and defines FUZZ_POLICY_SHAPES before including this
 * file.
 *
 * Build and run: `make fuzz` (corpus in build/fuzz/policy/, seeded from
 * tests/corpus/policy/, policies/, tests/fixtures/policies/ and
 * tests/fixtures/hostile/). Crashing inputs go to tests/corpus/policy/,
 * replayed by tests/c/test_corpus.c (which #includes this file with
 * MNEMO_FUZZ_NO_MAIN defined, and is linked with mnemo_core too).
 *
 * Coverage: libFuzzer sees the C edges (mnemo_core's included) but not the
 * validator, which is Lua. So the fuzzer build (not the regression test)
 * turns the JIT off and installs a line hook that counts (previous line,
 * line) pairs of the lua/mnemo files in libFuzzer's extra counters. The
 * sandbox swaps in its own count hook (in C) while policy code runs and
 * puts the line hook back after; debug.sethook/gethook are wrapped so that
 * "no hook" means "the coverage hook" to Lua code that asks.
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

#include "lua_luv.h"
#include "lua_mnemo.h"

#define FUZZ_POLICY_NAME "policies/examples/fuzz-input.lua"
#define HOOK_CALLS 6

static lua_State *fuzz_policy_L;
static int fuzz_policy_check_ref = LUA_NOREF;    /* policy.check_source */
static int fuzz_policy_hooks_ref = LUA_NOREF;    /* HOOK_DRIVER's function */
static int fuzz_policy_string_index = LUA_NOREF; /* ("").__index, at start */
static const uint8_t *fuzz_policy_text;          /* the input being checked */
static size_t fuzz_policy_text_len;

static void fuzz_policy_die(const char *what, const char *detail) {
  fprintf(stderr, "fuzz_policy: %s: %s\n", what, detail ? detail : "");
  if (fuzz_policy_text != NULL)
    fprintf(stderr, "fuzz_policy: the policy text (%zu bytes):\n%.*s\n",
            fuzz_policy_text_len,
            (int)(fuzz_policy_text_len > 65536 ? 65536 : fuzz_policy_text_len),
            (const char *)fuzz_policy_text);
  abort();
}

/* Calls an accepted policy's hooks as the guard and the breakers do (see
 * the header). Returns nil, or what is wrong. Host code: it reads the
 * validated (metatable-free) table raw and runs nothing of the policy's
 * outside hooks.call. */
static const char HOOK_DRIVER[] =
    "local CALLS = ...\n"
    "local hooks = require 'mnemo.hooks'\n"
    "local log = require 'mnemo.log'\n"
    "local errors = require 'mnemo.errors'\n"
    "local sandbox = require 'mnemo.sandbox'\n"
    "local core = require 'mnemo_core'\n"
    "local MIB = 1024 * 1024\n"
    "local HOOK_MEMORY = 8 * MIB\n"
    "local last\n"
    "hooks.set_limits(nil, HOOK_MEMORY)\n"
    "log.set_sink(function(line) last = line end)\n"
    "local function call(name, owner, fn, check, ...)\n"
    "  local before = hooks.failures[name] or 0\n"
    "  last = nil\n"
    "  local ok, value = hooks.call(name, owner, fn, check, ...)\n"
    "  if core.sandbox_exhausted() then\n"
    "    return name .. ': a run is still marked exhausted after the call'\n"
    "  end\n"
    "  if select(2, core.sandbox_memory()) ~= nil then\n"
    "    return name .. ': a memory limit is still in force after the call'\n"
    "  end\n"
    "  if ok == true then\n"
    "    local is_plain, why = sandbox.plain(value)\n"
    "    if not is_plain then\n"
    "      return name .. ': accepted a value that is not plain: ' .. why\n"
    "    end\n"
    "    if check and not check(value) then\n"
    "      return name .. ': accepted a value its check refuses'\n"
    "    end\n"
    "  elseif ok == false then\n"
    "    if (hooks.failures[name] or 0) ~= before + 1 then\n"
    "      return name .. ': failed, but the failure was not counted'\n"
    "    end\n"
    "    if type(last) ~= 'string' or\n"
    "        not last:find('\"event\":\"hook_failed\"', 1, true) or\n"
    "        last:find('\"error\":\"\"', 1, true) then\n"
    "      return name .. ': failed without a hook_failed line with a '\n"
    "        .. 'reason: ' .. tostring(last)\n"
    "    end\n"
    "  else\n"
    "    return name .. ': hooks.call returned ' .. type(ok)\n"
    "  end\n"
    "end\n"
    "local function used()\n"
    "  collectgarbage()\n"
    "  return (core.sandbox_memory())\n"
    "end\n"
    "return function(t)\n"
    "  local calls = {}\n"
    "  local function add(section, names)\n"
    "    if type(t[section]) ~= 'table' then return end\n"
    "    for owner, entry in next, t[section] do\n"
    "      if type(entry) == 'table' then\n"
    "        for _, name in ipairs(names) do\n"
    "          if type(entry[name]) == 'function' and #calls < 8 then\n"
    "            calls[#calls + 1] = { name, owner, entry[name] }\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  add('operations', { 'should_retry', 'next_delay', 'fallback' })\n"
    "  add('breakers', { 'health_probe', 'on_transition' })\n"
    "  if #calls == 0 then return nil end\n"
    "  local err = errors.new('connection', 'refused', { retry_after = 1 })\n"
    "  local base = used()\n"
    "  for i = 1, CALLS do\n"
    "    for _, c in ipairs(calls) do\n"
    "      local name, owner, fn, why = c[1], c[2], c[3], nil\n"
    "      if name == 'should_retry' then\n"
    "        why = call(name, owner, fn, hooks.is_boolean, err, i)\n"
    "      elseif name == 'next_delay' then\n"
    "        why = call(name, owner, fn, hooks.is_delay, i, err, 0.01 * i)\n"
    "      elseif name == 'fallback' then\n"
    "        why = call(name, owner, fn, nil, err,\n"
    "          { operation = owner, attempts = i })\n"
    "      elseif name == 'health_probe' then\n"
    "        why = call(name, owner, fn, hooks.is_boolean)\n"
    "      else\n"
    "        why = call(name, owner, fn, nil, owner, 'closed', 'open')\n"
    "      end\n"
    "      if why then return why end\n"
    "    end\n"
    "  end\n"
    "  local held = used() - base\n"
    "  if held > 2 * HOOK_MEMORY then\n"
    "    return ('the hooks hold %.1f MiB after %d calls each (hook memory '\n"
    "      .. 'limit %d MiB)'):format(held / MIB, CALLS,\n"
    "      hooks.limits.memory / MIB)\n"
    "  end\n"
    "end\n";

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
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_mnemo_core);
  lua_setfield(L, -2, "mnemo_core");
  lua_pushcfunction(L, mnemo_luv_open);
  lua_setfield(L, -2, "luv");
  lua_pop(L, 2);
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
  lua_pop(L, 1);
  if (luaL_loadbuffer(L, HOOK_DRIVER, sizeof(HOOK_DRIVER) - 1,
                      "=fuzz_policy hook driver") != 0)
    fuzz_policy_die("hook driver", lua_tostring(L, -1));
  lua_pushinteger(L, HOOK_CALLS);
  if (lua_pcall(L, 1, 1, -3) != 0)
    fuzz_policy_die("hook driver", lua_tostring(L, -1));
  fuzz_policy_hooks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);

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
    fuzz_policy_check_ref = fuzz_policy_hooks_ref = LUA_NOREF;
    fuzz_policy_string_index = LUA_NOREF;
  }
}
#endif

/* One input; returns 0 (libFuzzer's convention). */
static int fuzz_policy_one(const uint8_t *data, size_t size) {
  lua_State *L;
  int top;
  fuzz_policy_init();
  L = fuzz_policy_L;
  fuzz_policy_text = data;
  fuzz_policy_text_len = size;
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
    lua_rawgeti(L, LUA_REGISTRYINDEX, fuzz_policy_hooks_ref);
    lua_pushvalue(L, -3);
    if (lua_pcall(L, 1, 1, top + 1) != 0)
      fuzz_policy_die("a hook call raised an error (not a hook failure)",
                      lua_tostring(L, -1));
    if (!lua_isnil(L, -1))
      fuzz_policy_die("hooks", lua_tostring(L, -1));
    lua_pop(L, 1);
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
  fuzz_policy_text = NULL;
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

#ifndef FUZZ_POLICY_SHAPES
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_policy_one(data, size);
}
#endif
#endif
