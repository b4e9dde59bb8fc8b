-- Bulkheads by name: at most max_concurrent calls at once, a bounded FIFO
-- queue, and a bounded wait (also bounded by the caller's deadline).
local core = require "mnemo_core"
local errors = require "mnemo.errors"

local setmetatable, type, pcall, error = setmetatable, type, pcall, error

local _M = {}
local registry = {}

local Bulkhead = {}
Bulkhead.__index = Bulkhead

local function park(w)
  local ok, err = core.wait_park(w)
  if not ok then
    error(err, 0)
  end
  return true
end

-- The BulkheadFullError for one operation and reason: made once, shared
-- and read-only (errors.shared), so a rejection allocates nothing.
local NO_LIVE = {}
local NO_OPERATION = {}
function Bulkhead:full_error(operation, reason)
  local by_reason = self.full_errors[operation or NO_OPERATION]
  if not by_reason then
    by_reason = {}
    self.full_errors[operation or NO_OPERATION] = by_reason
  end
  local e = by_reason[reason]
  if not e then
    e = errors.shared("bulkhead_full", { bulkhead = self.name, operation = operation, reason = reason }, NO_LIVE)
    by_reason[reason] = e
  end
  return e
end

-- Takes a slot, waiting in the queue if needed. Returns true, or nil and
-- a BulkheadFullError. Raises the caller's TimeoutError if its deadline
-- passes while queued.
function Bulkhead:enter(operation)
  local state = self.ud:try_enter()
  if state == "ok" then
    return true
  end
  if state == "full" then
    return nil, self:full_error(operation, "queue full")
  end
  local w = core.wait_new()
  local waiter = self.ud:enqueue(function()
    core.wait_wake(w, true)
  end)
  local scope = self.max_wait > 0 and core.scope_enter(self.max_wait, "bulkhead_wait")
  local ok, err = pcall(park, w)
  local expired = scope and core.scope_leave(scope)
  if ok then
    return true -- admitted: the slot is ours
  end
  self.ud:cancel(waiter)
  if expired and type(err) == "table" and err.operation == "bulkhead_wait" then
    return nil, self:full_error(operation, "max_wait exceeded")
  end
  error(err, 0) -- the caller's own deadline
end

function Bulkhead:leave()
  self.ud:leave()
end

function Bulkhead:stats()
  return self.ud:stats()
end

-- Runs fn(...) holding a slot; raises BulkheadFullError when none is had.
function Bulkhead:call(fn, ...)
  local ok, err = self:enter()
  if not ok then
    error(err, 2)
  end
  return self:_release(pcall(fn, ...))
end

function Bulkhead:_release(ok, ...)
  self.ud:leave()
  if not ok then
    error((...), 0)
  end
  return ...
end

function _M.new(name, cfg)
  if type(name) == "table" then
    cfg, name = name, name.name
  end
  cfg = cfg or {}
  local existing = registry[name]
  if existing then
    local ok, err = existing.ud:reconfigure(cfg)
    if not ok then
      error(("bulkhead %s: %s"):format(name, err), 2)
    end
    existing.max_wait = cfg.max_wait or 0
    return existing
  end
  local ud, err = core.bulkhead_new(name, cfg)
  if not ud then
    error(("bulkhead %s: %s"):format(tostring(name), err), 2)
  end
  local b = setmetatable({ name = name, ud = ud, max_wait = cfg.max_wait or 0, full_errors = {} }, Bulkhead)
  registry[name] = b
  return b
end

function _M.get(name)
  return registry[name]
end

function _M.remove(name)
  registry[name] = nil
end

return setmetatable(_M, {
  __call = function(_, ...)
    return _M.new(...)
  end,
})
