-- Error tracking against a real PostgreSQL (see helpers.pg_dsn): events
-- recorded by the guard through real failures, flushed in batches,
-- aggregated, scrubbed, kept in memory while the server is down and
-- written when it is back, statistics, and alerts with a real webhook.
local mnemo = require "mnemo"
local uv = require "luv"
local cjson = require "cjson"
local h = require "helpers"
local tracking = mnemo.tracking

-- A guard configuration for these tests (each spec file sets its own).
local POLICY = {
  timeouts = { database_query = 5, error_flush = 5, alert_webhook = 2, slow = 0.02 },
  retry = { database = { attempts = 3, base = 0.01, max = 0.02, on = { "connection" } } },
  breakers = { alert_webhook = { failure_threshold = 3, recovery_timeout = 60 } },
  operations = {
    db_query = { timeout = "database_query", retry = "database", idempotent = true },
    error_flush = { timeout = "error_flush" },
    alert_webhook = { timeout = "alert_webhook", breaker = "alert_webhook" },
    slow_call = { timeout = "slow" },
  },
}

local function fresh_db()
  local dsn = h.pg_fresh_database()
  mnemo.run(function()
    local conn = assert(mnemo.pg.connect(dsn))
    mnemo.pg.migrate(conn, mnemo.pg.MIGRATIONS)
    conn:close()
  end)
  return dsn
end

local function sql(dsn, text, params)
  return mnemo.run(function()
    local conn = assert(mnemo.pg.connect(dsn))
    local rows = conn:exec(text, params)
    conn:close()
    return rows
  end)
end

-- Drives the loop until cond() is true (or fails after `seconds`).
local function wait_until(cond, seconds, what)
  mnemo.run(function()
    local deadline = mnemo.now() + (seconds or 10)
    while not cond() do
      assert(mnemo.now() < deadline, "timed out waiting for " .. (what or "a condition"))
      mnemo.sleep(0.01)
    end
  end)
end

-- A webhook receiver: a luv TCP server that answers 200 and keeps each
-- request's head and body.
local function webhook_server()
  local server = uv.new_tcp()
  assert(server:bind("127.0.0.1", 0))
  local got = {}
  server:listen(16, function()
    local client = uv.new_tcp()
    server:accept(client)
    local buf = ""
    client:read_start(function(err, chunk)
      if err or not chunk then
        if not client:is_closing() then
          client:close()
        end
        return
      end
      buf = buf .. chunk
      local head, body = buf:match("^(.-)\r\n\r\n(.*)$")
      local len = head and tonumber(head:match("[Cc]ontent%-[Ll]ength:%s*(%d+)")) or 0
      if head and #body >= len then
        client:read_stop()
        got[#got + 1] = { head = head, body = body }
        client:write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", function()
          client:close()
        end)
      end
    end)
  end)
  return {
    url = ("http://127.0.0.1:%d/hook"):format(server:getsockname().port),
    got = got,
    close = function()
      server:close()
    end,
  }
end

describe("error tracking", function()
  local lines, restore
  before_each(function()
    lines, restore = h.capture_log()
    mnemo.configure(POLICY)
    tracking.reset()
  end)
  after_each(function()
    tracking.reset()
    restore()
  end)

  it("records a real failure through the guard, flushes it, and groups it", function()
    local dsn = fresh_db()
    mnemo.run(function()
      local conn = assert(mnemo.pg.connect(dsn))
      -- A query against a table that does not exist: invalid_input, not
      -- retried, the call fails.
      local ok, err = pcall(mnemo.guard, "db_query", function()
        return conn:exec("SELECT * FROM no_such_table")
      end, { context = { repository = "sample", file_path = "/home/alice/src/a.py", correlation_id = "req-1" } })
      assert.is_false(ok)
      assert.equal("invalid_input", err.kind)
      conn:close()
      -- A timeout: the attempt's WARNING and the call's ERROR.
      ok, err = pcall(mnemo.guard, "slow_call", function()
        mnemo.sleep(1)
      end, { context = { repository = "other" } })
      assert.is_false(ok)
      assert.equal("timeout", err.kind)
    end)
    local c = tracking.counters()
    assert.equal(3, c.recorded)
    assert.equal(3, c.queue_length)

    local flushed = assert(mnemo.run(tracking.flush, { dsn = dsn }))
    assert.equal(3, flushed)
    assert.equal(0, tracking.counters().queue_length)
    assert.equal(3, tracking.counters().flushed)

    local rows = sql(dsn, [[SELECT severity, category, service, operation, error_type, message, context::text AS ctx,
      correlation_id, occurrences FROM error_logs ORDER BY operation, severity]])
    assert.equal(3, #rows)
    local db = rows[1]
    assert.equal("ERROR", db.severity)
    assert.equal("database", db.category)
    assert.equal("db_query", db.operation)
    assert.equal("InvalidInputError", db.error_type)
    assert.matches('relation "no_such_table" does not exist', db.message)
    assert.equal("req-1", db.correlation_id)
    local ctx = cjson.decode(db.ctx)
    assert.equal("sample", ctx.repository)
    assert.equal("~/src/a.py", ctx.file_path, "home directory scrubbed")
    assert.equal("42P01", ctx.sqlstate)
    assert.equal(1, ctx.attempts)
    assert.equal("ERROR", rows[2].severity)
    assert.equal("timeout", rows[2].category)
    assert.equal("TimeoutError", rows[2].error_type)
    assert.equal("slow_call exceeded its 0.02s timeout", rows[2].message)
    assert.equal("WARNING", rows[3].severity)

    local stats = assert(mnemo.run(tracking.stats, { dsn = dsn, since_hours = 1, group_by = "error_type" }))
    assert.equal("error_type", stats.group_by)
    assert.equal(2, #stats.groups)
    assert.equal("TimeoutError", stats.groups[1].key)
    assert.equal(2, stats.groups[1].count)
    assert.same({ "slow_call" }, stats.groups[1].operations)
    assert.equal("InvalidInputError", stats.groups[2].key)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$", stats.groups[2].first_seen)

    stats = assert(mnemo.run(tracking.stats, { dsn = dsn, group_by = "repository" }))
    local by = {}
    for _, g in ipairs(stats.groups) do
      by[g.key] = g.count
    end
    assert.same({ sample = 1, other = 2 }, by)
    stats = assert(mnemo.run(tracking.stats, { dsn = dsn, group_by = "category" }))
    assert.equal("timeout", stats.groups[1].key)

    local recent = assert(mnemo.run(tracking.recent, { dsn = dsn, severity = "WARNING" }))
    assert.equal(1, #recent)
    assert.equal("slow_call", recent[1].operation)
    assert.equal("other", recent[1].context.repository)
    assert.equal(2, #assert(mnemo.run(tracking.recent, { dsn = dsn, severity = "ERROR", limit = 5 })))
  end)

  it("aggregates identical events: 100 records are one row of 100, and later flushes add to it", function()
    local dsn = fresh_db()
    for i = 1, 100 do
      assert.is_true(mnemo.errors.record { severity = "ERROR", category = "embedding", service = "embedder",
        operation = "embed_batch", error_type = "HttpError", message = "status 500 from the model server",
        context = { attempt = i } })
    end
    local c = tracking.counters()
    assert.equal(100, c.recorded)
    assert.equal(99, c.aggregated)
    assert.equal(1, c.queue_length)
    local window1 = tracking.queued()[1].window_start
    assert.equal(100, assert(mnemo.run(tracking.flush, { dsn = dsn })))
    local rows = sql(dsn, "SELECT occurrences, context::text AS ctx, fingerprint FROM error_logs")
    assert.equal(1, #rows)
    assert.equal(100, rows[1].occurrences)
    assert.equal(1, cjson.decode(rows[1].ctx).attempt, "the first occurrence's context")
    assert.equal(32, #rows[1].fingerprint)

    for _ = 1, 50 do
      mnemo.errors.record { severity = "ERROR", category = "embedding", service = "embedder",
        operation = "embed_batch", error_type = "HttpError", message = "status 500 from the model server" }
    end
    local window2 = tracking.queued()[1].window_start
    assert.equal(50, assert(mnemo.run(tracking.flush, { dsn = dsn })))
    rows = sql(dsn, "SELECT sum(occurrences)::int AS n, count(*)::int AS rows FROM error_logs")
    assert.equal(150, rows[1].n)
    -- One row, unless the two flushes fell in two aggregation windows.
    assert.equal(window1 == window2 and 1 or 2, rows[1].rows)
  end)

  it("stores the correlation id of the task an error was recorded in", function()
    local dsn = fresh_db()
    mnemo.run(function()
      mnemo.correlation.with("req-1", function()
        assert.is_true(mnemo.errors.record { severity = "ERROR", category = "api", message = "table form" })
        -- The guard's own events, through a real failure.
        local ok = pcall(mnemo.guard, "slow_call", function()
          mnemo.sleep(1)
        end)
        assert.is_false(ok)
        -- A task spawned by it carries the id too.
        local done = false
        mnemo.spawn(function()
          mnemo.errors.record { severity = "ERROR", category = "api", message = "from a child task" }
          done = true
        end)
        while not done do
          mnemo.sleep(0.001)
        end
      end)
      -- An id the caller names wins over the task's.
      mnemo.correlation.with("req-2", function()
        mnemo.errors.record { severity = "ERROR", category = "api", message = "named", correlation_id = "mine" }
        pcall(mnemo.guard, "slow_call", function()
          mnemo.sleep(1)
        end, { context = { correlation_id = "ctx-id" } })
      end)
    end)
    assert(mnemo.run(tracking.flush, { dsn = dsn }))
    local rows = sql(dsn, [[SELECT message, severity, correlation_id, correlation_ids::text AS ids FROM error_logs
      ORDER BY message, severity]])
    local by = {}
    for _, r in ipairs(rows) do
      by[r.message .. "/" .. r.severity] = r
    end
    assert.equal("req-1", by["table form/ERROR"].correlation_id)
    assert.equal("{req-1}", by["table form/ERROR"].ids)
    assert.equal("req-1", by["from a child task/ERROR"].correlation_id)
    assert.equal("mine", by["named/ERROR"].correlation_id)
    -- slow_call: its WARNING (the attempt) and ERROR (the call), each
    -- once with req-1 and once with ctx-id.
    local timeout = by["slow_call exceeded its 0.02s timeout/ERROR"]
    assert.equal("req-1", timeout.correlation_id)
    assert.equal("{req-1,ctx-id}", timeout.ids)
    assert.equal("{req-1,ctx-id}", by["slow_call exceeded its 0.02s timeout/WARNING"].ids)
  end)

  it("finds every id of an aggregated group, up to the bound, and merges later flushes into the row", function()
    local dsn = fresh_db()
    local MAX = tracking.MAX_CORRELATION_IDS
    assert.equal(16, MAX)
    tracking.configure { error_tracking = { window = 3600 } }
    local function fail(id)
      mnemo.correlation.with(id, function()
        mnemo.errors.record { severity = "ERROR", category = "database", service = "api",
          operation = "db_query", error_type = "ConnectionError", message = "connection refused" }
      end)
    end
    for i = 1, MAX + 4 do
      fail("req-" .. i)
      fail("req-" .. i) -- a request that failed twice is one id
    end
    local window1 = tracking.queued()[1].window_start
    assert.equal(MAX, #tracking.queued()[1].correlation_ids)
    assert.equal(2 * (MAX + 4), assert(mnemo.run(tracking.flush, { dsn = dsn })))
    local row = sql(dsn, [[SELECT correlation_id, correlation_ids::text AS ids, correlation_ids_omitted::int AS omitted,
      occurrences::int AS n FROM error_logs]])
    assert.equal(1, #row)
    row = row[1]
    assert.equal("req-1", row.correlation_id)
    assert.equal(2 * (MAX + 4), row.n)
    assert.equal(8, row.omitted, "req-17 .. req-20, twice each")
    for i = 1, MAX + 4 do
      local stats = assert(mnemo.run(tracking.stats, { dsn = dsn, since_hours = 1, correlation_id = "req-" .. i }))
      assert.equal("req-" .. i, stats.correlation_id)
      if i <= MAX then
        assert.equal(1, #stats.groups, "req-" .. i .. " is found")
        assert.equal("ConnectionError", stats.groups[1].key)
        assert.same({ "db_query" }, stats.groups[1].operations)
      else
        assert.equal(0, #stats.groups, "req-" .. i .. " did not fit")
      end
    end
    assert.equal(0, #assert(mnemo.run(tracking.stats, { dsn = dsn, correlation_id = "nobody" })).groups)
    local recent = assert(mnemo.run(tracking.recent, { dsn = dsn, correlation_id = "req-7" }))
    assert.equal(1, #recent)
    assert.equal(MAX, #recent[1].correlation_ids)
    assert.equal("req-1", recent[1].correlation_ids[1])
    assert.equal(8, recent[1].correlation_ids_omitted)

    -- A later flush of the same event and window: the row keeps req-1 and
    -- its sample (full: the new ids are counted as omitted), one repeat
    -- of a kept id adds nothing.
    fail("req-3")
    fail("late-1")
    fail("late-2")
    local window2 = tracking.queued()[1].window_start
    assert(mnemo.run(tracking.flush, { dsn = dsn }))
    if window1 == window2 then
      row = sql(dsn, [[SELECT correlation_id, cardinality(correlation_ids) AS k,
        correlation_ids_omitted::int AS omitted FROM error_logs]])
      assert.equal(1, #row)
      assert.equal("req-1", row[1].correlation_id)
      assert.equal(MAX, row[1].k)
      assert.equal(10, row[1].omitted)
    end
  end)

  it("merges the samples of rows that are not full, distinct and bounded", function()
    local dsn = fresh_db()
    tracking.configure { error_tracking = { window = 3600 } }
    local function fail(id)
      mnemo.errors.record { severity = "WARNING", category = "cache", message = "miss", correlation_id = id }
    end
    for i = 1, 5 do
      fail("a" .. i)
    end
    local window1 = tracking.queued()[1].window_start
    assert(mnemo.run(tracking.flush, { dsn = dsn }))
    for i = 1, 15 do
      fail("b" .. i)
    end
    fail("a2")
    local window2 = tracking.queued()[1].window_start
    assert(mnemo.run(tracking.flush, { dsn = dsn }))
    if window1 ~= window2 then
      return -- two rows: nothing merged (a window boundary between them)
    end
    local row = sql(dsn, [[SELECT correlation_id, correlation_ids::text AS ids,
      correlation_ids_omitted::int AS omitted FROM error_logs]])
    assert.equal(1, #row)
    assert.equal("a1", row[1].correlation_id)
    assert.equal("{a1,a2,a3,a4,a5,b1,b2,b3,b4,b5,b6,b7,b8,b9,b10,b11}", row[1].ids)
    assert.equal(4, row[1].omitted, "b12 .. b15")
    for _, id in ipairs({ "a1", "a5", "b11" }) do
      assert.equal(1, #assert(mnemo.run(tracking.stats, { dsn = dsn, correlation_id = id })).groups)
    end
    assert.equal(0, #assert(mnemo.run(tracking.stats, { dsn = dsn, correlation_id = "b12" })).groups)
  end)

  it("merges the ids of two entries of one batch that are one row", function()
    local dsn = fresh_db()
    -- Distinct in memory (other invalid bytes), the same once written as
    -- JSON (each becomes U+FFFD): one row, both ids.
    mnemo.errors.record { message = "bad byte \255", correlation_id = "x-1" }
    mnemo.errors.record { message = "bad byte \254", correlation_id = "x-2" }
    assert.equal(2, tracking.counters().queue_length)
    assert.equal(2, assert(mnemo.run(tracking.flush, { dsn = dsn })))
    local rows = sql(dsn, [[SELECT correlation_ids::text AS ids, occurrences::int AS n FROM error_logs]])
    assert.equal(1, #rows)
    assert.equal(2, rows[1].n)
    assert.equal("{x-1,x-2}", rows[1].ids)
  end)

  it("indexes both correlation columns, and refuses a bad correlation_id parameter", function()
    local dsn = fresh_db()
    local rows = sql(dsn, [[SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'error_logs'
      AND indexname LIKE 'error_logs_correlation%' ORDER BY indexname]])
    assert.equal(2, #rows)
    assert.matches("btree %(correlation_id%)", rows[1].indexdef)
    assert.matches("gin %(correlation_ids%)", rows[2].indexdef)
    for _, bad_id in ipairs({ 42, "", string.rep("x", 257), false }) do
      local res, err = tracking.stats { dsn = dsn, correlation_id = bad_id }
      assert.is_nil(res)
      assert.equal("invalid_input", err.kind)
      assert.matches("correlation_id", tostring(err))
      res, err = tracking.recent { dsn = dsn, correlation_id = bad_id }
      assert.is_nil(res)
      assert.equal("invalid_input", err.kind)
    end
  end)

  it("deletes rows older than the retention", function()
    local dsn = fresh_db()
    mnemo.errors.record { message = "recent" }
    assert(mnemo.run(tracking.flush, { dsn = dsn }))
    sql(dsn, [[INSERT INTO error_logs (window_start, first_seen, last_seen, severity, category, service, error_type,
      message) VALUES (now() - interval '31 days', now() - interval '40 days', now() - interval '31 days', 'ERROR',
      'unknown', 'mnemo', 'Error', 'old')]])
    assert.equal(1, mnemo.run(tracking.prune, { dsn = dsn }))
    local rows = sql(dsn, "SELECT message FROM error_logs")
    assert.equal(1, #rows)
    assert.equal("recent", rows[1].message)
    assert.equal(1, tracking.counters().retention_deleted)
  end)

  it("scrubs secrets before they leave the process", function()
    local dsn = fresh_db()
    assert.is_true(mnemo.errors.record {
      severity = "CRITICAL", category = "database", service = "indexer", operation = "db_connect",
      error_type = "AuthError",
      message = "cannot connect to postgresql://mnemo:hunter2@db:5432/x (password=sekrit) as /home/bob",
      context = { dsn = "host=db password=pw123 user=u", header = "Bearer abc.def.ghi",
        url = "http://api/v1?api_key=K123&q=1", file_path = "/root/work/a.lua", n = 3 },
      traceback = "stack traceback:\n\t/home/bob/mnemo/lua/x.lua:10: in function 'connect'",
    })
    assert(mnemo.run(tracking.flush, { dsn = dsn }))
    local row = sql(dsn, "SELECT message, context::text AS ctx, traceback FROM error_logs")[1]
    local all = row.message .. row.ctx .. row.traceback
    for _, secret in ipairs({ "hunter2", "sekrit", "pw123", "abc.def.ghi", "K123", "/home/bob", "/root/" }) do
      assert.is_nil(all:find(secret, 1, true), secret .. " leaked: " .. all)
    end
    assert.equal("cannot connect to postgresql://mnemo:***@db:5432/x (password=***) as ~", row.message)
    local ctx = cjson.decode(row.ctx)
    assert.equal("host=db password=*** user=u", ctx.dsn)
    assert.equal("Bearer ***", ctx.header)
    assert.equal("http://api/v1?api_key=***&q=1", ctx.url)
    assert.equal("~/work/a.lua", ctx.file_path)
    assert.equal(3, ctx.n)
    assert.equal("stack traceback:\n\t~/mnemo/lua/x.lua:10: in function 'connect'", row.traceback)
  end)

  it("refuses a bad severity or category with the allowed list, and bad stats parameters", function()
    local ok, err = pcall(mnemo.errors.record, { severity = "FATAL", message = "x" })
    assert.is_false(ok)
    assert.matches("severity: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got FATAL", err, 1, true)
    ok, err = pcall(mnemo.errors.record, { category = "disk", message = "x" })
    assert.is_false(ok)
    assert.matches("category: expected one of database, embedding, cache, timeout, circuit_breaker, parse, "
      .. "policy, api, unknown, graph, got disk", err, 1, true)
    ok, err = pcall(mnemo.errors.record, { severity = "ERROR" })
    assert.is_false(ok)
    assert.matches("expected a message", err)
    assert.equal(0, tracking.counters().recorded)
    -- An error value gives the message and the type.
    assert.is_true(mnemo.errors.record { error = mnemo.error("rate_limited", "slow down") })
    local q = tracking.queued()[1]
    assert.equal("RateLimitedError", q.error_type)
    assert.equal("slow down", q.message)
    assert.equal("unknown", q.category)
    assert.equal("mnemo", q.service)

    for _, p in ipairs({ { group_by = "message; DROP TABLE error_logs" }, { group_by = "id" },
      { since_hours = -1 }, { since_hours = "x" }, { limit = 0 }, { limit = 2.5 } }) do
      local res, serr = tracking.stats(p)
      assert.is_nil(res)
      assert.equal("invalid_input", serr.kind)
    end
    local res, rerr = tracking.recent { severity = "FATAL" }
    assert.is_nil(res)
    assert.equal("invalid_input", rerr.kind)
    assert.matches("DEBUG, INFO, WARNING, ERROR, CRITICAL", tostring(rerr))
  end)

  it("records breaker transitions: open as CRITICAL for a critical breaker, closed as INFO", function()
    local b = mnemo.breaker("tracked_db_" .. uv.hrtime(), { failure_threshold = 1, recovery_timeout = 30,
      critical = true })
    mnemo.run(function()
      pcall(b.call, b, function()
        error(mnemo.error("connection", "refused"))
      end)
    end)
    assert.equal("open", b:state())
    b:reset()
    local seen = {}
    for _, e in ipairs(tracking.queued()) do
      seen[#seen + 1] = e.severity .. " " .. e.error_type .. " " .. e.category
    end
    assert.same({ "CRITICAL CircuitBreakerOpened circuit_breaker", "INFO CircuitBreakerClosed circuit_breaker" }, seen)
  end)

  it("never blocks or throws while PostgreSQL is down, keeps the newest, and flushes when it is back", function()
    -- A private server, to stop and start.
    local dir = os.tmpname()
    os.remove(dir)
    local function server(cmd)
      local p = io.popen(("scripts/pg-server %s %s 2>&1"):format(cmd, dir))
      local out = p:read("*a")
      p:close()
      return out:match("(postgresql://%S+)%s*$")
    end
    local base = assert(server("start"), "could not start a private PostgreSQL")
    finally(function()
      -- the flusher first: left running, it would retry a server that is gone
      if tracking.running() then
        tracking.stop()
      end
      server("stop")
      os.execute("rm -rf " .. dir)
    end)
    mnemo.run(function()
      local conn = assert(mnemo.pg.connect(base))
      mnemo.pg.migrate(conn, mnemo.pg.MIGRATIONS)
      conn:close()
    end)
    server("stop")

    tracking.configure { error_tracking = { capacity = 50 } }
    -- Recording costs the same with the server gone: no I/O on this path
    -- (the median, so that a GC pause or a busy machine does not count).
    collectgarbage()
    local took = {}
    for i = 1, 80 do
      local t0 = uv.hrtime()
      local ok, why = mnemo.errors.record { severity = "WARNING", category = "cache",
        message = "miss " .. i }
      took[i] = uv.hrtime() - t0
      assert.is_true(ok, why)
    end
    table.sort(took)
    assert.is_true(took[40] < 50e3, "a record took " .. took[40] .. " ns")
    local c = tracking.counters()
    assert.equal(50, c.queue_length)
    assert.equal(30, c.dropped)
    assert.equal("miss 31", tracking.queued()[1].message, "the newest 50 are kept")

    -- A flush fails (and says why); the batch stays queued.
    local n, err = mnemo.run(tracking.flush, { dsn = base })
    assert.is_nil(n)
    assert.equal("connection", err.kind)
    c = tracking.counters()
    assert.equal(1, c.flush_failures)
    assert.equal(50, c.queue_length)
    -- The guard recorded the failed flush itself: one more event, so one
    -- more of the oldest went.
    assert.equal(31, c.dropped)
    assert.equal(0, c.flushed)

    -- The background flusher, while the server is still down: it backs
    -- off, and writes as soon as the server is back.
    assert.is_true(tracking.start { dsn = base, interval = 0.05, max_backoff = 0.2 })
    wait_until(function()
      return tracking.counters().flush_failures >= 3
    end, 10, "failed flushes")
    assert.equal(50, tracking.counters().queue_length)
    assert.truthy(server("start"))
    wait_until(function()
      return tracking.counters().queue_length == 0 and tracking.counters().flushed >= 50
    end, 20, "the flush after the restart")
    local rows = sql(base, [[SELECT count(*)::int AS n, sum(occurrences)::int AS events,
      count(*) FILTER (WHERE message LIKE 'miss %')::int AS misses FROM error_logs]])
    assert.equal(49, rows[1].misses)
    assert.equal(tracking.counters().flushed, rows[1].events)
    local c2 = tracking.counters()
    assert.equal(c2.recorded, c2.flushed + c2.dropped + c2.pending)
    assert.is_true(tracking.running())
    tracking.stop()
    assert.is_false(tracking.running())
  end)

  it("fires an alert once per rule until it clears, with a POST to the webhook", function()
    local dsn = fresh_db()
    local hook = webhook_server()
    finally(hook.close)
    tracking.configure { alerts = { critical = 0, error = 2, warning = false, window = 3600, webhook = hook.url } }
    mnemo.errors.record { severity = "CRITICAL", category = "database", message = "database breaker open" }
    for i = 1, 3 do
      mnemo.errors.record { severity = "ERROR", category = "parse", message = "parse failed " .. i }
    end
    -- Three ERRORs stored, a fourth still queued: both count.
    assert(mnemo.run(tracking.flush, { dsn = dsn }))
    mnemo.errors.record { severity = "ERROR", category = "parse", message = "parse failed 4" }

    -- (Background tasks of earlier specs may add events of their own
    -- meanwhile: counts are at least the ones recorded here.)
    local fired = mnemo.run(tracking.check_alerts, { dsn = dsn })
    assert.equal(2, #fired)
    local active = tracking.alerts()
    assert.equal(2, #active)
    assert.equal("CRITICAL", active[1].severity)
    assert.is_true(active[1].count >= 1)
    assert.equal("ERROR", active[2].severity)
    assert.is_true(active[2].count >= 4)
    assert.equal(2, active[2].threshold)
    assert.equal(2, #hook.got)
    local bodies = {}
    for _, req in ipairs(hook.got) do
      assert.matches("^POST /hook HTTP/1.1", req.head)
      local doc = cjson.decode(req.body)
      bodies[doc.severity] = doc
    end
    assert.equal("critical", bodies.CRITICAL.rule)
    assert.equal(active[2].count, bodies.ERROR.count)
    assert.is_nil(bodies.ERROR.notified)
    assert.equal(2, #h.events(lines, "alert"))

    -- Still above the thresholds: nothing new, no second POST.
    mnemo.errors.record { severity = "ERROR", category = "parse", message = "parse failed 5" }
    assert.equal(0, #mnemo.run(tracking.check_alerts, { dsn = dsn }))
    assert.equal(2, #hook.got)
    assert.equal(2, #h.events(lines, "alert"))
    assert.is_true(tracking.alerts()[2].count >= 5)

    -- Raised thresholds: both clear, and may fire again later.
    assert.equal(0, #mnemo.run(tracking.check_alerts, { dsn = dsn, critical = 1000, error = 1000 }))
    assert.same({}, tracking.alerts())
    assert.equal(2, #h.events(lines, "alert_cleared"))
    assert.equal(1, #mnemo.run(tracking.check_alerts, { dsn = dsn, error = 1000 }))
    assert.equal(3, #hook.got)
    local c = tracking.counters()
    assert.equal(3, c.alerts_fired)
    assert.equal(3, c.webhook_sent)
    assert.equal(1, c.alerts_active)
  end)

  it("keeps an alert to notify when the webhook is down, and tries again at the next check", function()
    local hook = webhook_server()
    local url = hook.url
    hook.close()
    mnemo.run(function()
      mnemo.sleep(0.01) -- the listening socket is closed
    end)
    tracking.configure { alerts = { critical = 0, error = false, warning = false, webhook = url } }
    mnemo.errors.record { severity = "CRITICAL", message = "down" }
    -- No DSN: the queued events alone.
    local fired = mnemo.run(tracking.check_alerts, { dsn = false })
    assert.equal(1, #fired)
    assert.equal(1, tracking.counters().webhook_failures)
    assert.is_false(tracking.alerts()[1].notified)
    mnemo.run(tracking.check_alerts, { dsn = false })
    assert.equal(2, tracking.counters().webhook_failures)
    assert.equal(1, tracking.counters().alerts_fired)
  end)

  it("takes its settings from the policy in force; explicit ones win", function()
    local path = h.write_file(h.tmpname(".lua"), [[return {
      error_tracking = { capacity = 7, window = 5, service = "worker" },
      alerts = { error = 3, warning = false } }]])
    assert(mnemo.policy.load(path))
    finally(function()
      mnemo.policy._reset()
      os.remove(path)
    end)
    tracking.configure {}
    local c = tracking.counters()
    assert.equal(7, c.capacity)
    assert.equal(5, c.window)
    assert.equal(3, tracking.settings().alerts.error)
    assert.is_false(tracking.settings().alerts.warning)
    assert.equal(0, tracking.settings().alerts.critical, "a default")
    mnemo.errors.record { message = "x" }
    assert.equal("worker", tracking.queued()[1].service)
    tracking.configure { error_tracking = { capacity = 9 } }
    assert.equal(9, tracking.counters().capacity)
  end)

  it("validates its policy sections", function()
    local ok, problems = require("mnemo.config").validate {
      error_tracking = { capacity = 0, window = -1, batch = 1.5, colour = "red" },
      alerts = { critical = -1, error = "many", webhook = "ftp://x", interval = 0 },
    }
    assert.is_nil(ok)
    local text = table.concat(problems, "\n")
    assert.matches("error_tracking.capacity: expected integer in [1, 10000000], got 0", text, 1, true)
    assert.matches("error_tracking.window: expected a number of seconds", text, 1, true)
    assert.matches("error_tracking.batch: expected integer in [1, 10000], got 1.5", text, 1, true)
    assert.matches('error_tracking: unknown key "colour"', text, 1, true)
    assert.matches("alerts.critical: expected integer >= 0 (alert above it) or false, got -1", text, 1, true)
    assert.matches('alerts.error: expected integer >= 0 (alert above it) or false, got "many"', text, 1, true)
    assert.matches('alerts.webhook: expected an http:// URL, got "ftp://x"', text, 1, true)
    assert.matches("alerts.interval: expected a number of seconds > 0, got 0", text, 1, true)
    -- The shipped policy is valid and has both sections.
    local policy = assert(mnemo.policy.check("policies/default.lua"))
    assert.equal(10000, policy.error_tracking.capacity)
    assert.equal(10, policy.alerts.error)
    assert.is_nil(tracking.start { dsn = "postgresql://x@127.0.0.1:1/x", colour = "red" })
  end)
  -- ---- error_logs partitioned by day (db/migrations/007) ----

  local function partitions(dsn)
    local out = {}
    for _, r in ipairs(sql(dsn, [[SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'error_logs'::regclass ORDER BY 1]])) do
      out[#out + 1] = r.relname
    end
    return out
  end
  local function day_name(dsn, offset_days)
    return sql(dsn, "SELECT 'error_logs_p' || to_char((now() AT TIME ZONE 'UTC')::date + $1::int, 'YYYYMMDD') AS n",
      { tostring(offset_days) })[1].n
  end
  local function has(list, v)
    for _, x in ipairs(list) do
      if x == v then
        return true
      end
    end
    return false
  end

  it("stores error_logs partitioned by day: rows land in their day's partition, the rest in DEFAULT", function()
    local dsn = fresh_db()
    assert.equal("p", sql(dsn, "SELECT relkind FROM pg_class WHERE oid = 'error_logs'::regclass")[1].relkind)
    local parts = partitions(dsn)
    for d = 0, 2 do
      assert.is_true(has(parts, day_name(dsn, d)), day_name(dsn, d) .. " in " .. table.concat(parts, " "))
    end
    assert.is_true(has(parts, "error_logs_default"))
    mnemo.errors.record { message = "today's" }
    assert.equal(1, assert(mnemo.run(tracking.flush, { dsn = dsn })))
    local row = sql(dsn, "SELECT tableoid::regclass::text AS part FROM error_logs WHERE message = 'today''s'")[1]
    assert.equal(day_name(dsn, 0), row.part)
    -- No partition for that day: DEFAULT. Making it moves the row there.
    sql(dsn, [[INSERT INTO error_logs (window_start, severity, category, service, error_type, message)
      VALUES (now() + interval '6 days', 'ERROR', 'unknown', 'mnemo', 'Error', 'later')]])
    assert.equal("error_logs_default",
      sql(dsn, "SELECT tableoid::regclass::text AS part FROM error_logs WHERE message = 'later'")[1].part)
    assert.equal(1, sql(dsn, [[SELECT error_logs_create_partitions(((now() + interval '6 days') AT TIME ZONE
      'UTC')::date, 1) AS n]])[1].n)
    assert.equal(day_name(dsn, 6),
      sql(dsn, "SELECT tableoid::regclass::text AS part FROM error_logs WHERE message = 'later'")[1].part)
    assert.equal(0, #sql(dsn, "SELECT 1 FROM error_logs_default"))
    -- The GIN index on context answers containment.
    local idx = sql(dsn, "SELECT indexdef FROM pg_indexes WHERE indexname = 'error_logs_context'")[1]
    assert.matches("gin %(context%)", idx.indexdef)
  end)

  it("still aggregates on the partitioned table: one row per event and window, in the same partition", function()
    local dsn = fresh_db()
    for _ = 1, 3 do
      for _ = 1, 10 do
        mnemo.errors.record { severity = "ERROR", category = "database", message = "same" }
      end
      assert.equal(10, assert(mnemo.run(tracking.flush, { dsn = dsn })))
    end
    local rows = sql(dsn, [[SELECT sum(occurrences)::int AS n, count(DISTINCT window_start)::int AS windows,
      count(*)::int AS rows FROM error_logs]])
    assert.equal(30, rows[1].n)
    assert.equal(rows[1].windows, rows[1].rows, "one row per window")
  end)

  it("has the flusher make today's and the next 2 days' partitions", function()
    local dsn = fresh_db()
    local d1, d2 = day_name(dsn, 1), day_name(dsn, 2)
    sql(dsn, ("DROP TABLE %s, %s"):format(d1, d2))
    assert.is_false(has(partitions(dsn), d1))
    mnemo.errors.record { message = "x" }
    assert(tracking.start { dsn = dsn, interval = 0.02 })
    wait_until(function()
      return #sql(dsn, "SELECT 1 FROM error_logs") == 1
    end, 10, "the flush")
    tracking.stop()
    local parts = partitions(dsn)
    assert.is_true(has(parts, d1) and has(parts, d2), table.concat(parts, " "))
    assert.equal(2, tracking.counters().partitions_created)
  end)

  it("drops whole partitions past the retention, deletes only from the one that straddles it", function()
    local dsn = fresh_db()
    mnemo.errors.record { message = "recent" }
    assert(mnemo.run(tracking.flush, { dsn = dsn }))
    -- Three old days (40 to 38 days ago), and the day 30 days ago: the
    -- cutoff (now - 30 days) falls inside it.
    assert.equal(3, sql(dsn, [[SELECT error_logs_create_partitions(((now() - interval '40 days') AT TIME ZONE
      'UTC')::date, 3) AS n]])[1].n)
    assert.equal(1, sql(dsn, [[SELECT error_logs_create_partitions(((now() - interval '30 days') AT TIME ZONE
      'UTC')::date, 1) AS n]])[1].n)
    local straddling = day_name(dsn, -30)
    local function insert(age, message)
      sql(dsn, [[INSERT INTO error_logs (window_start, severity, category, service, error_type, message)
        VALUES (now() - $1::interval, 'ERROR', 'unknown', 'mnemo', 'Error', $2)]], { age, message })
    end
    for i = 1, 5 do
      insert(("%d days"):format(38 + i % 3), "old " .. i)
    end
    insert("30 days 1 minute", "just past")
    insert("29 days 23 hours", "just kept")
    insert("100 days", "in default")
    local before = partitions(dsn)
    assert.equal(4 + 4, #before, table.concat(before, " ")) -- 3 ahead, default, 3 old, the straddling one
    local deleted, dropped = mnemo.run(tracking.prune, { dsn = dsn })
    assert.equal(3, dropped)
    assert.equal(2, deleted, "'just past' (if its day is the straddling one) and 'in default'")
    local after = partitions(dsn)
    assert.equal(5, #after, table.concat(after, " "))
    assert.is_true(has(after, straddling))
    for _, old in ipairs(before) do
      if not has(after, old) then
        assert.is_true(old < straddling, old .. " dropped")
      end
    end
    local kept = {}
    for _, r in ipairs(sql(dsn, "SELECT message FROM error_logs ORDER BY message")) do
      kept[#kept + 1] = r.message
    end
    assert.same({ "just kept", "recent" }, kept)
    assert.equal(2, tracking.counters().retention_deleted)
    assert.equal(3, tracking.counters().retention_partitions_dropped)
  end)

  it("migrates an unpartitioned error_logs holding rows, keeping them, once", function()
    local dsn = h.pg_fresh_database()
    -- The schema before 007: its migrations only.
    local old_dir = os.tmpname()
    os.remove(old_dir)
    assert(os.execute("mkdir -p " .. old_dir))
    for _, f in ipairs { "001_core.sql", "002_instance.sql", "003_error_tracking.sql", "004_store_file.sql",
      "005_error_correlation.sql" } do
      assert(os.execute(("cp %s/%s %s/"):format(mnemo.pg.MIGRATIONS, f, old_dir)))
    end
    mnemo.run(function()
      local conn = assert(mnemo.pg.connect(dsn))
      mnemo.pg.migrate(conn, old_dir)
      conn:close()
    end)
    os.execute("rm -rf " .. old_dir)
    assert.equal("r", sql(dsn, "SELECT relkind FROM pg_class WHERE oid = 'error_logs'::regclass")[1].relkind)
    -- Rows of the old shape: one from before 003 (no fingerprint, no
    -- window), aggregated ones of today and of 10 days ago, with a sample.
    sql(dsn, [[INSERT INTO error_logs (first_seen, last_seen, occurrences, severity, category, service,
      error_type, message, context, traceback) VALUES (now() - interval '3 days', now() - interval '3 days', 4,
      'ERROR', 'database', 'indexer', 'OldError', 'before 003', '{"repository": "r"}', 'tb')]])
    sql(dsn, [[INSERT INTO error_logs (fingerprint, window_start, first_seen, last_seen, occurrences, severity,
      category, service, error_type, message, correlation_id, correlation_ids)
      VALUES ('f1', date_trunc('minute', now()), now(), now(), 7, 'CRITICAL', 'cache', 'mnemo', 'E', 'today',
        'req-1', '{req-1,req-2}'),
      ('f2', date_trunc('minute', now() - interval '10 days'), now() - interval '10 days',
        now() - interval '10 days', 2, 'WARNING', 'api', 'mnemo', 'E', 'ten days ago', NULL, '{}')]])
    local before = sql(dsn, [[SELECT id, fingerprint, window_start::text AS ws, first_seen::text AS fs,
      occurrences::int AS n, message, context::text AS ctx, traceback, correlation_ids::text AS ids
      FROM error_logs ORDER BY id]])
    assert.equal(3, #before)

    local applied = mnemo.run(function()
      local conn = assert(mnemo.pg.connect(dsn))
      local a = mnemo.pg.migrate(conn, mnemo.pg.MIGRATIONS)
      conn:close()
      return a
    end)
    assert.is_true(has(applied, "007_error_logs_partitioned.sql"))
    assert.equal("p", sql(dsn, "SELECT relkind FROM pg_class WHERE oid = 'error_logs'::regclass")[1].relkind)
    local after = sql(dsn, [[SELECT id, fingerprint, window_start::text AS ws, first_seen::text AS fs,
      occurrences::int AS n, message, context::text AS ctx, traceback, correlation_ids::text AS ids,
      tableoid::regclass::text AS part FROM error_logs ORDER BY id]])
    assert.equal(3, #after)
    for i, b in ipairs(before) do
      local a = after[i]
      for _, k in ipairs { "id", "fingerprint", "fs", "n", "message", "ctx", "traceback", "ids" } do
        assert.same(b[k], a[k], k)
      end
    end
    assert.equal(before[1].fs, after[1].ws, "a row from before 003 takes its first_seen as its window")
    assert.equal(before[2].ws, after[2].ws)
    assert.equal(day_name(dsn, -3), after[1].part)
    assert.equal(day_name(dsn, 0), after[2].part)
    assert.equal(day_name(dsn, -10), after[3].part)
    assert.is_nil(sql(dsn, "SELECT to_regclass('error_logs_unpartitioned') AS t")[1].t)
    -- Every index of the old table, on the parent; the keys hold window_start.
    local idx = {}
    for _, r in ipairs(sql(dsn, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'error_logs'")) do
      idx[r.indexname] = r.indexdef
    end
    for _, name in ipairs { "error_logs_pkey", "error_logs_fingerprint_window", "error_logs_last_seen",
      "error_logs_type", "error_logs_operation", "error_logs_severity", "error_logs_service", "error_logs_category",
      "error_logs_repository", "error_logs_correlation_id", "error_logs_correlation_ids", "error_logs_context" } do
      assert.is_not_nil(idx[name], name)
    end
    assert.matches("%(id, window_start%)", idx.error_logs_pkey)
    -- New rows take ids after the old ones; the upsert works on the table.
    mnemo.errors.record { message = "after the migration" }
    assert.equal(1, assert(mnemo.run(tracking.flush, { dsn = dsn })))
    local new = sql(dsn, "SELECT id FROM error_logs WHERE message = 'after the migration'")[1]
    assert.is_true(new.id > before[3].id)
    -- The migration's text run again changes nothing.
    local f = assert(io.open(mnemo.pg.MIGRATIONS .. "/007_error_logs_partitioned.sql"))
    local text = f:read("*a")
    f:close()
    sql(dsn, text)
    assert.equal(4, #sql(dsn, "SELECT 1 FROM error_logs"))
    assert.same({}, mnemo.run(function()
      local conn = assert(mnemo.pg.connect(dsn))
      local a = mnemo.pg.migrate(conn, mnemo.pg.MIGRATIONS)
      conn:close()
      return a
    end))
  end)

  -- ---- the summary grouped by several fields ----

  it("groups the summary by several fields at once, with count, first and last occurrence", function()
    local dsn = fresh_db()
    local function rec(category, severity, n, service)
      for _ = 1, n do
        mnemo.errors.record { category = category, severity = severity, service = service or "indexer",
          error_type = "E_" .. category, message = category .. " " .. severity }
      end
    end
    rec("database", "ERROR", 5)
    rec("database", "CRITICAL", 2)
    rec("cache", "ERROR", 3)
    rec("cache", "ERROR", 1, "api")
    assert(mnemo.run(tracking.flush, { dsn = dsn }))
    local stats = assert(mnemo.run(tracking.stats, { dsn = dsn, group_by = "category,severity" }))
    assert.equal("category,severity", stats.group_by)
    assert.same({ "category", "severity" }, stats.fields)
    assert.equal(3, #stats.groups)
    local g = stats.groups[1]
    assert.equal("database", g.category)
    assert.equal("ERROR", g.severity)
    assert.equal(5, g.count)
    assert.is_nil(g.key)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", g.first_seen)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", g.last_seen)
    assert.equal("cache", stats.groups[2].category)
    assert.equal(4, stats.groups[2].count)
    -- All four, as a list; and the view.
    stats = assert(mnemo.run(tracking.stats, { dsn = dsn,
      group_by = { "category", "service", "error_type", "severity" } }))
    assert.equal(4, #stats.groups)
    assert.equal("category,service,error_type,severity", stats.group_by)
    for _, x in ipairs(stats.groups) do
      assert.is_string(x.category)
      assert.is_string(x.service)
      assert.is_string(x.error_type)
      assert.is_string(x.severity)
    end
    local view = sql(dsn, [[SELECT count::int AS n FROM error_summary
      WHERE category = 'cache' AND service = 'api' AND severity = 'ERROR']])
    assert.equal(1, view[1].n)
    -- Hostile or wrong fields: refused, nothing run, the text not echoed.
    for _, bad_value in ipairs { "category,severity; DROP TABLE error_logs", "category,<script>", "category,",
      "category,category", "message", "", {} } do
      local res, err = tracking.stats { dsn = dsn, group_by = bad_value }
      assert.is_nil(res, tostring(bad_value))
      assert.equal("invalid_input", err.kind)
      assert.matches("stats: group_by: ", tostring(err))
      assert.is_nil(tostring(err):find("DROP", 1, true))
      assert.is_nil(tostring(err):find("<script>", 1, true))
    end
    local _, err = tracking.stats { dsn = dsn, group_by = "category,sevrity" }
    assert.matches('unknown field "sevrity" (expected one of error_type, operation, service, category, severity, '
      .. "repository or a comma list of them)", tostring(err), 1, true)
    assert.equal(1, #sql(dsn, "SELECT 1 FROM pg_tables WHERE tablename = 'error_logs'"))
  end)
end)

-- The rate rules of the alerts section: an operation's timeout rate over
-- the guard's window, a breaker's false-positive rate.
describe("rate alerts", function()
  local restore
  before_each(function()
    local _
    _, restore = h.capture_log()
    tracking.reset()
    mnemo.clock.virtual(true)
  end)
  after_each(function()
    mnemo.clock.virtual(false)
    tracking.reset()
    restore()
  end)

  it("validates the thresholds, naming the field", function()
    for _, bad in ipairs { { timeout_rate = 1.5 }, { timeout_rate = -0.1 }, { timeout_rate = "1%" },
      { breaker_false_positive_rate = 2 }, { breaker_false_positive_rate = true },
      { timeout_rate_min_calls = 0 }, { timeout_rate_min_calls = 2.5 } } do
      local key = next(bad)
      local ok, err = pcall(tracking.configure, { alerts = bad })
      assert.is_false(ok, key)
      assert.matches("alerts." .. key, tostring(err), 1, true)
    end
    local ok, problems = require("mnemo.config").validate { alerts = { timeout_rate = 0.01, breaker_false_positive_rate = 0.05,
      timeout_rate_min_calls = 10 } }
    assert.is_true(ok, problems and table.concat(problems, "; "))
    assert.is_true((require("mnemo.config").validate { alerts = { timeout_rate = false, breaker_false_positive_rate = false } }))
  end)

  local function overrun()
    mnemo.clock.advance(2)
    return true
  end
  local function ok_fn()
    return true
  end

  it("fires on an operation's timeout rate above the threshold, from enough calls, and clears", function()
    local op = "rate_op_" .. tostring(os.time()) .. math.random(1e6)
    local breaker = "rate_br_" .. math.random(1e6)
    mnemo.configure { breakers = { [breaker] = { failure_threshold = 1, recovery_timeout = 1 } },
      operations = { [op] = { timeout = 1, breaker = breaker } } }
    tracking.configure { alerts = { critical = false, error = false, warning = false, timeout_rate = 0.1,
      timeout_rate_min_calls = 5, breaker_false_positive_rate = 0.05 } }
    mnemo.run(function()
      mnemo.try(op, ok_fn)
      mnemo.try(op, overrun) -- 1 of 2: above, but too few calls; it also trips the breaker
    end)
    local fired = mnemo.run(tracking.check_alerts, { dsn = false })
    for _, a in ipairs(fired) do
      assert.not_equal("timeout_rate", a.rule)
    end
    mnemo.run(function()
      mnemo.clock.advance(1)
      for _ = 1, 3 do
        mnemo.try(op, ok_fn) -- the first one: the trip's trial succeeded, a false positive
      end
    end)
    fired = mnemo.run(tracking.check_alerts, { dsn = false })
    local by = {}
    for _, a in ipairs(fired) do
      by[a.rule] = a
    end
    assert.is_not_nil(by.timeout_rate, cjson.encode(fired))
    assert.equal(op, by.timeout_rate.operation)
    assert.near(0.2, by.timeout_rate.rate, 1e-9)
    assert.equal("WARNING", by.timeout_rate.severity)
    assert.is_not_nil(by.breaker_false_positive_rate, cjson.encode(fired))
    assert.equal(breaker, by.breaker_false_positive_rate.breaker)
    assert.equal(1, by.breaker_false_positive_rate.rate)
    local listed = {}
    for _, a in ipairs(tracking.alerts()) do
      listed[a.rule .. ":" .. (a.operation or a.breaker or "")] = true
    end
    assert.is_true(listed["timeout_rate:" .. op])
    assert.is_true(listed["breaker_false_positive_rate:" .. breaker])
    -- Fires once while active.
    assert.equal(0, #mnemo.run(tracking.check_alerts, { dsn = false }))
    -- Successes bring the rate down: cleared.
    mnemo.run(function()
      for _ = 1, 20 do
        mnemo.try(op, ok_fn)
      end
    end)
    local cleared = tracking.counters().alerts_cleared or 0
    mnemo.run(tracking.check_alerts, { dsn = false })
    for _, a in ipairs(tracking.alerts()) do
      assert.not_equal("timeout_rate", a.rule)
    end
    -- The rule switched off clears the other.
    tracking.configure { alerts = { critical = false, error = false, warning = false,
      breaker_false_positive_rate = false } }
    mnemo.run(tracking.check_alerts, { dsn = false })
    assert.same({}, tracking.alerts())
    assert.is_true(tracking.counters().alerts_cleared >= cleared)
    mnemo.breaker.remove(breaker)
  end)
end)
