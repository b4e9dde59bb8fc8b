-- mnemo.testing: test a policy with busted on the virtual clock. Load the
-- policy, drive failures and time, and look at breakers and modes:
--
--   local testing = require "mnemo.testing"
--   local t = testing.policy("policies/default.lua")
--   local ok, err, took = t:call("redis_get", testing.failing("connection"))
--   t:advance(30)
--   assert.equal("half_open", t:breaker("redis"))
--   t:close()
local mnemo = require "mnemo"

local _M = {}

local Session = {}
Session.__index = Session

-- A function that fails with an error of the given class.
function _M.failing(kind, fields)
  return function()
    error(mnemo.error(kind, kind .. " (injected by mnemo.testing)", fields))
  end
end

-- A function that takes `seconds` of (virtual) time, then returns value.
function _M.slow(seconds, value)
  return function()
    mnemo.sleep(seconds)
    return value
  end
end

-- Loads a policy file on the virtual clock. Raises with every problem if
-- the file is invalid.
function _M.policy(path, opts)
  opts = opts or {}
  mnemo.policy._reset()
  mnemo.clock.virtual(true)
  local s = setmetatable({ path = path, max_time = opts.max_time or 3600 }, Session)
  if opts.quiet ~= false then
    s.restore_log = mnemo.log.set_sink(function() end)
  end
  local gen, err = mnemo.policy.load(path)
  if not gen then
    s:close()
    error(err, 2)
  end
  return s
end

-- Runs mnemo.guard(operation, fn) to completion, moving virtual time
-- forward as its retries and timeouts need. Returns ok, result or error,
-- and the virtual seconds it took.
function Session:call(operation, fn, opts)
  local max_time = self.max_time
  return mnemo.run(function()
    local done, ok, res
    local t0 = mnemo.now()
    mnemo.spawn(function()
      ok, res = pcall(mnemo.guard, operation, fn, opts)
      done = true
    end)
    while not done do
      -- Jump straight to the next timer: exact virtual times.
      local wait = mnemo.clock.next()
      assert(wait, "mnemo.testing: the call waits on something that is not a timer")
      assert(mnemo.now() + wait - t0 <= max_time, "mnemo.testing: the call did not finish within max_time")
      mnemo.clock.advance(wait)
    end
    return ok, res, mnemo.now() - t0
  end)
end

-- Moves virtual time forward, firing every timer due on the way.
function Session:advance(seconds)
  mnemo.run(function()
    mnemo.clock.advance(seconds)
  end)
end

function Session:breaker(name)
  local b = mnemo.breaker.get(name)
  return b and b:state()
end

function Session:metrics(name)
  local b = mnemo.breaker.get(name)
  return b and b:metrics()
end

function Session:mode(name)
  return mnemo.degrade.mode(name)
end

function Session:explain(operation)
  return mnemo.explain(operation)
end

function Session:close()
  if self.restore_log then
    mnemo.log.set_sink(self.restore_log)
  end
  mnemo.policy._reset()
  mnemo.clock.virtual(false)
end

return _M
