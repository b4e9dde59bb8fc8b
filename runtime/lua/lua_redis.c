/* Redis for Lua: a userdata around a mnemo_redis_t with callback functions;
 * lua/mnemo/redis.lua turns them into waits of the calling task.
 *
 * Replies: status and string -> string, integer -> number, nil -> nil (in
 * an array: the `redis_null` sentinel, a NULL light userdata like
 * cjson.null), array -> table, error -> the callback gets (nil, message,
 * 0); inside an array an error is { err = message }. A failed connection
 * gives (nil, message, hiredis err type > 0). */
#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_mnemo.h"
#include "lua_runtime.h"
#include "redis.h"

/* Heap-allocated: libuv may still hold the poll handle after the userdata
 * is collected; the close callback frees it. */
typedef struct lua_redis {
  mnemo_redis_t conn;
  mnemo_rt_t *rt;
  int connect_ref; /* the connect callback, while connecting */
  int self_ref;    /* anchors the userdata while callbacks are due */
  int closed;      /* mnemo_redis_close called */
  int drop;        /* closed by __gc: callbacks are dropped, not called */
} lua_redis_t;

static const char redis_mt[] = "mnemo.redis_conn";

#define MAX_DEPTH 16
#define STACK_ARGS 16

static lua_redis_t *check(lua_State *L) {
  lua_redis_t **box = luaL_checkudata(L, 1, redis_mt);
  if (*box == NULL)
    luaL_error(L, "redis: connection is closed");
  return *box;
}

static void free_on_close(mnemo_redis_t *conn) {
  free(conn); /* lua_redis_t starts with the conn */
}

/* The userdata (at idx) stays alive while a callback is due. */
static void anchor(lua_redis_t *p, lua_State *L, int idx) {
  if (p->self_ref != LUA_NOREF)
    return;
  lua_pushvalue(L, idx);
  p->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void maybe_release(lua_redis_t *p, lua_State *L) {
  if (p->connect_ref == LUA_NOREF && p->conn.pending == 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
    p->self_ref = LUA_NOREF;
  }
}

static void call_back(lua_redis_t *p, lua_State *L, int nargs) {
  if (lua_pcall(L, nargs, 0, 0) != 0)
    mnemo_rt_fail(p->rt, L);
}

static void on_connect(mnemo_redis_t *conn, int status) {
  lua_redis_t *p = (lua_redis_t *)conn;
  lua_State *L = p->rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->connect_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, p->connect_ref);
  p->connect_ref = LUA_NOREF;
  maybe_release(p, L);
  if (status == 0) {
    lua_pushboolean(L, 1);
    call_back(p, L, 1);
  } else {
    lua_pushnil(L);
    lua_pushstring(L, conn->error);
    lua_pushinteger(L, conn->err_type);
    call_back(p, L, 3);
  }
}

static void push_reply(lua_State *L, const redisReply *r, int depth) {
  size_t i;
  if (!lua_checkstack(L, 4) || depth > MAX_DEPTH) {
    lua_pushnil(L); /* deeper than any real reply */
    return;
  }
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
    lua_pushlstring(L, r->str, r->len);
    break;
  case REDIS_REPLY_INTEGER:
    lua_pushnumber(L, (lua_Number)r->integer);
    break;
  case REDIS_REPLY_ARRAY:
    lua_createtable(L, (int)r->elements, 0);
    for (i = 0; i < r->elements; i++) {
      if (r->element[i]->type == REDIS_REPLY_NIL)
        lua_pushlightuserdata(L, NULL);
      else
        push_reply(L, r->element[i], depth + 1);
      lua_rawseti(L, -2, (int)i + 1);
    }
    break;
  case REDIS_REPLY_ERROR:
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, r->str, r->len);
    lua_setfield(L, -2, "err");
    break;
  case REDIS_REPLY_NIL:
  default:
    lua_pushnil(L);
    break;
  }
}

static void on_reply(mnemo_redis_t *conn, redisReply *reply, void *arg) {
  lua_redis_t *p = (lua_redis_t *)conn;
  lua_State *L = p->rt->L;
  int ref = (int)(intptr_t)arg;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
  maybe_release(p, L);
  if (p->drop) {
    lua_pop(L, 1);
    return;
  }
  if (reply == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, conn->error);
    lua_pushinteger(L, conn->err_type);
    call_back(p, L, 3);
  } else if (reply->type == REDIS_REPLY_ERROR) {
    lua_pushnil(L);
    lua_pushlstring(L, reply->str, reply->len);
    lua_pushinteger(L, 0);
    call_back(p, L, 3);
  } else {
    push_reply(L, reply, 0);
    call_back(p, L, 1);
  }
}

/* redis_connect(host, port, cb) -> conn | nil, err, err_type
 * later cb(true) | cb(nil, err, err_type) */
static int l_connect(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  lua_redis_t *p;
  lua_redis_t **box;
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (port < 1 || port > 65535)
    return luaL_argerror(L, 2, "port out of range (1..65535)");
  p = calloc(1, sizeof(*p));
  if (p == NULL)
    return luaL_error(L, "redis: out of memory");
  box = lua_newuserdata(L, sizeof(*box));
  *box = p;
  luaL_getmetatable(L, redis_mt);
  lua_setmetatable(L, -2);
  if (mnemo_redis_connect(rt->loop, &p->conn, host, port, on_connect) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, p->conn.error);
    lua_pushinteger(L, p->conn.err_type);
    p->closed = 1;
    mnemo_redis_close(&p->conn, free_on_close);
    *box = NULL;
    return 3;
  }
  /* mnemo_redis_connect cleared the conn part only */
  p->rt = rt;
  p->self_ref = LUA_NOREF;
  lua_pushvalue(L, 3);
  p->connect_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  anchor(p, L, -1);
  return 1;
}

/* Converts argument i of the list at t for the wire. Integers are written
 * as integers ("10", not "1e+01"). */
static const char *arg_string(lua_State *L, int t, int i, size_t *len) {
  const char *s;
  lua_rawgeti(L, t, i);
  if (lua_type(L, -1) == LUA_TNUMBER) {
    double d = lua_tonumber(L, -1);
    char buf[64];
    if (d == floor(d) && fabs(d) < 9.2e18)
      snprintf(buf, sizeof(buf), "%lld", (long long)d);
    else
      snprintf(buf, sizeof(buf), "%.17g", d);
    lua_pop(L, 1);
    lua_pushstring(L, buf);
  } else if (lua_type(L, -1) != LUA_TSTRING) {
    luaL_error(L, "redis: argument %d: expected a string or a number, got %s",
               i, luaL_typename(L, -1));
  }
  /* The string stays on the stack (alive) until the function returns. */
  s = lua_tolstring(L, -1, len);
  return s;
}

/* conn:command({ name, args..., n = count }, cb) -> true | nil, err, type
 * later cb(reply) | cb(nil, message, err_type) (err_type 0: the server's
 * error reply) */
static int l_command(lua_State *L) {
  lua_redis_t *p = check(L);
  const char *stack_argv[STACK_ARGS];
  size_t stack_lens[STACK_ARGS];
  const char **argv = stack_argv;
  size_t *argvlen = stack_lens;
  int n, i, ref, rc;

  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_getfield(L, 2, "n");
  n = lua_isnumber(L, -1) ? (int)lua_tonumber(L, -1) : (int)lua_objlen(L, 2);
  lua_pop(L, 1);
  if (n < 1)
    return luaL_argerror(L, 2, "a command name is needed");
  if (n > STACK_ARGS) {
    argv = lua_newuserdata(L, sizeof(*argv) * (size_t)n);
    argvlen = lua_newuserdata(L, sizeof(*argvlen) * (size_t)n);
  }
  luaL_checkstack(L, n, "redis: too many arguments");
  for (i = 0; i < n; i++)
    argv[i] = arg_string(L, 2, i + 1, &argvlen[i]);
  lua_pushvalue(L, 3);
  ref = luaL_ref(L, LUA_REGISTRYINDEX);
  rc = mnemo_redis_command(&p->conn, n, argv, argvlen, on_reply,
                           (void *)(intptr_t)ref);
  if (rc != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    lua_pushnil(L);
    lua_pushstring(L, p->conn.error);
    lua_pushinteger(L, p->conn.err_type);
    return 3;
  }
  anchor(p, L, 1);
  lua_pushboolean(L, 1);
  return 1;
}

/* Closes the connection. Commands still waiting get their callback with
 * (nil, "connection closed", err_type), before this returns, unless the
 * userdata is being collected (then they are dropped). */
static void close_conn(lua_State *L, lua_redis_t **box, int drop) {
  lua_redis_t *p = *box;
  if (p == NULL)
    return;
  *box = NULL;
  p->drop = drop;
  p->closed = 1;
  /* A connect callback is not called after close. */
  luaL_unref(L, LUA_REGISTRYINDEX, p->connect_ref);
  p->connect_ref = LUA_NOREF;
  mnemo_redis_close(&p->conn, free_on_close);
}

static int l_close(lua_State *L) {
  close_conn(L, luaL_checkudata(L, 1, redis_mt), 0);
  return 0;
}

static int l_gc(lua_State *L) {
  close_conn(L, lua_touserdata(L, 1), 1);
  return 0;
}

/* conn:status() -> "connecting" | "connected" | "closed" | "closing",
 * and for a lost connection the reason and hiredis err type. */
static int l_status(lua_State *L) {
  lua_redis_t **box = luaL_checkudata(L, 1, redis_mt);
  static const char *const names[] = {"closed", "connecting", "connected",
                                      "closing"};
  lua_redis_t *p = *box;
  if (p == NULL) {
    lua_pushliteral(L, "closed");
    return 1;
  }
  lua_pushstring(L, names[p->conn.state]);
  if (p->conn.state == MNEMO_REDIS_CLOSED && p->conn.err_type != 0) {
    lua_pushstring(L, p->conn.error);
    lua_pushinteger(L, p->conn.err_type);
    return 3;
  }
  return 1;
}

/* conn:pending() -> number of commands awaiting replies */
static int l_pending(lua_State *L) {
  lua_redis_t **box = luaL_checkudata(L, 1, redis_mt);
  lua_pushinteger(L, *box ? (*box)->conn.pending : 0);
  return 1;
}

void mnemo_open_redis(lua_State *L) {
  static const luaL_Reg methods[] = {{"command", l_command},
                                     {"close", l_close},
                                     {"status", l_status},
                                     {"pending", l_pending},
                                     {NULL, NULL}};
  mnemo_lua_class(L, redis_mt, methods, l_gc);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "redis_connect");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "redis_null");
}
