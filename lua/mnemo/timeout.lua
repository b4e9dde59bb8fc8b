-- Deadlines for Lua work: mnemo.timeout, mnemo.shield, mnemo.await, and
-- closing the luv handles a timed-out piece of work opened.
local core = require "mnemo_core"
local uv = require "luv"
local errors = require "mnemo.errors"
local log = require "mnemo.log"

local type, pcall, error, select = type, pcall, error, select
local scope_enter, scope_leave, current_scope = core.scope_enter, core.scope_leave, core.current_scope

local _M = {}

core.set_timeout_factory(errors.timeout)

-- luv handles opened inside a scope, closed when the scope times out.
local opened = setmetatable({}, { __mode = "k" }) -- scope -> { handle = true }
local function track(handle)
  local scope = current_scope()
  if scope and handle then
    local set = opened[scope]
    if not set then
      set = setmetatable({}, { __mode = "k" })
      opened[scope] = set
    end
    set[handle] = true
  end
  return handle
end

for name, fn in pairs(uv) do
  if type(fn) == "function" and (name:match("^new_") or name == "spawn") then
    uv[name] = function(...)
      local handle, a, b = fn(...)
      track(handle)
      return handle, a, b
    end
  end
end

core.set_cancel_hook(function(scope)
  local set = opened[scope]
  if set then
    opened[scope] = nil
    for handle in pairs(set) do
      -- A handle closed (and released by luv) meanwhile raises on any
      -- method call: nothing is left to close then.
      local ok, closing = pcall(handle.is_closing, handle)
      if ok and not closing then
        handle:close()
      end
    end
  end
end)

local function check_timeout(seconds, level)
  if type(seconds) ~= "number" or not (seconds > 0) or seconds == math.huge then
    error(("timeout: expected a number of seconds > 0, got %s"):format(tostring(seconds)), level + 1)
  end
end

local function leave(scope, context, ok, ...)
  local expired, elapsed, timeout, operation = scope_leave(scope)
  opened[scope] = nil
  if expired then
    local err = errors.timeout(operation, timeout, elapsed)
    local fields = { operation = operation, timeout = timeout, elapsed = elapsed }
    if context then
      for k, v in pairs(context) do
        fields[k] = v
      end
    end
    log.emit("warn", "timeout", fields)
    error(err, 0)
  end
  if not ok then
    error((...), 0)
  end
  return ...
end

-- mnemo.timeout(seconds, fn, ...) or mnemo.timeout{seconds=, operation=,
-- context=}, fn, ...): runs fn under a deadline nested in the caller's; past
-- it, raises a TimeoutError and the work's waits are cancelled.
function _M.timeout(spec, fn, ...)
  local seconds, operation, context = spec, nil, nil
  if type(spec) == "table" then
    seconds, operation, context = spec.seconds, spec.operation, spec.context
  end
  check_timeout(seconds, 2)
  if type(fn) ~= "function" then
    error("timeout: expected a function to run", 2)
  end
  local scope = scope_enter(seconds, operation or "timeout")
  return leave(scope, context, pcall(fn, ...))
end

local function leave_shield(scope, ok, ...)
  scope_leave(scope)
  if not ok then
    error((...), 0)
  end
  return ...
end

-- mnemo.shield(fn, ...): fn is not cancelled by enclosing deadlines (for a
-- transaction's COMMIT). Once it returns, an expired outer deadline applies.
function _M.shield(fn, ...)
  local scope = scope_enter(nil, nil, true)
  return leave_shield(scope, pcall(fn, ...))
end

local function park_result(ok, ...)
  if not ok then
    error((...), 0)
  end
  return ...
end

-- mnemo.await(function(wake) ... end): parks the task until wake(...) is
-- called (e.g. from a luv callback) and returns wake's arguments. Cancelled
-- by the task's deadline like any wait.
function _M.await(start)
  local w = core.wait_new()
  start(function(...)
    core.wait_wake(w, ...)
  end)
  return park_result(core.wait_park(w))
end

-- await_call(fn, ...): fn(..., wake) — a luv function that takes its
-- callback last (uv.fs_open, uv.fs_read...) — as a wait: returns what the
-- callback is given (err, value for luv's fs calls).
function _M.await_call(fn, ...)
  local args = { n = select("#", ...), ... }
  return _M.await(function(wake)
    args[args.n + 1] = wake
    fn(unpack(args, 1, args.n + 1))
  end)
end

function _M.sleep(seconds)
  local ok, err = core.sleep(seconds)
  if not ok then
    error(err, 0)
  end
end

-- Seconds left before the running task's innermost deadline (math.huge if
-- none), and whether it has already passed.
_M.remaining = core.remaining

return _M
