-- Failure summaries: during an outage, one log line per interval with the
-- counts per operation and error kind, instead of one line per failed call
-- (a 100,000-call outage used to write 100,001 lines).
--
--   summary.note(event, operation, kind) -> true for the first of its
--       (event, operation, kind) in the interval: the caller writes that
--       one in full; every later one is only counted
--   summary.flush()        writes the interval's line now (also at exit)
--   summary.configure{ summary_interval = 10 }   the policy's `log` section
--
-- Events: "failed" (the call raised, or returned nil, err), "fallback" (a
-- fallback answered), "retry" and "timeout" (per attempt). failed +
-- fallback over all operations and kinds is the number of calls that
-- failed in the interval.
--
-- Rules:
-- - Intervals follow mnemo's clock (the virtual one in tests); a line is
--   written when a note finds its interval over, or by the interval's
--   closer task when nothing fails any more, so an outage's last counts are not held
--   back until the next one.
-- - Counting allocates nothing in steady state (counters are reused from
--   one interval to the next), and the table is bounded: past
--   MAX_KEYS distinct (operation, kind) pairs, the rest count under
--   operation "(other)".
local core = require "mnemo_core"
local log = require "mnemo.log"

local pairs, now = pairs, core.now

local _M = {}

_M.DEFAULT_INTERVAL = 10
local MAX_KEYS = 1000
local interval = _M.DEFAULT_INTERVAL

local counts = {} -- operation -> kind -> { failed, fallback, retry, timeout }
local nkeys = 0
local window_start = nil -- nil: nothing counted in this interval
local window_ts = nil

local EVENTS = { failed = true, fallback = true, retry = true, timeout = true }

local function new_counter()
  return { failed = 0, fallback = 0, retry = 0, timeout = 0 }
end

-- The line of the interval, and every counter back to zero.
function _M.flush()
  if not window_start then
    return
  end
  local ops, failed, fallbacks, any = {}, 0, 0, false
  for op, kinds in pairs(counts) do
    for kind, c in pairs(kinds) do
      if c.failed + c.fallback + c.retry + c.timeout > 0 then
        local o = ops[op]
        if not o then
          o = {}
          ops[op] = o
        end
        local entry = {}
        for event in pairs(EVENTS) do
          if c[event] > 0 then
            entry[event] = c[event]
            c[event] = 0
          end
        end
        o[kind] = entry
        failed, fallbacks, any = failed + (entry.failed or 0), fallbacks + (entry.fallback or 0), true
      end
    end
  end
  local seconds = math.max(0, now() - window_start) -- (the clock may have switched)
  window_start = nil
  local dropped = log.take_dropped()
  if any or dropped then
    log.emit("warn", "failure_summary", { since = window_ts, seconds = seconds, interval = interval,
      failed = failed, fallbacks = fallbacks, operations = any and ops or nil, log_dropped = dropped,
      correlation_id = false })
  end
end

-- Each interval has a closer: a task on mnemo's timers with a weak sleep
-- (never keeps the process alive; no luv handle, which plain luajit cannot
-- close safely at exit). It writes the line if its interval is still open
-- when it wakes; a note that found the interval over already did.
local spawn, sleep = core.spawn, core.sleep
local function closer(started)
  sleep(interval, true)
  while window_start == started do
    local left = interval - (now() - started)
    if left <= 0 then
      _M.flush()
      return
    end
    sleep(left, true)
  end
end

local function open_window(t)
  window_start, window_ts = t, log.timestamp()
  if log.HOSTED and not log.exiting() then
    -- (under plain luajit no task: the next note or the exit closes it)
    pcall(spawn, closer, t) -- (not inside a sandboxed call: a note then closes it)
  end
end

function _M.note(event, operation, kind)
  local t = now()
  if window_start and t - window_start >= interval then
    _M.flush()
  end
  if not window_start then
    open_window(t)
  end
  local kinds = counts[operation]
  if not kinds then
    if nkeys >= MAX_KEYS then
      operation = "(other)"
      kinds = counts[operation]
    end
    if not kinds then
      kinds = {}
      counts[operation] = kinds
    end
  end
  local c = kinds[kind]
  if not c then
    if nkeys >= MAX_KEYS and operation ~= "(other)" then
      return _M.note(event, "(other)", kind)
    end
    c = new_counter()
    kinds[kind] = c
    nkeys = nkeys + 1
  end
  local n = c[event] + 1
  c[event] = n
  return n == 1
end

function _M.configure(section)
  local v = section and section.summary_interval
  _M.flush()
  interval = v or _M.DEFAULT_INTERVAL
end

-- Forgets everything counted (tests).
function _M._reset()
  counts, nkeys, window_start = {}, 0, nil
end

log.at_exit(_M.flush)

return _M
