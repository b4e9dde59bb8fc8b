/* Error tracking for Lua: one mnemo_error_tracker_t per Lua state (in the
 * registry, and an upvalue of every function here, so the record path does
 * no lookups), mnemo.errors.record{...} on the caller's path, and batches
 * for the flusher in lua/mnemo/tracking.lua.
 *
 *   error_record(severity, category, service, operation, error_type,
 *                message, context, correlation_id, traceback)
 *       -> true | false, reason   (raises only on a bad argument; the
 *       table form, mnemo.errors.record{...}, is lua/mnemo/errors.lua).
 *       correlation_id nil: the correlation source's (below) is used;
 *       false: none.
 *   error_correlation_source(fn | nil)   fn() -> the running task's
 *       correlation id or nil (mnemo.error_events sets correlation.current):
 *       called only for an event that names no id, in protected mode (an
 *       error in it means no id)
 *   error_max_correlation_ids            ids kept per entry (a number)
 *   error_configure{ capacity, max_bytes, window, service }
 *   error_take(max) -> batch, json, entries, events | nil
 *   batch:commit() / batch:requeue() / batch:drop()
 *   error_counters() -> { recorded, aggregated, dropped, flushed, ... }
 *   error_pending(since_epoch_seconds) -> { CRITICAL = n, ... }
 *   error_peek(max) -> { {severity, ..., count, correlation_ids = {...},
 *       correlation_ids_omitted}, ... }  (queued, oldest first)
 *   error_scrub(text [, dsn]) -> text   (mnemo_scrub, or mnemo_scrub_dsn)
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
  int source_ref;    /* the correlation source (registry ref) or LUA_NOREF */
  char service[128]; /* the default service of events that name none */
} lua_tracker_t;

typedef struct lua_batch {
  mnemo_error_batch_t b;
  lua_tracker_t *owner;
} lua_batch_t;

static const char tracker_mt[] = "mnemo.error_tracker";
static const char batch_mt[] = "mnemo.error_batch";
static const char tracker_key = 'e';

#define TRACKER_UP lua_upvalueindex(1)
#define REPOSITORY_UP lua_upvalueindex(2)

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

static const char *const ARG_NAMES[] = {
    NULL,         "severity", "category", "service",        "operation",
    "error_type", "message",  "context",  "correlation_id", "traceback"};

/* An optional string argument (numbers taken as text). */
static mnemo_str_t opt_arg(lua_State *L, int i) {
  mnemo_str_t s = {NULL, 0};
  s.s = lua_tolstring(L, i, &s.n);
  if (s.s == NULL && !lua_isnil(L, i))
    luaL_error(L, "errors.record: %s: expected a string, got %s", ARG_NAMES[i],
               luaL_typename(L, i));
  return s;
}

typedef struct gather {
  lua_State *L;
  int ctx[2]; /* stack indexes of the context tables (0: none) */
} gather_t;

/* context_fn: reads the context table (only for an event that starts a
 * new entry). Values that are not strings, numbers or booleans are taken
 * through their __tostring (others are left out), anchored in a table
 * left on the stack. */
static size_t gather_context(void *ud, mnemo_error_ctx_t *out, size_t max) {
  gather_t *g = ud;
  lua_State *L = g->L;
  size_t n = 0;
  int anchor = 0, anchored = 0, t;
  for (t = 0; t < 2; t++) {
    if (g->ctx[t] == 0)
      continue;
    lua_pushnil(L);
    while (lua_next(L, g->ctx[t]) != 0) {
      mnemo_error_ctx_t *c = &out[n];
      int vt = lua_type(L, -1);
      if (lua_type(L, -2) != LUA_TSTRING || n == max || vt == LUA_TFUNCTION) {
        lua_pop(L, 1);
        continue;
      }
      /* The second table adds keys the first does not have. */
      if (t == 1) {
        lua_pushvalue(L, -2);
        lua_rawget(L, g->ctx[0]);
        if (!lua_isnil(L, -1)) {
          lua_pop(L, 2);
          continue;
        }
        lua_pop(L, 1);
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
          /* Below the iteration key: [key, value] -> [anchor, key, value]. */
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
  }
  return n;
}

/* error_record(severity, category, service, operation, error_type,
 * message, context, correlation_id, traceback [, context2])
 * -> true | false, reason. context2: more context, for keys context does
 * not have (the guard passes its own fields and the caller's apart, so
 * that it need not build a merged table per failure).
 * Positional: lua/mnemo/errors.lua reads the caller's table (in Lua, which
 * the JIT compiles) and checks severity and category by name; severity and
 * category arrive as their enum values. */
static int l_record(lua_State *L) {
  lua_tracker_t *lt = tracker(L);
  mnemo_error_event_t ev;
  gather_t g;
  lua_Integer sev = lua_tointeger(L, 1), cat = lua_tointeger(L, 2);
  int rc, i;

  lua_settop(L, 10);
  memset(&ev, 0, sizeof(ev));
  if (sev < 0 || sev >= MNEMO_SEV_COUNT)
    return luaL_error(L, "errors.record: severity: expected one of %s",
                      mnemo_severity_list());
  if (cat < 0 || cat >= MNEMO_CAT_COUNT)
    return luaL_error(L, "errors.record: category: expected one of %s",
                      mnemo_error_category_list());
  ev.severity = (mnemo_severity_t)sev;
  ev.category = (mnemo_error_category_t)cat;
  ev.service = opt_arg(L, 3);
  if (ev.service.s == NULL) {
    ev.service.s = lt->service;
    ev.service.n = strlen(lt->service);
  }
  ev.operation = opt_arg(L, 4);
  ev.error_type = opt_arg(L, 5);
  ev.message = opt_arg(L, 6);
  if (lua_isnil(L, 8) && lt->source_ref != LUA_NOREF) {
    /* The running task's id: one protected call, its result replaces the
     * argument (a string, or nothing). */
    lua_rawgeti(L, LUA_REGISTRYINDEX, lt->source_ref);
    if (lua_pcall(L, 0, 1, 0) != 0 || lua_type(L, -1) != LUA_TSTRING) {
      lua_pop(L, 1);
      lua_pushnil(L);
    }
    lua_replace(L, 8);
  } else if (lua_type(L, 8) == LUA_TBOOLEAN && !lua_toboolean(L, 8)) {
    lua_pushnil(L); /* false: the caller says there is none */
    lua_replace(L, 8);
  }
  ev.correlation_id = opt_arg(L, 8);
  ev.traceback = opt_arg(L, 9);
  if (ev.message.s == NULL || ev.error_type.s == NULL)
    return luaL_error(L, "errors.record: expected a message and an error type");
  g.L = L;
  g.ctx[0] = g.ctx[1] = 0;
  for (i = 7; i <= 10; i += 3) {
    if (lua_type(L, i) == LUA_TTABLE) {
      /* Only the repository is part of the identity: the rest of the
       * context is read only if the event is new. */
      if (ev.repository.s == NULL) {
        lua_pushvalue(L, REPOSITORY_UP);
        lua_rawget(L, i);
        if (lua_type(L, -1) == LUA_TSTRING)
          ev.repository.s = lua_tolstring(L, -1, &ev.repository.n);
      }
      g.ctx[g.ctx[0] == 0 ? 0 : 1] = i;
    } else if (!lua_isnil(L, i)) {
      return luaL_error(L, "errors.record: context: expected a table, got %s",
                        luaL_typename(L, i));
    }
  }
  if (g.ctx[0] != 0) {
    ev.context_fn = gather_context;
    ev.context_ud = &g;
    if (!lua_checkstack(L, 8))
      return luaL_error(L, "errors.record: stack overflow");
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
  cfg.window_us =
      (int64_t)(opt_number(L, 1, "window", (double)cfg.window_us / 1e6, 0.001) *
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

/* error_correlation_source(fn | nil) */
static int l_correlation_source(lua_State *L) {
  lua_tracker_t *lt = tracker(L);
  if (!lua_isnil(L, 1))
    luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, lt->source_ref);
  lt->source_ref = lua_isnil(L, 1) ? LUA_NOREF : luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
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
    lua_createtable(L, 0, 16);
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
    set_number(L, "correlation_ids_omitted", (double)v.correlation_ids_omitted);
    {
      size_t j, len;
      lua_createtable(L, (int)v.ncorrelation_ids, 0);
      for (j = 0; j < v.ncorrelation_ids; j++) {
        const char *id = mnemo_error_correlation_id(e, j, &len);
        lua_pushlstring(L, id, len);
        lua_rawseti(L, -2, (int)j + 1);
      }
      lua_setfield(L, -2, "correlation_ids");
    }
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* error_scrub(text [, dsn]): with dsn, mnemo_scrub_dsn (a message about
 * that connection string). */
static size_t scrub_into(const char *s, size_t n, const char *dsn, size_t dsn_n,
                         char *out, size_t cap) {
  return dsn != NULL ? mnemo_scrub_dsn(s, n, dsn, dsn_n, out, cap)
                     : mnemo_scrub(s, n, out, cap);
}

static int l_scrub(lua_State *L) {
  size_t n, out_n, dsn_n = 0;
  const char *s = luaL_checklstring(L, 1, &n);
  const char *dsn = luaL_optlstring(L, 2, NULL, &dsn_n);
  luaL_Buffer b;
  char small[512];
  out_n = scrub_into(s, n, dsn, dsn_n, small, sizeof(small));
  if (out_n <= sizeof(small)) {
    lua_pushlstring(L, small, out_n);
    return 1;
  }
  {
    char *big = malloc(out_n);
    if (big == NULL)
      return luaL_error(L, "scrub: out of memory");
    scrub_into(s, n, dsn, dsn_n, big, out_n);
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
    lt->source_ref = LUA_NOREF;
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
      {"error_record", l_record},
      {"error_configure", l_configure},
      {"error_take", l_take},
      {"error_counters", l_counters},
      {"error_pending", l_pending},
      {"error_peek", l_peek},
      {"error_scrub", l_scrub},
      {"error_wall_time", l_wall_time},
      {"error_clear", l_clear},
      {"error_correlation_source", l_correlation_source},
      {NULL, NULL}};
  const luaL_Reg *f;
  mnemo_lua_class(L, tracker_mt, NULL, l_tracker_gc);
  mnemo_lua_class(L, batch_mt, batch_methods, l_batch_gc);
  for (f = functions; f->name != NULL; f++) {
    push_tracker(L);
    lua_pushliteral(L, "repository");
    lua_pushcclosure(L, f->func, 2);
    lua_setfield(L, -2, f->name);
  }
  lua_pushinteger(L, MNEMO_ERROR_MAX_CORRELATION_IDS);
  lua_setfield(L, -2, "error_max_correlation_ids");
}
