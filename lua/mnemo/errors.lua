-- Error objects and error classes. An error is classified by its `kind`
-- (tables), by the classes C code maps errno / SQLSTATE / hiredis errors to,
-- and otherwise is "unknown".
local setmetatable, type, tostring, format = setmetatable, type, tostring, string.format

local _M = {}

-- Classes a retry policy may name (runtime/error_class.h has the same list).
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

local Error = {}
Error.__index = Error
Error.__tostring = function(e)
  return e.message or e.kind
end

local function new(kind, fields, message)
  fields.kind = kind
  fields.message = message
  return setmetatable(fields, Error)
end

function _M.timeout(operation, timeout, elapsed)
  return new("timeout", { operation = operation, timeout = timeout, elapsed = elapsed },
    format("TimeoutError: %s exceeded its %.3fs deadline (elapsed %.3fs)",
      operation or "operation", timeout or 0, elapsed or 0))
end

function _M.circuit_open(breaker, retry_after, operation)
  return new("circuit_open", { breaker = breaker, retry_after = retry_after, operation = operation },
    format("CircuitOpenError: breaker %s is open (retry after %.3fs)", breaker, retry_after or 0))
end

function _M.bulkhead_full(bulkhead, operation, reason)
  return new("bulkhead_full", { bulkhead = bulkhead, operation = operation, reason = reason },
    format("BulkheadFullError: bulkhead %s is full (%s)", bulkhead, reason or "queue full"))
end

function _M.retries_exhausted(operation, attempts, last)
  return new(last and last.kind or "unknown",
    { operation = operation, attempts = attempts, cause = last, retries_exhausted = true },
    format("%s: %d attempts failed; last error: %s", operation or "operation", attempts,
      tostring(last and (last.message or last.kind) or last)))
end

-- A generic error with a class: mnemo.error("connection", "refused", {...})
function _M.new(kind, message, fields)
  fields = fields or {}
  return new(kind, fields, message or kind)
end

-- The class of any error value.
function _M.classify(err)
  if type(err) == "table" then
    local kind = err.kind
    if type(kind) == "string" then
      return kind
    end
  end
  return "unknown"
end

_M.Error = Error
return _M
