-- Error events: what the guard and the breakers record when a call fails,
-- an attempt times out or a breaker changes state, turned into events of
-- the in-memory error queue (runtime/core/error_track.c, through mnemo_core).
--
--   error_events.guard_failure(op, err, attempts, fallback, opts)
--   error_events.guard_timeout(op, timeout, attempt, opts)
--   error_events.breaker_transition(name, from, to, critical)
--       -> true | false (never raise: recording must not break the call)
--   error_events.record{...}   mnemo.errors.record, any other event
--   error_events.category_for(operation, breaker, class), error_type_of(err)
--   error_events.scrub(text), queued(), counters()   the queue's side
--
-- Recording scrubs, aggregates (identical events of one window are one
-- entry with a count) and queues in a bounded queue (the oldest dropped,
-- counted); it never does I/O. Writing the queue to PostgreSQL, alerts,
-- retention and the read API are mnemo.tracking's (the flusher), which
-- re-exports all of this module. This one sits below the guard: it
-- requires only mnemo_core, mnemo.errors and mnemo.correlation, so
-- mnemo.guard and mnemo.breaker can record events without loading the
-- flusher, which itself runs under the guard.
--
-- Correlation ids: every event carries the running task's id
-- (mnemo.correlation.current()) unless the caller names one
-- (opts.context.correlation_id for the guard's events, correlation_id for
-- record{}). Loading this module makes it the C queue's correlation source,
-- so mnemo.errors.record{} gets the id too; the guard's events look it up
-- here (a table lookup, no allocation once the id is a string).
local core = require "mnemo_core"
local errors = require "mnemo.errors"
local correlation = require "mnemo.correlation"

local type, ipairs, tostring, pcall, rawget, format = type, ipairs, tostring, pcall, rawget, string.format
local record = errors.record

local _M = {}

_M.SEVERITIES = errors.SEVERITIES
_M.CATEGORIES = errors.CATEGORIES

local CLASS_CATEGORY = { timeout = "timeout", circuit_open = "circuit_breaker" }
-- A dependency's category from its breaker's or its operation's name.
local NAME_CATEGORY = {
  { "^db_", "database" }, { "^pg_", "database" }, { "database", "database" }, { "postgres", "database" },
  { "^vector_search", "database" }, { "^graph_", "graph" }, { "^error_flush", "database" },
  { "embed", "embedding" }, { "redis", "cache" }, { "cache", "cache" },
  { "parse", "parse" }, { "chunk", "parse" }, { "policy", "policy" }, { "hook", "policy" },
  { "webhook", "api" }, { "http", "api" }, { "api", "api" },
}
local name_category_cache = {}

local function category_of_name(name)
  if not name then
    return nil
  end
  local c = name_category_cache[name]
  if c == nil then
    c = false
    for _, p in ipairs(NAME_CATEGORY) do
      if name:find(p[1]) then
        c = p[2]
        break
      end
    end
    name_category_cache[name] = c
  end
  return c or nil
end

-- timeout -> timeout, circuit_open -> circuit_breaker; otherwise what the
-- operation talks to: connection on db_* -> database, and so on.
function _M.category_for(operation, breaker, class)
  return CLASS_CATEGORY[class] or category_of_name(breaker) or category_of_name(operation) or "unknown"
end

_M.error_type_of = errors.type_of

-- Messages that stay the same from one occurrence to the next, so that
-- they aggregate: a timeout without its elapsed time, an open breaker
-- without its retry-after (made once per breaker: fast fails are many).
local open_messages = {}
local function stable_message(err, operation)
  if type(err) == "table" and rawget(err, "_message_kind") then
    local kind = err.kind
    if kind == "circuit_open" then
      local name = err.breaker
      local m = open_messages[name]
      if not m then
        m = format("breaker %s is open", tostring(name))
        open_messages[name] = m
      end
      return m
    elseif kind == "timeout" then
      return format("%s exceeded its %gs timeout", tostring(err.operation or operation), err.timeout or 0)
    end
  end
  return tostring(err)
end

-- The C enum values (errors.SEVERITIES / CATEGORIES order).
local SEV_WARNING, SEV_ERROR, SEV_CRITICAL = 2, 3, 4

-- A call's final failure: ERROR, WARNING when a fallback answered; an
-- embedding failure other than a timeout is CRITICAL either way (the
-- specification's rule: a broken embedder leaves search without vectors,
-- whereas a slow one is a capacity problem).
local function severity_of(category, class, fallback)
  if category == "embedding" and class ~= "timeout" then
    return SEV_CRITICAL
  end
  return fallback and SEV_WARNING or SEV_ERROR
end
local CATEGORY_ID = {}
for i, c in ipairs(errors.CATEGORIES) do
  CATEGORY_ID[c] = i - 1
end

-- The guard's own context fields, one table per combination, reused:
-- C copies what it keeps, so a failure builds no table of its own (the
-- caller's opts.context is passed beside it, not merged).
local own_contexts = {}
local function own_context(class, attempts, fallback)
  local by_class = own_contexts[class]
  if not by_class then
    by_class = {}
    own_contexts[class] = by_class
  end
  local key = fallback and -attempts or attempts
  local ctx = by_class[key]
  if not ctx then
    ctx = { attempts = attempts, class = class, fallback = fallback or nil, retries_exhausted = attempts > 1 or nil }
    by_class[key] = ctx
  end
  return ctx
end

local record_raw = core.error_record
local current = correlation.current
core.error_correlation_source(current)

-- The caller's id, else the task's if anyone has seen it (a guard's own
-- id, never read, names nothing: see correlation.named); false (none: C
-- looks no further).
local named = correlation.named
local function correlation_of(extra)
  local id = extra and extra.correlation_id
  if id == nil then
    id = named() or false
  end
  return id
end

local function guard_failure(op, err, attempts, fallback, opts)
  local class = errors.classify(err)
  local breaker = op.breaker and op.breaker.name
  local extra = opts and opts.context
  if type(extra) ~= "table" then
    extra = nil
  end
  local ctx = own_context(class, attempts, fallback)
  local traceback
  if type(err) == "table" then
    local sqlstate, status = err.sqlstate, err.status
    if sqlstate ~= nil or status ~= nil then
      ctx = { attempts = attempts, class = class, fallback = fallback or nil,
        retries_exhausted = attempts > 1 or nil, sqlstate = sqlstate, status = status }
    end
    traceback = rawget(err, "traceback")
    if type(traceback) ~= "string" then
      traceback = nil
    end
  end
  local message = stable_message(err, op.name)
  if attempts > 1 then
    message = format("retries exhausted after %d attempts: %s", attempts, message)
  end
  local category = _M.category_for(op.name, breaker, class)
  return record_raw(severity_of(category, class, fallback), CATEGORY_ID[category], breaker, op.name,
    errors.type_of(err), message, ctx, correlation_of(extra), traceback, extra)
end

-- The guard's final failure of a call (fallback: a fallback answered
-- instead, recorded as WARNING). Never raises.
function _M.guard_failure(op, err, attempts, fallback, opts)
  local ok, res = pcall(guard_failure, op, err, attempts, fallback, opts)
  return ok and res
end

-- An attempt that ran out of its timeout (it may still be retried).
function _M.guard_timeout(op, timeout, attempt, opts)
  local extra = opts and opts.context
  if type(extra) ~= "table" then
    extra = nil
  end
  local ok, res = pcall(record_raw, SEV_WARNING, CATEGORY_ID.timeout, op.breaker and op.breaker.name or nil,
    op.name, "TimeoutError", format("%s exceeded its %gs timeout", op.name, timeout or 0),
    { attempt = attempt, timeout = timeout }, correlation_of(extra), nil, extra)
  return ok and res
end

-- A breaker changed state: to open is ERROR (CRITICAL for a critical
-- breaker), back to closed INFO.
function _M.breaker_transition(name, from, to, critical)
  local severity
  if to == "open" then
    severity = critical and "CRITICAL" or "ERROR"
  elseif to == "closed" then
    severity = "INFO"
  else
    return false
  end
  local ok, res = pcall(record, {
    severity = severity,
    category = "circuit_breaker",
    service = name,
    error_type = to == "open" and "CircuitBreakerOpened" or "CircuitBreakerClosed",
    message = format("breaker %s: %s -> %s", name, tostring(from), to),
    context = { breaker = name, from = from, to = to, critical = critical or nil },
    correlation_id = current(), -- the task whose call moved it
  })
  return ok and res
end

-- Events still in memory, oldest first (context as JSON text).
_M.queued = core.error_peek
-- The queue's own counters (recorded, aggregated, dropped, flushed,
-- queue_length, ...); mnemo.tracking.counters() adds the flusher's.
_M.counters = core.error_counters
_M.scrub = core.error_scrub
_M.record = record

return _M
