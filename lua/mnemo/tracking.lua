-- Error tracking: every failure the runtime sees is recorded
-- without slowing the work it protects, stored in PostgreSQL, counted and
-- alerted on.
--
--   mnemo.errors.record{ severity = "ERROR", category = "database",
--     service = "indexer", operation = "db_write", error_type = "...",
--     message = "...", error = err, context = { file_path = ..., ... },
--     correlation_id = "...", traceback = "..." }    -> true | false, reason
--
-- The record call (lua/mnemo/errors.lua over runtime/lua/lua_error_track.c)
-- scrubs, aggregates in memory (identical events of one window are one
-- entry with a count) and queues in a bounded queue (the oldest dropped,
-- counted). It never does I/O and raises only on a bad argument (an
-- unknown severity or category). The guard and the breakers record their
-- failures through mnemo.error_events (guard_failure / guard_timeout /
-- breaker_transition), which sits below the guard; this module re-exports
-- all of it.
--
-- This module is the rest (it runs under the guard, so it sits above it):
--   tracking.start{ dsn = ..., interval = 1 }   the flusher, a background
--       task: batches from the queue -> one INSERT ... ON CONFLICT per batch
--       (under the guard operation `error_flush`), retention, alert checks.
--       Its sleeps never keep the process alive. tracking.stop{ flush = true }
--   tracking.flush()        one flush now (inside a task) -> events | nil, err
--   tracking.stats{ since_hours = 24, group_by = "error_type", limit = 20,
--     correlation_id = nil }
--   tracking.recent{ severity = "CRITICAL", limit = 20, since_hours = nil,
--     correlation_id = nil }
--   tracking.counters()     in-memory counters (for /metrics)
--   tracking.alerts()       the alerts active now
--   tracking.configure{ error_tracking = {...}, alerts = {...}, dsn = ... }
-- The `error_tracking` and `alerts` sections of the policy in force
-- (mnemo.policy) apply too; explicit configure/start values win.
--
-- Correlation ids: an event carries the running task's id (mnemo.correlation)
-- unless it names one. A row keeps the first event's id (correlation_id)
-- and a sample of the distinct ids of its occurrences (correlation_ids, at
-- most MAX_CORRELATION_IDS, merged by every flush into the row; the
-- occurrences past it counted in correlation_ids_omitted), so the id of a
-- request that was the 5th of 100 identical errors still finds its row:
-- stats{} and recent{} take correlation_id = "..." and match either column
-- (db/migrations/005_error_correlation.sql indexes both).
local core = require "mnemo_core"
local errors = require "mnemo.errors"
local log = require "mnemo.log"
local events = require "mnemo.error_events"
local config = require "mnemo.config"
local guard = require "mnemo.guard"
local breakers = require "mnemo.breaker"
local pg = require "mnemo.pg"
local http = require "mnemo.http_client"
local cjson = require "cjson.safe"

local type, pairs, ipairs, tostring, tonumber, pcall, error, format, floor, min, max =
  type, pairs, ipairs, tostring, tonumber, pcall, error, string.format, math.floor, math.min, math.max

local _M = {}

-- The distinct correlation ids a row keeps (the C queue keeps as many per
-- entry, runtime/core/error_track.h).
_M.MAX_CORRELATION_IDS = core.error_max_correlation_ids
_M.SEVERITIES = events.SEVERITIES
_M.CATEGORIES = events.CATEGORIES
-- group_by -> the SQL expression grouped on. Only these: the parameter
-- picks an entry here and is never put into SQL itself.
local GROUP_BY = {
  error_type = "error_type",
  operation = "operation",
  service = "service",
  category = "category",
  severity = "severity",
  repository = "context->>'repository'",
}
_M.GROUP_BY = { "error_type", "operation", "service", "category", "severity", "repository" }

local SEVERITY_RANK = {}
for i, s in ipairs(_M.SEVERITIES) do
  SEVERITY_RANK[s] = i
end

-- Defaults of the two policy sections (docs/POLICIES.md).
_M.DEFAULTS = {
  error_tracking = {
    capacity = 10000,         -- entries held in memory (distinct events)
    max_bytes = 16 * 1048576, -- and their bytes
    window = 60,              -- aggregation window, seconds
    batch = 500,              -- entries per INSERT
    interval = 1,             -- seconds between flushes
    max_backoff = 30,         -- flush retry delay cap while PostgreSQL is down
    retention_days = 30,      -- rows whose last_seen is older are deleted
    retention_interval = 3600, -- seconds between two retention sweeps
    service = "mnemo",        -- service of events that name none
  },
  alerts = {
    interval = 60,  -- seconds between checks
    window = 3600,  -- seconds looked back
    critical = 0,   -- alert when MORE than this many events of the severity
    error = 10,     -- (false: no rule for it)
    warning = 50,
    webhook = nil,  -- http:// URL that gets a POST per alert fired
    timeout_rate = false,                -- alert when an operation's timeout rate is above it
    timeout_rate_min_calls = 20,         -- (judged from this many calls in the window)
    breaker_false_positive_rate = false, -- alert when a breaker's false-positive rate is above it
  },
}

local state = {
  explicit = { error_tracking = {}, alerts = {} },
  applied = nil,    -- the C-side settings last applied (a string)
  dsn = nil,
  running = false,
  generation = 0,
  flushing = false,
  conn = nil,       -- the flusher's connection
  idle = {},        -- connections for stats/recent/alerts
  backoff = 0,
  last_retention = nil,
  partitions_day = nil, -- the UTC day the flusher last made error_logs' partitions for
  last_alert_check = nil,
  last_error = nil,
  active = {},      -- severity -> active alert
  counts = { flush_runs = 0, batches_written = 0, batches_dropped = 0, retention_deleted = 0,
    retention_partitions_dropped = 0, partitions_created = 0,
    alerts_fired = 0, alerts_cleared = 0, webhook_sent = 0, webhook_failures = 0 },
}

-- ---- settings ----

local function policy_section(name)
  local policy = package.loaded["mnemo.policy"]
  local current = policy and policy.current and policy.current()
  return type(current) == "table" and type(current[name]) == "table" and current[name] or nil
end

-- The effective section: defaults <- policy in force <- explicit values.
local function section(name)
  local out = {}
  for k, v in pairs(_M.DEFAULTS[name]) do
    out[k] = v
  end
  for k, v in pairs(policy_section(name) or {}) do
    out[k] = v
  end
  for k, v in pairs(state.explicit[name]) do
    out[k] = v
  end
  return out
end
_M.settings = function()
  return { error_tracking = section("error_tracking"), alerts = section("alerts") }
end

-- Gives the C queue its bounds when they changed (a policy reload).
local function apply()
  local s = section("error_tracking")
  local key = format("%s/%s/%s/%s", s.capacity, s.max_bytes, s.window, s.service)
  if key ~= state.applied then
    core.error_configure { capacity = s.capacity, max_bytes = s.max_bytes, window = s.window,
      service = s.service }
    state.applied = key
  end
  return s
end

-- tracking.configure{ error_tracking = {...}, alerts = {...}, dsn = ... }:
-- validated like a policy (mnemo.config); raises with every problem.
function _M.configure(c)
  c = c or {}
  local ok, problems = config.validate { error_tracking = c.error_tracking, alerts = c.alerts }
  if not ok then
    error("invalid configuration:\n  " .. table.concat(problems, "\n  "), 2)
  end
  for _, name in ipairs({ "error_tracking", "alerts" }) do
    for k, v in pairs(c[name] or {}) do
      state.explicit[name][k] = v
    end
  end
  if c.dsn then
    state.dsn = c.dsn
  end
  apply()
  return true
end

-- For tests: back to the defaults, the queue emptied and the counters
-- zeroed, alerts forgotten, the flusher stopped.
function _M.reset()
  _M.stop()
  state.explicit = { error_tracking = {}, alerts = {} }
  state.applied = nil
  state.active = {}
  state.backoff = 0
  state.last_retention, state.last_alert_check, state.last_error = nil, nil, nil
  state.partitions_day = nil
  for k in pairs(state.counts) do
    state.counts[k] = 0
  end
  apply()
  core.error_clear()
end

-- ---- what the guard and the breakers record (mnemo.error_events) ----

_M.guard_failure = events.guard_failure
_M.guard_timeout = events.guard_timeout
_M.breaker_transition = events.breaker_transition
_M.category_for = events.category_for
_M.error_type_of = events.error_type_of

-- ---- connections ----

local function dsn_of(opts)
  if opts and opts.dsn == false then
    return nil, errors.new("invalid_input", "error tracking: no DSN (dsn = false)")
  end
  local dsn = opts and opts.dsn or state.dsn or os.getenv("MNEMO_PG_DSN")
  if type(dsn) ~= "string" or dsn == "" then
    return nil, errors.new("invalid_input", "error tracking: no DSN (give dsn = ... or set MNEMO_PG_DSN)")
  end
  return dsn
end

-- Runs fn(conn) on a pooled connection (stats, recent, alerts); keeps at
-- most two idle. Returns fn's results or nil, err; never raises.
local function with_conn(dsn, fn, ...)
  local conn = table.remove(state.idle)
  while conn and (conn.broken or conn.dsn ~= dsn) do
    conn:close()
    conn = table.remove(state.idle)
  end
  if not conn then
    local err
    conn, err = pg.connect(dsn)
    if not conn then
      return nil, err
    end
  end
  local ok, a, b = pcall(fn, conn, ...)
  if not conn.broken and #state.idle < 2 then
    state.idle[#state.idle + 1] = conn
  else
    conn:close()
  end
  if not ok then
    return nil, a
  end
  return a, b
end

local function query(dsn, sql, params, operation)
  local ok, rows = pcall(guard.guard, operation or "db_query", function()
    local rows, err = with_conn(dsn, function(conn)
      return conn:exec(sql, params)
    end)
    if not rows then
      error(err, 0)
    end
    return rows
  end)
  if not ok then
    return nil, rows
  end
  return rows
end

-- ---- flushing ----

-- One statement per batch. Rows are identified by a fingerprint of what
-- makes two events the same (as in runtime/core/error_track.c) and their
-- aggregation window: a later flush of the same event in the same window
-- adds to the row instead of adding one. DISTINCT ON + window sums merge
-- entries of one batch that map to the same row (ON CONFLICT may not
-- touch a row twice in one statement); their correlation id samples are
-- merged too (distinct, the order first seen, at most MAX_CORRELATION_IDS;
-- the ones left out counted), while the common row of one entry takes its
-- sample as it is (distinct and bounded in C already). A row that exists gets
-- the union the same way, its first correlation_id included (rows from
-- before migration 005 have no sample), and keeps its correlation_id
-- unless it had none.
-- The distinct ids of the entries of one row (m.id_lists: their samples),
-- each with the position it was first seen at.
local BATCH_IDS = [[SELECT e.id, min(l.i * 100000 + e.j) AS pos
  FROM jsonb_array_elements(m.id_lists) WITH ORDINALITY AS l(list, i),
    jsonb_array_elements_text(l.list) WITH ORDINALITY AS e(id, j)
  GROUP BY e.id]]
local IDS_UNION = "array_remove(ARRAY[error_logs.correlation_id], NULL) || error_logs.correlation_ids"
  .. " || EXCLUDED.correlation_ids"
local UPSERT = ([[
  INSERT INTO error_logs (fingerprint, window_start, first_seen, last_seen, occurrences, severity, category,
    service, operation, error_type, message, context, correlation_id, traceback, correlation_ids,
    correlation_ids_omitted)
  SELECT m.fp, to_timestamp(m.window_start), to_timestamp(m.first_seen), to_timestamp(m.last_seen),
    m.occurrences, m.severity, m.category, m.service, m.operation, m.error_type, m.message, m.context,
    m.correlation_id, m.traceback,
    CASE WHEN m.entries = 1 THEN ARRAY(SELECT jsonb_array_elements_text(m.id_lists->0)) ELSE (
      SELECT coalesce(array_agg(u.id ORDER BY u.pos), '{}') FROM (%s ORDER BY pos LIMIT %d) u) END,
    m.omitted + CASE WHEN m.entries = 1 THEN 0 ELSE (
      SELECT greatest(count(*) - %d, 0) FROM (%s) u) END
  FROM (
    SELECT DISTINCT ON (r.fp, r.window_start) r.fp, r.window_start, min(r.first_seen) OVER w AS first_seen,
      max(r.last_seen) OVER w AS last_seen, sum(r.occurrences) OVER w AS occurrences, r.severity, r.category,
      r.service, r.operation, r.error_type, r.message, r.context, r.correlation_id, r.traceback,
      count(*) OVER w AS entries, jsonb_agg(coalesce(r.correlation_ids, '[]')) OVER w AS id_lists,
      sum(coalesce(r.correlation_ids_omitted, 0)) OVER w AS omitted
    FROM (
      SELECT md5(concat_ws(chr(31), x.severity, x.category, x.service, coalesce(x.operation, chr(30)),
               x.error_type, coalesce(x.context->>'repository', chr(30)), x.message)) AS fp, x.*
      FROM jsonb_to_recordset($1::jsonb) AS x(severity text, category text, service text, operation text,
        error_type text, message text, context jsonb, correlation_id text, correlation_ids jsonb,
        correlation_ids_omitted bigint, traceback text, occurrences bigint, first_seen float8, last_seen float8,
        window_start float8)
    ) r
    WINDOW w AS (PARTITION BY r.fp, r.window_start)
    ORDER BY r.fp, r.window_start, r.first_seen
  ) m
  ON CONFLICT (fingerprint, window_start) DO UPDATE SET
    occurrences = error_logs.occurrences + EXCLUDED.occurrences,
    first_seen = least(error_logs.first_seen, EXCLUDED.first_seen),
    last_seen = greatest(error_logs.last_seen, EXCLUDED.last_seen),
    correlation_id = coalesce(error_logs.correlation_id, EXCLUDED.correlation_id),
    correlation_ids = (SELECT coalesce(array_agg(u.id ORDER BY u.pos), '{}') FROM (
      SELECT a.id, min(a.pos) AS pos FROM unnest(%s) WITH ORDINALITY AS a(id, pos)
      GROUP BY a.id ORDER BY 2 LIMIT %d) u),
    correlation_ids_omitted = error_logs.correlation_ids_omitted + EXCLUDED.correlation_ids_omitted
      + greatest((SELECT count(DISTINCT a.id) FROM unnest(%s) AS a(id)) - %d, 0)]]):format(
  BATCH_IDS, _M.MAX_CORRELATION_IDS, _M.MAX_CORRELATION_IDS, BATCH_IDS, IDS_UNION, _M.MAX_CORRELATION_IDS,
  IDS_UNION, _M.MAX_CORRELATION_IDS)

local function writer(dsn)
  local conn = state.conn
  if conn and not conn.broken and conn.dsn == dsn then
    return conn
  end
  if conn then
    conn:close()
  end
  state.conn = nil
  local err
  conn, err = pg.connect(dsn)
  if not conn then
    error(err, 0)
  end
  state.conn = conn
  return conn
end

local function write_batch(dsn, json)
  local rows, err = writer(dsn):query(UPSERT, { json })
  if not rows then
    error(err, 0)
  end
  return rows.affected
end

-- The server refuses the data itself (SQLSTATE class 22 data exception or
-- 23 integrity): trying again cannot help, so the batch is dropped and
-- counted rather than blocking every later event behind it. Anything else
-- (down, timeout, schema not migrated yet) keeps it queued.
local function refused(err)
  local state_code = type(err) == "table" and err.sqlstate
  return type(state_code) == "string" and (state_code:sub(1, 2) == "22" or state_code:sub(1, 2) == "23")
end

local function flush_all(dsn, s)
  local total = 0
  -- Bounded: events recorded while flushing wait for the next round.
  local rounds = floor(s.capacity / s.batch) + 2
  for _ = 1, rounds do
    local batch, json, _, events = core.error_take(s.batch)
    if not batch then
      break
    end
    local ok, err = pcall(guard.guard, "error_flush", write_batch, nil, dsn, json)
    if ok then
      batch:commit()
      total = total + events
      state.counts.batches_written = state.counts.batches_written + 1
    elseif refused(err) then
      batch:drop()
      state.counts.batches_dropped = state.counts.batches_dropped + 1
      log.emit("error", "error_flush_dropped", { events = events, error = tostring(err) })
    else
      batch:requeue()
      return nil, err, total
    end
  end
  return total
end

-- tracking.flush{ dsn = ... } -> events written | nil, err (inside a
-- task). A flush already running is waited for first.
function _M.flush(opts)
  local dsn, derr = dsn_of(opts)
  if not dsn then
    return nil, derr
  end
  local s = apply()
  while state.flushing do
    local slept, serr = core.sleep(0.002)
    if not slept then
      return nil, serr -- this task's deadline passed while waiting
    end
  end
  state.flushing = true
  state.counts.flush_runs = state.counts.flush_runs + 1
  local ok, total, err = pcall(flush_all, dsn, s)
  state.flushing = false
  if state.close_pending then
    -- stop() came while this flush used the connection.
    state.close_pending = false
    if state.conn then
      state.conn:close()
      state.conn = nil
    end
  end
  if not ok then
    err, total = total, nil
  end
  if total then
    state.last_error = nil
    return total
  end
  state.last_error = tostring(err)
  return nil, err
end

-- error_logs is partitioned by window_start, one partition per UTC day
-- (db/migrations/007_error_logs_partitioned.sql; a DEFAULT partition takes
-- the rest). The flusher makes today's and the next PARTITIONS_AHEAD - 1
-- days' partitions, once per UTC day (and at its first tick), before it
-- writes: -> partitions created | nil, err (inside a task).
_M.PARTITIONS_AHEAD = 3
function _M.ensure_partitions(opts)
  local dsn, derr = dsn_of(opts)
  if not dsn then
    return nil, derr
  end
  local rows, err = query(dsn, "SELECT error_logs_create_partitions((now() AT TIME ZONE 'UTC')::date, $1::int) AS n",
    { tostring(_M.PARTITIONS_AHEAD) }, "error_flush")
  if not rows then
    log.emit("warn", "error_partitions_failed", { error = tostring(err) })
    return nil, err
  end
  local n = tonumber(rows[1].n) or 0
  state.counts.partitions_created = state.counts.partitions_created + n
  return n
end

-- Retention: drops the day partitions that end more than retention_days
-- ago, whole, and deletes the older rows of the one that straddles that
-- cutoff and of the DEFAULT partition (error_logs_drop_before). A row's
-- age is its window_start (the partition key; last_seen is at most one
-- aggregation window later). -> rows deleted (not counting the dropped
-- partitions'), partitions dropped | nil, err.
function _M.prune(opts)
  local dsn, derr = dsn_of(opts)
  if not dsn then
    return nil, derr
  end
  local days = opts and opts.retention_days or section("error_tracking").retention_days
  local ok, res = pcall(guard.guard, "error_flush", function()
    local rows, err = with_conn(dsn, function(conn)
      return conn:exec([[SELECT partitions_dropped, rows_deleted::float8 AS rows_deleted
        FROM error_logs_drop_before(now() - $1::float8 * interval '1 day')]], { tostring(days) })
    end)
    if not rows then
      error(err, 0)
    end
    return rows[1]
  end)
  if not ok then
    log.emit("warn", "error_retention_failed", { error = tostring(res) })
    return nil, res
  end
  local deleted, dropped = res.rows_deleted or 0, res.partitions_dropped or 0
  state.counts.retention_deleted = state.counts.retention_deleted + deleted
  state.counts.retention_partitions_dropped = state.counts.retention_partitions_dropped + dropped
  if dropped > 0 then
    log.emit("info", "error_partitions_dropped", { partitions = dropped, rows_deleted = deleted })
  end
  return deleted, dropped
end

-- ---- alerts ----

local ALERT_RULES = { { "CRITICAL", "critical" }, { "ERROR", "error" }, { "WARNING", "warning" } }

local function iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", floor(t))
end

local function send_webhook(url, alert)
  local payload = {}
  for k, v in pairs(alert) do
    if k ~= "notified" then
      payload[k] = v
    end
  end
  local body = cjson.encode(payload)
  local ok, err = pcall(guard.guard, "alert_webhook", function()
    local resp, rerr = http.request { url = url, method = "POST", body = body,
      headers = { ["Content-Type"] = "application/json" } }
    if not resp then
      error(rerr, 0)
    end
    return resp.status
  end)
  if ok then
    state.counts.webhook_sent = state.counts.webhook_sent + 1
    return true
  end
  state.counts.webhook_failures = state.counts.webhook_failures + 1
  log.emit("warn", "alert_webhook_failed", { alert = alert.rule, error = tostring(err) })
  return false
end

-- Checks the rules now (inside a task): events stored in the window plus
-- those still queued. An alert fires once (a log line, and a POST to the
-- webhook if there is one) and stays active until its count is back at
-- or under the threshold. With PostgreSQL unreachable the queued events
-- still fire alerts, but none clears (the stored part is unknown).
-- Returns the list of alerts that fired now.
function _M.check_alerts(opts)
  local a = section("alerts")
  if opts then
    for k, v in pairs(opts) do
      a[k] = v
    end
  end
  local now = core.error_wall_time()
  local since = now - a.window
  local counts = core.error_pending(since)
  local stored_known = false
  local dsn = dsn_of(opts)
  -- Not while the last flush failed: PostgreSQL is down, asking it again
  -- would only wait (and the queued events are counted anyway).
  if dsn and not state.last_error then
    local rows = query(dsn, [[SELECT severity, sum(occurrences)::float8 AS n FROM error_logs
      WHERE last_seen >= to_timestamp($1::float8) GROUP BY severity]], { format("%.6f", since) }, "error_flush")
    if rows then
      stored_known = true
      for _, r in ipairs(rows) do
        counts[r.severity] = (counts[r.severity] or 0) + r.n
      end
    end
  end
  state.last_alert_check = now
  local fired = {}
  for _, rule in ipairs(ALERT_RULES) do
    local severity, key = rule[1], rule[2]
    local threshold = a[key]
    local count = counts[severity] or 0
    local active = state.active[severity]
    if type(threshold) == "number" and count > threshold then
      if not active then
        active = { rule = key, severity = severity, count = count, threshold = threshold, window = a.window,
          since = iso(now), service = section("error_tracking").service,
          message = format("%d %s events in the last %gs (alert above %d)", count, severity, a.window, threshold) }
        state.active[severity] = active
        state.counts.alerts_fired = state.counts.alerts_fired + 1
        log.emit("error", "alert", active)
        fired[#fired + 1] = active
        active.notified = not a.webhook
      else
        active.count = count
      end
      if not active.notified and a.webhook then
        -- A failed POST is tried again at the next check, while active.
        active.notified = send_webhook(a.webhook, active)
      end
    elseif active and (stored_known or type(threshold) ~= "number") then
      state.active[severity] = nil
      state.counts.alerts_cleared = state.counts.alerts_cleared + 1
      log.emit("info", "alert_cleared", { rule = key, severity = severity, count = count, threshold = threshold })
    end
  end
  _M.check_rate_alerts(a, now, fired)
  return fired
end

-- The rate rules (no database): per operation, timeouts / calls over the
-- guard's window (guard.rates) when it saw at least timeout_rate_min_calls
-- calls; per breaker, false positives / decided trips (breaker metrics).
-- Each alert is keyed "rule:name" in state.active, fires and clears like
-- the severity rules (WARNING).
local function rate_alert(a, now, fired, rule, label, name, rate, threshold, judged, what)
  local key = rule .. ":" .. name
  local active = state.active[key]
  if type(threshold) == "number" and judged and rate > threshold then
    if not active then
      active = { rule = rule, severity = "WARNING", [label] = name, rate = rate, threshold = threshold,
        since = iso(now), service = section("error_tracking").service,
        message = format("%s %s: %s %.4g (alert above %g)", label, name, what, rate, threshold) }
      state.active[key] = active
      state.counts.alerts_fired = state.counts.alerts_fired + 1
      log.emit("error", "alert", active)
      fired[#fired + 1] = active
      active.notified = not a.webhook
    else
      active.rate = rate
    end
    if not active.notified and a.webhook then
      active.notified = send_webhook(a.webhook, active)
    end
  elseif active then
    state.active[key] = nil
    state.counts.alerts_cleared = state.counts.alerts_cleared + 1
    log.emit("info", "alert_cleared", { rule = rule, [label] = name, rate = rate, threshold = threshold })
  end
end

function _M.check_rate_alerts(a, now, fired)
  fired = fired or {}
  local min_calls = a.timeout_rate_min_calls or 1
  local seen = {}
  for name, r in pairs(guard.rates()) do
    seen["timeout_rate:" .. name] = true
    rate_alert(a, now, fired, "timeout_rate", "operation", name, r.rate, a.timeout_rate, r.calls >= min_calls,
      "timeout rate")
  end
  for _, name in ipairs(breakers.list()) do
    local m = breakers.get(name):metrics()
    seen["breaker_false_positive_rate:" .. name] = true
    rate_alert(a, now, fired, "breaker_false_positive_rate", "breaker", name, m.false_positive_rate,
      a.breaker_false_positive_rate, m.trips_decided > 0, "false-positive rate")
  end
  -- an alert on an operation or breaker that is gone clears
  for key, active in pairs(state.active) do
    if active.rate ~= nil and not seen[key] then
      state.active[key] = nil
      state.counts.alerts_cleared = state.counts.alerts_cleared + 1
    end
  end
  return fired
end

-- The alerts active now, most severe first (for the dashboard).
function _M.alerts()
  local list = {}
  for _, alert in pairs(state.active) do
    local copy = {}
    for k, v in pairs(alert) do
      copy[k] = v
    end
    list[#list + 1] = copy
  end
  table.sort(list, function(x, y)
    return SEVERITY_RANK[x.severity] > SEVERITY_RANK[y.severity]
  end)
  return list
end

-- ---- the flusher ----

local function tick(dsn)
  local s = apply()
  local now = core.error_wall_time()
  local day = floor(now / 86400)
  -- Not while PostgreSQL is down (the flush finds out, and backs off).
  if state.partitions_day ~= day and not state.last_error and _M.ensure_partitions { dsn = dsn } then
    state.partitions_day = day
  end
  local flushed = _M.flush { dsn = dsn }
  if flushed then
    state.backoff = 0
  else
    -- PostgreSQL down: back off (the queue holds the newest events).
    state.backoff = min(max(state.backoff * 2, s.interval * 2), s.max_backoff)
  end
  if flushed and (not state.last_retention or now - state.last_retention >= s.retention_interval) then
    state.last_retention = now
    _M.prune { dsn = dsn }
  end
  local a = section("alerts")
  if not state.last_alert_check or now - state.last_alert_check >= a.interval then
    pcall(_M.check_alerts, { dsn = dsn })
  end
end

-- tracking.start{ dsn = MNEMO_PG_DSN, interval = ..., + any error_tracking
-- or alerts setting } -> true | nil, err. A second start restarts it.
function _M.start(opts)
  opts = opts or {}
  local dsn, err = dsn_of(opts)
  if not dsn then
    return nil, err
  end
  local et = {}
  for k, v in pairs(opts) do
    if _M.DEFAULTS.error_tracking[k] ~= nil then
      et[k] = v
    elseif k ~= "dsn" and k ~= "alerts" then
      return nil, errors.new("invalid_input", "tracking.start: unknown option " .. tostring(k)
        .. " (alert settings go in alerts = {...})")
    end
  end
  local ok, cerr = pcall(_M.configure, { error_tracking = et, alerts = opts.alerts, dsn = dsn })
  if not ok then
    return nil, errors.new("invalid_input", tostring(cerr))
  end
  state.generation = state.generation + 1
  local generation = state.generation
  state.running = true
  core.spawn(function()
    while state.running and state.generation == generation do
      local s = apply()
      local wait = state.backoff > 0 and state.backoff or s.interval
      -- Weak: the flusher alone never keeps the process alive.
      local slept = core.sleep(wait, true)
      if not slept or not state.running or state.generation ~= generation then
        break
      end
      local ok, terr = pcall(tick, dsn)
      if not ok then
        log.emit("error", "error_flusher_failed", { error = tostring(terr) })
      end
    end
  end)
  return true
end

-- Stops the flusher; opts.flush: one last flush first (inside a task).
function _M.stop(opts)
  local last
  if opts and opts.flush and state.running then
    last = { _M.flush(opts) }
  end
  state.running = false
  state.generation = state.generation + 1
  if state.flushing then
    -- Closing it now would abandon the query in flight (its task would
    -- wait for its deadline): the flush closes it when done.
    state.close_pending = true
  elseif state.conn then
    state.conn:close()
    state.conn = nil
  end
  for _, conn in ipairs(state.idle) do
    conn:close()
  end
  state.idle = {}
  if last then
    return unpack(last)
  end
  return true
end

function _M.running()
  return state.running
end

-- ---- reading ----

local function bad(message)
  return nil, errors.new("invalid_input", message)
end

local function check_hours(v)
  if v == nil then
    return 24
  end
  v = tonumber(v)
  if not v or v ~= v or v <= 0 or v > 24 * 3660 then
    return nil
  end
  return v
end

local function check_limit(v, dflt)
  if v == nil then
    return dflt
  end
  v = tonumber(v)
  if not v or v ~= floor(v) or v < 1 or v > 1000 then
    return nil
  end
  return v
end

local ISO = [[to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')]]

-- A correlation id to search for: nil (no filter), or a string of 1 to 256
-- bytes (ids are kept cut to 256). Only ever a query parameter.
local function check_correlation(v)
  if v == nil then
    return true
  end
  return type(v) == "string" and #v >= 1 and #v <= 256
end

-- The rows one correlation id names: the first event's, or one of the
-- sample (both indexed; a bitmap OR of the two).
local function correlation_clause(param)
  return (" AND (correlation_id = $%d OR correlation_ids @> ARRAY[$%d]::text[])"):format(param, param)
end

-- group_by: one field or several, a comma list ("category,severity") or a
-- list of names, each one of GROUP_BY, none twice -> the fields | nil, err.
-- A name that is not one is refused (never put into SQL).
local function group_fields(v)
  local list = {}
  if type(v) == "string" then
    for name in (v .. ","):gmatch("([^,]*),") do
      list[#list + 1] = name:match("^%s*(.-)%s*$")
    end
  elseif type(v) == "table" then
    for i = 1, #v do
      list[i] = v[i]
    end
  end
  local expected = "expected one of " .. table.concat(_M.GROUP_BY, ", ") .. " or a comma list of them"
  if #list == 0 then
    return nil, "stats: group_by: " .. expected .. ", got " .. (type(v) == "string" and '""' or type(v))
  end
  local seen = {}
  for _, name in ipairs(list) do
    if type(name) ~= "string" or not GROUP_BY[name] then
      -- Quoted when it is a plain word; else (markup, SQL, anything) only its size.
      local shown = type(name) ~= "string" and "(a " .. type(name) .. ")"
        or name:find("^[%w_]+$") and #name <= 40 and '"' .. name .. '"'
        or format("(%d bytes, not a field name)", #name)
      return nil, "stats: group_by: unknown field " .. shown .. " (" .. expected .. ")"
    end
    if seen[name] then
      return nil, "stats: group_by: " .. name .. " given twice"
    end
    seen[name] = true
  end
  return list
end

-- tracking.stats{ since_hours = 24, group_by = "error_type", limit = 20,
-- correlation_id = nil, dsn = ... } -> { group_by, fields, since_hours,
-- [correlation_id], groups = { { key, <field> = ..., count, first_seen,
-- last_seen, operations = {...} }, ... } } | nil, err
-- count is the sum of occurrences; groups by count, largest first; a
-- group carries each grouped field by name (and, grouped by one, its value
-- as `key` too), absent for events without one (no operation, no
-- repository). group_by: error_type | operation | service | category |
-- severity | repository (the context's), or several at once: a comma list
-- ("category,service,error_type,severity") or a list; `group_by` in the
-- result is the comma list, `fields` the list. correlation_id: only the rows that id is
-- one of (the first event's or the sample's); a row is an aggregate, so
-- count is still the row's occurrences, those of other ids included.
-- Bad parameters: nil, err (invalid_input).
function _M.stats(p)
  p = p or {}
  if type(p) ~= "table" then
    return bad("stats: expected a table of parameters")
  end
  local hours = check_hours(p.since_hours)
  if not hours then
    return bad("stats: since_hours: expected a number of hours in (0, 87840], got " .. tostring(p.since_hours))
  end
  local fields, ferr = group_fields(p.group_by or "error_type")
  if not fields then
    return bad(ferr)
  end
  local exprs, cols, order = {}, {}, {}
  for i, name in ipairs(fields) do
    exprs[i] = GROUP_BY[name] .. " AS g" .. i
    cols[i] = "g" .. i
    order[i] = "g" .. i .. " NULLS LAST"
  end
  local limit = check_limit(p.limit, 20)
  if not limit then
    return bad("stats: limit: expected an integer in [1, 1000], got " .. tostring(p.limit))
  end
  local cid = p.correlation_id
  if not check_correlation(cid) then
    return bad("stats: correlation_id: expected a string of 1 to 256 bytes, got " .. type(cid))
  end
  local dsn, err = dsn_of(p)
  if not dsn then
    return nil, err
  end
  -- Only names from GROUP_BY (their SQL) and g1..gN go into the text.
  local sql = ([[SELECT %s, sum(occurrences)::float8 AS count,
      ]] .. ISO .. [[ AS first_seen, ]] .. ISO .. [[ AS last_seen,
      coalesce(to_jsonb(array_agg(DISTINCT operation) FILTER (WHERE operation IS NOT NULL)), '[]')::text
        AS operations
    FROM error_logs WHERE last_seen >= now() - $1::float8 * interval '1 hour'%s
    GROUP BY %s ORDER BY count DESC, %s LIMIT $2::int]]):format(table.concat(exprs, ", "), "min(first_seen)",
    "max(last_seen)", cid and correlation_clause(3) or "", table.concat(cols, ", "), table.concat(order, ", "))
  local rows, qerr = query(dsn, sql, { n = cid and 3 or 2, tostring(hours), tostring(limit), cid })
  if not rows then
    return nil, qerr
  end
  local groups = {}
  for i, r in ipairs(rows) do
    local g = { key = #fields == 1 and r.g1 or nil, count = r.count, first_seen = r.first_seen,
      last_seen = r.last_seen, operations = cjson.decode(r.operations) or {} }
    for j, name in ipairs(fields) do
      g[name] = r["g" .. j]
    end
    groups[i] = g
  end
  return { group_by = table.concat(fields, ","), fields = fields, since_hours = hours, correlation_id = cid,
    groups = groups }
end

local SEVERITY_SET = {}
for _, s in ipairs(_M.SEVERITIES) do
  SEVERITY_SET[s] = true
end

-- tracking.recent{ severity = "CRITICAL", limit = 20, since_hours = nil,
-- correlation_id = nil } -> list of rows, the most recent first (context
-- and correlation_ids decoded) | nil, err. correlation_id: as in stats.
function _M.recent(p)
  p = p or {}
  if type(p) ~= "table" then
    return bad("recent: expected a table of parameters")
  end
  if p.severity ~= nil and not SEVERITY_SET[p.severity] then
    return bad("recent: severity: expected one of " .. table.concat(_M.SEVERITIES, ", ") .. ", got "
      .. tostring(p.severity))
  end
  local limit = check_limit(p.limit, 20)
  if not limit then
    return bad("recent: limit: expected an integer in [1, 1000], got " .. tostring(p.limit))
  end
  local hours = p.since_hours ~= nil and check_hours(p.since_hours) or 24 * 3660
  if not hours then
    return bad("recent: since_hours: expected a number of hours in (0, 87840], got " .. tostring(p.since_hours))
  end
  local cid = p.correlation_id
  if not check_correlation(cid) then
    return bad("recent: correlation_id: expected a string of 1 to 256 bytes, got " .. type(cid))
  end
  local dsn, err = dsn_of(p)
  if not dsn then
    return nil, err
  end
  local sql = ([[SELECT id, severity, category, service, operation, error_type, message, context::text AS context,
      correlation_id, to_jsonb(correlation_ids)::text AS correlation_ids,
      correlation_ids_omitted::float8 AS correlation_ids_omitted, traceback, occurrences::float8 AS occurrences,
      %s AS first_seen, %s AS last_seen
    FROM error_logs
    WHERE ($1::text IS NULL OR severity = $1) AND last_seen >= now() - $2::float8 * interval '1 hour'%s
    ORDER BY last_seen DESC, id DESC LIMIT $3::int]]):format(ISO:format("first_seen"), ISO:format("last_seen"),
    cid and correlation_clause(4) or "")
  local rows, qerr = query(dsn, sql, { n = cid and 4 or 3, p.severity, tostring(hours), tostring(limit), cid })
  if not rows then
    return nil, qerr
  end
  local out = {}
  for i, r in ipairs(rows) do
    r.context = cjson.decode(r.context) or {}
    r.correlation_ids = cjson.decode(r.correlation_ids) or {}
    out[i] = r
  end
  return out
end

-- In-memory counters (numbers only, for /metrics): recorded, aggregated,
-- dropped, flushed, flush_failures, queue_length, pending (events held),
-- queue_bytes, capacity, plus the flusher's own.
function _M.counters()
  local c = events.counters()
  for k, v in pairs(state.counts) do
    c[k] = v
  end
  local n = 0
  for _ in pairs(state.active) do
    n = n + 1
  end
  c.alerts_active = n
  c.flusher_running = state.running and 1 or 0
  return c
end

-- The flusher's state, for health pages.
function _M.status()
  return { running = state.running, last_error = state.last_error, backoff = state.backoff,
    last_alert_check = state.last_alert_check, last_retention = state.last_retention }
end

-- Events still in memory, oldest first (context as JSON text).
_M.queued = events.queued
_M.scrub = events.scrub
-- Nothing is recorded while the policy's error_tracking switch is off
-- (the guard's and the breakers' own events are switched where they are
-- made); what is queued still flushes.
local record, switched_on = events.record, guard.switched_on
function _M.record(t)
  if not switched_on("error_tracking") then
    return false, "error tracking is switched off"
  end
  return record(t)
end

return _M
