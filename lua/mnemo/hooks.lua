-- Decision hooks from policy files: should_retry(err, attempt),
-- next_delay(attempt, err, proposed), on_transition(breaker, from, to),
-- fallback(err, ctx), health_probe(). Each call runs in the sandbox with
-- the policy's hook limits; what it is given is a plain copy (a hook that
-- rewrites an error's metatable rewrites nothing of the host's), what it
-- returns must be plain data. A hook that errors, runs out of budget or
-- memory, or returns nonsense is logged and counted, and the built-in
-- decision is used: a broken hook never breaks the call.
local sandbox = require "mnemo.sandbox"
local log = require "mnemo.log"
local errors = require "mnemo.errors"

local type, select = type, select
local describe, copy_in, plain = sandbox.describe, sandbox.copy_in, sandbox.plain

local _M = {}

_M.BUDGET = 100000 -- instructions per hook call (the policy's sandbox.hook_budget)
_M.limits = { budget = _M.BUDGET, memory = sandbox.DEFAULT_MEMORY }
_M.failures = {}   -- hook name -> count of failed calls

-- The limits hook calls run with (a policy's sandbox section, once it is
-- in force).
function _M.set_limits(budget, memory)
  _M.limits = { budget = budget or _M.BUDGET, memory = memory or sandbox.DEFAULT_MEMORY }
end

local function failed(name, owner, why)
  _M.failures[name] = (_M.failures[name] or 0) + 1
  log.emit("error", "hook_failed", { hook = name, owner = owner, error = why })
end

-- Host values become plain copies; up to four arguments (every hook has
-- at most three).
local function copies(n, a, b, c, d)
  if n == 0 then
    return
  end
  return copy_in(errors.plain_copy(a)), copies(n - 1, b, c, d)
end

local function settle(name, owner, check, ok, value)
  if not ok then
    failed(name, owner, describe(value))
    return false
  end
  local is_plain, why = plain(value)
  if not is_plain then
    failed(name, owner, "returned " .. why .. " (hooks return plain data)")
    return false
  end
  if check and not check(value) then
    failed(name, owner, "returned " .. describe(value) .. " (" .. type(value) .. ")")
    return false
  end
  return true, value
end

-- Calls hook(...) sandboxed. Returns ok, value: ok is false when the hook
-- failed (already logged and counted); `check` validates the value.
function _M.call(name, owner, hook, check, ...)
  return settle(name, owner, check, sandbox.call(_M.limits, hook, copies(select("#", ...), ...)))
end

function _M.is_boolean(v)
  return type(v) == "boolean"
end

function _M.is_delay(v)
  return type(v) == "number" and v >= 0 and v == v and v ~= math.huge
end

return _M
