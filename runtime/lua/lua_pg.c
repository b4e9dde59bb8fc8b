/* PostgreSQL for Lua: a userdata around a mnemo_pg_conn_t with callback
 * functions; lua/mnemo/pg.lua turns them into waits of the calling task. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "lua_mnemo.h"
#include "lua_runtime.h"
#include "pg.h"

/* Heap-allocated: libuv may still hold the poll handle after the userdata
 * is collected; the close callback frees it. */
typedef struct lua_pg {
  mnemo_pg_conn_t conn;
  mnemo_rt_t *rt;
  int cb_ref;   /* the pending callback */
  int self_ref; /* anchors the userdata while a callback is pending */
  int closed;   /* mnemo_pg_close called */
} lua_pg_t;

static const char pg_mt[] = "mnemo.pg_conn";

static lua_pg_t *check(lua_State *L) {
  lua_pg_t **box = luaL_checkudata(L, 1, pg_mt);
  if (*box == NULL)
    luaL_error(L, "pg: connection is closed");
  return *box;
}

static void free_on_close(mnemo_pg_conn_t *conn) {
  free(conn); /* lua_pg_t starts with the conn */
}

/* Takes the pending callback off the registry and pushes it on rt->L. */
static lua_State *push_callback(lua_pg_t *p) {
  lua_State *L = p->rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->cb_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, p->cb_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
  p->cb_ref = p->self_ref = LUA_NOREF;
  return L;
}

static void call_back(lua_pg_t *p, lua_State *L, int nargs) {
  if (lua_pcall(L, nargs, 0, 0) != 0)
    mnemo_rt_fail(p->rt, L);
}

static void on_connect(mnemo_pg_conn_t *conn, int status) {
  lua_pg_t *p = (lua_pg_t *)conn;
  lua_State *L = push_callback(p);
  if (status == 0) {
    lua_pushboolean(L, 1);
    call_back(p, L, 1);
  } else {
    lua_pushnil(L);
    lua_pushstring(L, conn->error);
    if (conn->timed_out)
      lua_pushliteral(L, "timeout");
    else
      lua_pushnil(L);
    call_back(p, L, 3);
  }
}

/* Converts one field by its type: integers and floats to numbers, bool to
 * boolean, everything else (text, numeric, json, arrays) as text. */
static void push_value(lua_State *L, const PGresult *r, int row, int col) {
  const char *v = PQgetvalue(r, row, col);
  switch (PQftype(r, col)) {
  case 20:  /* int8 */
  case 21:  /* int2 */
  case 23:  /* int4 */
  case 26:  /* oid */
  case 700: /* float4 */
  case 701: /* float8 */
    lua_pushnumber(L, strtod(v, NULL));
    break;
  case 16: /* bool */
    lua_pushboolean(L, v[0] == 't');
    break;
  default:
    lua_pushlstring(L, v, (size_t)PQgetlength(r, row, col));
    break;
  }
}

/* Pushes { {col = value, ...}, ..., columns = {...}, affected = n }. */
static void push_rows(lua_State *L, const PGresult *r) {
  int rows = PQntuples(r), cols = PQnfields(r), i, j;
  const char *affected = PQcmdTuples((PGresult *)r);
  lua_createtable(L, rows, 2);
  lua_createtable(L, cols, 0);
  for (j = 0; j < cols; j++) {
    lua_pushstring(L, PQfname(r, j));
    lua_rawseti(L, -2, j + 1);
  }
  lua_setfield(L, -2, "columns");
  lua_pushnumber(L, affected && *affected ? strtod(affected, NULL) : 0);
  lua_setfield(L, -2, "affected");
  for (i = 0; i < rows; i++) {
    lua_createtable(L, 0, cols);
    for (j = 0; j < cols; j++) {
      if (PQgetisnull(r, i, j))
        continue;
      push_value(L, r, i, j);
      lua_setfield(L, -2, PQfname(r, j));
    }
    lua_rawseti(L, -2, i + 1);
  }
}

static void on_result(mnemo_pg_conn_t *conn, PGresult *result) {
  lua_pg_t *p = (lua_pg_t *)conn;
  lua_State *L = push_callback(p);
  ExecStatusType st;
  if (result == NULL) { /* the connection broke */
    lua_pushnil(L);
    lua_pushstring(L, conn->error);
    lua_pushnil(L);
    call_back(p, L, 3);
    return;
  }
  st = PQresultStatus(result);
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK ||
      st == PGRES_EMPTY_QUERY) {
    push_rows(L, result);
    PQclear(result);
    call_back(p, L, 1);
    return;
  }
  {
    const char *msg = PQresultErrorMessage(result);
    const char *state = mnemo_pg_sqlstate(result);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
      n--;
    lua_pushnil(L);
    lua_pushlstring(L, msg, n);
    if (state != NULL)
      lua_pushstring(L, state);
    else
      lua_pushnil(L);
    PQclear(result);
    call_back(p, L, 3);
  }
}

/* pg_connect(dsn, cb [, timeout_seconds]) -> conn | nil, err;
 * later cb(true) | cb(nil, err, "timeout" | nil). The connect's deadline
 * is timeout_seconds (default MNEMO_PG_CONNECT_TIMEOUT_MS). */
static int l_connect(lua_State *L) {
  mnemo_rt_t *rt = mnemo_rt_get(L);
  const char *dsn = luaL_checkstring(L, 1);
  double seconds = luaL_optnumber(L, 3, 0);
  uint64_t timeout_ms = 0;
  lua_pg_t *p;
  lua_pg_t **box;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!(seconds >= 0) || seconds > 1e9)
    return luaL_argerror(L, 3, "expected a number of seconds >= 0");
  if (seconds > 0) {
    timeout_ms = (uint64_t)(seconds * 1000.0 + 0.5);
    if (timeout_ms == 0)
      timeout_ms = 1;
  }
  p = calloc(1, sizeof(*p));
  if (p == NULL)
    return luaL_error(L, "pg: out of memory");
  p->rt = rt;
  p->cb_ref = p->self_ref = LUA_NOREF;
  box = lua_newuserdata(L, sizeof(*box));
  *box = p;
  luaL_getmetatable(L, pg_mt);
  lua_setmetatable(L, -2);
  if (mnemo_pg_connect(rt->loop, &p->conn, dsn, timeout_ms, on_connect) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, p->conn.error);
    p->closed = 1;
    mnemo_pg_close(&p->conn, free_on_close);
    *box = NULL;
    return 2;
  }
  lua_pushvalue(L, 2);
  p->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  p->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* conn:query(sql, params|nil, cb) -> true | nil, err
 * later cb(rows) | cb(nil, message, sqlstate|nil) */
static int l_query(lua_State *L) {
  lua_pg_t *p = check(L);
  const char *sql = luaL_checkstring(L, 2);
  const char *params[64];
  int n = 0, i, rc;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "n");
    n = lua_isnumber(L, -1) ? (int)lua_tonumber(L, -1) : (int)lua_objlen(L, 3);
    lua_pop(L, 1);
    if (n > 64)
      return luaL_argerror(L, 3, "at most 64 parameters");
    /* Every value stays on the stack until the query is sent: a number
     * converted by lua_tostring is a new string that nothing else holds,
     * and the next conversion may run the collector. */
    luaL_checkstack(L, n, "too many parameters");
    for (i = 0; i < n; i++) {
      lua_rawgeti(L, 3, i + 1);
      if (lua_isnil(L, -1)) {
        params[i] = NULL;
      } else if (lua_isboolean(L, -1)) {
        params[i] = lua_toboolean(L, -1) ? "true" : "false";
      } else {
        params[i] = lua_tostring(L, -1);
        if (params[i] == NULL)
          return luaL_argerror(L, 3,
                               "parameters must be strings, numbers, "
                               "booleans or nil");
      }
    }
  }
  luaL_checktype(L, 4, LUA_TFUNCTION);
  rc = mnemo_pg_query(&p->conn, sql, n, params, on_result);
  lua_pop(L, n); /* libpq has copied the parameters */
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, p->conn.error);
    return 2;
  }
  lua_pushvalue(L, 4);
  p->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 1);
  p->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushboolean(L, 1);
  return 1;
}

static void close_conn(lua_State *L, lua_pg_t **box) {
  lua_pg_t *p = *box;
  if (p == NULL)
    return;
  *box = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, p->cb_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
  p->cb_ref = p->self_ref = LUA_NOREF;
  p->closed = 1;
  mnemo_pg_close(&p->conn, free_on_close);
}

/* conn:close(): a pending callback is dropped, the query abandoned. */
static int l_close(lua_State *L) {
  close_conn(L, luaL_checkudata(L, 1, pg_mt));
  return 0;
}

static int l_gc(lua_State *L) {
  close_conn(L, lua_touserdata(L, 1));
  return 0;
}

static int l_status(lua_State *L) {
  lua_pg_t **box = luaL_checkudata(L, 1, pg_mt);
  static const char *const names[] = {"closed", "connecting", "idle", "busy",
                                      "closing"};
  lua_pushstring(L, *box ? names[(*box)->conn.state] : "closed");
  return 1;
}

/* conn:escape_literal(text) -> 'quoted' */
static int l_escape_literal(lua_State *L) {
  lua_pg_t *p = check(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  char *quoted = PQescapeLiteral(p->conn.pg, s, len);
  if (quoted == NULL)
    return luaL_error(L, "pg: %s", PQerrorMessage(p->conn.pg));
  lua_pushstring(L, quoted);
  PQfreemem(quoted);
  return 1;
}

void mnemo_open_pg(lua_State *L) {
  static const luaL_Reg methods[] = {{"query", l_query},
                                     {"close", l_close},
                                     {"status", l_status},
                                     {"escape_literal", l_escape_literal},
                                     {NULL, NULL}};
  mnemo_lua_class(L, pg_mt, methods, l_gc);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "pg_connect");
}
