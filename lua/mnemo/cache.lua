-- Caching: an L1 in process (a bounded LRU in C, runtime/core/cache.c) and a
-- two-level cascade with Redis behind it, where Redis is strictly
-- best-effort: every Redis call goes through mnemo.guard (timeout, retry,
-- breaker of the configured operations) with a fallback, so a Redis outage
-- or an open breaker never fails the caller; it only makes the cache
-- smaller (L1 only).
--
--   local l1 = cache.new { max_bytes = 64 * 1024 * 1024, max_entries = nil }
--   l1:set("k", "v", 30); l1:get("k"); l1:delete("k"); l1:stats()
--   local c = cache.cascade { l1 = l1, redis = client_or_nil }
--   c:get("k"); c:set("k", "v", ttl); c:invalidate("k"); c:stats()
local core = require "mnemo_core"
local errors = require "mnemo.errors"
local guard = require "mnemo.guard"
local log = require "mnemo.log"

local type, error, setmetatable, tostring = type, error, setmetatable, tostring
local min = math.min

local _M = {}

-- The methods of the C userdata; `set` is written here so that its errors
-- are error objects. (Assigned, not wrapped: loading this file twice is
-- harmless.)
local methods = core.cache_methods
local raw_set = methods.raw_set

-- l1:set(key, value, ttl_seconds|nil) -> true | nil, err. A value whose
-- entry is larger than the whole cache is refused (invalid_input), and any
-- old value of the key removed.
function methods.set(self, key, value, ttl)
  local ok, message = raw_set(self, key, value, ttl)
  if ok then
    return true
  end
  return nil, errors.new("invalid_input", "cache: " .. message, { key = key })
end

-- cache.new{ max_bytes = n (default 64 MiB), max_entries = n|nil }
function _M.new(opts)
  return core.cache_new(opts)
end

local Cascade = {}
Cascade.__index = Cascade

-- A reply the fallback gives: Redis did not answer (as opposed to a miss).
local FAILED = {}

local function l2_get(redis, key)
  -- The value and its remaining time in one round trip, so that L1 does
  -- not keep a value longer than Redis does.
  local replies, errs = redis:pipeline { { "GET", key }, { "PTTL", key } }
  if not replies then
    error(errs, 0)
  end
  if errs then
    error(errs[1] or errs[2], 0)
  end
  return replies[1], replies[2]
end

local function l2_set(redis, key, value, ttl)
  local ok, err = redis:set(key, value, ttl)
  if not ok then
    error(err or errors.new("unknown", "Redis: SET did not answer OK"), 0)
  end
  return true
end

local function l2_del(redis, key)
  local n, err = redis:del(key)
  if not n then
    error(err, 0)
  end
  return n
end

-- cache.cascade{ l1 = cache (default: a new 64 MiB one), redis = client|nil,
--   operation_get = "redis_get", operation_set = "redis_set",
--   prefix = "mnemo:", l1_ttl = seconds|nil (the longest an L2 value is
--   kept in L1; by default as long as Redis keeps it) }
function _M.cascade(opts)
  opts = opts or {}
  if opts.l1_ttl ~= nil and not (type(opts.l1_ttl) == "number" and opts.l1_ttl > 0) then
    error("cache.cascade: l1_ttl: expected seconds > 0, got " .. tostring(opts.l1_ttl), 2)
  end
  local self = setmetatable({
    l1 = opts.l1 or _M.new(),
    redis = opts.redis,
    operation_get = opts.operation_get or "redis_get",
    operation_set = opts.operation_set or "redis_set",
    prefix = opts.prefix or "mnemo:",
    l1_ttl = opts.l1_ttl,
    l2 = { hits = 0, misses = 0, errors = 0 },
    -- Bumped by every set and invalidate: a value read from L2 is not put
    -- in L1 if a write happened while it was being read (it may be older).
    writes = 0,
  }, Cascade)
  local l2 = self.l2
  -- One line when the cascade drops to L1 alone and one when Redis answers
  -- again, not one per call (during an outage every call falls back).
  local function degraded(err)
    l2.errors = l2.errors + 1
    if not self.degraded then
      self.degraded = true
      log.emit("warn", "cache_cascade_degraded", { mode = "l1_only", error = tostring(err) })
    end
  end
  self.on_get_error = {
    fallback = function(err)
      degraded(err)
      return FAILED
    end,
  }
  self.on_write_error = {
    fallback = function(err)
      degraded(err)
      return false
    end,
  }
  return self
end

-- cascade:get(key) -> value | nil. Never raises for a Redis problem.
function Cascade:get(key)
  local value = self.l1:get(key)
  if value ~= nil or not self.redis then
    return value
  end
  local writes = self.writes
  local got, pttl = guard.guard(self.operation_get, l2_get, self.on_get_error, self.redis, self.prefix .. key)
  if got == FAILED then
    return nil
  end
  if self.degraded then
    self:_recovered()
  end
  if got == nil or type(got) ~= "string" then
    self.l2.misses = self.l2.misses + 1
    return nil
  end
  self.l2.hits = self.l2.hits + 1
  if writes == self.writes then
    local ttl = type(pttl) == "number" and pttl > 0 and pttl / 1000 or nil
    if self.l1_ttl then
      ttl = ttl and min(ttl, self.l1_ttl) or self.l1_ttl
    end
    self.l1:set(key, got, ttl)
  end
  return got
end

-- cascade:set(key, value, ttl|nil) -> true. L1 first, then Redis,
-- best-effort. (A value too large for L1 still goes to Redis.)
function Cascade:set(key, value, ttl)
  if type(value) ~= "string" then
    error("cache: set: expected a string value, got " .. type(value), 2)
  end
  self.writes = self.writes + 1
  self.l1:set(key, value, ttl)
  if self.redis then
    local stored = guard.guard(self.operation_set, l2_set, self.on_write_error, self.redis, self.prefix .. key,
      value, ttl)
    if stored ~= false and self.degraded then
      self:_recovered()
    end
  end
  return true
end

function Cascade:_recovered()
  self.degraded = false
  log.emit("info", "cache_cascade_recovered", { mode = "l1_l2" })
end

-- cascade:invalidate(key) -> true. Removed from both levels (from Redis
-- best-effort: while Redis is down, its copy stays until it expires).
function Cascade:invalidate(key)
  self.writes = self.writes + 1
  self.l1:delete(key)
  if self.redis then
    guard.guard(self.operation_set, l2_del, self.on_write_error, self.redis, self.prefix .. key)
  end
  return true
end

-- { l1 = l1:stats(), l2 = { hits, misses, errors } }
function Cascade:stats()
  local l2 = self.l2
  return { l1 = self.l1:stats(), l2 = { hits = l2.hits, misses = l2.misses, errors = l2.errors } }
end

_M.Cascade = Cascade
return _M
