-- Structured logging: one JSON object per line on stderr.
--
--   log.emit(level, event, fields)   level: debug info warn error critical
--   log.enabled(level)               whether emit would write (skip building fields)
--   log.flush()                      write what is buffered now
--   log.configure{ level, rate_limit }   the policy's `log` section
--   log.set_level(name), log.set_sink(fn)  for code and tests
--
-- Rules:
-- - Lines are buffered and written in one write(2) per batch: on a short
--   timer (50 ms of mnemo's clock), when 64 KiB are waiting, with any error or critical
--   line (so the line that explains a crash is out before it), and at exit
--   (os.exit, lua_close). Two unbuffered writes per line made logging the
--   main cost of a fast-fail during an outage.
-- - `ts` is RFC 3339 UTC with microseconds; `correlation_id` is the running
--   task's (mnemo.correlation) unless the fields name one.
-- - Error and critical lines are never dropped. Debug and info lines of one
--   event past `rate_limit` a second are dropped and counted: the next
--   line of that event says `dropped = n`, and the periodic failure
--   summary (mnemo.log_summary) lists the rest.
-- - The level comes from MNEMO_LOG_LEVEL when it is set (an operator's
--   override wins over the policy), else from the policy, else info. An
--   unknown name is reported once and info is used ("WARNING" used to
--   fall back to info silently).
-- - String field values that could hold a secret go through the error
--   tracker's scrubber (runtime/core/error_track.c: DSN passwords, tokens,
--   key=value secrets, home directories) before they are written.
local cjson = require "cjson.safe"
local uv = require "luv"
local core = require "mnemo_core"
local correlation = require "mnemo.correlation"
local scrub = core.error_scrub

local find, type, pairs, tostring, format = string.find, type, pairs, tostring, string.format
local concat, now = table.concat, core.now

local _M = {}

_M.LEVELS = { "debug", "info", "warn", "error", "critical" }
local levels = { debug = 10, info = 20, warn = 30, warning = 30, error = 40, critical = 50 }
local ERROR, WARN = levels.error, levels.warn

-- Every secret mnemo_scrub masks comes with an '=' or a ':' (URIs,
-- name=value, "Authorization: Bearer", "password: x") or the word
-- "Bearer": a value with none of them is written as it is, without a call.
local function clean(v)
  if find(v, "=", 1, true) or find(v, ":", 1, true) or find(v, "earer", 1, true) or find(v, "EARER", 1, true) then
    return scrub(v)
  end
  return v
end

-- A table value: its string values one level down (a copy, only when one
-- changes; the caller's table is left alone).
local function clean_table(t)
  local copy
  for k, v in pairs(t) do
    if type(v) == "string" then
      local c = clean(v)
      if c ~= v then
        if not copy then
          copy = {}
          for k2, v2 in pairs(t) do
            copy[k2] = v2
          end
        end
        copy[k] = c
      end
    end
  end
  return copy or t
end

-- ---- the timestamp ----

local gettimeofday = uv.gettimeofday
local last_sec, last_prefix
local function timestamp()
  local sec, usec = gettimeofday()
  if sec ~= last_sec then
    last_sec, last_prefix = sec, os.date("!%Y-%m-%dT%H:%M:%S", sec)
  end
  return format("%s.%06dZ", last_prefix, usec)
end
_M.timestamp = timestamp

-- ---- the buffered writer ----

local MAX_BUFFERED = 64 * 1024
local FLUSH_SECONDS = 0.05
local buf, nbuf, nbytes = {}, 0, 0
local flush_pending = false
local exiting = false
local stderr = io.stderr
local file_methods = getmetatable(stderr).__index
local write = file_methods._mnemo_log_write or file_methods.write

local function flush()
  if nbuf == 0 then
    return
  end
  local data = concat(buf, "\n", 1, nbuf) .. "\n"
  for i = 1, nbuf do
    buf[i] = nil
  end
  nbuf, nbytes = 0, 0
  write(stderr, data) -- one string, one write(2) on the unbuffered stderr
end
_M.flush = flush

-- A script's own io.stderr:write comes after the log lines emitted before
-- it (an error message last, not followed by the lines that led to it).
-- (Every copy of this module, busted loads one per spec file, is flushed.)
if not file_methods._mnemo_log_write then
  local flushers = setmetatable({}, { __mode = "k" })
  file_methods._mnemo_log_write, file_methods._mnemo_log_flushers = write, flushers
  file_methods.write = function(f, ...)
    if f == stderr then
      for fn in pairs(flushers) do
        fn()
      end
    end
    return write(f, ...)
  end
end
file_methods._mnemo_log_flushers[flush] = true

-- The flush timer is a task on mnemo's own timers, with a weak sleep (it
-- never keeps a process alive), not a luv handle: a luv handle still open
-- at lua_close crashes plain luajit in luv's close callbacks.
local spawn, sleep = core.spawn, core.sleep
local function flusher()
  sleep(FLUSH_SECONDS, true)
  flush_pending = false
  flush()
end

-- Under plain luajit (busted, tools) a line is written at once: nothing
-- there closes the state for us at the right moment, and a timer task
-- would sit among the ones a test counts on the virtual clock.
local HOSTED = core.hosted()
_M.HOSTED = HOSTED

local function buffered(line, level_no)
  if not HOSTED then
    write(stderr, line .. "\n")
    return
  end
  nbuf = nbuf + 1
  buf[nbuf] = line
  nbytes = nbytes + #line + 1
  if level_no >= ERROR or nbytes >= MAX_BUFFERED then
    return flush()
  end
  if exiting then
    return flush() -- no task may start while the state closes
  end
  if not flush_pending then
    -- (no task can start inside a sandboxed call: written at once there)
    flush_pending = pcall(spawn, flusher)
    if exiting then
    return flush() -- no task may start while the state closes
  end
  if not flush_pending then
      flush()
    end
  end
end

-- The sink takes each line; the default one buffers.
local sink = nil

-- ---- exit ----

-- Run before the last flush (the failure summary writes its remainder).
local exit_hooks = {}
function _M.exiting()
  return exiting
end

function _M.at_exit(fn)
  exit_hooks[#exit_hooks + 1] = fn
end

local function at_exit()
  exiting = true
  for _, fn in ipairs(exit_hooks) do
    pcall(fn)
  end
  flush()
end

-- os.exit leaves without closing the Lua state: flush first.
local real_exit = os.exit
os.exit = function(...) -- luacheck: ignore
  at_exit()
  return real_exit(...)
end
-- The end of a script, an error() exit or a signal: mnemo-run calls
-- log.finish before lua_close (runtime/host/host.c), mnemo.run when its
-- task is done. Never from a __gc finalizer: LuaJIT 2.1.0-beta3 can spin
-- for ever in a JIT-compiled pairs loop run inside one (seen as mnemo-run
-- at 100% CPU in lua_close).
_M.finish = at_exit

-- ---- levels and rate limits ----

local function level_of(name)
  return type(name) == "string" and levels[name:lower()] or nil
end

local env_level = os.getenv("MNEMO_LOG_LEVEL")
local threshold = levels.info
local bad_env_level = nil
if env_level and env_level ~= "" then
  local n = level_of(env_level)
  if n then
    threshold = n
  else
    bad_env_level = env_level
    env_level = nil
  end
else
  env_level = nil
end

local DEFAULT_RATE = 50 -- debug/info lines per event per second
local rate = DEFAULT_RATE
local windows = {} -- event -> { start, count, dropped }
local unreported = {} -- event -> lines dropped and not yet reported by a later line

-- Returns false to drop the line, else the number dropped before it.
local function admit(event)
  local w = windows[event]
  local t = now()
  if not w then
    w = { start = t, count = 0, dropped = 0 }
    windows[event] = w
  elseif t - w.start >= 1 then
    w.start, w.count = t, 0
  end
  if w.count >= rate then
    w.dropped = w.dropped + 1
    unreported[event] = w.dropped
    return false
  end
  w.count = w.count + 1
  local dropped = w.dropped
  if dropped > 0 then
    w.dropped = 0
    unreported[event] = nil
  end
  return dropped
end

-- Lines dropped by the rate limit and not yet reported: event -> count
-- (and forgotten: the caller reports them).
function _M.take_dropped()
  local out
  for event, n in pairs(unreported) do
    out = out or {}
    out[event] = n
    unreported[event] = nil
    windows[event].dropped = 0
  end
  return out
end

-- log.emit("warn", "timeout", { operation = ..., ... })
function _M.emit(level, event, fields)
  local level_no = levels[level] or ERROR
  if level_no < threshold then
    return
  end
  local dropped = 0
  if level_no < WARN and rate > 0 then
    dropped = admit(event)
    if not dropped then
      return
    end
  end
  local record = { ts = timestamp(), level = level, event = event }
  if dropped > 0 then
    record.dropped = dropped
  end
  if fields then
    for k, v in pairs(fields) do
      if record[k] == nil then
        local t = type(v)
        if t == "string" then
          v = clean(v)
        elseif t == "table" then
          v = clean_table(v)
        elseif t ~= "number" and t ~= "boolean" then
          v = clean(tostring(v))
        end
        record[k] = v
      end
    end
  end
  local cid = record.correlation_id
  if cid == nil then
    record.correlation_id = correlation.current()
  elseif cid == false then
    record.correlation_id = nil -- a line about many calls (a summary) names none
  end
  local line = cjson.encode(record)
  if not line then
    line = cjson.encode({ ts = record.ts, level = level, event = event, note = "unencodable fields" })
  end
  if sink then
    return sink(line)
  end
  return buffered(line, level_no)
end

-- Whether a line at this level would be written (to skip building fields).
function _M.enabled(level)
  return (levels[level] or ERROR) >= threshold
end

-- For tests: capture lines instead of writing them (each line, unbuffered).
-- Returns the old sink (nil: the buffered stderr writer).
function _M.set_sink(fn)
  flush()
  local old = sink
  sink = fn
  return old
end

function _M.set_level(name)
  threshold = assert(level_of(name), "unknown log level")
  from_policy = false
end

-- The policy's `log` section (validated by mnemo.config): its level
-- applies unless MNEMO_LOG_LEVEL is set; rate_limit 0 turns the limit off.
-- nil restores the defaults.
-- A policy without the section leaves a level set by set_level alone.
local from_policy = false
function _M.configure(section)
  if section == nil and not from_policy then
    return
  end
  from_policy = section ~= nil
  section = section or {}
  if not env_level then
    threshold = level_of(section.level) or levels.info
  end
  rate = section.rate_limit or DEFAULT_RATE
end

if bad_env_level then
  _M.emit("error", "log_level_invalid", { value = bad_env_level, using = "info",
    allowed = concat(_M.LEVELS, ", ") })
end

return _M
