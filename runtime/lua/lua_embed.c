/* The hashing embedder and cosine similarity for Lua. Vectors travel as
 * PostgreSQL array literals ("{0.1,-0.2,...}"), the form real[] columns
 * take and give back, so nothing converts them twice. A batch is embedded
 * inline (embed_hashing) or on the uv thread pool (embed_start, a
 * runtime/loop/embed_job.c job), both through mnemo_embed_literal. */
#include <lauxlib.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed.h"
#include "embed_job.h"
#include "status.h"
#include "text.h"
#include "lua_mnemo.h"
#include "lua_runtime.h"
#include "lua_scope.h"

/* embed_hashing(text, dims) -> "{...}", on the calling thread: for small
 * batches and queries (lua/mnemo/embed.lua sends larger batches to the
 * pool with embed_start). No allocation for up to 481 dimensions (the
 * literal fits in the stack buffer). */
static int l_embed_hashing(lua_State *L) {
  size_t len, need, n;
  const char *text = luaL_checklstring(L, 1, &len);
  int dims = (int)luaL_optnumber(L, 2, MNEMO_EMBED_DEFAULT_DIMS);
  float v[MNEMO_EMBED_MAX_DIMS];
  char buf[8192], *lit = buf;
  if (dims < MNEMO_EMBED_MIN_DIMS || dims > MNEMO_EMBED_MAX_DIMS)
    return luaL_argerror(L, 2, "dims out of range (16..4096)");
  need = MNEMO_EMBED_LITERAL_MAX(dims);
  if (need > sizeof(buf))
    lit = lua_newuserdata(L, need); /* scratch, GC'd */
  mnemo_embed_hashing(text, len, v, dims);
  n = mnemo_embed_literal(v, dims, lit, need);
  lua_pushlstring(L, lit, n);
  return 1;
}

/* The pool job for Lua: its callback wakes the waiting task
 * (lua/mnemo/embed.lua parks it with mnemo.timeout.await), as in
 * lua_chunker.c, whose rules it follows:
 * - each job has its own token, cancelled when the task stops waiting
 *   (its deadline expired: embed.lua calls handle:cancel() as the
 *   TimeoutError comes out of the wait), when the deadline had already
 *   expired at the start, or when the handle is collected; never the
 *   deadline's own token, which a recycled scope record resets;
 * - the request is heap-allocated and outlives its handle: the pool thread
 *   may still run when the handle is collected or the state closed; the
 *   after-work callback then frees it without Lua. Nothing is freed under
 *   a running worker. */
typedef struct embed_req {
  mnemo_embed_job_t job;
  mnemo_cancel_token_t token;
  mnemo_rt_t *rt;
  int cb_ref;             /* LUA_NOREF once nobody waits */
  struct embed_req **box; /* the handle's slot; NULL: orphaned */
} embed_req_t;

static const char job_mt[] = "mnemo.embed_job";

static void req_free(embed_req_t *req) {
  mnemo_embed_job_release(&req->job);
  free(req);
}

static const char *status_name(int status) {
  switch (status) {
  case MNEMO_ECANCELED:
    return "cancelled";
  case MNEMO_ENOMEM:
    return "nomem";
  default:
    return "error";
  }
}

/* Pushes the literals as a list (under lua_pcall: running out of Lua
 * memory here must not unwind through libuv). */
static int push_literals(lua_State *L) {
  const mnemo_embed_job_t *job = lua_touserdata(L, 1);
  size_t i, len;
  lua_createtable(L, (int)job->done, 0);
  for (i = 0; i < job->done; i++) {
    const char *lit = mnemo_embed_job_literal(job, i, &len);
    lua_pushlstring(L, lit, len);
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

static void on_done(mnemo_embed_job_t *job, int status) {
  embed_req_t *req = (embed_req_t *)((char *)job - offsetof(embed_req_t, job));
  mnemo_rt_t *rt = req->rt;
  lua_State *L;
  if (req->box == NULL) { /* orphaned: the state may be gone */
    req_free(req);
    return;
  }
  *req->box = NULL;
  L = rt->L;
  if (req->cb_ref == LUA_NOREF || rt->closed) {
    luaL_unref(L, LUA_REGISTRYINDEX, req->cb_ref);
    req_free(req);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, req->cb_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, req->cb_ref);
  if (status == 0) {
    lua_pushcfunction(L, push_literals);
    lua_pushlightuserdata(L, job);
    if (lua_pcall(L, 1, 1, 0) == 0) {
      lua_pushnil(L);
    } else {
      lua_pop(L, 1);
      lua_pushnil(L);
      lua_pushstring(L, status_name(MNEMO_ENOMEM));
    }
  } else {
    lua_pushnil(L);
    lua_pushstring(L, status_name(status));
  }
  req_free(req); /* before the callback: the task may run on for long */
  if (lua_pcall(L, 2, 0, 0) != 0)
    mnemo_rt_fail(rt, L);
}

/* embed_start(texts, dims, cb) -> handle | nil, message; later
 * cb(literals) | cb(nil, "cancelled" | "nomem"). texts: a list of
 * strings, copied. */
static int l_embed_start(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  int dims = (int)luaL_optnumber(L, 2, MNEMO_EMBED_DEFAULT_DIMS);
  size_t count, i, *lens;
  const char **texts;
  mnemo_deadline_t *deadline;
  embed_req_t *req, **box;
  int rc;

  luaL_checktype(L, 1, LUA_TTABLE);
  if (dims < MNEMO_EMBED_MIN_DIMS || dims > MNEMO_EMBED_MAX_DIMS)
    return luaL_argerror(L, 2, "dims out of range (16..4096)");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (rt->closed)
    return luaL_error(L, "mnemo: the runtime is shutting down");
  count = lua_objlen(L, 1);
  /* The pointers stay valid while the strings are in the table, which
   * the caller's frame holds until mnemo_embed_job_start has copied
   * them. Scratch in a userdata: an error below leaks nothing. */
  texts = lua_newuserdata(L, (count + 1) * (sizeof(*texts) + sizeof(*lens)));
  lens = (size_t *)(void *)(texts + count + 1);
  for (i = 0; i < count; i++) {
    lua_rawgeti(L, 1, (int)i + 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "embed_start: texts[%d] is a %s, not a string",
                        (int)i + 1, luaL_typename(L, -1));
    texts[i] = lua_tolstring(L, -1, &lens[i]);
    lua_pop(L, 1);
  }
  box = lua_newuserdata(L, sizeof(*box)); /* first: raises, leaks nothing */
  *box = NULL;
  luaL_getmetatable(L, job_mt);
  lua_setmetatable(L, -2);
  req = calloc(1, sizeof(*req));
  if (req == NULL)
    return luaL_error(L, "embed: out of memory");
  req->rt = rt;
  req->cb_ref = LUA_NOREF;
  /* Work whose deadline is already gone needs no pool thread. */
  deadline = mnemo_lua_current_deadline(L);
  if (deadline != NULL && mnemo_deadline_is_expired(deadline))
    mnemo_cancel_token_cancel(&req->token);
  rc = mnemo_embed_job_start(rt->loop, &req->job, texts, lens, count, dims,
                             &req->token, on_done);
  if (rc != 0) {
    free(req);
    lua_pushnil(L);
    lua_pushstring(L, rc == MNEMO_ENOMEM ? "out of memory" : uv_strerror(rc));
    return 2;
  }
  *box = req;
  req->box = box;
  lua_pushvalue(L, 3);
  req->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* handle:cancel(): nobody waits any more; the worker stops before its
 * next vector, or the job leaves the queue. */
static int l_cancel(lua_State *L) {
  embed_req_t **box = luaL_checkudata(L, 1, job_mt);
  embed_req_t *req = *box;
  if (req == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  mnemo_cancel_token_cancel(&req->token);
  mnemo_embed_job_cancel(&req->job); /* UV_EBUSY if it is running */
  luaL_unref(L, LUA_REGISTRYINDEX, req->cb_ref);
  req->cb_ref = LUA_NOREF;
  lua_pushboolean(L, 1);
  return 1;
}

/* Collected (or the state is closing) while the job runs: orphan it. The
 * loop may already be closed here, so no uv_cancel. */
static int l_gc(lua_State *L) {
  embed_req_t **box = lua_touserdata(L, 1);
  embed_req_t *req = *box;
  if (req == NULL)
    return 0;
  mnemo_cancel_token_cancel(&req->token);
  luaL_unref(L, LUA_REGISTRYINDEX, req->cb_ref);
  req->cb_ref = LUA_NOREF;
  req->box = NULL;
  *box = NULL;
  return 0;
}

/* Parses "{a,b,...}" into at most max floats; returns the count or -1. */
static int parse_literal(const char *s, float *out, int max) {
  int n = 0;
  char *end;
  if (*s++ != '{')
    return -1;
  while (*s != '}' && *s != '\0') {
    double d = strtod(s, &end);
    if (end == s || n >= max)
      return -1;
    out[n++] = (float)d;
    s = end;
    if (*s == ',')
      s++;
  }
  return *s == '}' ? n : -1;
}

/* cosine(literal_a, literal_b) -> number, or nil if they do not parse or
 * have different lengths. */
static int l_cosine(lua_State *L) {
  const char *a = luaL_checkstring(L, 1), *b = luaL_checkstring(L, 2);
  float *va = lua_newuserdata(L, sizeof(float) * MNEMO_EMBED_MAX_DIMS * 2);
  float *vb = va + MNEMO_EMBED_MAX_DIMS;
  int na = parse_literal(a, va, MNEMO_EMBED_MAX_DIMS);
  int nb = parse_literal(b, vb, MNEMO_EMBED_MAX_DIMS);
  if (na <= 0 || na != nb)
    return 0;
  lua_pushnumber(L, mnemo_embed_cosine(va, vb, na));
  return 1;
}

/* utf8_valid(s) -> true | false, offset_of_first_bad_byte (1-based) */
static int l_utf8_valid(lua_State *L) {
  size_t len, off = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  if (mnemo_utf8_valid(s, len, &off)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_pushnumber(L, (double)off + 1);
  return 2;
}

/* looks_binary(s) -> bool (a NUL in the first 8000 bytes, like git) */
static int l_looks_binary(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, mnemo_looks_binary(s, len, 8000));
  return 1;
}

/* hash64(s) -> 16 hex digits */
static int l_hash64(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char out[17];
  snprintf(out, sizeof(out), "%016llx",
           (unsigned long long)mnemo_hash64(s, len));
  lua_pushstring(L, out);
  return 1;
}

void mnemo_open_embed(lua_State *L) {
  static const luaL_Reg methods[] = {{"cancel", l_cancel}, {NULL, NULL}};
  mnemo_lua_class(L, job_mt, methods, l_gc);
  lua_pushcfunction(L, l_embed_start);
  lua_setfield(L, -2, "embed_start");
  lua_pushcfunction(L, l_utf8_valid);
  lua_setfield(L, -2, "utf8_valid");
  lua_pushcfunction(L, l_looks_binary);
  lua_setfield(L, -2, "looks_binary");
  lua_pushcfunction(L, l_hash64);
  lua_setfield(L, -2, "hash64");
  lua_pushcfunction(L, l_embed_hashing);
  lua_setfield(L, -2, "embed_hashing");
  lua_pushcfunction(L, l_cosine);
  lua_setfield(L, -2, "cosine");
}
