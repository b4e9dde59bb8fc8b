/* The L1 cache for Lua: a userdata holding a mnemo_cache_t, keys and
 * values as Lua strings, expiry on the runtime's clock (virtual in tests).
 * lua/mnemo/cache.lua adds `set` (errors as error objects) and the
 * cascade in front of Redis. */
#include <lauxlib.h>
#include <math.h>
#include <string.h>

#include "cache.h"
#include "lua_mnemo.h"
#include "lua_runtime.h"

typedef struct lua_cache {
  mnemo_cache_t cache;
  mnemo_rt_t *rt;
} lua_cache_t;

static const char cache_mt[] = "mnemo.cache";

static lua_cache_t *check(lua_State *L) {
  lua_cache_t *c = luaL_checkudata(L, 1, cache_mt);
  if (c->cache.buckets == NULL)
    luaL_error(L, "cache: already freed");
  return c;
}

static size_t opt_size(lua_State *L, int t, const char *field, size_t dflt) {
  double d;
  lua_getfield(L, t, field);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return dflt;
  }
  if (!lua_isnumber(L, -1))
    luaL_error(L, "cache.new: %s: expected a number, got %s", field,
               luaL_typename(L, -1));
  d = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (!(d >= 1) || d != floor(d) || d > 9007199254740992.0)
    luaL_error(L, "cache.new: %s: expected an integer >= 1, got %f", field, d);
  return (size_t)d;
}

/* cache_new{ max_bytes = n, max_entries = n|nil } -> cache */
static int l_cache_new(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  mnemo_cache_config_t cfg;
  lua_cache_t *c;
  int rc;

  memset(&cfg, 0, sizeof(cfg));
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  cfg.max_bytes = opt_size(L, 1, "max_bytes", 64u << 20);
  cfg.max_entries = opt_size(L, 1, "max_entries", 0);
  /* A random hash key, so keys from outside cannot be chosen to collide;
   * the time and an address if the system has no randomness to give. */
  if (uv_random(NULL, NULL, cfg.seed, sizeof(cfg.seed), 0, NULL) != 0) {
    cfg.seed[0] = uv_hrtime();
    cfg.seed[1] = (uint64_t)(uintptr_t)&cfg;
  }
  c = lua_newuserdata(L, sizeof(*c));
  memset(c, 0, sizeof(*c));
  c->rt = rt;
  rc = mnemo_cache_init(&c->cache, &cfg);
  if (rc != 0)
    return luaL_error(L, "cache.new: %s", uv_strerror(rc));
  luaL_getmetatable(L, cache_mt);
  lua_setmetatable(L, -2);
  return 1;
}

static uint64_t now_ns(lua_cache_t *c) {
  return mnemo_clock_now(&c->rt->clock);
}

/* cache:get(key) -> value | nil */
static int l_get(lua_State *L) {
  lua_cache_t *c = check(L);
  size_t klen, vlen;
  const char *key = luaL_checklstring(L, 2, &klen);
  const void *value;
  if (mnemo_cache_get(&c->cache, key, klen, now_ns(c), &value, &vlen) != 0)
    return 0;
  lua_pushlstring(L, value, vlen);
  return 1;
}

/* cache:raw_set(key, value, ttl_seconds|nil) -> true | nil, message */
static int l_raw_set(lua_State *L) {
  lua_cache_t *c = check(L);
  size_t klen, vlen;
  const char *key = luaL_checklstring(L, 2, &klen);
  const char *value = luaL_checklstring(L, 3, &vlen);
  uint64_t now = now_ns(c), expires = 0;
  int rc;
  if (!lua_isnoneornil(L, 4)) {
    double ttl = luaL_checknumber(L, 4);
    if (!(ttl > 0))
      return luaL_argerror(L, 4, "ttl: expected seconds > 0");
    expires = now + mnemo_seconds_to_ns(ttl);
  }
  rc = mnemo_cache_set(&c->cache, key, klen, value, vlen, expires, now);
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  if (rc == MNEMO_E2BIG)
    lua_pushfstring(L,
                    "entry of %f bytes is larger than the whole cache "
                    "(max_bytes %f)",
                    (lua_Number)(klen + vlen + mnemo_cache_entry_overhead()),
                    (lua_Number)c->cache.config.max_bytes);
  else
    lua_pushstring(L, uv_strerror(rc));
  return 2;
}

/* cache:delete(key) -> true if it was there */
static int l_delete(lua_State *L) {
  lua_cache_t *c = check(L);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  lua_pushboolean(L, mnemo_cache_delete(&c->cache, key, klen) == 0);
  return 1;
}

static int l_clear(lua_State *L) {
  mnemo_cache_clear(&check(L)->cache);
  return 0;
}

static void set_number(lua_State *L, const char *name, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, name);
}

/* cache:stats() -> { hits, misses, sets, evictions, expirations, rejected,
 * bytes, entries, max_bytes, max_entries (nil: no limit) } */
static int l_stats(lua_State *L) {
  lua_cache_t *c = check(L);
  const mnemo_cache_stats_t *s = &c->cache.stats;
  lua_createtable(L, 0, 10);
  set_number(L, "hits", (double)s->hits);
  set_number(L, "misses", (double)s->misses);
  set_number(L, "sets", (double)s->sets);
  set_number(L, "evictions", (double)s->evictions);
  set_number(L, "expirations", (double)s->expirations);
  set_number(L, "rejected", (double)s->rejected);
  set_number(L, "bytes", (double)s->bytes);
  set_number(L, "entries", (double)s->entries);
  set_number(L, "max_bytes", (double)c->cache.config.max_bytes);
  if (c->cache.config.max_entries != 0)
    set_number(L, "max_entries", (double)c->cache.config.max_entries);
  return 1;
}

static int l_gc(lua_State *L) {
  lua_cache_t *c = luaL_checkudata(L, 1, cache_mt);
  mnemo_cache_free(&c->cache);
  return 0;
}

void mnemo_open_cache(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"get", l_get},     {"raw_set", l_raw_set}, {"delete", l_delete},
      {"clear", l_clear}, {"stats", l_stats},     {NULL, NULL}};
  mnemo_lua_class(L, cache_mt, methods, l_gc);
  /* cache.lua adds methods written in Lua (set) to the same table. */
  luaL_getmetatable(L, cache_mt);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "cache_methods");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_cache_new);
  lua_setfield(L, -2, "cache_new");
}
