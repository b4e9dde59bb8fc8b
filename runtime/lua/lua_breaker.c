/* Circuit breakers for Lua: a userdata around mnemo_breaker_t. The
 * registry by name, health probes and subscribers live in
 * lua/mnemo/breaker.lua; transitions reach Lua through one listener. */
#include <lauxlib.h>
#include <string.h>

#include "breaker.h"
#include "lua_mnemo.h"
#include "lua_runtime.h"
#include "status.h"

typedef struct lua_breaker {
  mnemo_breaker_t breaker;
  mnemo_rt_t *rt;
  int initialised;
} lua_breaker_t;

static const char breaker_mt[] = "mnemo.breaker";
static const char listener_key = 'l';

static double num_field(lua_State *L, int t, const char *k, double d) {
  double v;
  lua_getfield(L, t, k);
  v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : d;
  lua_pop(L, 1);
  return v;
}

/* Reads a Lua config table (seconds, names as in policy files). Returns 0
 * or pushes an error string and returns -1. */
static int read_config(lua_State *L, int t, mnemo_breaker_config_t *cfg) {
  const char *window;
  mnemo_breaker_config_default(cfg);
  cfg->failure_threshold =
      (uint32_t)num_field(L, t, "failure_threshold", cfg->failure_threshold);
  cfg->failure_rate_threshold =
      num_field(L, t, "failure_rate", cfg->failure_rate_threshold);
  cfg->window_size = (uint32_t)num_field(L, t, "window_size", 0);
  cfg->minimum_calls =
      (uint32_t)num_field(L, t, "minimum_calls", cfg->minimum_calls);
  cfg->slow_call_ns = mnemo_seconds_to_ns(num_field(L, t, "slow_call", 0));
  cfg->recovery_timeout_ns = mnemo_seconds_to_ns(num_field(
      L, t, "recovery_timeout", (double)cfg->recovery_timeout_ns / 1e9));
  cfg->half_open_max_calls = (uint32_t)num_field(L, t, "half_open_max_calls",
                                                 cfg->half_open_max_calls);
  lua_getfield(L, t, "critical");
  cfg->critical = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, t, "window");
  window = lua_tostring(L, -1);
  if (window == NULL)
    cfg->window_kind = MNEMO_WINDOW_NONE;
  else if (strcmp(window, "count") == 0)
    cfg->window_kind = MNEMO_WINDOW_COUNT;
  else if (strcmp(window, "time") == 0)
    cfg->window_kind = MNEMO_WINDOW_TIME;
  else {
    lua_pop(L, 1);
    lua_pushfstring(L, "window: expected \"count\" or \"time\", got %s",
                    window);
    return -1;
  }
  lua_pop(L, 1);
  /* Without a size: the last 100 calls, or the last 60 seconds. */
  if (cfg->window_size == 0 && cfg->window_kind != MNEMO_WINDOW_NONE)
    cfg->window_size = cfg->window_kind == MNEMO_WINDOW_COUNT ? 100 : 60;
  return 0;
}

static void on_transition(mnemo_breaker_t *b, mnemo_breaker_state_t from,
                          mnemo_breaker_state_t to, uint64_t now_ns,
                          void *data) {
  lua_breaker_t *lb = data;
  lua_State *L = lb->rt->L;
  (void)now_ns;
  lua_pushlightuserdata(L, (void *)&listener_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushstring(L, b->name);
  lua_pushstring(L, mnemo_breaker_state_name(from));
  lua_pushstring(L, mnemo_breaker_state_name(to));
  /* A listener never breaks the call that caused the transition. */
  if (lua_pcall(L, 3, 0, 0) != 0)
    lua_pop(L, 1);
}

static uint64_t now_of(lua_breaker_t *lb) {
  return mnemo_clock_cached(&lb->rt->clock);
}

/* breaker_new(name, config) -> breaker | nil, err */
static int l_breaker_new(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  const char *name = luaL_checkstring(L, 1);
  mnemo_breaker_config_t cfg;
  lua_breaker_t *lb;
  char err[512];
  int rc;

  luaL_checktype(L, 2, LUA_TTABLE);
  if (read_config(L, 2, &cfg) != 0) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  lb = lua_newuserdata(L, sizeof(*lb));
  memset(lb, 0, sizeof(*lb));
  lb->rt = rt;
  err[0] = '\0';
  if (mnemo_breaker_config_validate(&cfg, err, sizeof(err)) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  rc = mnemo_breaker_init(&lb->breaker, name, &cfg, now_of(lb));
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, rc == MNEMO_ENOMEM ? "out of memory" : "invalid config");
    return 2;
  }
  lb->initialised = 1;
  lb->breaker.on_transition = on_transition;
  lb->breaker.data = lb;
  luaL_getmetatable(L, breaker_mt);
  lua_setmetatable(L, -2);
  return 1;
}

/* The breaker metatable's address, so the hot path can check a userdata's
 * type with one pointer comparison instead of a registry lookup. */
static const void *breaker_mt_ptr;

mnemo_breaker_t *mnemo_lua_to_breaker(lua_State *L, int idx) {
  const void *mt = NULL;
  if (lua_getmetatable(L, idx)) {
    mt = lua_topointer(L, -1);
    lua_pop(L, 1);
  }
  if (mt == NULL || mt != breaker_mt_ptr)
    return &((lua_breaker_t *)luaL_checkudata(L, idx, breaker_mt))->breaker;
  return &((lua_breaker_t *)lua_touserdata(L, idx))->breaker;
}

static lua_breaker_t *check(lua_State *L) {
  return luaL_checkudata(L, 1, breaker_mt);
}

/* b:acquire() -> true | false, retry_after_seconds */
static int l_acquire(lua_State *L) {
  lua_breaker_t *lb = check(L);
  uint64_t retry_after = 0;
  if (mnemo_breaker_acquire(&lb->breaker, now_of(lb), &retry_after) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_pushnumber(L, (double)retry_after / 1e9);
  return 2;
}

static int l_success(lua_State *L) {
  lua_breaker_t *lb = check(L);
  mnemo_breaker_on_success(&lb->breaker, now_of(lb),
                           mnemo_seconds_to_ns(luaL_optnumber(L, 2, 0)));
  return 0;
}

static int l_failure(lua_State *L) {
  lua_breaker_t *lb = check(L);
  mnemo_breaker_on_failure(&lb->breaker, now_of(lb),
                           mnemo_seconds_to_ns(luaL_optnumber(L, 2, 0)));
  return 0;
}

static int l_ignored(lua_State *L) {
  lua_breaker_t *lb = check(L);
  mnemo_breaker_on_ignored(&lb->breaker, now_of(lb));
  return 0;
}

static int l_state(lua_State *L) {
  lua_breaker_t *lb = check(L);
  lua_pushstring(L, mnemo_breaker_state_name(
                        mnemo_breaker_state(&lb->breaker, now_of(lb))));
  return 1;
}

static void set_number(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

/* b:metrics() -> table (times in seconds on mnemo.now()'s axis) */
static int l_metrics(lua_State *L) {
  lua_breaker_t *lb = check(L);
  mnemo_breaker_t *b = &lb->breaker;
  mnemo_breaker_window_metrics_t m;
  mnemo_breaker_metrics(b, now_of(lb), &m);
  lua_createtable(L, 0, 20);
  lua_pushstring(L, b->name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, mnemo_breaker_state_name(m.state));
  lua_setfield(L, -2, "state");
  set_number(L, "calls", (double)b->calls);
  set_number(L, "successes", (double)b->successes);
  set_number(L, "failures", (double)b->failures);
  set_number(L, "slow_calls", (double)b->slow_calls);
  set_number(L, "rejected", (double)b->rejected);
  set_number(L, "successes_while_open", (double)b->successes_while_open);
  set_number(L, "ignored", (double)b->ignored);
  set_number(L, "consecutive_failures", b->consecutive_failures);
  set_number(L, "window_calls", m.window_calls);
  set_number(L, "window_failures", m.window_failures);
  set_number(L, "failure_rate", m.failure_rate);
  set_number(L, "retry_after", (double)m.retry_after_ns / 1e9);
  if (b->last_failure_ns != 0)
    set_number(L, "last_failure_at", (double)b->last_failure_ns / 1e9);
  set_number(L, "state_changed_at", (double)b->state_changed_ns / 1e9);
  lua_createtable(L, 0, 8);
  set_number(L, "failure_threshold", b->config.failure_threshold);
  set_number(L, "failure_rate", b->config.failure_rate_threshold);
  set_number(L, "window_size", b->config.window_size);
  set_number(L, "minimum_calls", b->config.minimum_calls);
  set_number(L, "slow_call", (double)b->config.slow_call_ns / 1e9);
  set_number(L, "recovery_timeout",
             (double)b->config.recovery_timeout_ns / 1e9);
  set_number(L, "half_open_max_calls", b->config.half_open_max_calls);
  lua_pushboolean(L, b->config.critical);
  lua_setfield(L, -2, "critical");
  lua_setfield(L, -2, "config");
  lua_pushboolean(L, b->config.critical);
  lua_setfield(L, -2, "critical");
  return 1;
}

static int l_reset(lua_State *L) {
  lua_breaker_t *lb = check(L);
  mnemo_breaker_reset(&lb->breaker, now_of(lb));
  return 0;
}

static int l_force_half_open(lua_State *L) {
  lua_breaker_t *lb = check(L);
  mnemo_breaker_force_half_open(&lb->breaker, now_of(lb));
  return 0;
}

/* b:restore(state, remaining_seconds) -> true | nil, err: a CLOSED breaker
 * put into a state saved by an earlier process ("open": half-opens in
 * remaining_seconds, which must be in (0, recovery_timeout]; "half_open").
 * See mnemo_breaker_restore. */
static int l_restore(lua_State *L) {
  lua_breaker_t *lb = check(L);
  const char *name = luaL_checkstring(L, 2);
  double remaining = luaL_optnumber(L, 3, 0);
  mnemo_breaker_state_t to;
  if (strcmp(name, "open") == 0)
    to = MNEMO_BREAKER_OPEN;
  else if (strcmp(name, "half_open") == 0)
    to = MNEMO_BREAKER_HALF_OPEN;
  else {
    lua_pushnil(L);
    lua_pushfstring(L, "restore: expected \"open\" or \"half_open\", got %s",
                    name);
    return 2;
  }
  if (mnemo_breaker_restore(&lb->breaker, to, mnemo_seconds_to_ns(remaining),
                            now_of(lb)) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, lb->breaker.state != MNEMO_BREAKER_CLOSED
                          ? "restore: the breaker is not closed"
                          : "restore: remaining time out of range");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* b:reconfigure(config) -> true | nil, err (live state is kept) */
static int l_reconfigure(lua_State *L) {
  lua_breaker_t *lb = check(L);
  mnemo_breaker_config_t cfg;
  char err[512];
  luaL_checktype(L, 2, LUA_TTABLE);
  if (read_config(L, 2, &cfg) != 0) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  err[0] = '\0';
  if (mnemo_breaker_reconfigure(&lb->breaker, &cfg, now_of(lb), err,
                                sizeof(err)) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_gc(lua_State *L) {
  lua_breaker_t *lb = lua_touserdata(L, 1);
  if (lb->initialised)
    mnemo_breaker_free(&lb->breaker);
  lb->initialised = 0;
  return 0;
}

static int l_set_listener(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushlightuserdata(L, (void *)&listener_key);
  lua_pushvalue(L, 1);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return 0;
}

void mnemo_open_breaker(lua_State *L) {
  static const luaL_Reg methods[] = {{"acquire", l_acquire},
                                     {"success", l_success},
                                     {"failure", l_failure},
                                     {"ignored", l_ignored},
                                     {"state", l_state},
                                     {"metrics", l_metrics},
                                     {"reset", l_reset},
                                     {"force_half_open", l_force_half_open},
                                     {"reconfigure", l_reconfigure},
                                     {"restore", l_restore},
                                     {NULL, NULL}};
  breaker_mt_ptr = mnemo_lua_class(L, breaker_mt, methods, l_gc);
  lua_pushcfunction(L, l_breaker_new);
  lua_setfield(L, -2, "breaker_new");
  lua_pushcfunction(L, l_set_listener);
  lua_setfield(L, -2, "set_breaker_listener");
}
