/* Error tracking for Lua: one mnemo_error_tracker_t per Lua state (in the
 * registry, and an upvalue of every function here, so the record path does
 * no lookups), mnemo.errors.record{...} on the caller's path, and batches
 * for the flusher in lua/mnemo/tracking.lua.
 *
 *   error_record{ severity, category, service, operation, error_type,
 *                 message, error, context, correlation_id, traceback }
 *       -> true | false, reason   (raises only on a bad argument)
 *   error_configure{ capacity, max_bytes, window, service }
 *   error_take(max) -> batch, json, entries, events | nil
 *   batch:commit() / batch:requeue() / batch:drop()
 *   error_counters() -> { recorded, aggregated, dropped, flushed, ... }
 *   error_pending(since_epoch_seconds) -> { CRITICAL = n, ... }
 *   error_peek(max) -> { {severity, ..., count}, ... }  (queued, oldest first)
 *   error_scrub(text) -> text
 *   error_wall_time() -> seconds since the epoch (the clock events get)
 *   error_clear()    the queue emptied, the counters zeroed (tests) */
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "error_track.h"
#include "lua_mnemo.h"
#include "lua_runtime.h"

typedef struct lua_tracker {
  mnemo_error_tracker_t t;
  int alive;         /* cleared by __gc (batches may outlive it at close) */
  char service[128]; /* the default service of events that name none */
} lua_tracker_t;

typedef struct lua_batch {
  mnemo_error_batch_t b;
  lua_tracker_t *owner;
} lua_batch_t;

static const char tracker_mt[] = "mnemo.error_tracker";
static const char batch_mt[] = "mnemo.error_batch";
static const char tracker_key = 'e';

/* Field names of the record table, interned once (upvalues 2..): reading
 * a field is then a rawget with a ready key, no string hashing. */
enum {
  K_SEVERITY,
  K_CATEGORY,
  K_SERVICE,
  K_OPERATION,
  K_ERROR_TYPE,
  K_MESSAGE,
  K_ERROR,
  K_CONTEXT,
  K_CORRELATION_ID,
  K_TRACEBACK,
  K_KIND,
  K_COUNT
};
static const char *const KEY_NAMES[K_COUNT] = {
    "severity", "category", "service",        "operation", "error_type",
    "message",  "error",    "context",        "correlation_id",
    "traceback", "kind"};

#define TRACKER_UP lua_upvalueindex(1)
#define KEY_UP(k) lua_upvalueindex(2 + (k))
#define MAX_CONTEXT_FIELDS 32

static lua_tracker_t *tracker(lua_State *L) {
  return lua_touserdata(L, TRACKER_UP);
}

/* Wall-clock microseconds: error events are dated for people and for the
 * database, not measured (the monotonic clock would not do). */
static int64_t wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Pushes t[key] (raw) for a record field. */
static int get(lua_State *L, int t, int k) {
  lua_pushvalue(L, KEY_UP(k));
  lua_rawget(L, t);
  return lua_type(L, -1);
}

/* An optional string field: absent (nil) or a string; numbers are taken
 * as text. Leaves the value on the stack (it anchors the string). */
static mnemo_str_t opt_string(lua_State *L, int t, int k) {
  mnemo_str_t s = {NULL, 0};
  int type = get(L, t, k);
  if (type == LUA_TSTRING || type == LUA_TNUMBER)
    s.s = lua_tolstring(L, -1, &s.n);
  else if (type != LUA_TNIL)
    luaL_error(L, "errors.record: %s: expected a string, got %s", KEY_NAMES[k],
               lua_typename(L, type));
  return s;
}

/* "circuit_open" -> "CircuitOpenError": the error type of an error object
 * that has a kind but no name of its own. Pushed on the stack. */
static mnemo_str_t push_type_from_kind(lua_State *L, const char *kind,
                                       size_t n) {
  char buf[MNEMO_ERROR_MAX_NAME];
  size_t i, o = 0;
  int up = 1;
  mnemo_str_t s;
  for (i = 0; i < n && o + 6 < sizeof(buf); i++) {
    char c = kind[i];
    if (c == '_' || c == '-' || c == ' ') {
      up = 1;
      continue;
    }
    buf[o++] = (up && c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
    up = 0;
  }
  memcpy(buf + o, "Error", 5);
  o += 5;
  lua_pushlstring(L, buf, o);
  s.s = lua_tolstring(L, -1, &s.n);
  return s;
}

static int parse_enum_field(lua_State *L, int t, int k, int dflt,
                            int (*parse)(const char *, size_t, int *),
                            const char *list) {
  size_t n;
  const char *name;
  int out, type = get(L, t, k);
  if (type == LUA_TNIL) {
    lua_pop(L, 1);
    return dflt;
  }
  name = type == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  if (name == NULL || parse(name, n, &out) != 0)
    luaL_error(L, "errors.record: %s: expected one of %s, got %s",
               KEY_NAMES[k], list,
               name ? name : lua_typename(L, type));
  lua_pop(L, 1);
  return out;
}

static int parse_severity(const char *s, size_t n, int *out) {
  mnemo_severity_t v;
  int rc = mnemo_severity_parse(s, n, &v);
  *out = (int)v;
  return rc;
}

static int parse_category(const char *s, size_t n, int *out) {
  mnemo_error_category_t v;
  int rc = mnemo_error_category_parse(s, n, &v);
  *out = (int)v;
  return rc;
}

/* Reads the context table at index ctx into out[]; values that are not
 * strings, numbers or booleans are recorded as their tostring, anchored
 * in a table left on the stack (pushed lazily, at most one). */
static size_t read_context(lua_State *L, int ctx, mnemo_error_ctx_t *out) {
  size_t n = 0;
  int anchor = 0, anchored = 0;
  lua_pushnil(L);
  while (lua_next(L, ctx) != 0) {
    mnemo_error_ctx_t *c = &out[n];
    int vt = lua_type(L, -1);
    if (lua_type(L, -2) != LUA_TSTRING || n == MAX_CONTEXT_FIELDS ||
        vt == LUA_TFUNCTION) {
      lua_pop(L, 1);
      continue;
    }
    /* A table says something only through its __tostring. */
    if (vt == LUA_TTABLE || vt == LUA_TUSERDATA) {
      if (!luaL_getmetafield(L, -1, "__tostring")) {
        lua_pop(L, 1);
        continue;
      }
      lua_pop(L, 1);
    }
    memset(c, 0, sizeof(*c));
    c->key.s = lua_tolstring(L, -2, &c->key.n);
    if (vt == LUA_TNUMBER) {
      c->kind = MNEMO_CTX_NUMBER;
      c->number = lua_tonumber(L, -1);
    } else if (vt == LUA_TBOOLEAN) {
      c->kind = MNEMO_CTX_BOOL;
      c->boolean = lua_toboolean(L, -1);
    } else if (vt == LUA_TSTRING) {
      c->kind = MNEMO_CTX_STRING;
      c->str.s = lua_tolstring(L, -1, &c->str.n);
    } else {
      if (anchor == 0) {
        /* Below the iteration key: [ctx..., key, value] -> anchor first. */
        lua_newtable(L);
        lua_insert(L, -3);
        anchor = lua_gettop(L) - 2;
      }
      c->kind = MNEMO_CTX_STRING;
      mnemo_rt_tostring(L, -1);
      c->str.s = lua_tolstring(L, -1, &c->str.n);
      lua_rawseti(L, anchor, ++anchored);
    }
    n++;
    lua_pop(L, 1);
  }
  return n;
}

/* error_record(t) -> true | false, reason */
static int l_record(lua_State *L) {
  lua_tracker_t *lt = tracker(L);
  mnemo_error_event_t ev;
  mnemo_error_ctx_t ctx[MAX_CONTEXT_FIELDS];
  int type, err_idx = 0, rc;

  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (!lua_checkstack(L, 40))
    return luaL_error(L, "errors.record: stack overflow");
  memset(&ev, 0, sizeof(ev));
  ev.severity = (mnemo_severity_t)parse_enum_field(
      L, 1, K_SEVERITY, MNEMO_SEV_ERROR, parse_severity, mnemo_severity_list());
  ev.category = (mnemo_error_category_t)parse_enum_field(
      L, 1, K_CATEGORY, MNEMO_CAT_UNKNOWN, parse_category,
      mnemo_error_category_list());
  ev.service = opt_string(L, 1, K_SERVICE);
  if (ev.service.s == NULL) {
    ev.service.s = lt->service;
    ev.service.n = strlen(lt->service);
  }
  ev.operation = opt_string(L, 1, K_OPERATION);
  ev.error_type = opt_string(L, 1, K_ERROR_TYPE);
  ev.message = opt_string(L, 1, K_MESSAGE);
  ev.correlation_id = opt_string(L, 1, K_CORRELATION_ID);
  ev.traceback = opt_string(L, 1, K_TRACEBACK);

  /* `error`: an error value to take what is missing from. */
  if (get(L, 1, K_ERROR) != LUA_TNIL)
    err_idx = lua_gettop(L);
  if (ev.message.s == NULL) {
    if (err_idx == 0)
      return luaL_error(L, "errors.record: expected a message (or an error)");
    mnemo_rt_tostring(L, err_idx);
    ev.message.s = lua_tolstring(L, -1, &ev.message.n);
  }
  if (ev.error_type.s == NULL) {
    if (err_idx != 0 && lua_type(L, err_idx) == LUA_TTABLE &&
        (lua_pushvalue(L, KEY_UP(K_KIND)), lua_gettable(L, err_idx),
         lua_type(L, -1) == LUA_TSTRING)) {
      size_t n;
      const char *kind = lua_tolstring(L, -1, &n);
      ev.error_type = push_type_from_kind(L, kind, n);
    } else {
      ev.error_type.s = err_idx != 0 && lua_type(L, err_idx) == LUA_TSTRING
                            ? "LuaError"
                            : "Error";
      ev.error_type.n = strlen(ev.error_type.s);
    }
  }
  if (ev.traceback.s == NULL && err_idx != 0 &&
      lua_type(L, err_idx) == LUA_TTABLE) {
    lua_pushvalue(L, KEY_UP(K_TRACEBACK));
    lua_gettable(L, err_idx);
    if (lua_type(L, -1) == LUA_TSTRING)
      ev.traceback.s = lua_tolstring(L, -1, &ev.traceback.n);
  }

  type = get(L, 1, K_CONTEXT);
  if (type == LUA_TTABLE) {
    ev.context = ctx;
    ev.ncontext = read_context(L, lua_gettop(L), ctx);
  } else if (type != LUA_TNIL) {
    return luaL_error(L, "errors.record: context: expected a table, got %s",
                      lua_typename(L, type));
  }

  rc = mnemo_error_record(&lt->t, &ev, wall_us());
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_pushstring(L, rc == MNEMO_ENOMEM ? "out of memory: the event is dropped"
                                       : "invalid event");
  return 2;
}

static double opt_number(lua_State *L, int t, const char *field, double dflt,
                         double min) {
  double d;
  lua_getfield(L, t, field);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return dflt;
  }
  if (lua_type(L, -1) != LUA_TNUMBER)
    luaL_error(L, "error tracking: %s: expected a number, got %s", field,
               luaL_typename(L, -1));
  d = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (!(d >= min) || isinf(d))
    luaL_error(L, "error tracking: %s: expected a number >= %f, got %f", field,
               min, d);
  return d;
}

/* error_configure{ capacity, max_bytes, window (seconds), service } */
static int l_configure(lua_State *L) {
  lua_tracker_t *lt = tracker(L);
  mnemo_error_config_t cfg = lt->t.config;
  luaL_checktype(L, 1, LUA_TTABLE);
  cfg.capacity = (size_t)opt_number(L, 1, "capacity", (double)cfg.capacity, 1);
  cfg.max_bytes = (size_t)opt_number(L, 1, "max_bytes", (double)cfg.max_bytes,
                                     MNEMO_ERROR_MIN_BYTES);
  cfg.window_us = (int64_t)(opt_number(L, 1, "window",
                                       (double)cfg.window_us / 1e6, 0.001) *
                            1e6);
  lua_getfield(L, 1, "service");
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (n == 0 || n >= sizeof(lt->service))
      return luaL_error(L, "error tracking: service: expected a name of 1 to "
                           "127 bytes");
    memcpy(lt->service, s, n + 1);
  } else if (!lua_isnil(L, -1)) {
    return luaL_error(L, "error tracking: service: expected a string");
  }
  lua_pop(L, 1);
  if (mnemo_error_tracker_configure(&lt->t, &cfg) != 0)
    return luaL_error(L, "error tracking: invalid bounds");
  lua_pushboolean(L, 1);
  return 1;
}

/* error_take(max) -> batch, json, entries, events | nil */
static int l_take(lua_State *L) {
  lua_tracker_t *lt = tracker(L);
  double max = luaL_optnumber(L, 1, 500);
  lua_batch_t *b;
  char *json;
  size_t len;
  if (!(max >= 1))
    return luaL_argerror(L, 1, "expected a count >= 1");
  if (lt->t.oldest == NULL)
    return 0;
  b = lua_newuserdata(L, sizeof(*b));
  memset(b, 0, sizeof(*b));
  luaL_getmetatable(L, batch_mt);
  lua_setmetatable(L, -2);
  b->owner = lt;
  mnemo_error_take(&lt->t, &b->b, max > 1e9 ? (size_t)1e9 : (size_t)max);
  if (mnemo_error_batch_json(&b->b, &json, &len) != 0) {
    mnemo_error_batch_requeue(&lt->t, &b->b);
    return luaL_error(L, "error tracking: out of memory");
  }
  lua_pushlstring(L, json, len);
  free(json);
  lua_pushnumber(L, (lua_Number)b->b.entries);
  lua_pushnumber(L, (lua_Number)b->b.events);
  return 4;
}

static lua_batch_t *check_batch(lua_State *L) {
  return luaL_checkudata(L, 1, batch_mt);
}

/* batch:commit() / :requeue() / :drop(): each settles the batch once;
 * later calls do nothing. */
static int l_batch_commit(lua_State *L) {
  lua_batch_t *b = check_batch(L);
  if (b->b.first != NULL && b->owner->alive)
    mnemo_error_batch_commit(&b->owner->t, &b->b);
  return 0;
}

static int l_batch_requeue(lua_State *L) {
  lua_batch_t *b = check_batch(L);
  if (b->b.first != NULL && b->owner->alive)
    mnemo_error_batch_requeue(&b->owner->t, &b->b);
  return 0;
}

static int l_batch_drop(lua_State *L) {
  lua_batch_t *b = check_batch(L);
  if (b->b.first != NULL && b->owner->alive)
    mnemo_error_batch_drop(&b->owner->t, &b->b);
  return 0;
}

/* A batch nobody settled (the flusher raised in between) goes back: it
 * was not written. At state close the tracker may be gone already. */
static int l_batch_gc(lua_State *L) {
  lua_batch_t *b = lua_touserdata(L, 1);
  if (b->b.first == NULL)
    return 0;
  if (b->owner->alive)
    mnemo_error_batch_requeue(&b->owner->t, &b->b);
  else
    mnemo_error_batch_free(&b->b);
  return 0;
}

static void set_number(lua_State *L, const char *name, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, name);
}

static int l_counters(lua_State *L) {
  const lua_tracker_t *lt = tracker(L);
  const mnemo_error_stats_t *s = &lt->t.stats;
  lua_createtable(L, 0, 11);
  set_number(L, "recorded", (double)s->recorded);
  set_number(L, "aggregated", (double)s->aggregated);
  set_number(L, "dropped", (double)s->dropped);
  set_number(L, "flushed", (double)s->flushed);
  set_number(L, "flush_failures", (double)s->flush_failures);
  set_number(L, "pending", (double)s->pending);
  set_number(L, "queue_length", (double)s->entries);
  set_number(L, "queue_bytes", (double)s->bytes);
  set_number(L, "capacity", (double)lt->t.config.capacity);
  set_number(L, "max_bytes", (double)lt->t.config.max_bytes);
  set_number(L, "window", (double)lt->t.config.window_us / 1e6);
  return 1;
}

/* error_pending(since) -> { SEVERITY = events queued, last seen >= since } */
static int l_pending(lua_State *L) {
  const lua_tracker_t *lt = tracker(L);
  double since = luaL_optnumber(L, 1, 0);
  uint64_t counts[MNEMO_SEV_COUNT];
  int i;
  mnemo_error_pending_by_severity(&lt->t, (int64_t)(since * 1e6), counts);
  lua_createtable(L, 0, MNEMO_SEV_COUNT);
  for (i = 0; i < MNEMO_SEV_COUNT; i++)
    set_number(L, mnemo_severity_name((mnemo_severity_t)i), (double)counts[i]);
  return 1;
}

static void set_string(lua_State *L, const char *name, const char *v) {
  if (v == NULL)
    return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, name);
}

/* error_peek(max) -> list of the queued entries, oldest first */
static int l_peek(lua_State *L) {
  const lua_tracker_t *lt = tracker(L);
  double max = luaL_optnumber(L, 1, 100);
  const mnemo_error_entry_t *e;
  int i = 0;
  lua_newtable(L);
  for (e = mnemo_error_oldest(&lt->t); e != NULL && i < max;
       e = mnemo_error_next(e)) {
    mnemo_error_view_t v;
    mnemo_error_view(e, &v);
    lua_createtable(L, 0, 14);
    set_string(L, "severity", mnemo_severity_name(v.severity));
    set_string(L, "category", mnemo_error_category_name(v.category));
    set_string(L, "service", v.service);
    set_string(L, "operation", v.operation);
    set_string(L, "error_type", v.error_type);
    set_string(L, "message", v.message);
    set_string(L, "correlation_id", v.correlation_id);
    set_string(L, "traceback", v.traceback);
    set_string(L, "context", v.context_json);
    set_number(L, "count", (double)v.count);
    set_number(L, "first_seen", (double)v.first_us / 1e6);
    set_number(L, "last_seen", (double)v.last_us / 1e6);
    set_number(L, "window_start", (double)v.window_start_us / 1e6);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

static int l_scrub(lua_State *L) {
  size_t n, out_n;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  char small[512];
  out_n = mnemo_scrub(s, n, small, sizeof(small));
  if (out_n <= sizeof(small)) {
    lua_pushlstring(L, small, out_n);
    return 1;
  }
  {
    char *big = malloc(out_n);
    if (big == NULL)
      return luaL_error(L, "scrub: out of memory");
    mnemo_scrub(s, n, big, out_n);
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, big, out_n);
    free(big);
    luaL_pushresult(&b);
  }
  return 1;
}

/* error_clear(): the queue emptied, the counters zeroed (tests). */
static int l_clear(lua_State *L) {
  mnemo_error_tracker_clear(&tracker(L)->t);
  return 0;
}

static int l_wall_time(lua_State *L) {
  lua_pushnumber(L, (lua_Number)wall_us() / 1e6);
  return 1;
}

static int l_tracker_gc(lua_State *L) {
  lua_tracker_t *lt = lua_touserdata(L, 1);
  if (lt->alive) {
    lt->alive = 0;
    mnemo_error_tracker_free(&lt->t);
  }
  return 0;
}

/* The state's tracker, created on first use. */
static void push_tracker(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&tracker_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (lua_isnil(L, -1)) {
    lua_tracker_t *lt;
    mnemo_error_config_t cfg;
    lua_pop(L, 1);
    mnemo_error_config_default(&cfg);
    /* A random hash key (see error_track.h); the time and an address if
     * the system has no randomness to give. */
    if (uv_random(NULL, NULL, cfg.seed, sizeof(cfg.seed), 0, NULL) != 0) {
      cfg.seed[0] = uv_hrtime();
      cfg.seed[1] = (uint64_t)(uintptr_t)&cfg;
    }
    lt = lua_newuserdata(L, sizeof(*lt));
    memset(lt, 0, sizeof(*lt));
    if (mnemo_error_tracker_init(&lt->t, &cfg) != 0)
      luaL_error(L, "error tracking: out of memory");
    lt->alive = 1;
    strcpy(lt->service, "mnemo");
    luaL_getmetatable(L, tracker_mt);
    lua_setmetatable(L, -2);
    lua_pushlightuserdata(L, (void *)&tracker_key);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
  }
}

void mnemo_open_error_track(lua_State *L) {
  static const luaL_Reg batch_methods[] = {{"commit", l_batch_commit},
                                           {"requeue", l_batch_requeue},
                                           {"drop", l_batch_drop},
                                           {NULL, NULL}};
  static const luaL_Reg functions[] = {
      {"error_record", l_record},     {"error_configure", l_configure},
      {"error_take", l_take},         {"error_counters", l_counters},
      {"error_pending", l_pending},   {"error_peek", l_peek},
      {"error_scrub", l_scrub},       {"error_wall_time", l_wall_time},
      {"error_clear", l_clear},
      {NULL, NULL}};
  const luaL_Reg *f;
  int k;
  mnemo_lua_class(L, tracker_mt, NULL, l_tracker_gc);
  mnemo_lua_class(L, batch_mt, batch_methods, l_batch_gc);
  for (f = functions; f->name != NULL; f++) {
    push_tracker(L);
    for (k = 0; k < K_COUNT; k++)
      lua_pushstring(L, KEY_NAMES[k]);
    lua_pushcclosure(L, f->func, 1 + K_COUNT);
    lua_setfield(L, -2, f->name);
  }
}
