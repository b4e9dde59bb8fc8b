-- Breaker state that survives a restart: every transition is saved to
-- circuit_breaker_state (db/migrations/006_breaker_state.sql) and, at
-- start, a breaker that was OPEN less than its recovery_timeout ago is
-- opened again for the time it had left, so a restarted process does not
-- hammer a dependency that was down a moment ago.
--
--   breaker_store.start{ dsn = ... }   -- restore (inside a task), then save
--   breaker_store.restore{ dsn = ... } -- only restore
--   breaker_store.flush()              -- write what is queued now
--   breaker_store.stop{ flush = true }
--
-- Saving is never on the caller's path: the subscriber (run inside the
-- transition, so inside the guarded call that caused it) only records the
-- latest state per breaker in a bounded table; a writer task (weak: it never
-- keeps the process alive) upserts the queue in one statement under a short
-- deadline, and backs off while the database is down, keeping the latest
-- state of each breaker.
--
-- Clocks. Breakers run on mnemo's monotonic clock; the table holds
-- timestamps of the database's clock, never this host's: the writer sends
-- how long ago the breaker opened (measured on the monotonic clock at write
-- time, so time spent in the queue counts) and the server stores
-- now() - that; restore reads now() and the row's times from the server in
-- one statement. Two hosts with skewed wall clocks therefore agree.
--
-- Restore rules (one row per breaker name):
--   open       opened_at + recovery_timeout still ahead: opened now, to
--              half-open at that moment (the remaining time is capped at the
--              breaker's current recovery_timeout); else ignored (stale).
--   half_open  restored HALF_OPEN (bounded probes, not full traffic) when it
--              half-opened less than recovery_timeout ago; else ignored.
--   closed     nothing to do.
--   anything else, a recovery_timeout not in (0, MAX_RECOVERY] or not a
--   number, a time that is not finite or lies ahead (by more than
--   CLOCK_SLACK): ignored, all such rows of one restore reported in one
--   `breaker_state_rows_ignored` warning.
-- A row whose breaker does not exist yet (made later by a policy or a
-- script) is kept, with its remaining time counting down, and applied by
-- the writer as soon as the breaker appears. Only a CLOSED breaker is
-- restored: one this process already opened keeps its own state.
local core = require "mnemo_core"
local uv = require "luv"
local cjson = require "cjson.safe"
local breaker = require "mnemo.breaker"
local pg = require "mnemo.pg"
local timeout = require "mnemo.timeout"
local log = require "mnemo.log"
local errors = require "mnemo.errors"

local pairs, type, tostring, tonumber, pcall = pairs, type, tostring, tonumber, pcall
local min, max, huge = math.min, math.max, math.huge

local _M = {}

_M.MAX_PENDING = 1000 -- breakers with a state waiting to be written
_M.INTERVAL = 0.1 -- how often the writer looks at the queue (seconds)
_M.WRITE_TIMEOUT = 2 -- one write, connect included
_M.RESTORE_TIMEOUT = 2 -- the restore at start, connect included
_M.MAX_BACKOFF = 30
_M.MAX_RECOVERY = 7 * 86400 -- a saved recovery_timeout above this is refused
_M.CLOCK_SLACK = 5 -- seconds a saved time may lie ahead of the server's now
_M.MAX_ROWS = 10000

local state = {
  running = false,
  generation = 0,
  epoch = 0,
  dsn = nil,
  pending = {}, -- name -> { state, opened_mono, recovery_timeout, at_mono }
  count = 0,
  dropped = 0,
  written = 0,
  write_failures = 0,
  backoff = 0,
  conn = nil,
  writing = false,
  opened = {}, -- name -> when it last opened (monotonic), while not closed
  saved = {}, -- name -> row read at restore for a breaker not made yet
  restored = 0,
  ignored = 0,
}

local function finite(v)
  return type(v) == "number" and v == v and v ~= huge and v ~= -huge
end

local function process_name()
  local host = uv.os_gethostname and uv.os_gethostname() or "?"
  return ("%s:%d"):format(tostring(host), uv.os_getpid())
end

-- ---- saving ----

-- Runs inside the transition: a table write and, for OPEN, the breaker's
-- metrics (to learn when it opened: a restored breaker opened earlier).
local function on_transition(name, from, to)
  if not state.running then
    return
  end
  local e = state.pending[name]
  if not e then
    if state.count >= _M.MAX_PENDING then
      state.dropped = state.dropped + 1
      return
    end
    e = {}
    state.pending[name] = e
    state.count = state.count + 1
  end
  local now = core.now()
  local b = breaker.get(name)
  local m = b and b:metrics()
  local rt = m and m.config.recovery_timeout or 0
  e.state, e.recovery_timeout, e.at_mono = to, rt, now
  if to == "open" then
    state.opened[name] = now - max(0, rt - (m and m.retry_after or 0))
  elseif to == "closed" then
    state.opened[name] = nil
  end -- half_open keeps the opening time, when this process saw it
  e.opened_mono = state.opened[name]
end

local UPSERT = [[
  INSERT INTO circuit_breaker_state (name, state, opened_at, recovery_timeout, updated_at, process)
  SELECT x.name, x.state,
    CASE WHEN x.opened_ago IS NULL THEN NULL ELSE now() - make_interval(secs => x.opened_ago) END,
    x.recovery_timeout, now() - make_interval(secs => x.changed_ago), $2
  FROM jsonb_to_recordset($1::jsonb) AS x(name text, state text, opened_ago float8, changed_ago float8,
    recovery_timeout float8)
  ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, opened_at = EXCLUDED.opened_at,
    recovery_timeout = EXCLUDED.recovery_timeout, updated_at = EXCLUDED.updated_at,
    process = EXCLUDED.process]]

local function connection(dsn)
  local conn = state.conn
  if conn and not conn.broken and conn.dsn == dsn then
    return conn
  end
  if conn then
    conn:close()
  end
  state.conn = nil
  local err
  conn, err = pg.connect(dsn, { timeout = _M.WRITE_TIMEOUT })
  if not conn then
    error(err, 0)
  end
  state.conn = conn
  return conn
end

local function write(dsn, json)
  local rows, err = connection(dsn):query(UPSERT, { json, process_name() })
  if not rows then
    error(err, 0)
  end
  return rows.affected
end

-- Writes what is queued (inside a task; after a write already in flight).
-- true | nil, err; on failure the
-- entries go back to the queue unless a newer state arrived meanwhile.
function _M.flush(opts)
  local dsn = opts and opts.dsn or state.dsn
  if state.count == 0 then
    return true
  end
  if type(dsn) ~= "string" or dsn == "" then
    return nil, errors.new("invalid_input", "breaker_store: no DSN")
  end
  -- The writer's batch first (it ends within its deadline).
  local until_ = core.now() + _M.WRITE_TIMEOUT + 1
  while state.writing and core.now() < until_ do
    core.sleep(0.01)
  end
  if state.writing then
    return nil, errors.new("busy", "breaker_store: a write is in flight")
  end
  if state.count == 0 then
    return true
  end
  local batch, n = state.pending, state.count
  state.pending, state.count = {}, 0
  local now = core.now()
  local rows = {}
  for name, e in pairs(batch) do
    rows[#rows + 1] = { name = name, state = e.state, recovery_timeout = e.recovery_timeout,
      opened_ago = e.opened_mono and max(0, now - e.opened_mono) or nil, changed_ago = max(0, now - e.at_mono) }
  end
  local json = cjson.encode(rows)
  local epoch = state.epoch
  state.writing = true
  local ok, err = pcall(timeout.timeout, { seconds = _M.WRITE_TIMEOUT, operation = "breaker_state_write" },
    write, dsn, json)
  state.writing = false
  if not state.running and state.conn then
    state.conn:close() -- stopped meanwhile
    state.conn = nil
  end
  if ok then
    state.written = state.written + n
    return true
  end
  state.write_failures = state.write_failures + 1
  if state.conn and state.conn.broken then
    state.conn = nil
  end
  for name, e in pairs(batch) do
    if epoch == state.epoch and not state.pending[name] and state.count < _M.MAX_PENDING then
      state.pending[name] = e
      state.count = state.count + 1
    end
  end
  return nil, err
end

-- ---- restoring ----

local SELECT = [[
  SELECT name, state, recovery_timeout::text AS recovery_timeout,
    date_part('epoch', opened_at)::text AS opened_at, date_part('epoch', updated_at)::text AS updated_at,
    date_part('epoch', now())::text AS now
  FROM circuit_breaker_state ORDER BY name LIMIT ]] .. _M.MAX_ROWS

-- A row -> { state, remaining } to apply, or nil, why (stale = true when
-- it is merely old, not hostile).
local function judge(row)
  local st = row.state
  if st == "closed" then
    return nil, "closed", true
  end
  if st ~= "open" and st ~= "half_open" then
    return nil, ("unknown state %q"):format(tostring(st):sub(1, 32))
  end
  local rt, now = tonumber(row.recovery_timeout or ""), tonumber(row.now or "")
  if not finite(rt) or not (rt > 0) or rt > _M.MAX_RECOVERY then
    return nil, "recovery_timeout " .. tostring(row.recovery_timeout)
  end
  local field = st == "open" and "opened_at" or "updated_at"
  local t = tonumber(row[field] or "")
  if not finite(t) or not finite(now) then
    return nil, field .. " " .. tostring(row[field])
  end
  local ago = now - t
  if ago < -_M.CLOCK_SLACK then
    return nil, field .. " in the future"
  end
  ago = max(0, ago)
  if ago >= rt then
    return nil, "stale", true
  end
  return { state = st, remaining = rt - ago }
end

-- Applies a judged row to its breaker. true when restored; false when the
-- breaker does not exist; nil when it was refused (not closed).
local function apply(name, r)
  local b = breaker.get(name)
  if not b then
    return false
  end
  local remaining = r.remaining
  if r.state == "open" then
    local cfg_rt = b:metrics().config.recovery_timeout
    remaining = max(0.001, min(remaining, cfg_rt))
  end
  if b:state() ~= "closed" then
    return nil
  end
  local ok, err = b.ud:restore(r.state, remaining)
  if not ok then
    log.emit("warn", "breaker_state_not_restored", { breaker = name, error = tostring(err) })
    return nil
  end
  state.restored = state.restored + 1
  log.emit("info", "breaker_state_restored", { breaker = name, state = r.state,
    remaining = r.state == "open" and remaining or nil })
  return true
end

-- Rows kept for breakers made later: applied when they appear, dropped
-- when their time is up.
local function apply_saved()
  local now = core.now()
  for name, s in pairs(state.saved) do
    local left = s.remaining - (now - s.read_at)
    if left <= 0 then
      state.saved[name] = nil
    elseif breaker.get(name) then
      state.saved[name] = nil
      apply(name, { state = s.state, remaining = left })
    end
  end
end

-- restore{ dsn = ... } (inside a task) -> report | nil, err. report:
-- restored (names), waiting (names of breakers not made yet), stale,
-- ignored (count of hostile rows, reported in one warning).
function _M.restore(opts)
  local dsn = opts and opts.dsn or state.dsn or os.getenv("MNEMO_PG_DSN")
  if type(dsn) ~= "string" or dsn == "" then
    return nil, errors.new("invalid_input", "breaker_store: no DSN (give dsn = ... or set MNEMO_PG_DSN)")
  end
  local ok, rows = pcall(timeout.timeout, { seconds = opts and opts.timeout or _M.RESTORE_TIMEOUT,
    operation = "breaker_state_restore" }, function()
    return pg.with_connection(dsn, function(conn)
      return conn:exec(SELECT)
    end, function(d)
      return pg.connect(d, { timeout = _M.RESTORE_TIMEOUT })
    end)
  end)
  if not ok then
    log.emit("warn", "breaker_state_restore_failed", { error = tostring(rows) })
    return nil, rows
  end
  local report = { restored = {}, waiting = {}, stale = 0, ignored = 0 }
  local bad = {}
  local now = core.now()
  for _, row in ipairs(rows) do
    local name = row.name
    local r, why, stale = judge(row)
    if r then
      local applied = apply(name, r)
      if applied then
        report.restored[#report.restored + 1] = name
      elseif applied == false then
        state.saved[name] = { state = r.state, remaining = r.remaining, read_at = now }
        report.waiting[#report.waiting + 1] = name
      end
    elseif stale then
      report.stale = report.stale + 1
    else
      report.ignored = report.ignored + 1
      if #bad < 5 then
        bad[#bad + 1] = tostring(name):sub(1, 64) .. ": " .. why
      end
    end
  end
  if report.ignored > 0 then
    state.ignored = state.ignored + report.ignored
    log.emit("warn", "breaker_state_rows_ignored", { count = report.ignored, rows = table.concat(bad, "; ") })
  end
  return report
end

-- ---- the writer ----

-- start{ dsn = MNEMO_PG_DSN, restore = true } -> true, restore report | nil,
-- err. Inside a task the restore runs first (at most RESTORE_TIMEOUT; a
-- database that is down means starting with every breaker closed); outside
-- one it runs in the writer task. A second start restarts it.
function _M.start(opts)
  opts = opts or {}
  local dsn = opts.dsn or os.getenv("MNEMO_PG_DSN")
  if type(dsn) ~= "string" or dsn == "" then
    return nil, errors.new("invalid_input", "breaker_store: no DSN (give dsn = ... or set MNEMO_PG_DSN)")
  end
  state.dsn = dsn
  state.generation = state.generation + 1
  local generation = state.generation
  local report
  local restore = opts.restore ~= false
  if restore and core.in_task() then
    report = _M.restore { dsn = dsn }
    restore = false
  end
  breaker.unsubscribe(on_transition)
  breaker.subscribe(on_transition)
  state.running = true
  core.spawn(function()
    if restore then
      _M.restore { dsn = dsn }
    end
    while state.running and state.generation == generation do
      local slept = core.sleep(state.backoff > 0 and state.backoff or _M.INTERVAL, true)
      if not slept or not state.running or state.generation ~= generation then
        break
      end
      if next(state.saved) then
        apply_saved()
      end
      if state.count > 0 and not state.writing then
        local ok, err = _M.flush { dsn = dsn }
        if ok then
          state.backoff = 0
        else
          if state.backoff == 0 then
            log.emit("warn", "breaker_state_write_failed", { error = tostring(err) })
          end
          state.backoff = min(max(state.backoff * 2, _M.INTERVAL * 4), _M.MAX_BACKOFF)
        end
      end
    end
  end)
  return true, report
end

-- Stops saving; opts.flush: write what is queued first (inside a task).
function _M.stop(opts)
  local last
  if opts and opts.flush and state.running then
    last = { _M.flush() }
  end
  state.running = false
  state.generation = state.generation + 1
  breaker.unsubscribe(on_transition)
  if state.conn and not state.writing then
    state.conn:close()
    state.conn = nil
  end
  if last then
    return last[1], last[2]
  end
  return true
end

function _M.status()
  return { running = state.running, writing = state.writing, pending = state.count, dropped = state.dropped, written = state.written,
    write_failures = state.write_failures, restored = state.restored, ignored = state.ignored,
    waiting = (function()
      local n = 0
      for _ in pairs(state.saved) do
        n = n + 1
      end
      return n
    end)() }
end

-- For tests: forget queued and saved state.
function _M.reset()
  _M.stop()
  state.pending, state.count, state.saved, state.opened = {}, 0, {}, {}
  state.epoch = state.epoch + 1 -- a write in flight does not requeue its batch
  state.dropped, state.written, state.write_failures, state.backoff = 0, 0, 0, 0
  state.restored, state.ignored = 0, 0
end

return _M
