-- Degradation ladders: per dependency, the mode the work should run in
-- ("normal", or a rung such as "smaller_batches" then "queue"), chosen from
-- the dependency's breaker state and its recent error count, with
-- hysteresis: stepping down a rung takes effect at once, stepping back up
-- only after the conditions have been clear for `recover_after` seconds, so
-- a flapping dependency does not flap the mode.
--
--   degrade = {
--     redis = "l1_only",                      -- one rung: while its breaker is open
--     embedding = {
--       breaker = "embedding",                -- defaults to the rule's name
--       recover_after = 30,                   -- seconds clear before stepping up
--       rungs = {
--         { mode = "smaller_batches", errors = 3, window = 60 },  -- >= 3 errors in 60 s
--         { mode = "queue", state = "open" },                     -- breaker open (or half-open)
--       },
--     },
--   }
local core = require "mnemo_core"
local breakers = require "mnemo.breaker"
local log = require "mnemo.log"

local type, ipairs, pairs = type, ipairs, pairs

local _M = {}

local rules = {}   -- name -> compiled rule
local current = {} -- name -> { level = 0.., since = t, clear_since = t|nil }
local errors_of = {} -- dependency -> list of error times (ring)
local MAX_ERRORS = 1024
-- Times are seconds as doubles: a difference of two readings can miss an
-- exact number of seconds by a rounding step, so comparisons allow 1 us.
local EPSILON = 1e-6

-- Compiles the `degrade` section (already validated). Keeps the live
-- level of rules that stay.
function _M.configure(section)
  local new = {}
  for name, spec in pairs(section or {}) do
    local rule
    if type(spec) == "string" then
      rule = { breaker = name, recover_after = 0, rungs = { { mode = spec, state = "open" } } }
    else
      rule = { breaker = spec.breaker or name, recover_after = spec.recover_after or 0, rungs = spec.rungs }
    end
    new[name] = rule
  end
  for name in pairs(current) do
    if not new[name] then
      current[name] = nil
    end
  end
  rules = new
end

-- Records an error of a dependency (the guard does it for each failed
-- attempt of an operation with a breaker).
function _M.record_error(dependency)
  local list = errors_of[dependency]
  if not list then
    list = { n = 0 }
    errors_of[dependency] = list
  end
  list.n = list.n % MAX_ERRORS + 1
  list[list.n] = core.now()
end

local function errors_within(dependency, window, now)
  local list = errors_of[dependency]
  if not list then
    return 0
  end
  local count = 0
  for i = 1, #list do
    if now - list[i] <= window + EPSILON then
      count = count + 1
    end
  end
  return count
end

local function rung_applies(rule, rung, now)
  if rung.state then
    local b = breakers.get(rule.breaker)
    local st = b and b:state() or "closed"
    if st == "open" or (rung.state == "open" and st == "half_open") then
      return true
    end
  end
  if rung.errors and errors_within(rule.breaker, rung.window or 60, now) >= rung.errors then
    return true
  end
  return false
end

-- The mode a dependency's work should run in now.
function _M.mode(name)
  local rule = rules[name]
  if not rule then
    return "normal"
  end
  local now = core.now()
  local wanted = 0
  for i = #rule.rungs, 1, -1 do
    if rung_applies(rule, rule.rungs[i], now) then
      wanted = i
      break
    end
  end
  local cur = current[name]
  if not cur then
    cur = { level = 0, since = now }
    current[name] = cur
  end
  if wanted > cur.level then
    log.emit("warn", "degraded", { dependency = name, from = cur.level == 0 and "normal" or rule.rungs[cur.level].mode,
      to = rule.rungs[wanted].mode })
    cur.level, cur.since, cur.clear_since = wanted, now, nil
  elseif wanted < cur.level then
    -- Hysteresis: only after the conditions stayed clear long enough.
    cur.clear_since = cur.clear_since or now
    if now - cur.clear_since >= rule.recover_after - EPSILON then
      log.emit("info", "recovered", { dependency = name, from = rule.rungs[cur.level].mode,
        to = wanted == 0 and "normal" or rule.rungs[wanted].mode })
      cur.level, cur.since, cur.clear_since = wanted, now, nil
    end
  else
    cur.clear_since = nil
  end
  return cur.level == 0 and "normal" or rule.rungs[cur.level].mode
end

-- Every rule's mode, for health reports.
function _M.modes()
  local out = {}
  for name in pairs(rules) do
    out[name] = _M.mode(name)
  end
  return out
end

return _M
