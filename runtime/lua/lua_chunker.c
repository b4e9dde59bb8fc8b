/* Chunking for Lua: a job on the uv thread pool whose callback wakes the
 * waiting task (lua/mnemo/chunker.lua parks it with mnemo.timeout.await).
 *
 * Cancellation: each job has its own token, cancelled when the task stops
 * waiting for it (its deadline expired: chunker.lua calls handle:cancel()
 * as the TimeoutError comes out of the wait), when the deadline had
 * already expired at the start, or when the handle is collected. Not the
 * deadline's own token: scope records are recycled and a new
 * mnemo.timeout resets that token, possibly before the worker has seen it,
 * and the record is freed with the runtime while a worker may still poll.
 *
 * The request is heap-allocated and outlives its handle (userdata): the
 * pool thread may still be running when the handle is collected or the
 * state closed; the after-work callback then frees it without Lua. */
#include <lauxlib.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_job.h"
#include "lua_mnemo.h"
#include "lua_runtime.h"
#include "lua_scope.h"

void mnemo_open_chunker(lua_State *L);

typedef struct chunk_req {
  mnemo_chunk_job_t job;
  mnemo_cancel_token_t token;
  mnemo_rt_t *rt;
  int cb_ref;             /* LUA_NOREF once nobody waits */
  struct chunk_req **box; /* the handle's slot; NULL: orphaned */
} chunk_req_t;

static const char job_mt[] = "mnemo.chunk_job";

static void push_chunks(lua_State *L, const mnemo_chunk_list_t *list) {
  size_t i, j;
  lua_createtable(L, (int)list->count, 0);
  for (i = 0; i < list->count; i++) {
    const mnemo_chunk_t *c = &list->chunks[i];
    lua_createtable(L, 0, 8);
    lua_pushstring(L, c->kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, c->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, c->name_path);
    lua_setfield(L, -2, "name_path");
    lua_pushnumber(L, c->start_line);
    lua_setfield(L, -2, "start_line");
    lua_pushnumber(L, c->end_line);
    lua_setfield(L, -2, "end_line");
    lua_pushlstring(L, c->text, c->text_len);
    lua_setfield(L, -2, "source");
    lua_createtable(L, (int)c->nrefs, 0);
    for (j = 0; j < c->nrefs; j++) {
      lua_createtable(L, 0, 2);
      lua_pushstring(L, c->refs[j].kind == MNEMO_CHUNK_REF_IMPORT ? "import"
                                                                  : "call");
      lua_setfield(L, -2, "kind");
      lua_pushstring(L, c->refs[j].name);
      lua_setfield(L, -2, "name");
      lua_rawseti(L, -2, (int)j + 1);
    }
    lua_setfield(L, -2, "refs");
    lua_rawseti(L, -2, (int)i + 1);
  }
}

static const char *status_name(int status) {
  switch (status) {
  case MNEMO_ECANCELED:
    return "cancelled";
  case MNEMO_CHUNK_ETOODEEP:
    return "too_deep";
  case MNEMO_ENOMEM:
    return "nomem";
  default:
    return "error";
  }
}

static void req_free(chunk_req_t *req) {
  mnemo_chunk_list_free(&req->job.chunks);
  free(req);
}

static void on_done(mnemo_chunk_job_t *job, int status) {
  chunk_req_t *req = (chunk_req_t *)((char *)job - offsetof(chunk_req_t, job));
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
    push_chunks(L, &job->chunks);
    lua_pushnil(L);
  } else {
    lua_pushnil(L);
    lua_pushstring(L, status_name(status));
  }
  req_free(req);
  if (lua_pcall(L, 2, 0, 0) != 0)
    mnemo_rt_fail(rt, L);
}

/* chunk_start(language, source, max_lines|nil, max_bytes|nil, cb)
 *   -> handle | nil, message; later cb(chunks) | cb(nil, status) */
static int l_chunk_start(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  const char *language = luaL_checkstring(L, 1);
  size_t len;
  const char *src = luaL_checklstring(L, 2, &len);
  double max_lines = luaL_optnumber(L, 3, 0);
  double max_bytes = luaL_optnumber(L, 4, 0);
  mnemo_deadline_t *deadline;
  chunk_req_t *req, **box;
  int rc;

  luaL_checktype(L, 5, LUA_TFUNCTION);
  if (!(max_lines >= 0 && max_lines < 2147483648.0))
    return luaL_argerror(L, 3, "expected a number of lines >= 1");
  if (!(max_bytes >= 0 && max_bytes < 2147483648.0))
    return luaL_argerror(L, 4, "expected a number of bytes >= 1");
  if (rt->closed)
    return luaL_error(L, "mnemo: the runtime is shutting down");
  if (mnemo_chunker_language_name(language) == NULL) {
    lua_pushnil(L);
    lua_pushfstring(L, "unknown language '%s'", language);
    return 2;
  }
  req = calloc(1, sizeof(*req));
  if (req == NULL)
    return luaL_error(L, "chunker: out of memory");
  req->rt = rt;
  req->cb_ref = LUA_NOREF;
  req->job.options.max_chunk_lines = (uint32_t)max_lines;
  req->job.options.max_chunk_bytes = (size_t)max_bytes;
  /* Work whose deadline is already gone needs no pool thread. */
  deadline = mnemo_lua_current_deadline(L);
  if (deadline != NULL && mnemo_deadline_is_expired(deadline))
    mnemo_cancel_token_cancel(&req->token);

  box = lua_newuserdata(L, sizeof(*box));
  *box = NULL;
  luaL_getmetatable(L, job_mt);
  lua_setmetatable(L, -2);
  rc = mnemo_chunk_job_start(rt->loop, &req->job, language, src, len,
                             &req->token, on_done);
  if (rc != 0) {
    free(req);
    lua_pushnil(L);
    lua_pushstring(L, rc == MNEMO_ENOMEM ? "out of memory" : uv_strerror(rc));
    return 2;
  }
  *box = req;
  req->box = box;
  lua_pushvalue(L, 5);
  req->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* handle:cancel(): nobody waits any more; the worker stops at its next
 * check of the token, or the job leaves the queue. */
static int l_cancel(lua_State *L) {
  chunk_req_t **box = luaL_checkudata(L, 1, job_mt);
  chunk_req_t *req = *box;
  if (req == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  mnemo_cancel_token_cancel(&req->token);
  mnemo_chunk_job_cancel(&req->job); /* UV_EBUSY if it is running */
  luaL_unref(L, LUA_REGISTRYINDEX, req->cb_ref);
  req->cb_ref = LUA_NOREF;
  lua_pushboolean(L, 1);
  return 1;
}

/* Collected (or the state is closing) while the job runs: orphan it. The
 * loop may already be closed here, so no uv_cancel. */
static int l_gc(lua_State *L) {
  chunk_req_t **box = lua_touserdata(L, 1);
  chunk_req_t *req = *box;
  if (req == NULL)
    return 0;
  mnemo_cancel_token_cancel(&req->token);
  luaL_unref(L, LUA_REGISTRYINDEX, req->cb_ref);
  req->cb_ref = LUA_NOREF;
  req->box = NULL;
  *box = NULL;
  return 0;
}

/* chunk_language(name) -> canonical name | nil */
static int l_chunk_language(lua_State *L) {
  const char *name = mnemo_chunker_language_name(luaL_checkstring(L, 1));
  if (name == NULL)
    return 0;
  lua_pushstring(L, name);
  return 1;
}

/* chunk_language_for(path) -> language | nil */
static int l_chunk_language_for(lua_State *L) {
  const char *name = mnemo_chunker_language_for_path(luaL_checkstring(L, 1));
  if (name == NULL)
    return 0;
  lua_pushstring(L, name);
  return 1;
}

void mnemo_open_chunker(lua_State *L) {
  static const luaL_Reg methods[] = {{"cancel", l_cancel}, {NULL, NULL}};
  mnemo_lua_class(L, job_mt, methods, l_gc);
  lua_pushcfunction(L, l_chunk_start);
  lua_setfield(L, -2, "chunk_start");
  lua_pushcfunction(L, l_chunk_language);
  lua_setfield(L, -2, "chunk_language");
  lua_pushcfunction(L, l_chunk_language_for);
  lua_setfield(L, -2, "chunk_language_for");
}
