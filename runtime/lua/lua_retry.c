/* Retry policies for Lua: a userdata holding a mnemo_retry_policy_t, its
 * PRNG and its retry budget. Decisions are made in C; lua/mnemo/guard.lua
 * drives the attempts. */
#include <lauxlib.h>
#include <math.h>
#include <string.h>

#include "error_class.h"
#include "lua_mnemo.h"
#include "lua_runtime.h"
#include "retry.h"
#include "retry_budget.h"
#include "rng.h"
#include "status.h"

typedef struct lua_retry {
  mnemo_retry_policy_t policy;
  mnemo_rng_t rng;
  mnemo_retry_budget_t budget;
  int has_budget;
  mnemo_rt_t *rt;
} lua_retry_t;

static const char retry_mt[] = "mnemo.retry_policy";

static double opt_number_field(lua_State *L, int t, const char *k, double d) {
  double v;
  lua_getfield(L, t, k);
  v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : d;
  lua_pop(L, 1);
  return v;
}

/* Reads a list of class names into a bit mask; unknown names are reported
 * through the caller's error buffer. */
static uint32_t class_mask(lua_State *L, int t, const char *k, uint32_t dflt,
                           luaL_Buffer *errors, int *bad) {
  uint32_t mask = 0;
  int i, n;
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return dflt;
  }
  n = (int)lua_objlen(L, -1);
  for (i = 1; i <= n; i++) {
    mnemo_error_class_t c;
    lua_rawgeti(L, -1, i);
    if (!lua_isstring(L, -1) ||
        mnemo_error_class_parse(lua_tostring(L, -1), &c) != 0) {
      lua_pushfstring(L, "%s[%d]: unknown error class %s\n", k, i,
                      lua_isstring(L, -1) ? lua_tostring(L, -1)
                                          : luaL_typename(L, -1));
      luaL_addvalue(errors);
      *bad = 1;
    } else {
      mask |= MNEMO_EC_BIT(c);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return mask;
}

/* retry_policy_new{attempts=, base=, max=, multiplier=, jitter=, on={},
 * never={}, seed=, budget={ratio=, min_retries=, window=}|false}
 * -> policy | nil, "field: problem\n..." (the table is validated in Lua
 * first; this is the last line of defence). */
static int l_retry_policy_new(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  lua_retry_t *r;
  luaL_Buffer errors;
  char err[512];
  int bad = 0;
  const char *jitter;

  luaL_checktype(L, 1, LUA_TTABLE);
  r = lua_newuserdata(L, sizeof(*r));
  memset(r, 0, sizeof(*r));
  r->rt = rt;
  luaL_buffinit(L, &errors);
  mnemo_retry_policy_default(&r->policy);
  r->policy.max_attempts =
      (uint32_t)opt_number_field(L, 1, "attempts", r->policy.max_attempts);
  r->policy.base_ns = mnemo_seconds_to_ns(
      opt_number_field(L, 1, "base", (double)r->policy.base_ns / 1e9));
  r->policy.max_ns = mnemo_seconds_to_ns(
      opt_number_field(L, 1, "max", (double)r->policy.max_ns / 1e9));
  r->policy.multiplier =
      opt_number_field(L, 1, "multiplier", r->policy.multiplier);
  lua_getfield(L, 1, "jitter");
  jitter = lua_tostring(L, -1);
  if (jitter != NULL && mnemo_jitter_parse(jitter, &r->policy.jitter) != 0) {
    lua_pushfstring(L,
                    "jitter: expected none, full, equal, decorrelated or "
                    "proportional, got %s\n",
                    jitter);
    luaL_addvalue(&errors);
    bad = 1;
  }
  lua_pop(L, 1);
  r->policy.retry_on =
      class_mask(L, 1, "on", r->policy.retry_on, &errors, &bad);
  r->policy.never_retry =
      class_mask(L, 1, "never", r->policy.never_retry, &errors, &bad);
  if (mnemo_retry_policy_validate(&r->policy, err, sizeof(err)) != 0) {
    luaL_addstring(&errors, err);
    bad = 1;
  }
  mnemo_rng_seed(&r->rng,
                 (uint64_t)opt_number_field(L, 1, "seed", (double)uv_hrtime()));
  lua_getfield(L, 1, "budget");
  if (lua_istable(L, -1)) {
    int t = lua_gettop(L);
    double ratio = opt_number_field(L, t, "ratio", 0.2);
    double min_retries = opt_number_field(L, t, "min_retries", 3);
    double window = opt_number_field(L, t, "window", 10);
    if (mnemo_retry_budget_init(&r->budget, ratio, (uint32_t)min_retries,
                                mnemo_seconds_to_ns(window)) != 0) {
      luaL_addstring(&errors, "budget: expected ratio in [0, 10] and a "
                              "window > 0\n");
      bad = 1;
    }
    r->has_budget = 1;
  }
  lua_pop(L, 1);
  luaL_pushresult(&errors);
  if (bad) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_pop(L, 1);
  luaL_getmetatable(L, retry_mt);
  lua_setmetatable(L, -2);
  return 1;
}

static lua_retry_t *check_retry(lua_State *L) {
  return luaL_checkudata(L, 1, retry_mt);
}

static mnemo_error_class_t class_arg(lua_State *L, int idx) {
  mnemo_error_class_t c = MNEMO_EC_UNKNOWN;
  const char *name = lua_tostring(L, idx);
  if (name != NULL)
    mnemo_error_class_parse(name, &c);
  return c;
}

/* policy:should(class, attempt) -> bool */
static int l_should(lua_State *L) {
  lua_retry_t *r = check_retry(L);
  lua_pushboolean(L, mnemo_retry_should(&r->policy, class_arg(L, 2),
                                        (uint32_t)luaL_checknumber(L, 3)));
  return 1;
}

/* policy:delay(attempt, prev_seconds) -> seconds */
static int l_delay(lua_State *L) {
  lua_retry_t *r = check_retry(L);
  uint64_t d =
      mnemo_retry_delay(&r->policy, (uint32_t)luaL_checknumber(L, 2),
                        mnemo_seconds_to_ns(luaL_optnumber(L, 3, 0)), &r->rng);
  lua_pushnumber(L, (double)d / 1e9);
  return 1;
}

static int l_attempts(lua_State *L) {
  lua_pushnumber(L, check_retry(L)->policy.max_attempts);
  return 1;
}

/* policy:on_request() — a first attempt, for the budget */
static int l_on_request(lua_State *L) {
  lua_retry_t *r = check_retry(L);
  if (r->has_budget)
    mnemo_retry_budget_on_request(&r->budget,
                                  mnemo_clock_cached(&r->rt->clock));
  return 0;
}

/* policy:try_retry() -> bool: the budget allows one more retry */
static int l_try_retry(lua_State *L) {
  lua_retry_t *r = check_retry(L);
  lua_pushboolean(L, !r->has_budget ||
                         mnemo_retry_budget_try_retry(
                             &r->budget, mnemo_clock_cached(&r->rt->clock)));
  return 1;
}

/* policy:carry_budget(old): a reloaded policy keeps the window of the
 * budget it replaces (its counts), under its own ratio and window. */
static int l_carry_budget(lua_State *L) {
  lua_retry_t *r = check_retry(L);
  lua_retry_t *old = luaL_checkudata(L, 2, retry_mt);
  if (r->has_budget && old->has_budget) {
    mnemo_retry_budget_t carried = old->budget;
    if (mnemo_retry_budget_reconfigure(&carried, r->budget.ratio,
                                       r->budget.min_retries,
                                       r->budget.window_ns) == 0)
      r->budget = carried;
  }
  return 0;
}

static int l_budget_stats(lua_State *L) {
  lua_retry_t *r = check_retry(L);
  if (!r->has_budget)
    return 0;
  lua_createtable(L, 0, 4);
  lua_pushnumber(L, (double)r->budget.total_requests);
  lua_setfield(L, -2, "requests");
  lua_pushnumber(L, (double)r->budget.total_retries);
  lua_setfield(L, -2, "retries");
  lua_pushnumber(L, (double)r->budget.total_denied);
  lua_setfield(L, -2, "denied");
  return 1;
}

void mnemo_open_retry(lua_State *L) {
  static const luaL_Reg methods[] = {{"should", l_should},
                                     {"delay", l_delay},
                                     {"attempts", l_attempts},
                                     {"on_request", l_on_request},
                                     {"try_retry", l_try_retry},
                                     {"budget_stats", l_budget_stats},
                                     {"carry_budget", l_carry_budget},
                                     {NULL, NULL}};
  mnemo_lua_class(L, retry_mt, methods, NULL);
  lua_pushcfunction(L, l_retry_policy_new);
  lua_setfield(L, -2, "retry_policy_new");
}
