/* The HTTP server for Lua: a userdata around a mnemo_http_server_t that
 * calls one Lua function per request, and a request userdata to answer
 * with; lua/mnemo/http.lua does the routing and runs each handler as a
 * task.
 *
 *   core.http_listen(addr, opts, fn) -> server | nil, message, errno name
 *     fn(req, method, path, raw_query, headers, body) for each request;
 *     headers: lower-case name -> value (repeats joined with ", ")
 *   server:port(), server:host(), server:stats(), server:close()
 *   req:respond(status, content_type|nil, headers|nil, body|nil)
 *     -> true | nil, message   (exactly one response; later calls fail)
 *   req:connected() -> whether the client is still there
 *
 * The C structs are heap-allocated: libuv may hold the handles after the
 * userdata is collected, and a request may outlive its connection and its
 * server. Collected userdata release their C side without calling Lua
 * again (lua_close collects them while the loop still runs). */
#include <ctype.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "http_server.h"
#include "lua_mnemo.h"
#include "lua_runtime.h"

typedef struct lua_http_server {
  mnemo_http_server_t server; /* first: the close callback frees this */
  mnemo_rt_t *rt;
  int handler_ref; /* the Lua function called per request */
  int self_ref;    /* anchors the userdata while it listens */
} lua_http_server_t;

static const char server_mt[] = "mnemo.http_server";
static const char request_mt[] = "mnemo.http_request";

#define STACK_HEADERS 16

static void free_on_close(mnemo_http_server_t *s) {
  free(s); /* lua_http_server_t starts with the server */
}

/* ---- requests ---- */

static mnemo_http_request_t **check_request(lua_State *L) {
  return luaL_checkudata(L, 1, request_mt);
}

/* headers table: lower-case names; a repeated header's values are joined
 * with ", " (RFC 9110's list rule). */
static void push_headers(lua_State *L, const mnemo_http_request_t *req) {
  luaL_Buffer name;
  size_t i, j;
  lua_createtable(L, 0, (int)req->nheaders);
  for (i = 0; i < req->nheaders; i++) {
    const mnemo_http_header_t *h = &req->headers[i];
    luaL_buffinit(L, &name);
    for (j = 0; j < h->name_len; j++)
      luaL_addchar(&name, (char)tolower((unsigned char)h->name[j]));
    luaL_pushresult(&name);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isstring(L, -1)) {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h->value, h->value_len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, h->value, h->value_len);
    }
    lua_rawset(L, -3);
  }
}

static void push_request(lua_State *L, mnemo_http_request_t *req) {
  mnemo_http_request_t **box = lua_newuserdata(L, sizeof(*box));
  *box = req;
  luaL_getmetatable(L, request_mt);
  lua_setmetatable(L, -2);
}

/* Collects { name = value } (strings only: mnemo.http converts) into an
 * array, on the C stack or, when large, in a userdata left on the Lua
 * stack until the call returns. The strings stay referenced by the table. */
static size_t collect_headers(lua_State *L, int idx, mnemo_http_header_t *stack,
                              mnemo_http_header_t **out) {
  size_t n = 0, i = 0;
  *out = stack;
  if (lua_isnoneornil(L, idx))
    return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  for (lua_pushnil(L); lua_next(L, idx) != 0; lua_pop(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "respond: headers must map names to strings");
    n++;
  }
  if (n > STACK_HEADERS)
    *out = lua_newuserdata(L, n * sizeof(**out));
  for (lua_pushnil(L); lua_next(L, idx) != 0; lua_pop(L, 1), i++) {
    (*out)[i].name = lua_tolstring(L, -2, &(*out)[i].name_len);
    (*out)[i].value = lua_tolstring(L, -1, &(*out)[i].value_len);
  }
  return n;
}

/* req:respond(status, content_type, headers, body) -> true | nil, message */
static int l_respond(lua_State *L) {
  mnemo_http_request_t **box = check_request(L);
  int status = (int)luaL_checkinteger(L, 2);
  const char *ctype = luaL_optstring(L, 3, NULL);
  size_t body_len = 0;
  const char *body = luaL_optlstring(L, 5, "", &body_len);
  mnemo_http_header_t stack[STACK_HEADERS], *headers;
  size_t n;
  mnemo_http_request_t *req = *box;
  int rc;

  if (req == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "already answered");
    return 2;
  }
  lua_settop(L, 5);
  n = collect_headers(L, 4, stack, &headers);
  *box = NULL; /* respond releases it, whatever happens */
  rc = mnemo_http_respond(req, status, ctype, headers, n, body, body_len);
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  if (rc == UV_ENOTCONN)
    lua_pushliteral(L, "client disconnected");
  else if (rc == UV_EINVAL)
    lua_pushliteral(L, "invalid response (status outside 200..599, a 204 "
                       "or 304 with a body, or a header with CR/LF; the "
                       "client got a 500)");
  else
    lua_pushstring(L, uv_strerror(rc));
  return 2;
}

static int l_connected(lua_State *L) {
  mnemo_http_request_t **box = check_request(L);
  lua_pushboolean(L, *box != NULL && mnemo_http_request_connected(*box));
  return 1;
}

static int l_request_gc(lua_State *L) {
  mnemo_http_request_t **box = lua_touserdata(L, 1);
  if (*box != NULL) { /* never answered: the connection is closed */
    mnemo_http_request_drop(*box);
    *box = NULL;
  }
  return 0;
}

/* ---- servers ---- */

static void on_request(mnemo_http_server_t *s, mnemo_http_request_t *req) {
  lua_http_server_t *p = (lua_http_server_t *)s;
  lua_State *L = p->rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->handler_ref);
  push_request(L, req);
  lua_pushstring(L, req->method);
  lua_pushlstring(L, req->path, req->path_len);
  lua_pushlstring(L, req->query, req->query_len);
  push_headers(L, req);
  lua_pushlstring(L, req->body, req->body_len);
  /* The handler only starts a task; an error here is a bug: report it. */
  if (lua_pcall(L, 6, 0, 0) != 0)
    mnemo_rt_fail(p->rt, L);
}

static lua_http_server_t *check_server(lua_State *L) {
  lua_http_server_t **box = luaL_checkudata(L, 1, server_mt);
  if (*box == NULL)
    luaL_error(L, "http: the server is closed");
  return *box;
}

static uint64_t opt_ms(lua_State *L, int t, const char *key, uint64_t dflt) {
  double seconds;
  lua_getfield(L, t, key);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return dflt;
  }
  seconds = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (!(seconds >= 0) || seconds > 1e9)
    luaL_error(L, "http: %s must be seconds >= 0 (0: no limit)", key);
  return (uint64_t)(seconds * 1000 + 0.5);
}

static double opt_count(lua_State *L, int t, const char *key, double dflt) {
  double v;
  lua_getfield(L, t, key);
  v = lua_isnil(L, -1) ? dflt : lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (!(v >= 0) || v > 4e9)
    luaL_error(L, "http: %s must be a number >= 0", key);
  return v;
}

/* Options from the table at t: sizes in bytes, times in seconds. */
static void read_options(lua_State *L, int t, mnemo_http_options_t *o) {
  mnemo_http_options_init(o);
  if (lua_isnoneornil(L, t))
    return;
  luaL_checktype(L, t, LUA_TTABLE);
  o->max_header_bytes =
      (size_t)opt_count(L, t, "max_header_bytes", (double)o->max_header_bytes);
  o->max_body_bytes =
      (size_t)opt_count(L, t, "max_body_bytes", (double)o->max_body_bytes);
  o->max_connections =
      (unsigned)opt_count(L, t, "max_connections", (double)o->max_connections);
  o->request_timeout_ms = opt_ms(L, t, "read_timeout", o->request_timeout_ms);
  o->idle_timeout_ms = opt_ms(L, t, "idle_timeout", o->idle_timeout_ms);
}

/* http_listen(addr, opts, fn) -> server | nil, message, errno name */
static int l_listen(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  const char *addr = luaL_checkstring(L, 1);
  mnemo_http_options_t o;
  lua_http_server_t *p, **box;
  int rc;

  read_options(L, 2, &o);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  p = calloc(1, sizeof(*p));
  if (p == NULL)
    return luaL_error(L, "http: out of memory");
  box = lua_newuserdata(L, sizeof(*box));
  *box = NULL;
  luaL_getmetatable(L, server_mt);
  lua_setmetatable(L, -2);
  rc = mnemo_http_server_listen(rt->loop, &p->server, addr, &o, on_request);
  if (rc != 0) {
    mnemo_http_server_close(&p->server, free_on_close);
    lua_pushnil(L);
    if (rc == UV_EINVAL)
      lua_pushfstring(L,
                      "cannot listen on %s: expected HOST:PORT with a "
                      "numeric IPv4 address, [IPv6] or localhost, and a "
                      "port in 0..65535",
                      addr);
    else
      lua_pushfstring(L, "cannot listen on %s: %s", addr, uv_strerror(rc));
    lua_pushstring(L, uv_err_name(rc));
    return 3;
  }
  *box = p;
  p->rt = rt;
  lua_pushvalue(L, 3);
  p->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  p->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

static int l_port(lua_State *L) {
  lua_pushinteger(L, check_server(L)->server.port);
  return 1;
}

static int l_host(lua_State *L) {
  lua_pushstring(L, check_server(L)->server.host);
  return 1;
}

static void set_count(lua_State *L, const char *key, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, key);
}

static int l_stats(lua_State *L) {
  const mnemo_http_server_t *s = &check_server(L)->server;
  lua_createtable(L, 0, 6);
  set_count(L, "connections", (double)s->nconns);
  set_count(L, "accepted", (double)s->accepted);
  set_count(L, "requests", (double)s->requests);
  set_count(L, "rejected", (double)s->rejected);
  set_count(L, "bad_requests", (double)s->bad_requests);
  set_count(L, "timeouts", (double)s->timeouts);
  return 1;
}

/* Stops listening and closes the connections; requests being handled
 * stay answerable (their responses are dropped). */
static void close_server(lua_State *L, lua_http_server_t **box) {
  lua_http_server_t *p = *box;
  if (p == NULL)
    return;
  *box = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, p->handler_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
  mnemo_http_server_close(&p->server, free_on_close);
}

static int l_close(lua_State *L) {
  close_server(L, luaL_checkudata(L, 1, server_mt));
  return 0;
}

static int l_server_gc(lua_State *L) {
  close_server(L, lua_touserdata(L, 1));
  return 0;
}

void mnemo_open_http(lua_State *L) {
  static const luaL_Reg server_methods[] = {{"port", l_port},
                                            {"host", l_host},
                                            {"stats", l_stats},
                                            {"close", l_close},
                                            {NULL, NULL}};
  static const luaL_Reg request_methods[] = {
      {"respond", l_respond}, {"connected", l_connected}, {NULL, NULL}};
  mnemo_lua_class(L, server_mt, server_methods, l_server_gc);
  mnemo_lua_class(L, request_mt, request_methods, l_request_gc);
  lua_pushcfunction(L, l_listen);
  lua_setfield(L, -2, "http_listen");
}
