-- The runtime's HTTP face, registered in mnemo.http's route registry (so
-- `mnemo-run --serve ADDR` and `mnemo.http.serve{}` serve it):
--   GET  /health                     healthy | degraded | unhealthy (503); the
--                                    policy's path and errors with the admin token
--   GET  /v1/errors/stats            top error groups (tracking.stats);
--                                    ?correlation_id= only those of one id
--   GET  /monitoring/errors          the HTML dashboard (refreshes itself)
--   GET  /metrics                    Prometheus text format
--   GET  /v1/breakers                every breaker: state, figures, false-positive
--                                    rate and its recent failures
--   POST /v1/breakers/:name/reset    needs Authorization: Bearer $MNEMO_ADMIN_TOKEN
-- Each handler reads live state; the ones that need PostgreSQL or Redis
-- ask them under short deadlines, so a dead dependency makes a page say
-- so instead of hanging it.
local core = require "mnemo_core"
local uv = require "luv"
local http = require "mnemo.http"
local breaker = require "mnemo.breaker"
local guard = require "mnemo.guard"
local policy = require "mnemo.policy"
local tracking = require "mnemo.tracking"
local indexer = require "mnemo.indexer"
local timeout = require "mnemo.timeout"
local pg = require "mnemo.pg"
local redis = require "mnemo.redis"
local cjson = require "cjson"

local type, pairs, ipairs, pcall, tostring, format = type, pairs, ipairs, pcall, tostring, string.format
local concat, sort = table.concat, table.sort

local _M = {}

_M.PROBE_TIMEOUT = 1.0 -- seconds a health check may take per service

-- ---- the admin token ----

-- Compares in time independent of where the strings differ.
local function same_secret(a, b)
  if type(a) ~= "string" or type(b) ~= "string" or #a ~= #b then
    return false
  end
  local diff = 0
  for i = 1, #a do
    diff = bit.bor(diff, bit.bxor(a:byte(i), b:byte(i)))
  end
  return diff == 0
end

-- $MNEMO_ADMIN_TOKEN, or nil when none is set (admin features are off).
local function admin_token()
  local token = os.getenv("MNEMO_ADMIN_TOKEN")
  if not token or token == "" then
    return nil
  end
  return token
end

-- Whether req carries `Authorization: Bearer <admin token>`; never true
-- when no token is configured.
local function is_admin(req)
  local token = admin_token()
  if not token then
    return false
  end
  local given = (req.headers.authorization or ""):match("^Bearer%s+(.+)$")
  return same_secret(given, token)
end

-- ---- health ----

-- Runs check(address) under PROBE_TIMEOUT: up (with its latency), down
-- (with the scrubbed reason) or not configured.
local function probe(address, check)
  if not address or address == "" then
    return { status = "not_configured" }
  end
  local t0 = core.now()
  local ok, err = pcall(timeout.timeout, _M.PROBE_TIMEOUT, check, address)
  if not ok then
    return { status = "down", error = tracking.scrub(tostring(err)) }
  end
  return { status = "up", latency_ms = (core.now() - t0) * 1000 }
end

-- Opens a client with connect(address), runs use(client), closes it.
local function with_client(connect, use)
  return function(address)
    local c, cerr = connect(address)
    if not c then
      error(cerr, 0)
    end
    local ok, err = pcall(use, c)
    c:close()
    if not ok then
      error(err, 0)
    end
  end
end

local function probe_postgresql()
  return probe(os.getenv("MNEMO_PG_DSN"), with_client(pg.connect, function(c)
    c:exec("SELECT 1")
  end))
end

local function probe_redis()
  return probe(os.getenv("MNEMO_REDIS_URL"), with_client(function(url)
    return redis.connect(url, { reconnect = false })
  end, function(c)
    c:ping()
  end))
end

-- The embedder is whatever the pipeline calls; its breaker tells.
local function probe_embedding()
  local name = guard.explain("embed_batch").breaker
  local b = name and breaker.get(name)
  if not b then
    return { status = "unknown" }
  end
  local state = b:state()
  return { status = state == "closed" and "up" or "down", breaker = state }
end

_M.POLICY_ERROR_HIDDEN = "rejected (details with the admin token)"

-- The policy's state as /health shows it. Without the admin token: the
-- file's base name (scrubbed too), never its directory (a home directory,
-- a user name), and only that the last load was rejected, never its text
-- (which quotes paths and the file's contents); with it, the full path and
-- error text.
local function policy_health(admin)
  local p = policy.status()
  local out = { generation = p.generation, loaded_at = p.loaded_at, reloads = p.reloads, errors = p.errors }
  if p.path then
    out.file = tracking.scrub((tostring(p.path):match("([^/]*)$")))
  end
  if admin then
    out.path, out.last_error = p.path, p.last_error
  elseif p.last_error ~= nil then
    out.last_error = _M.POLICY_ERROR_HIDDEN
  end
  return out
end

-- health(opts): opts.admin shows the policy's full path and error text.
function _M.health(opts)
  local admin = type(opts) == "table" and opts.admin == true
  local services = { postgresql = probe_postgresql(), redis = probe_redis(), embedding = probe_embedding() }
  local circuits, critical_open, any_open = {}, {}, false
  for _, name in ipairs(breaker.list()) do
    local m = breaker.get(name):metrics()
    circuits[m.name] = m
    if m.state ~= "closed" then
      any_open = true
      if m.critical and m.state == "open" then
        critical_open[#critical_open + 1] = m.name
      end
    end
  end
  sort(critical_open)
  local status = "healthy"
  if #critical_open > 0 or services.postgresql.status == "down" then
    status = "unhealthy"
  elseif any_open or services.redis.status == "down" or services.embedding.status == "down" then
    status = "degraded"
  end
  return {
    status = status,
    timestamp = breaker.rfc3339(core.error_wall_time()),
    services = services,
    circuit_breakers = circuits,
    critical_circuits_open = critical_open,
    policy = policy_health(admin),
    error_tracking = tracking.counters(),
  }
end

-- The same status code with or without the token: a wrong token learns
-- nothing more than no token.
local function get_health(req)
  local h = _M.health { admin = is_admin(req) }
  local body = cjson.encode(h)
  if #h.critical_circuits_open == 0 then
    -- lua-cjson 2.1.0 writes an empty table as {}; this one is a list.
    body = body:gsub('"critical_circuits_open":{}', '"critical_circuits_open":[]', 1)
  end
  return h.status == "unhealthy" and 503 or 200, body, "application/json"
end

-- ---- errors stats ----

local function bad_request(message)
  return 400, { error = "bad_request", message = message }
end

-- What ?correlation_id= may be: the shape of the ids mnemo makes and of
-- the X-Request-Id values it takes (lua/mnemo/http.lua).
_M.MAX_CORRELATION_ID = 64
local function valid_correlation_id(v)
  return #v >= 1 and #v <= _M.MAX_CORRELATION_ID and v:find("^[A-Za-z0-9._:%-]+$") ~= nil
end

local function get_stats(req)
  local since = req.query.since_hours
  local n = since == nil and 24 or tonumber(since)
  if n == nil then
    return bad_request("since_hours: expected a number of hours, got " .. tostring(since))
  end
  local cid = req.query.correlation_id
  if cid ~= nil and not valid_correlation_id(cid) then
    -- Not echoed: it may be anything (a log line, markup, a secret).
    return bad_request(("correlation_id: expected 1 to %d characters of A-Z a-z 0-9 . _ : - (got %d bytes)")
      :format(_M.MAX_CORRELATION_ID, #cid))
  end
  local result, err = tracking.stats { since_hours = n, group_by = req.query.group_by or "error_type",
    limit = req.query.limit and tonumber(req.query.limit) or nil, correlation_id = cid }
  if not result then
    if type(err) == "table" and err.kind == "invalid_input" then
      return bad_request(tostring(err))
    end
    -- The rates need no database: still there while it is down.
    return 503, { error = "unavailable", message = tracking.scrub(tostring(err)), rates = _M.rates() }
  end
  result.rates = _M.rates()
  return 200, result
end

-- ---- rates ----

-- { operations = { name = { calls, timeouts, timeout_rate } } (over the
-- guard's window), breakers = { name = { trips, false_positives,
-- trips_decided, false_positive_rate } } }.
function _M.rates()
  local ops, brs = {}, {}
  for name, r in pairs(guard.rates()) do
    ops[name] = { calls = r.calls, timeouts = r.timeouts, timeout_rate = r.rate }
  end
  for _, name in ipairs(breaker.list()) do
    local m = breaker.get(name):metrics()
    brs[name] = { trips = m.trips, false_positives = m.false_positives, trips_decided = m.trips_decided,
      false_positive_rate = m.false_positive_rate }
  end
  return { window = guard.WINDOW_STEP * guard.WINDOW_SLOTS, operations = ops, breakers = brs }
end

-- ---- breakers ----

-- GET /v1/breakers: { breakers = [ metrics..., recent_failures = [...] ] }
-- by name (a breaker's metrics as Breaker:metrics gives them).
local function get_breakers()
  local list = {}
  for i, name in ipairs(breaker.list()) do
    list[i] = breaker.get(name):metrics()
  end
  local body = cjson.encode({ breakers = list })
  -- lua-cjson writes an empty table as {}; these are lists.
  body = body:gsub('"recent_failures":{}', '"recent_failures":[]'):gsub('^{"breakers":{}}$', '{"breakers":[]}')
  return 200, body, "application/json"
end

-- ---- breaker reset ----

local function post_reset(req)
  if not admin_token() then
    return 404, { error = "not_found", message = "breaker reset is disabled (set MNEMO_ADMIN_TOKEN)" }
  end
  if not is_admin(req) then
    return 401, { error = "unauthorized", message = "Authorization: Bearer <admin token> required" },
      { ["WWW-Authenticate"] = "Bearer" }
  end
  local b = breaker.get(req.params.name)
  if not b then
    return 404, { error = "not_found", message = "no breaker named " .. req.params.name }
  end
  local before = b:state()
  b:reset()
  tracking.record { severity = "WARNING", category = "circuit_breaker", service = "http",
    operation = "breaker_reset", error_type = "BreakerReset",
    message = ("breaker %s reset by an operator (was %s)"):format(req.params.name, before) }
  return 200, { breaker = req.params.name, was = before, state = b:state() }
end

-- ---- metrics ----

-- Label values are operation and breaker names, from code or a policy
-- file: scrubbed like error text (a home directory, a token) before they
-- leave the process, then escaped.
local function label(v)
  return (tracking.scrub(tostring(v)):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function metric_family(out, name, kind, help)
  out[#out + 1] = format("# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
end

local function sample(out, name, labels, value)
  if labels then
    local parts = {}
    for _, kv in ipairs(labels) do
      parts[#parts + 1] = format('%s="%s"', kv[1], label(kv[2]))
    end
    out[#out + 1] = format("%s{%s} %.17g\n", name, concat(parts, ","), value)
  else
    out[#out + 1] = format("%s %.17g\n", name, value)
  end
end

-- Loop lag: how late a 100 ms timer fires, smoothed; unref'd, so it never
-- keeps the loop alive.
local lag = { last = 0, max = 0 }
local lag_timer
local function start_lag_probe()
  if lag_timer then
    return
  end
  lag_timer = uv.new_timer()
  local expected = uv.now() + 100
  lag_timer:start(100, 100, function()
    local now = uv.now()
    local late = math.max(0, now - expected) / 1000
    lag.last = late
    if late > lag.max then
      lag.max = late
    end
    expected = now + 100
  end)
  lag_timer:unref()
end

local OP_COUNTERS = { "calls", "successes", "failures", "timeouts", "retries", "fast_fails", "fallbacks",
  "bulkhead_rejections", "budget_denials", "recovered" }
local BREAKER_STATES = { "closed", "open", "half_open" }

function _M.metrics_text()
  local out = {}
  local stats = guard.stats()
  local ops = {}
  for name in pairs(stats) do
    ops[#ops + 1] = name
  end
  sort(ops)
  for _, counter in ipairs(OP_COUNTERS) do
    local name = "mnemo_operation_" .. counter .. "_total"
    metric_family(out, name, "counter", "guarded calls of an operation: " .. counter)
    for _, op in ipairs(ops) do
      sample(out, name, { { "operation", op } }, stats[op][counter] or 0)
    end
  end
  metric_family(out, "mnemo_operation_timeout_rate", "gauge",
    format("timeouts over calls of an operation in the last %d s", guard.WINDOW_STEP * guard.WINDOW_SLOTS))
  for _, op in ipairs(ops) do
    sample(out, "mnemo_operation_timeout_rate", { { "operation", op } }, stats[op].timeout_rate or 0)
  end
  local list = {}
  for i, name in ipairs(breaker.list()) do
    list[i] = breaker.get(name)
  end
  metric_family(out, "mnemo_breaker_state", "gauge", "1 for the breaker's current state")
  for _, b in ipairs(list) do
    local m = b:metrics()
    for _, s in ipairs(BREAKER_STATES) do
      sample(out, "mnemo_breaker_state", { { "breaker", m.name }, { "state", s } }, m.state == s and 1 or 0)
    end
  end
  for _, f in ipairs { { "calls", "calls through the breaker" }, { "failures", "failures counted" },
    { "rejected", "calls refused while open (fast-fails)" } } do
    local name = "mnemo_breaker_" .. f[1] .. "_total"
    metric_family(out, name, "counter", f[2])
    for _, b in ipairs(list) do
      local m = b:metrics()
      sample(out, name, { { "breaker", m.name } }, m[f[1]] or 0)
    end
  end
  metric_family(out, "mnemo_breaker_trips_total", "counter", "transitions to open")
  for _, b in ipairs(list) do
    local m = b:metrics()
    sample(out, "mnemo_breaker_trips_total", { { "breaker", m.name } }, m.trips or 0)
  end
  metric_family(out, "mnemo_breaker_false_positives_total", "counter",
    "trips whose first trial (half-open call or health probe) succeeded")
  for _, b in ipairs(list) do
    local m = b:metrics()
    sample(out, "mnemo_breaker_false_positives_total", { { "breaker", m.name } }, m.false_positives or 0)
  end
  metric_family(out, "mnemo_breaker_false_positive_rate", "gauge",
    "false positives over trips whose first trial is over")
  for _, b in ipairs(list) do
    local m = b:metrics()
    sample(out, "mnemo_breaker_false_positive_rate", { { "breaker", m.name } }, m.false_positive_rate or 0)
  end
  local p = policy.status()
  metric_family(out, "mnemo_policy_generation", "gauge", "generation of the policy in force")
  sample(out, "mnemo_policy_generation", nil, p.generation or 0)
  metric_family(out, "mnemo_policy_reloads_total", "counter", "policy reloads applied")
  sample(out, "mnemo_policy_reloads_total", nil, p.reloads or 0)
  metric_family(out, "mnemo_policy_reload_errors_total", "counter", "policy files rejected")
  sample(out, "mnemo_policy_reload_errors_total", nil, p.errors or 0)
  local c = tracking.counters()
  for _, f in ipairs { { "recorded", "counter", "error events recorded" },
    { "aggregated", "counter", "events folded into an identical one" },
    { "dropped", "counter", "events dropped (queue full)" }, { "flushed", "counter", "events written" },
    { "flush_failures", "counter", "failed flushes" }, { "queue_length", "gauge", "events waiting" } } do
    local name = "mnemo_errors_" .. f[1] .. (f[2] == "counter" and "_total" or "")
    metric_family(out, name, f[2], f[3])
    sample(out, name, nil, c[f[1]] or 0)
  end
  local t = indexer.totals
  metric_family(out, "mnemo_index_files_total", "counter", "files seen by the indexer, by outcome")
  for _, outcome in ipairs { "indexed", "unchanged", "skipped", "failed" } do
    sample(out, "mnemo_index_files_total", { { "outcome", outcome } }, t.files[outcome] or 0)
  end
  metric_family(out, "mnemo_index_chunks_total", "counter", "chunks stored")
  sample(out, "mnemo_index_chunks_total", nil, t.chunks)
  metric_family(out, "mnemo_index_embeddings_pending", "gauge", "chunks waiting for an embedding (last run)")
  sample(out, "mnemo_index_embeddings_pending", nil, t.embeddings_pending)
  start_lag_probe()
  metric_family(out, "mnemo_loop_lag_seconds", "gauge", "how late a 100 ms loop timer fired, last time")
  sample(out, "mnemo_loop_lag_seconds", nil, lag.last)
  metric_family(out, "mnemo_loop_lag_max_seconds", "gauge", "the largest loop lag seen")
  sample(out, "mnemo_loop_lag_max_seconds", nil, lag.max)
  return concat(out)
end

local function get_metrics()
  return 200, _M.metrics_text(), "text/plain; version=0.0.4; charset=utf-8"
end

-- ---- dashboard ----

local function esc(v)
  return (tostring(v == nil and "" or v):gsub("[&<>\"']",
    { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function table_html(headers, rows)
  local out = { "<table><thead><tr>" }
  for _, h in ipairs(headers) do
    out[#out + 1] = "<th>" .. esc(h) .. "</th>"
  end
  out[#out + 1] = "</tr></thead><tbody>"
  if #rows == 0 then
    out[#out + 1] = ('<tr><td colspan="%d" class="none">none</td></tr>'):format(#headers)
  end
  for _, row in ipairs(rows) do
    out[#out + 1] = "<tr>"
    for _, cell in ipairs(row) do
      -- { html = ... }: markup made (and escaped) by the caller.
      out[#out + 1] = "<td>" .. (type(cell) == "table" and cell.html or esc(cell)) .. "</td>"
    end
    out[#out + 1] = "</tr>"
  end
  out[#out + 1] = "</tbody></table>"
  return concat(out)
end

_M.REFRESH_SECONDS = 15

local STYLE = [[
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.none{color:#888}.alert{background:#fde8e8;border:1px solid #e99;padding:.5em;margin:.3em 0}
pre{margin:.3em 0;white-space:pre-wrap;font-size:12px}
.open{color:#b00;font-weight:bold}.half_open{color:#b60}.closed{color:#070}.note{color:#888}
]]

function _M.dashboard_html()
  local parts = {}
  local function add(s)
    parts[#parts + 1] = s
  end
  add("<!DOCTYPE html><html><head><meta charset=\"utf-8\">")
  add(('<meta http-equiv="refresh" content="%d">'):format(_M.REFRESH_SECONDS))
  add("<title>mnemo: errors</title><style>" .. STYLE .. "</style></head><body>")
  add("<h1>mnemo: errors</h1>")
  add(('<p class="note">%s; refreshes every %d s</p>'):format(esc(os.date("!%Y-%m-%d %H:%M:%S UTC")),
    _M.REFRESH_SECONDS))

  add("<h2>Alerts</h2>")
  local alerts = tracking.alerts()
  if #alerts == 0 then
    add('<p class="none">no active alert</p>')
  end
  for _, a in ipairs(alerts) do
    add('<div class="alert">' .. esc(a.severity) .. ": " .. esc(a.message or a.rule) .. "</div>")
  end

  add("<h2>Last 24 hours, by error type</h2>")
  local stats, serr = tracking.stats { since_hours = 24, group_by = "error_type" }
  if stats then
    local rows = {}
    for _, g in ipairs(stats.groups) do
      rows[#rows + 1] = { g.key or "(none)", format("%d", g.count), g.first_seen, g.last_seen,
        concat(g.operations, ", ") }
    end
    add(table_html({ "error type", "count", "first seen", "last seen", "operations" }, rows))
  else
    add('<p class="alert">error log unavailable: ' .. esc(tracking.scrub(tostring(serr))) .. "</p>")
  end

  -- The stored stack trace of a row, folded (a <details> element), escaped.
  local function traceback_cell(tb)
    if type(tb) ~= "string" or tb == "" then
      return { html = '<span class="none">none</span>' }
    end
    return { html = '<details class="traceback"><summary>traceback</summary><pre>' .. esc(tb)
      .. "</pre></details>" }
  end

  add("<h2>Recent critical errors</h2>")
  local recent = tracking.recent { severity = "CRITICAL", limit = 20 }
  if recent then
    local rows = {}
    for _, r in ipairs(recent) do
      rows[#rows + 1] = { r.last_seen, r.service, r.operation or "", r.error_type, r.message,
        format("%d", r.occurrences), traceback_cell(r.traceback) }
    end
    add(table_html({ "last seen", "service", "operation", "error type", "message", "count", "traceback" }, rows))
  end

  add("<h2>Most recent errors</h2>")
  local latest = tracking.recent { limit = 20, since_hours = 24 }
  if latest then
    local rows = {}
    for _, r in ipairs(latest) do
      rows[#rows + 1] = { r.last_seen, r.severity, r.category, r.operation or "", r.error_type, r.message,
        format("%d", r.occurrences), traceback_cell(r.traceback) }
    end
    add(table_html({ "last seen", "severity", "category", "operation", "error type", "message", "count",
      "traceback" }, rows))
  end

  add("<h2>Circuit breakers</h2>")
  local rows = {}
  for _, name in ipairs(breaker.list()) do
    local m = breaker.get(name):metrics()
    rows[#rows + 1] = { m.name, m.state, format("%d", m.failures or 0), format("%d", m.rejected or 0),
      m.critical and "yes" or "no", format("%d", m.trips or 0), format("%.1f%%", (m.false_positive_rate or 0) * 100) }
  end
  local html = table_html({ "breaker", "state", "failures", "fast-fails", "critical", "trips", "false positives" },
    rows)
  -- Colour the state cells.
  for _, s in ipairs(BREAKER_STATES) do
    html = html:gsub("<td>" .. s .. "</td>", '<td class="' .. s .. '">' .. s .. "</td>")
  end
  add(html)

  add("<h2>Recent breaker failures</h2>")
  local frows = {}
  for _, name in ipairs(breaker.list()) do
    local recent = breaker.get(name):metrics().recent_failures or {}
    for i = #recent, 1, -1 do
      local f = recent[i]
      frows[#frows + 1] = { f.time, name, f.kind, f.message }
    end
  end
  add(table_html({ "time", "breaker", "kind", "message" }, frows))

  add("<h2>Timeout rates (last minute)</h2>")
  local trows, rates = {}, guard.rates()
  local names = {}
  for name in pairs(rates) do
    names[#names + 1] = name
  end
  sort(names)
  for _, name in ipairs(names) do
    local r = rates[name]
    trows[#trows + 1] = { name, format("%d", r.calls), format("%d", r.timeouts), format("%.2f%%", r.rate * 100) }
  end
  add(table_html({ "operation", "calls", "timeouts", "timeout rate" }, trows))
  add("</body></html>")
  return concat(parts)
end

local function get_dashboard()
  return 200, _M.dashboard_html(), "text/html; charset=utf-8"
end

-- Adds the routes to mnemo.http's registry (idempotent; done when this
-- module is first required, which `require "mnemo"` does).
function _M.install()
  http.route("GET /health", get_health)
  http.route("GET /v1/errors/stats", get_stats)
  http.route("GET /monitoring/errors", get_dashboard)
  http.route("GET /metrics", get_metrics)
  http.route("GET /v1/breakers", get_breakers)
  http.route("POST /v1/breakers/:name/reset", post_reset)
  return true
end

_M.install()
return _M
