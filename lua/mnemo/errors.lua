-- Error objects and error classes. An error is classified by its `kind`
-- (tables), by the classes C code maps errno / SQLSTATE / hiredis errors to,
-- and otherwise is "unknown".
local setmetatable, type, tostring, format, next, pairs = setmetatable, type, tostring, string.format, next, pairs

local _M = {}

-- Classes a retry policy may name (runtime/core/error_class.h has the same list).
_M.CLASSES = {
  "unknown", "connection", "timeout", "deadlock", "too_many_connections",
  "http_5xx", "rate_limited", "busy", "invalid_input", "constraint", "auth",
  "not_found", "circuit_open", "bulkhead_full", "cancelled",
}
local known = {}
for _, c in ipairs(_M.CLASSES) do
  known[c] = true
end
_M.is_class = function(name)
  return known[name] == true
end

-- Messages are made when first read (tostring, err.message): errors on
-- the fast-fail path are created often and mostly never printed.
local messages = {
  timeout = function(e)
    return format("TimeoutError: %s exceeded its %.3fs deadline (elapsed %.3fs)",
      e.operation or "operation", e.timeout or 0, e.elapsed or 0)
  end,
  circuit_open = function(e)
    local text = format("CircuitOpenError: breaker %s is open (retry after %.3fs)", e.breaker,
      e.retry_after or 0)
    if e.cause ~= nil then
      text = text .. "; it opened on: " .. tostring(e.cause)
    end
    return text
  end,
  bulkhead_full = function(e)
    return format("BulkheadFullError: bulkhead %s is full (%s)", e.bulkhead, e.reason or "queue full")
  end,
}

local Error = {}
Error.__index = function(e, k)
  if k == "message" then
    local make = messages[rawget(e, "_message_kind")]
    local m = make and make(e) or rawget(e, "kind")
    rawset(e, "message", m)
    return m
  end
  return Error[k]
end
Error.__tostring = function(e)
  return e.message or e.kind
end
-- Not replaceable through getmetatable: every error shares this table.
Error.__metatable = "mnemo.error"

-- Shared errors: the fast-fail paths (an open breaker, a full bulkhead)
-- return one preallocated error per breaker or bulkhead and operation, so
-- a fast-fail allocates nothing. They are read-only (a caller that changed
-- one would change it for every later caller). What changes from one
-- fast-fail to the next (retry_after, and the cause: the error that opened
-- the breaker) is read from `live`, the owner's table; the message is made
-- at each read. A caller that keeps one and wants the values of the moment
-- takes errors.plain_copy(e).
local shared_mts = setmetatable({}, { __mode = "k" })
local DYNAMIC = { retry_after = true, cause = true }

local function read_only(_, k)
  error(("a shared mnemo error is read-only (setting %s); take errors.plain_copy(err) to change one")
    :format(tostring(k)), 2)
end

function _M.shared(kind, fields, live)
  fields.kind = kind
  fields._message_kind = kind
  local make = messages[kind]
  local mt = {
    __metatable = "mnemo.error",
    __tostring = Error.__tostring,
    __newindex = read_only,
    __index = function(e, k)
      if k == "message" then
        return make and make(e) or kind
      elseif DYNAMIC[k] then
        return live[k]
      end
      return Error[k]
    end,
  }
  shared_mts[mt] = true
  return setmetatable(fields, mt)
end

function _M.is_shared(e)
  return type(e) == "table" and shared_mts[debug.getmetatable(e)] == true
end

-- A plain copy of an error for code that must not reach its metatable
-- (sandboxed hooks), or that keeps a shared one: every field, the lazy
-- message made.
function _M.plain_copy(e)
  if type(e) ~= "table" then
    return e
  end
  local mt = debug.getmetatable(e)
  if mt ~= Error and not shared_mts[mt] then
    return e
  end
  local c = {}
  for k, v in next, e do
    c[k] = v
  end
  if mt ~= Error then
    for k in pairs(DYNAMIC) do
      c[k] = e[k]
    end
  end
  c.message, c._message_kind = e.message, nil
  return c
end

local function new(kind, fields, message)
  fields.kind = kind
  fields.message = message
  return setmetatable(fields, Error)
end

local function lazy(kind, fields)
  fields.kind = kind
  fields._message_kind = kind
  return setmetatable(fields, Error)
end

function _M.timeout(operation, timeout, elapsed)
  return lazy("timeout", { operation = operation, timeout = timeout, elapsed = elapsed })
end

function _M.circuit_open(breaker, retry_after, operation)
  return lazy("circuit_open", { breaker = breaker, retry_after = retry_after, operation = operation })
end

function _M.bulkhead_full(bulkhead, operation, reason)
  return lazy("bulkhead_full", { bulkhead = bulkhead, operation = operation, reason = reason })
end

-- A generic error with a class: mnemo.error("connection", "refused", {...})
function _M.new(kind, message, fields)
  fields = fields or {}
  return new(kind, fields, message or kind)
end

-- luv reports system errors as "ECONNREFUSED: connection refused": the
-- errno name maps to a class as it does in C.
local ERRNO_CLASS = {
  ECONNREFUSED = "connection", ECONNRESET = "connection", ECONNABORTED = "connection",
  EPIPE = "connection", EHOSTUNREACH = "connection", ENETUNREACH = "connection",
  ENETDOWN = "connection", ENOTCONN = "connection", EHOSTDOWN = "connection",
  EAI_AGAIN = "connection", EAI_NONAME = "connection", EAI_FAIL = "connection",
  ETIMEDOUT = "timeout", ECANCELED = "cancelled", ENOENT = "not_found",
  EACCES = "auth", EPERM = "auth", EINVAL = "invalid_input", EAGAIN = "busy",
  EBUSY = "busy", EMFILE = "too_many_connections", ENFILE = "too_many_connections",
}
_M.ERRNO_CLASS = ERRNO_CLASS

-- The class of any error value: a table's `kind`, a luv error string's
-- errno name, else "unknown".
function _M.classify(err)
  local t = type(err)
  if t == "table" then
    local kind = err.kind
    if type(kind) == "string" then
      return kind
    end
  elseif t == "string" then
    local name = err:match("^(E[%u_]+):") or err:match(": (E[%u_]+):")
    if name and ERRNO_CLASS[name] then
      return ERRNO_CLASS[name]
    end
  end
  return "unknown"
end

local core = require "mnemo_core"
local current_id = require("mnemo.correlation").current
_M.class_from_errno = core.class_from_errno
_M.class_from_sqlstate = core.class_from_sqlstate
_M.class_from_http_status = core.class_from_http_status
_M.class_from_redis = core.class_from_redis

-- ---- error tracking (runtime/core/error_track.h, lua/mnemo/tracking.lua) ----
_M.SEVERITIES = { "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL" }
_M.CATEGORIES = { "database", "embedding", "cache", "timeout", "circuit_breaker", "parse", "policy", "api",
  "unknown", "graph" } -- the C enum's order (graph came last)
local SEVERITY, CATEGORY = {}, {} -- name -> the C enum value
for i, s in ipairs(_M.SEVERITIES) do
  SEVERITY[s] = i - 1
end
for i, c in ipairs(_M.CATEGORIES) do
  CATEGORY[c] = i - 1
end
local SEVERITY_LIST, CATEGORY_LIST = table.concat(_M.SEVERITIES, ", "), table.concat(_M.CATEGORIES, ", ")

local type_names = {}
-- The error type of an error value: kind "circuit_open" ->
-- "CircuitOpenError", a luv error string -> its errno name, any other
-- string -> "LuaError".
function _M.type_of(err)
  local t = type(err)
  if t == "table" then
    local kind = err.kind
    if type(kind) ~= "string" then
      return "Error"
    end
    local name = type_names[kind]
    if not name then
      name = kind:gsub("[_%-%s]+(%w)", string.upper):gsub("^%l", string.upper) .. "Error"
      type_names[kind] = name
    end
    return name
  elseif t == "string" then
    return err:match("^(E[%u_]+):") or "LuaError"
  end
  return "Error"
end

local record = core.error_record
-- errors.record{ severity = "ERROR", category = "unknown", service,
-- operation, error_type, message, error, context, correlation_id,
-- traceback } -> true | false, reason
-- Recorded in memory (scrubbed, aggregated, bounded; the flusher writes
-- it): no I/O, nothing raised for a full queue or a database in trouble.
-- Raises only on a bad argument (an unknown severity or category, with the
-- allowed list). `error` (an error value) gives the message, the error
-- type and a traceback when they are not given. The table is read here,
-- in Lua, where the JIT makes field reads nearly free; C gets arguments.
-- The policy's error_tracking switch (mnemo.guard sets it at configure).
_M.recording = true

function _M.record(t)
  if type(t) ~= "table" then
    error("errors.record: expected a table, got " .. type(t), 2)
  end
  if not _M.recording then
    return false, "error tracking is switched off"
  end
  local severity, category = t.severity, t.category
  local sev = severity == nil and 3 or SEVERITY[severity]
  if not sev then
    error(("errors.record: severity: expected one of %s, got %s"):format(SEVERITY_LIST, tostring(severity)), 2)
  end
  local cat = category == nil and 8 or CATEGORY[category]
  if not cat then
    error(("errors.record: category: expected one of %s, got %s"):format(CATEGORY_LIST, tostring(category)), 2)
  end
  local message, error_type, traceback, err = t.message, t.error_type, t.traceback, t.error
  if err ~= nil then
    if message == nil then
      message = tostring(err)
    end
    if error_type == nil then
      error_type = _M.type_of(err)
    end
    if traceback == nil and type(err) == "table" then
      traceback = rawget(err, "traceback")
    end
  elseif message == nil then
    error("errors.record: expected a message (or an error)", 2)
  end
  -- The task's id looked up here (false: none), not by C calling back
  -- into Lua (318 -> 385 ns per record).
  local cid = t.correlation_id
  if cid == nil then
    cid = current_id() or false
  end
  return record(sev, cat, t.service, t.operation, error_type or "Error", message, t.context, cid, traceback)
end

_M.Error = Error
return _M
