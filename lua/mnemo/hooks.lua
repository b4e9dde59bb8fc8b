-- Decision hooks from policy files: should_retry(err, attempt),
-- next_delay(attempt, err, proposed), on_transition(breaker, from, to),
-- fallback(err, ctx). Each call runs in the sandbox with an instruction
-- budget; a hook that errors, runs out of budget or returns nonsense is
-- logged and counted, and the built-in decision is used: a broken hook
-- never breaks the call.
local sandbox = require "mnemo.sandbox"
local log = require "mnemo.log"

local type, tostring = type, tostring

local _M = {}

_M.BUDGET = 100000 -- instructions per hook call
_M.failures = {}   -- hook name -> count of failed calls

local function failed(name, owner, why)
  _M.failures[name] = (_M.failures[name] or 0) + 1
  log.emit("error", "hook_failed", { hook = name, owner = owner, error = why })
end

-- Calls hook(...) sandboxed. Returns ok, value: ok is false when the hook
-- failed (already logged and counted); `check` validates the value.
function _M.call(name, owner, hook, check, ...)
  local ok, value = sandbox.call(_M.BUDGET, hook, ...)
  if not ok then
    failed(name, owner, tostring(value))
    return false
  end
  if check and not check(value) then
    failed(name, owner, "returned " .. tostring(value) .. " (" .. type(value) .. ")")
    return false
  end
  return true, value
end

function _M.is_boolean(v)
  return type(v) == "boolean"
end

function _M.is_delay(v)
  return type(v) == "number" and v >= 0 and v == v and v ~= math.huge
end

return _M
