-- HTTP on the shared loop: a small HTTP/1.1 server (runtime/loop/http_server.c,
-- libhttp-parser) with routing, each request handled as its own task so a
-- handler may wait (database queries, mnemo.sleep).
--
--   local http = require "mnemo.http"
--   local server = assert(http.serve{
--     addr = "127.0.0.1:0",               -- default $MNEMO_HTTP_ADDR, else 127.0.0.1:8088
--     routes = {
--       ["GET /health"] = function(req) return 200, { status = "healthy" } end,
--       ["POST /v1/breakers/:name/reset"] = function(req) ... req.params.name ... end,
--     },
--   })
--   server:url()   -- "http://127.0.0.1:40123"
--   server:close()
--
-- Without `routes`, the registry `http.routes` is served, read at each
-- request: modules add to it with http.route("GET /metrics", fn). A server
-- keeps the loop alive until :close().
--
-- A route is "METHOD /path"; a segment ":name" matches one segment, given
-- percent-decoded in req.params.name. Exact paths win over patterns; HEAD
-- is served by the GET route (without the body). No route for the path ->
-- 404, a route for another method -> 405 with Allow; both JSON.
--
-- req = { method, path (raw, without the query), raw_query, query (decoded;
-- a repeated key keeps its first value, `+` is a space), headers (lower-case
-- names), body, params, route, id (X-Request-Id, echoed in the response) }
--
-- The request id is the client's X-Request-Id when it is 1 to 64
-- characters of A-Z a-z 0-9 . _ : - (anything else, e.g. a header with a
-- quote or a newline, is replaced), else a new mnemo.correlation id. It is
-- the correlation id of the handler's task (mnemo.correlation.with): log
-- lines name it as correlation_id, error events carry it, tasks the
-- handler spawns with mnemo.spawn inherit it, and the HTTP embedder sends
-- it on. Every response echoes it in X-Request-Id (error bodies also as
-- request_id).
--
-- A handler returns status, body, headers | content_type:
--   body a table -> JSON (application/json); a string -> text/plain unless
--   a content type is given; `return body` alone means 200; nothing, 204.
-- A handler that raises -> 500 {"error":"internal_error"} (the error and its
-- traceback go to the log as http_handler_failed, never to the client); one
-- that runs past `handler_timeout` (30 s; false: none) -> 504, its waits
-- cancelled like any mnemo.timeout.
local core = require "mnemo_core"
local cjson = require "cjson.safe"
local log = require "mnemo.log"
local timeout = require "mnemo.timeout"
local errors = require "mnemo.errors"
local correlation = require "mnemo.correlation"

local type, pairs, ipairs, tostring, tonumber, pcall, xpcall, setmetatable, select =
  type, pairs, ipairs, tostring, tonumber, pcall, xpcall, setmetatable, select
local floor = math.floor

local _M = {}

_M.DEFAULT_ADDR = "127.0.0.1:8088"
_M.HANDLER_TIMEOUT = 30

-- The registry of default routes: "METHOD /path" -> handler(req).
_M.routes = {}

-- ---- URLs ----

local function unescape(s, plus)
  if plus then
    s = s:gsub("+", " ")
  end
  return (s:gsub("%%(%x%x)", function(h)
    return string.char(tonumber(h, 16))
  end))
end
_M.unescape = unescape

-- http.parse_query("a=1&b=x%20y&a=2&flag") -> { a = "1", b = "x y", flag = "" }
function _M.parse_query(raw)
  local q = {}
  if raw == nil or raw == "" then
    return q
  end
  for pair in raw:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if not k then
      k, v = pair, ""
    end
    k = unescape(k, true)
    if k ~= "" and q[k] == nil then
      q[k] = unescape(v, true)
    end
  end
  return q
end

-- ---- routes ----

local compiled = {} -- spec -> { method, path, pattern, names } | false

local function compile(spec)
  local c = compiled[spec]
  if c ~= nil then
    return c
  end
  local method, path = tostring(spec):match("^(%u+) +(/%S*)$")
  if not method then
    compiled[spec] = false
    return false
  end
  c = { method = method, path = path, names = {} }
  if path:find("/:", 1, true) then
    local parts = { "^" }
    for seg in path:gmatch("/([^/]*)") do
      local name = seg:match("^:([%a_][%w_]*)$")
      if name then
        c.names[#c.names + 1] = name
        parts[#parts + 1] = "/([^/]+)"
      else
        parts[#parts + 1] = "/" .. (seg:gsub("%p", "%%%0"))
      end
    end
    c.pattern = table.concat(parts) .. "$"
  end
  compiled[spec] = c
  return c
end

local function check_route(spec, fn, level)
  if type(spec) ~= "string" or not compile(spec) then
    error(("http: route %s: expected \"METHOD /path\" (e.g. \"GET /health\", \"POST /v1/breakers/:name/reset\")")
      :format(tostring(spec)), level + 1)
  end
  if type(fn) ~= "function" then
    error(("http: route %s: expected a handler function, got %s"):format(spec, type(fn)), level + 1)
  end
end

-- http.route("GET /health", fn): adds (or replaces) a default route.
function _M.route(spec, fn)
  check_route(spec, fn, 2)
  _M.routes[spec] = fn
  return fn
end

-- The params of `path` under route c, or nil if it does not match.
local function path_params(c, path)
  if not c.pattern then
    return c.path == path and {} or nil
  end
  local caps = { path:match(c.pattern) }
  if caps[1] == nil then
    return nil
  end
  local params = {}
  for i, name in ipairs(c.names) do
    params[name] = unescape(caps[i])
  end
  return params
end

-- handler, spec, params | nil, allowed methods (a set) or nil
local function find_route(routes, method, path)
  local spec = method .. " " .. path
  local fn = routes[spec]
  if fn == nil and method == "HEAD" then
    spec = "GET " .. path
    fn = routes[spec]
  end
  if fn ~= nil then
    return fn, spec, {}
  end
  local allowed
  for s, handler in pairs(routes) do
    local c = compile(s)
    local params = c and path_params(c, path)
    if params then
      if c.method == method or (method == "HEAD" and c.method == "GET") then
        return handler, s, params
      end
      allowed = allowed or {}
      allowed[c.method] = true
    end
  end
  return nil, allowed
end

-- ---- responses ----

local function send(ud, id, status, ctype, body, extra)
  local headers = { ["X-Request-Id"] = id }
  if extra then
    for k, v in pairs(extra) do
      headers[k] = tostring(v)
    end
  end
  return ud:respond(status, ctype, headers, body)
end

local function send_error(ud, id, status, code, message, extra)
  local body = cjson.encode({ error = code, message = message, request_id = id })
  return send(ud, id, status, "application/json", body .. "\n", extra)
end

-- What a handler returned -> status, content type, body, headers; or nil
-- and why the result is unusable.
local function normalize(status, body, extra)
  if type(status) ~= "number" then
    if status == nil and body == nil then
      return 204, nil, "", nil
    end
    status, body, extra = 200, status, body
  end
  if status ~= floor(status) or status < 200 or status > 599 then
    return nil, ("invalid status %s (expected 200..599)"):format(tostring(status))
  end
  local ctype, headers
  if type(extra) == "string" then
    ctype = extra
  elseif type(extra) == "table" then
    headers = {}
    for k, v in pairs(extra) do
      if type(k) == "string" and k:lower() == "content-type" then
        ctype = tostring(v)
      elseif type(k) == "string" then
        headers[k] = v
      end
    end
  elseif extra ~= nil then
    return nil, "the third result must be headers (a table) or a content type, got " .. type(extra)
  end
  local t = type(body)
  if t == "table" then
    local json, err = cjson.encode(body)
    if not json then
      return nil, "the body cannot be encoded as JSON: " .. tostring(err)
    end
    body, ctype = json, ctype or "application/json"
  elseif t == "nil" then
    body = ""
  elseif t == "number" or t == "boolean" then
    body = tostring(body)
  elseif t ~= "string" then
    return nil, "the body must be a string or a table, got " .. t
  end
  if status == 204 or status == 304 then
    return status, nil, "", headers
  end
  return status, ctype or "text/plain; charset=utf-8", body, headers
end

-- ---- handling ----

-- The client's id when it is safe to echo and to log (no quote, blank or
-- line break; bounded), else a fresh one, unique across processes.
_M.MAX_REQUEST_ID = 64
local function request_id(headers)
  local given = headers["x-request-id"]
  if type(given) == "string" and #given <= _M.MAX_REQUEST_ID and given:find("^[A-Za-z0-9._:%-]+$") then
    return given
  end
  return correlation.new()
end
_M.request_id = request_id

local function error_text(e)
  if type(e) == "table" then
    return tostring(e.message or e.kind or e)
  end
  return tostring(e)
end

local function traceback(e)
  return { err = e, traceback = debug.traceback(error_text(e), 2) }
end

local function call(handler, req)
  return xpcall(handler, traceback, req)
end

-- ok, status, body, extra | false, { err, traceback } | false, { timed_out }
local function run_handler(server, handler, req)
  local seconds = server.handler_timeout
  if not seconds then
    return call(handler, req)
  end
  local ok, a, b, c, d = pcall(timeout.timeout, { seconds = seconds, operation = "http " .. req.route },
    call, handler, req)
  if ok then
    return a, b, c, d
  end
  return false, { err = a, timed_out = errors.classify(a) == "timeout" }
end

local function not_routed(ud, id, method, path, allowed)
  if not allowed then
    return send_error(ud, id, 404, "not_found", ("no route for %s %s"):format(method, path))
  end
  local list = {}
  for m in pairs(allowed) do
    list[#list + 1] = m
  end
  table.sort(list)
  local allow = table.concat(list, ", ")
  return send_error(ud, id, 405, "method_not_allowed", ("%s is not allowed on %s (allowed: %s)"):format(method, path,
    allow), { Allow = allow })
end

local function failed(ud, req, failure)
  if failure.timed_out then
    send_error(ud, req.id, 504, "timeout", "the request took too long")
    return
  end
  log.emit("error", "http_handler_failed", { -- correlation_id: the request id
    method = req.method, path = req.path, route = req.route,
    error = error_text(failure.err), error_kind = errors.classify(failure.err),
    traceback = failure.traceback,
  })
  send_error(ud, req.id, 500, "internal_error", "internal server error")
end

local function route_and_run(server, ud, id, method, path, raw_query, headers, body)
  local handler, spec, params = find_route(server:_routes(), method, path)
  if not handler then
    return not_routed(ud, id, method, path, spec)
  end
  local req = { method = method, path = path, raw_query = raw_query, query = _M.parse_query(raw_query),
    headers = headers, body = body, params = params, route = spec, id = id, server = server }
  local results = { run_handler(server, handler, req) }
  if not results[1] then
    return failed(ud, req, results[2])
  end
  local status, ctype, rbody, extra = normalize(results[2], results[3], results[4])
  if not status then
    return failed(ud, req, { err = "http handler for " .. spec .. ": " .. ctype })
  end
  local ok, err = send(ud, id, status, ctype, rbody, extra)
  if ok then
    return
  elseif err == "client disconnected" then
    if log.enabled("debug") then
      log.emit("debug", "http_response_dropped", { route = spec, reason = err })
    end
  else -- refused by the server (a header it must set itself): the client got a 500
    log.emit("error", "http_handler_failed", { method = method, path = path, route = spec,
      error = "http handler for " .. spec .. ": " .. tostring(err) })
  end
end

-- The request's work, routing included, runs under its id.
local function dispatch(server, ud, method, path, raw_query, headers, body)
  local id = request_id(headers)
  return correlation.with(id, route_and_run, server, ud, id, method, path, raw_query, headers, body)
end

-- One task per request. Whatever goes wrong, the client gets an answer and
-- the task ends quietly: an error escaping here would stop the process.
local function handle(server, ud, ...)
  local ok, err = pcall(dispatch, server, ud, ...)
  if not ok then
    log.emit("error", "http_handler_failed", { error = error_text(err), stage = "dispatch" })
    pcall(send_error, ud, "-", 500, "internal_error", "internal server error")
  end
end

-- ---- servers ----

local Server = {}
Server.__index = Server

function Server:_routes()
  return self.routes or _M.routes
end

function Server:port()
  return self._port
end

function Server:host()
  return self._host
end

function Server:url()
  local host = self._host
  if host:find(":", 1, true) then
    host = "[" .. host .. "]"
  end
  return ("http://%s:%d"):format(host, self._port)
end

-- { connections, accepted, requests, rejected, bad_requests, timeouts }
function Server:stats()
  return self.ud and self.ud:stats() or nil
end

-- Stops accepting and closes every connection (handlers still running
-- finish; their responses are dropped). The loop is no longer kept alive.
function Server:close()
  local ud = self.ud
  self.ud = nil
  if ud then
    ud:close()
    log.emit("debug", "http_closed", { url = self:url() })
  end
end

function Server:closed()
  return self.ud == nil
end

local function check_options(opts)
  if opts.routes ~= nil then
    if type(opts.routes) ~= "table" then
      error("http.serve: routes must be a table of \"METHOD /path\" = handler", 3)
    end
    for spec, fn in pairs(opts.routes) do
      check_route(spec, fn, 3)
    end
  end
  local t = opts.handler_timeout
  if t ~= nil and t ~= false and (type(t) ~= "number" or not (t > 0)) then
    error("http.serve: handler_timeout must be seconds > 0 or false", 3)
  end
end

-- http.serve{ addr =, routes =, handler_timeout = 30, read_timeout = 10,
--   idle_timeout = 5, max_header_bytes = 16384, max_body_bytes = 1048576,
--   max_connections = 128 } -> server | nil, err
function _M.serve(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("http.serve: expected a table of options", 2)
  end
  check_options(opts)
  local addr = opts.addr
  if addr == nil then
    local env = os.getenv("MNEMO_HTTP_ADDR")
    addr = (env and env ~= "") and env or _M.DEFAULT_ADDR
  end
  local handler_timeout = opts.handler_timeout
  if handler_timeout == nil then
    handler_timeout = _M.HANDLER_TIMEOUT
  end
  local server = setmetatable({ routes = opts.routes, handler_timeout = handler_timeout }, Server)
  local ud, message, code = core.http_listen(tostring(addr), opts, function(req, ...)
    core.spawn(handle, server, req, ...)
  end)
  if not ud then
    return nil, errors.new(errors.ERRNO_CLASS[code] or "unknown", "http.serve: " .. message,
      { addr = addr, code = code })
  end
  server.ud, server._port, server._host = ud, ud:port(), ud:host()
  log.emit("info", "http_listening", { url = server:url() })
  return server
end

-- ---- default routes ----
-- lua/mnemo/monitor.lua adds /health, /metrics, /v1/errors/stats,
-- /monitoring/errors and the breaker reset when `mnemo` is loaded.

-- ---- mnemo-run --serve ADDR ----

local function die(code, ...)
  io.stderr:write("mnemo-run: ", ...)
  io.stderr:write("\n")
  io.stderr:flush()
  os.exit(code)
end

-- Called by mnemo-run for `--serve ADDR [script | -e code] [args]`: serves
-- the registry's routes, prints the URL on stderr, then runs the script as
-- it would have run without --serve (same `...` and `arg`). The server
-- keeps the process up after the script until SIGINT or SIGTERM.
function _M.serve_main(addr, mode, target, ...)
  local mnemo = require "mnemo" -- entry point, not a dependency: the program (it requires mnemo.http) and its routes
  local dsn = os.getenv("MNEMO_PG_DSN")
  if dsn and dsn ~= "" then
    -- Errors recorded while serving reach error_logs (and the dashboard).
    mnemo.tracking.start { dsn = dsn }
    -- Breakers open when the last process stopped are open again for the
    -- time they had left (those made later by the script: as they appear);
    -- every transition is saved.
    mnemo.breaker_store.start { dsn = dsn }
  end
  local server, err = _M.serve{ addr = addr }
  if not server then
    die(1, "--serve ", addr, ": ", error_text(err))
  end
  io.stderr:write(("mnemo: serving %s\n"):format(server:url()))
  io.stderr:flush()
  _M.main_server = server
  if mode == "none" then
    return
  end
  local chunk, lerr
  if mode == "code" then
    chunk, lerr = loadstring(target, "=(command line)")
  else
    local f, ferr = io.open(target, "r")
    if not f then
      die(2, "cannot open ", ferr)
    end
    f:close()
    chunk, lerr = loadfile(target)
  end
  if not chunk then
    die(1, lerr)
  end
  local program = arg and arg[-1]
  local script_arg = { [-1] = program, [0] = mode == "file" and target or nil }
  for i = 1, select("#", ...) do
    script_arg[i] = (select(i, ...))
  end
  arg = script_arg
  return chunk(...)
end

return _M
