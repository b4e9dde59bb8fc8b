-- Circuit breakers by name: mnemo.breaker{...}, mnemo.breaker.get(name),
-- state-change subscriptions, and active health probes while OPEN.
local core = require "mnemo_core"
local errors = require "mnemo.errors"
local log = require "mnemo.log"
local error_events = require "mnemo.error_events"
local timeout = require "mnemo.timeout"
local hooks = require "mnemo.hooks"
local sandbox = require "mnemo.sandbox"

local setmetatable, pairs, type, pcall, tostring = setmetatable, pairs, type, pcall, tostring
local format = string.format

local _M = {}
local registry = {}    -- name -> Breaker
local subscribers = {} -- list of fn(name, from, to, breaker)

-- The policy's switches (mnemo.configure's `switches`, given by the guard,
-- which compiles its own use of them into its operations). breakers off:
-- Breaker:call runs fn without asking the breaker, which keeps its state
-- untouched until they are back on. error_tracking off: transitions are
-- logged, not recorded as error events.
local switched = { breakers = true, error_tracking = true }
function _M.set_switches(sw)
  switched.breakers = sw.breakers ~= false
  switched.error_tracking = sw.error_tracking ~= false
end

local Breaker = {}
Breaker.__index = Breaker

-- The part of a config that defines behaviour (probes are functions).
local CONFIG_KEYS = { "failure_threshold", "failure_rate", "window", "window_size", "minimum_calls",
  "slow_call", "recovery_timeout", "half_open_max_calls", "critical" }

local function differs(a, b)
  for _, k in ipairs(CONFIG_KEYS) do
    if a[k] ~= b[k] then
      return k
    end
  end
end

local function copy_config(cfg)
  local c = {}
  for _, k in ipairs(CONFIG_KEYS) do
    c[k] = cfg[k]
  end
  return c
end

function Breaker:state()
  return self.ud:state()
end

-- metrics(): the C breaker's figures, plus probing, recent_failures (the
-- last RECENT_FAILURES counted failures, oldest first: kind, message
-- scrubbed and cut to RECENT_MESSAGE bytes, time in RFC 3339 UTC), trips
-- (transitions to open), false_positives (trips whose first trial -- a
-- half-open call or a health probe -- succeeded), trips_decided (trips
-- whose first trial is over) and false_positive_rate (false_positives /
-- trips_decided, 0 before any).
function Breaker:metrics()
  local m = self.ud:metrics()
  m.probing = self.probing or false
  local recent, ring = {}, self.recent
  for k = 1, ring.n do
    local i = (ring.head - ring.n + k - 1) % _M.RECENT_FAILURES + 1
    local f = ring[i]
    recent[k] = { kind = f.kind, message = f.message, time = f.time }
  end
  m.recent_failures = recent
  local t = self.trips
  m.trips, m.false_positives, m.trips_decided = t.trips, t.false_positives, t.decided
  m.false_positive_rate = t.decided > 0 and t.false_positives / t.decided or 0
  return m
end

-- The recent failures kept per breaker, and the bytes of each message.
_M.RECENT_FAILURES, _M.RECENT_MESSAGE = 10, 200

local function rfc3339(t)
  local whole = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", whole) .. format(".%03dZ", math.floor((t - whole) * 1000))
end
_M.rfc3339 = rfc3339

-- A counted failure (the failure path only): kept in a ring of
-- RECENT_FAILURES entries for /v1/breakers and the dashboard.
function Breaker:note_failure(err)
  local ring = self.recent
  local i = ring.head % _M.RECENT_FAILURES + 1
  local msg = core.error_scrub(tostring(type(err) == "table" and (err.message or err) or err))
  if #msg > _M.RECENT_MESSAGE then
    msg = msg:sub(1, _M.RECENT_MESSAGE)
  end
  ring[i] = { kind = errors.classify(err), message = msg, time = rfc3339(core.error_wall_time()) }
  ring.head = i
  if ring.n < _M.RECENT_FAILURES then
    ring.n = ring.n + 1
  end
end

-- The first trial after a trip decides whether it was a false positive
-- (called by the guard after an admitted call while one is pending, by the
-- probe loop, and on the transitions that end the half-open state).
function Breaker:first_trial(succeeded)
  local t = self.trips
  if not t.pending then
    return
  end
  t.pending = false
  t.decided = t.decided + 1
  if succeeded then
    t.false_positives = t.false_positives + 1
  end
end

-- After an admitted call settled: while a trip is pending and the breaker
-- is half-open, that call was its first trial (an ignored class decides
-- nothing).
function Breaker:trial_settled(ok, ignored)
  if ignored or not self.trips.pending or self.ud:state() ~= "half_open" then
    return
  end
  self:first_trial(ok)
end

function Breaker:reset()
  self.ud:reset()
end

-- Subscribe to this breaker's transitions: fn(name, from, to).
function Breaker:on_transition(fn)
  self.listeners[#self.listeners + 1] = fn
end

-- The CircuitOpenError of a fast-fail through this breaker for one
-- operation: made once, shared, read-only (errors.shared). Its cause is
-- the failure that opened the breaker (as Polly's BrokenCircuitException
-- carries it), so a caller that only ever sees fast-fails learns why;
-- retry_after is the last refusal's. `refused(retry_after)` records both.
local NO_OPERATION = {}
function Breaker:open_error(operation)
  local key = operation or NO_OPERATION
  local e = self.open_errors[key]
  if not e then
    e = errors.shared("circuit_open", { breaker = self.name, operation = operation }, self.live)
    self.open_errors[key] = e
  end
  return e
end

function Breaker:refused(retry_after, operation)
  local live = self.live
  live.retry_after = retry_after
  live.cause = self.open_cause
  return self:open_error(operation)
end

-- The failure counted last: if it opens the breaker, it is the cause.
function Breaker:failed(err)
  self.last_failure = err
end

-- Runs fn(...) through the breaker alone: fails fast with CircuitOpenError
-- while open; an error counts as a failure unless its class is ignored.
function Breaker:call(fn, ...)
  if not switched.breakers then
    return fn(...)
  end
  local ok, retry_after = self.ud:acquire()
  if not ok then
    error(self:refused(retry_after), 2)
  end
  local t0 = core.now()
  return self:_settle(t0, pcall(fn, ...))
end

local IGNORED = { invalid_input = true, not_found = true, constraint = true, cancelled = true }
_M.IGNORED = IGNORED

function Breaker:_settle(t0, ok, ...)
  if ok then
    if self.trips.pending then
      self:trial_settled(true)
    end
    self.ud:success(core.now() - t0)
    return ...
  end
  local err = ...
  if IGNORED[errors.classify(err)] then
    self.ud:ignored()
  else
    self.last_failure = err
    self:note_failure(err)
    if self.trips.pending then
      self:trial_settled(false)
    end
    self.ud:failure(core.now() - t0)
  end
  error(err, 0)
end

-- While OPEN, a health probe runs every probe_interval; a probe that
-- returns true (within probe_timeout) moves the breaker to HALF_OPEN.
local function start_probe(b)
  if b.probing or type(b.health_probe) ~= "function" then
    return
  end
  b.probing = true
  core.spawn(function()
    while b.ud:state() == "open" do
      local ok, err = core.sleep(b.probe_interval or 5, true)
      if not ok then
        break
      end
      if b.ud:state() ~= "open" then
        break
      end
      local pok, healthy
      if sandbox.is_sandboxed(b.health_probe) then
        -- A policy's probe is operator code: sandboxed like every hook (it
        -- cannot wait on anything, so the budget is its timeout).
        pok, healthy = hooks.call("health_probe", b.name, b.health_probe, hooks.is_boolean)
      else
        pok, healthy = pcall(timeout.timeout, { seconds = b.probe_timeout or 5, operation = "health_probe" },
          b.health_probe)
      end
      b:first_trial(pok and healthy and true or false)
      if pok and healthy then
        log.emit("info", "breaker_probe_ok", { breaker = b.name })
        b.ud:force_half_open()
        break
      end
      log.emit("info", "breaker_probe_failed", { breaker = b.name, error = not pok and tostring(healthy) or nil })
    end
    b.probing = false
  end)
end

core.set_breaker_listener(function(name, from, to)
  local b = registry[name]
  if b and from == "open" then
    -- Calls admitted before it opened that then succeeded: one warning per
    -- open period, with the count (not one line per call).
    local n = b.ud:metrics().successes_while_open or 0
    local seen = b.successes_while_open_seen or 0
    if n > seen then
      b.successes_while_open_seen = n
      log.emit("warn", "breaker_success_while_open", { breaker = name, successes = n - seen })
    end
  end
  if b and to == "open" then
    -- A shared error (a nested breaker's fast-fail) is copied: its live
    -- fields would change under the cause.
    local cause = b.last_failure
    b.open_cause = errors.is_shared(cause) and errors.plain_copy(cause) or cause
  end
  if b then
    -- A half-open state that ends decides a pending trip's first trial
    -- (closing: it succeeded; reopening: it failed); a new trip waits for
    -- its own.
    if from == "half_open" and (to == "closed" or to == "open") then
      b:first_trial(to == "closed")
    end
    if to == "open" then
      local t = b.trips
      t.trips, t.pending = t.trips + 1, true
    elseif to == "closed" then
      b.trips.pending = false -- a reset: no trial
    end
  end
  log.emit(to == "open" and "warn" or "info", "breaker_transition",
    { breaker = name, from = from, to = to, critical = b and b.config.critical or nil })
  if switched.error_tracking then
    error_events.breaker_transition(name, from, to, b and b.config.critical)
  end
  if not b then
    return
  end
  for _, fn in ipairs(b.listeners) do
    local ok, err = pcall(fn, name, from, to)
    if not ok then
      log.emit("error", "breaker_listener_failed", { breaker = name, error = tostring(err) })
    end
  end
  for _, fn in ipairs(subscribers) do
    local ok, err = pcall(fn, name, from, to)
    if not ok then
      log.emit("error", "breaker_listener_failed", { breaker = name, error = tostring(err) })
    end
  end
  if b.on_transition_hook then
    hooks.call("on_transition", name, b.on_transition_hook, nil, name, from, to)
  end
  if to == "open" then
    start_probe(b)
  end
end)

-- mnemo.breaker(name, config) / mnemo.breaker{ name = ..., ... }: creates
-- the breaker, or returns the existing one with the same config. The same
-- name with a different config is an error naming the field.
function _M.new(name, cfg)
  if type(name) == "table" then
    cfg, name = name, name.name
  end
  cfg = cfg or {}
  if type(name) ~= "string" or name == "" then
    error("breaker: expected a name (string), got " .. tostring(name), 2)
  end
  local existing = registry[name]
  if existing then
    local field = differs(existing.config, cfg)
    if field then
      error(("breaker %s: already exists with %s = %s; got %s (use a new name, or reconfigure it)")
        :format(name, field, tostring(existing.config[field]), tostring(cfg[field])), 2)
    end
    return existing
  end
  local plain = copy_config(cfg)
  local ud, err = core.breaker_new(name, plain)
  if not ud then
    error(("breaker %s: %s"):format(name, err), 2)
  end
  local b = setmetatable({ name = name, ud = ud, config = plain, listeners = {}, open_errors = {}, live = {},
    health_probe = cfg.health_probe, probe_interval = cfg.probe_interval,
    on_transition_hook = cfg.on_transition,
    probe_timeout = cfg.probe_timeout, recent = { head = 0, n = 0 },
    trips = { trips = 0, false_positives = 0, decided = 0, pending = false } }, Breaker)
  registry[name] = b
  return b
end

-- Applies a new config to a live breaker, keeping its state and window.
function _M.reconfigure(name, cfg)
  local b = registry[name]
  if not b then
    return _M.new(name, cfg)
  end
  local plain = copy_config(cfg)
  local ok, err = b.ud:reconfigure(plain)
  if not ok then
    error(("breaker %s: %s"):format(name, err), 2)
  end
  b.config = plain
  b.health_probe, b.probe_interval, b.probe_timeout = cfg.health_probe, cfg.probe_interval, cfg.probe_timeout
  b.on_transition_hook = cfg.on_transition
  return b
end

function _M.get(name)
  return registry[name]
end

function _M.remove(name)
  registry[name] = nil
end

function _M.list()
  local names = {}
  for name in pairs(registry) do
    names[#names + 1] = name
  end
  table.sort(names)
  return names
end

-- Subscribe to every breaker's transitions: fn(name, from, to).
function _M.subscribe(fn)
  subscribers[#subscribers + 1] = fn
  return fn
end

function _M.unsubscribe(fn)
  for i, f in ipairs(subscribers) do
    if f == fn then
      table.remove(subscribers, i)
      return true
    end
  end
  return false
end

_M.Breaker = Breaker
return setmetatable(_M, {
  __call = function(_, ...)
    return _M.new(...)
  end,
})
