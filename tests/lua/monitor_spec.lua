-- The HTTP face against real servers: errors recorded through real
-- failures, then /v1/errors/stats, /health, /metrics, the breaker reset and
-- the dashboard read with real clients (curl, headless Chromium).
local mnemo = require "mnemo"
local h = require "helpers"
local cjson = require "cjson"
local tracking = require "mnemo.tracking"
local monitor = require "mnemo.monitor"

local function curl(args)
  local full = { "curl", "-s", "-S", "--max-time", "10", "-w", "\n%{http_code}" }
  for _, a in ipairs(args) do
    full[#full + 1] = a
  end
  local r = h.spawn(full, { timeout = 15 })
  local body, code = r.stdout:match("^(.*)\n(%d+)$")
  return tonumber(code), body, r
end

local function json(body)
  return assert(cjson.decode(body), body)
end

describe("the HTTP face", function()
  local dsn, server, url, restore_env, restore_log
  local saved = {}
  before_each(function()
    local _
    _, restore_log = h.capture_log()
  end)
  after_each(function()
    restore_log()
  end)

  local function setenv(name, value)
    saved[name] = saved[name] or { os.getenv(name) }
    -- luv sets the process environment (os.getenv reads it).
    if value == nil then
      mnemo.uv.os_unsetenv(name)
    else
      mnemo.uv.os_setenv(name, value)
    end
  end

  setup(function()
    dsn = h.pg_migrated_database()
    setenv("MNEMO_PG_DSN", dsn)
    setenv("MNEMO_ADMIN_TOKEN", "s3cret-token")
    mnemo.policy._reset()
    -- The fast policy, but a database breaker that stays open while the
    -- test looks at it (curl takes longer than its 0.5 s recovery).
    local f = assert(io.open("tests/fixtures/policies/fast.lua"))
    local text = f:read("*a"):gsub("(database = { failure_threshold = 5, recovery_timeout = )0.5", "%130")
    f:close()
    local policy_file = h.tmpname(".lua")
    h.write_file(policy_file, text)
    assert(mnemo.policy.load(policy_file))
    tracking.reset()
    monitor.install()
    server = mnemo.run(function()
      return assert(mnemo.http.serve { addr = "127.0.0.1:0" })
    end)
    url = server:url()
    restore_env = function()
      for name, v in pairs(saved) do
        setenv(name, v[1])
      end
    end
  end)
  teardown(function()
    mnemo.run(function()
      server:close()
    end)
    restore_env()
    tracking.reset()
    mnemo.policy._reset()
  end)

  it("records a real query failure and a timeout, and reports them grouped by operation", function()
    mnemo.run(function()
      local c = assert(mnemo.pg.connect(dsn))
      pcall(mnemo.guard, "db_query", function()
        return c:exec("SELECT * FROM no_such_table")
      end)
      c:close()
      pcall(mnemo.timeout, { seconds = 0.01, operation = "slow_thing" }, mnemo.sleep, 1)
      mnemo.errors.record { severity = "CRITICAL", category = "database", service = "indexer",
        operation = "db_write", error_type = "DiskFull",
        message = "could not write to /home/alice/pg with postgresql://mnemo:hunter2@db/x" }
      assert.truthy(tracking.flush {})
    end)
    local code, body = mnemo.run(curl, { url .. "/v1/errors/stats?since_hours=1&group_by=operation" })
    assert.equal(200, code, body)
    local stats = json(body)
    assert.equal("operation", stats.group_by)
    local by = {}
    for _, g in ipairs(stats.groups) do
      by[g.key or "(none)"] = g
    end
    assert.is_not_nil(by.db_query, body)
    assert.is_true(by.db_query.count >= 1)
    -- The rates ride along (the guard's window, not the database).
    assert.is_true(stats.rates.operations.db_query.calls >= 1, body)
    assert.equal("number", type(stats.rates.operations.db_query.timeout_rate))
    assert.equal(0, stats.rates.breakers.database.trips_decided)
    assert.is_not_nil(by.db_write, body)
    code, body = mnemo.run(curl, { url .. "/v1/errors/stats?group_by=error_type" })
    assert.equal(200, code)
    assert.matches("DiskFull", body)
    -- What left the process is scrubbed.
    assert.not_matches("hunter2", body)
    local rows = h.sql(dsn, "SELECT message FROM error_logs WHERE error_type = 'DiskFull'")
    assert.equal("could not write to ~/pg with postgresql://mnemo:***@db/x", rows[1].message)
  end)

  it("refuses bad parameters with 400 and a JSON error, never interpolating them", function()
    for _, q in ipairs { "group_by=message;DROP%20TABLE%20error_logs", "since_hours=abc", "since_hours=-1",
      "group_by=" } do
      local code, body = mnemo.run(curl, { url .. "/v1/errors/stats?" .. q })
      assert.equal(400, code, q .. " -> " .. body)
      assert.equal("bad_request", json(body).error)
    end
    assert.equal(1, #h.sql(dsn, "SELECT 1 FROM pg_tables WHERE tablename = 'error_logs'"))
    -- A correlation id: at most 64 characters of A-Z a-z 0-9 . _ : -
    for _, q in ipairs { "correlation_id=", "correlation_id=" .. string.rep("a", 65), "correlation_id=a%22b",
      "correlation_id=a%0Ab", "correlation_id=%3Cscript%3E", "correlation_id=a%20b", "correlation_id=caf%C3%A9" } do
      local code, body = mnemo.run(curl, { url .. "/v1/errors/stats?" .. q })
      assert.equal(400, code, q .. " -> " .. body)
      local err = json(body)
      assert.equal("bad_request", err.error)
      assert.matches("correlation_id: expected 1 to 64 characters of A%-Z a%-z 0%-9 %. _ : %-", err.message)
      assert.not_matches("script", body)
    end
    local code = mnemo.run(curl, { url .. "/v1/errors/stats?correlation_id=" .. string.rep("Az09._:-", 8) })
    assert.equal(200, code)
  end)

  it("finds a request's errors by ?correlation_id=, also the later requests of an aggregated group", function()
    -- A route that fails the same way for every request: one aggregated
    -- group, whose first id is the first request's.
    mnemo.http.route("GET /test/fail", function()
      mnemo.errors.record { severity = "ERROR", category = "api", service = "monitor_spec", operation = "test_fail",
        error_type = "TestFailure", message = "the test route failed" }
      return 500, { failed = true }
    end)
    finally(function()
      mnemo.http.routes["GET /test/fail"] = nil
    end)
    local MAX = tracking.MAX_CORRELATION_IDS
    for i = 1, MAX + 1 do
      local code = mnemo.run(curl, { "-H", "X-Request-Id: mon-req-" .. i, url .. "/test/fail" })
      assert.equal(500, code)
    end
    mnemo.run(function()
      assert.truthy(tracking.flush {})
    end)
    local rows = h.sql(dsn, [[SELECT correlation_id, occurrences::int AS n FROM error_logs
      WHERE error_type = 'TestFailure']])
    assert.equal(1, #rows)
    assert.equal("mon-req-1", rows[1].correlation_id)
    -- The 2nd .. 16th requests are found too; the 17th did not fit.
    for i = 1, MAX do
      local code, body = mnemo.run(curl, { url .. "/v1/errors/stats?since_hours=1&correlation_id=mon-req-" .. i })
      assert.equal(200, code, body)
      local stats = json(body)
      assert.equal("mon-req-" .. i, stats.correlation_id)
      assert.equal(1, #stats.groups, body)
      assert.equal("TestFailure", stats.groups[1].key)
      assert.equal(MAX + 1, stats.groups[1].count)
    end
    local code, body = mnemo.run(curl, { url .. "/v1/errors/stats?correlation_id=mon-req-" .. (MAX + 1)
      .. "&group_by=operation" })
    assert.equal(200, code)
    assert.same({}, json(body).groups)
    assert.equal(1, h.sql(dsn, [[SELECT correlation_ids_omitted::int AS n FROM error_logs
      WHERE error_type = 'TestFailure']])[1].n)
  end)

  it("says healthy, then unhealthy (503) when a critical breaker is open, and lets an admin reset it", function()
    local code, body = mnemo.run(curl, { url .. "/health" })
    local health = json(body)
    assert.equal(200, code, body)
    assert.equal("up", health.services.postgresql.status)
    assert.same({}, health.critical_circuits_open)
    assert.matches('"critical_circuits_open":%[%]', body)
    assert.equal(1, health.policy.generation)
    -- Open the critical database breaker through real failures.
    mnemo.run(function()
      for _ = 1, 6 do
        pcall(mnemo.guard, "db_query", function()
          error(mnemo.error("connection", "refused"))
        end)
      end
    end)
    assert.equal("open", mnemo.breaker.get("database"):state())
    code, body = mnemo.run(curl, { url .. "/health" })
    health = json(body)
    assert.equal(503, code)
    assert.equal("unhealthy", health.status)
    assert.same({ "database" }, health.critical_circuits_open)
    assert.equal("open", health.circuit_breakers.database.state)

    code = mnemo.run(curl, { "-X", "POST", url .. "/v1/breakers/database/reset" })
    assert.equal(401, code)
    code = mnemo.run(curl, { "-X", "POST", "-H", "Authorization: Bearer wrong-token!", url
      .. "/v1/breakers/database/reset" })
    assert.equal(401, code)
    code = mnemo.run(curl, { "-X", "POST", "-H", "Authorization: Bearer s3cret-token", url
      .. "/v1/breakers/nope/reset" })
    assert.equal(404, code)
    code, body = mnemo.run(curl, { "-X", "POST", "-H", "Authorization: Bearer s3cret-token", url
      .. "/v1/breakers/database/reset" })
    assert.equal(200, code, body)
    assert.equal("open", json(body).was)
    assert.equal("closed", mnemo.breaker.get("database"):state())
    code = mnemo.run(curl, { url .. "/health" })
    assert.equal(200, code)
  end)

  it("says degraded while Redis does not answer, and why", function()
    local url = os.getenv("MNEMO_REDIS_URL")
    setenv("MNEMO_REDIS_URL", "redis://127.0.0.1:1")
    local code, body = mnemo.run(curl, { server:url() .. "/health" })
    setenv("MNEMO_REDIS_URL", url)
    local health = json(body)
    assert.equal(200, code, body)
    assert.equal("degraded", health.status)
    assert.equal("down", health.services.redis.status)
    assert.matches("refused", health.services.redis.error)
    assert.equal("up", health.services.postgresql.status)
  end)

  it("disables the reset endpoint when no admin token is configured", function()
    setenv("MNEMO_ADMIN_TOKEN", nil)
    local code, body = mnemo.run(curl, { "-X", "POST", "-H", "Authorization: Bearer s3cret-token", url
      .. "/v1/breakers/database/reset" })
    setenv("MNEMO_ADMIN_TOKEN", "s3cret-token")
    assert.equal(404, code)
    assert.matches("disabled", body)
  end)

  it("serves Prometheus metrics", function()
    local code, body = mnemo.run(curl, { url .. "/metrics" })
    assert.equal(200, code)
    assert.matches('\nmnemo_operation_calls_total{operation="db_query"} %d+\n', body)
    assert.matches('mnemo_breaker_state{breaker="database",state="closed"} 1\n', body)
    assert.matches("# TYPE mnemo_errors_recorded_total counter\n", body)
    assert.matches("\nmnemo_errors_dropped_total %d+\n", body)
    assert.matches('mnemo_index_files_total{outcome="indexed"} %d+\n', body)
    assert.matches("\nmnemo_loop_lag_seconds [%d.e-]+\n", body)
    assert.matches("\nmnemo_policy_reloads_total %d+\n", body)
    -- Every sample line is name{labels} value.
    for line in body:gmatch("[^\n]+") do
      if not line:match("^#") then
        assert.matches('^[a-z_]+[{]?[^}]*[}]? [-+%d.eE]+$', line)
      end
    end
  end)

  it("renders the dashboard in headless Chromium, showing a recorded error", function()
    local chromium
    for _, name in ipairs { "/usr/bin/chromium", "/usr/bin/chromium-browser" } do
      if io.open(name) then
        chromium = name
      end
    end
    if not chromium then
      pending("chromium is not installed (scripts/install-deps installs it)")
      return
    end
    mnemo.run(function()
      mnemo.errors.record { severity = "CRITICAL", category = "embedding", service = "indexer",
        operation = "embed_batch", error_type = "ModelServerGone", message = "embedder <down> & out" }
      assert.truthy(tracking.flush {})
    end)
    local profile = h.tmpname("-chromium")
    local r = mnemo.run(h.spawn, { chromium, "--headless", "--no-sandbox", "--disable-gpu",
      "--disable-dev-shm-usage", "--user-data-dir=" .. profile, "--virtual-time-budget=2000", "--dump-dom",
      url .. "/monitoring/errors" }, { timeout = 60 })
    os.execute("rm -rf '" .. profile .. "'")
    assert.equal(0, r.code, r.stderr)
    -- The DOM Chromium built: the page rendered, and it shows the error
    -- (escaped text, decoded back by the browser).
    assert.matches("<h1>mnemo: errors</h1>", r.stdout)
    assert.matches("ModelServerGone", r.stdout)
    assert.matches("embedder &lt;down&gt; &amp; out", r.stdout)
    assert.matches('<td class="closed">closed</td>', r.stdout)
  end)

  it("groups /v1/errors/stats by several fields at once, and refuses a hostile group_by with 400", function()
    mnemo.run(function()
      for _ = 1, 3 do
        mnemo.errors.record { severity = "ERROR", category = "parse", service = "indexer", error_type = "Syntax",
          message = "bad token" }
      end
      mnemo.errors.record { severity = "WARNING", category = "parse", service = "indexer", error_type = "Syntax",
        message = "odd token" }
      assert.truthy(tracking.flush {})
    end)
    local code, body = mnemo.run(curl, { url .. "/v1/errors/stats?since_hours=1&group_by=category,severity" })
    assert.equal(200, code, body)
    local stats = json(body)
    assert.equal("category,severity", stats.group_by)
    local found
    for _, g in ipairs(stats.groups) do
      assert.is_string(g.category, body)
      assert.is_string(g.severity, body)
      assert.is_string(g.first_seen)
      assert.is_string(g.last_seen)
      if g.category == "parse" and g.severity == "ERROR" then
        found = g
      end
    end
    assert.is_not_nil(found, body)
    assert.equal(3, found.count)
    for _, q in ipairs { "category,severity%3B%20DROP%20TABLE%20error_logs", "category,%3Cscript%3E",
      "category,message", "category,,severity", "category,category" } do
      code, body = mnemo.run(curl, { url .. "/v1/errors/stats?group_by=" .. q })
      assert.equal(400, code, q .. " -> " .. body)
      local err = json(body)
      assert.equal("bad_request", err.error)
      assert.matches("group_by: ", err.message)
      assert.not_matches("DROP", body)
      assert.not_matches("script", body)
    end
    code, body = mnemo.run(curl, { url .. "/v1/errors/stats?group_by=category,message" })
    assert.matches('unknown field \\"message\\" (expected one of error_type, operation, service, category, '
      .. "severity, repository or a comma list of them)", body, 1, true)
    assert.equal(1, #h.sql(dsn, "SELECT 1 FROM pg_tables WHERE tablename = 'error_logs'"))
  end)

  it("shows an error's stored traceback folded in a <details> element, escaped (Chromium)", function()
    mnemo.run(function()
      mnemo.errors.record { severity = "CRITICAL", category = "api", service = "api", error_type = "XssProbe",
        message = "probe", traceback = "stack traceback:\n\t<script>alert('tb')</script> & more\n\tx.lua:3: in main" }
      assert.truthy(tracking.flush {})
    end)
    local html = mnemo.run(monitor.dashboard_html)
    assert.matches('<details class="traceback"><summary>traceback</summary><pre>stack traceback:\n\t'
      .. "&lt;script&gt;alert(&#39;tb&#39;)&lt;/script&gt; &amp; more", html, 1, true)
    assert.is_nil(html:find("<script", 1, true))
    local chromium
    for _, name in ipairs { "/usr/bin/chromium", "/usr/bin/chromium-browser" } do
      if io.open(name) then
        chromium = name
      end
    end
    if not chromium then
      pending("chromium is not installed (scripts/install-deps installs it)")
      return
    end
    local profile = h.tmpname("-chromium")
    local r = mnemo.run(h.spawn, { chromium, "--headless", "--no-sandbox", "--disable-gpu",
      "--disable-dev-shm-usage", "--user-data-dir=" .. profile, "--virtual-time-budget=2000", "--dump-dom",
      url .. "/monitoring/errors" }, { timeout = 60 })
    os.execute("rm -rf '" .. profile .. "'")
    assert.equal(0, r.code, r.stderr)
    -- The browser made a closed <details> of it, the markup as text.
    assert.matches('<details class="traceback"><summary>traceback</summary><pre>', r.stdout, 1, true)
    assert.matches("&lt;script&gt;alert('tb')&lt;/script&gt; &amp; more", r.stdout, 1, true)
    assert.is_nil(r.stdout:find("<script", 1, true))
    assert.is_nil(r.stdout:find("<details open", 1, true))
  end)
end)

-- What /health tells anyone about the policy, and what only the admin
-- token shows. No database needed: the probes are not configured here.
describe("/health and a rejected policy", function()
  local server, url, dir, file, restore_log
  local saved = {}
  local SECRET = "zebra-7f3q-policy-detail"
  local TOKEN = "s3cret-admin-token"

  local function setenv(name, value)
    if saved[name] == nil then
      saved[name] = { os.getenv(name) }
    end
    if value == nil then
      mnemo.uv.os_unsetenv(name)
    else
      mnemo.uv.os_setenv(name, value)
    end
  end

  -- A directory under a home directory: mnemo_scrub takes /home/USER,
  -- /Users/USER and /root for homes, and so does this test ($HOME when it
  -- is one of those, which it is for a user or root; else a temporary
  -- directory, where the base-name-only rule must hide it all the same).
  local function fake_home_dir()
    local home = os.getenv("HOME") or ""
    if home:match("^/home/[^/]+$") or home:match("^/Users/[^/]+$") or home == "/root" then
      local d = mnemo.uv.fs_mkdtemp(home .. "/mnemo-spec-XXXXXX")
      if d then
        return d
      end
    end
    return assert(mnemo.uv.fs_mkdtemp("/tmp/mnemo-spec-XXXXXX"))
  end

  setup(function()
    local _
    _, restore_log = h.capture_log()
    setenv("MNEMO_PG_DSN", nil)
    setenv("MNEMO_REDIS_URL", nil)
    setenv("MNEMO_ADMIN_TOKEN", TOKEN)
    mnemo.policy._reset()
    dir = fake_home_dir()
    file = dir .. "/policy.lua"
    h.write_file(file, "return { timeouts = { default = 30 } }")
    assert.equal(1, mnemo.policy.load(file))
    -- The reload fails; its error quotes the path and the file's text.
    h.write_file(file, ("error(%q)"):format(SECRET))
    local gen, err = mnemo.policy.reload()
    assert.is_nil(gen)
    assert.matches(SECRET, err, 1, true)
    assert.matches(dir, err, 1, true)
    monitor.install()
    server = mnemo.run(function()
      return assert(mnemo.http.serve { addr = "127.0.0.1:0" })
    end)
    url = server:url()
  end)
  teardown(function()
    mnemo.run(function()
      server:close()
    end)
    os.remove(file)
    os.remove(dir)
    for name, v in pairs(saved) do
      setenv(name, v[1])
    end
    mnemo.policy._reset()
    restore_log()
  end)

  local function get_health(...)
    local args = { ... }
    args[#args + 1] = url .. "/health"
    local code, body = mnemo.run(curl, args)
    return code, body, json(body)
  end

  local function assert_scrubbed(body, health, why)
    assert.not_matches(dir, body, 1, true, why)
    assert.not_matches(SECRET, body, 1, true, why)
    -- Not the home directory either (nor the scrubber's ~ for it).
    assert.not_matches((dir:match("^(/[^/]+/?[^/]*)/")), body, 1, true, why)
    assert.equal("rejected (details with the admin token)", health.policy.last_error, why)
    assert.equal("policy.lua", health.policy.file, why)
    assert.is_nil(health.policy.path, why)
    assert.equal(1, health.policy.generation, why)
    assert.equal(1, health.policy.errors, why)
  end

  it("shows the base name, the generation and that it was rejected, without the token", function()
    local code, body, health = get_health()
    assert.is_true(code == 200 or code == 503, body)
    assert_scrubbed(body, health, "no token")
  end)

  it("shows the full path and error text with the admin token", function()
    local code, body, health = get_health("-H", "Authorization: Bearer " .. TOKEN)
    local anonymous = get_health()
    assert.equal(anonymous, code)
    assert.equal(file, health.policy.path)
    assert.matches(SECRET, health.policy.last_error, 1, true)
    assert.matches(file, health.policy.last_error, 1, true)
    assert.matches(SECRET, body, 1, true)
  end)

  it("shows no more with a wrong token (same status), or any token when none is configured", function()
    local anonymous = get_health()
    for _, given in ipairs { "wrong", TOKEN:sub(1, -2) .. "X", TOKEN .. "X", "" } do
      local code, body, health = get_health("-H", "Authorization: Bearer " .. given)
      assert.equal(anonymous, code, given)
      assert_scrubbed(body, health, given)
    end
    local code, body, health = get_health("-H", "Authorization: " .. TOKEN)
    assert.equal(anonymous, code)
    assert_scrubbed(body, health, "no Bearer")
    setenv("MNEMO_ADMIN_TOKEN", nil)
    code, body, health = get_health("-H", "Authorization: Bearer " .. TOKEN)
    setenv("MNEMO_ADMIN_TOKEN", TOKEN)
    assert.equal(anonymous, code)
    assert_scrubbed(body, health, "no token configured")
  end)

  it("keeps the policy's directory out of /metrics and the dashboard", function()
    for _, path in ipairs { "/metrics", "/monitoring/errors" } do
      local code, body = mnemo.run(curl, { url .. path })
      assert.equal(200, code, path)
      assert.not_matches(dir, body, 1, true, path)
      assert.not_matches(SECRET, body, 1, true, path)
    end
  end)
end)

-- Timeout and false-positive rates, the breakers' recent failures and the
-- time on /health. No database: the rates do not need one.
describe("rates, recent breaker failures and the time", function()
  local server, url, restore_log
  local saved = {}
  local function setenv(name, value)
    if saved[name] == nil then
      saved[name] = { os.getenv(name) }
    end
    if value == nil then
      mnemo.uv.os_unsetenv(name)
    else
      mnemo.uv.os_setenv(name, value)
    end
  end

  setup(function()
    local _
    _, restore_log = h.capture_log()
    setenv("MNEMO_PG_DSN", nil)
    setenv("MNEMO_REDIS_URL", nil)
    mnemo.policy._reset()
    tracking.reset()
    mnemo.configure {
      breakers = { mon_br = { failure_threshold = 2, recovery_timeout = 0.05 }, mon_quiet = {} },
      operations = { mon_op = { timeout = 1, breaker = "mon_br" }, mon_slow = { timeout = 0.01 } },
    }
    mnemo.run(function()
      for _ = 1, 3 do
        assert.equal(1, mnemo.try("mon_slow", function()
          return 1
        end))
      end
      assert.is_nil(mnemo.try("mon_slow", mnemo.sleep, nil, 0.1))
      for _ = 1, 2 do
        mnemo.try("mon_op", function()
          error(mnemo.error("connection", "refused at /home/alice/db password=hunter2"))
        end)
      end
      assert.equal("open", mnemo.breaker.get("mon_br"):state())
      mnemo.sleep(0.1)
      assert.equal(1, mnemo.try("mon_op", function()
        return 1
      end)) -- the first trial succeeds: a false positive
    end)
    monitor.install()
    server = mnemo.run(function()
      return assert(mnemo.http.serve { addr = "127.0.0.1:0" })
    end)
    url = server:url()
  end)
  teardown(function()
    mnemo.run(function()
      server:close()
    end)
    for name, v in pairs(saved) do
      setenv(name, v[1])
    end
    mnemo.breaker.remove("mon_br")
    mnemo.breaker.remove("mon_quiet")
    mnemo.policy._reset()
    tracking.reset()
    restore_log()
  end)

  it("puts the rates in /v1/errors/stats, also while the error log is unavailable", function()
    setenv("MNEMO_PG_DSN", "postgresql://mnemo@127.0.0.1:1/mnemo") -- nothing listens there
    local code, body = mnemo.run(curl, { url .. "/v1/errors/stats" })
    setenv("MNEMO_PG_DSN", nil)
    assert.equal(503, code, body)
    local r = json(body).rates
    assert.equal(60, r.window)
    assert.equal(4, r.operations.mon_slow.calls)
    assert.equal(1, r.operations.mon_slow.timeouts)
    assert.near(0.25, r.operations.mon_slow.timeout_rate, 1e-9)
    assert.same({ trips = 1, false_positives = 1, trips_decided = 1, false_positive_rate = 1 }, r.breakers.mon_br)
    assert.equal(0, r.breakers.mon_quiet.trips)
  end)

  it("serves the rates as Prometheus gauges, each family described once", function()
    local code, body = mnemo.run(curl, { url .. "/metrics" })
    assert.equal(200, code)
    assert.matches('\nmnemo_operation_timeout_rate{operation="mon_slow"} 0.25\n', body, 1, true)
    assert.matches('\nmnemo_breaker_false_positive_rate{breaker="mon_br"} 1\n', body, 1, true)
    assert.matches('\nmnemo_breaker_false_positive_rate{breaker="mon_quiet"} 0\n', body, 1, true)
    assert.matches('\nmnemo_breaker_trips_total{breaker="mon_br"} 1\n', body, 1, true)
    assert.matches('\nmnemo_breaker_false_positives_total{breaker="mon_br"} 1\n', body, 1, true)
    assert.matches("# TYPE mnemo_operation_timeout_rate gauge\n", body, 1, true)
    assert.matches("# TYPE mnemo_breaker_false_positive_rate gauge\n", body, 1, true)
    -- What promtool checks: a family's HELP and TYPE once, before its
    -- samples, which are name{labels} value; counters end in _total.
    local typed, seen_sample = {}, {}
    for line in body:gmatch("[^\n]+") do
      local kind, name, t = line:match("^# (%u+) ([%w_]+) (%S+)")
      if kind == "TYPE" then
        assert.is_nil(typed[name], "TYPE twice: " .. name)
        assert.is_nil(seen_sample[name], "TYPE after samples: " .. name)
        typed[name] = t
        if t == "counter" then
          assert.matches("_total$", name)
        end
      elseif not line:match("^#") then
        assert.matches('^[a-z_]+[{]?[^}]*[}]? [-+%d.eE]+$', line)
        local sname = line:match("^([a-z_]+)")
        assert.is_not_nil(typed[sname], "sample without TYPE: " .. line)
        seen_sample[sname] = true
      end
    end
  end)

  it("lists the breakers with their recent failures on /v1/breakers", function()
    local code, body = mnemo.run(curl, { url .. "/v1/breakers" })
    assert.equal(200, code, body)
    local by = {}
    for _, b in ipairs(json(body).breakers) do
      by[b.name] = b
    end
    local f = by.mon_br.recent_failures
    assert.equal(2, #f)
    assert.equal("connection", f[1].kind)
    assert.matches("refused at", f[1].message, 1, true)
    assert.not_matches("hunter2", body, 1, true)
    assert.not_matches("alice", body, 1, true)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", f[2].time)
    assert.equal("closed", by.mon_br.state)
    assert.equal(1, by.mon_br.false_positive_rate)
    -- A breaker without failures has an empty list, not an object.
    assert.matches('"name":"mon_quiet"', body, 1, true)
    assert.same({}, by.mon_quiet.recent_failures)
    assert.not_matches('"recent_failures":{}', body, 1, true)
  end)

  it("dates /health in RFC 3339 UTC", function()
    local code, body = mnemo.run(curl, { url .. "/health" })
    assert.equal(200, code, body)
    local ts = json(body).timestamp
    local y, mo, d, hh, mi, ss = ts:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.%d%d%dZ$")
    assert.is_not_nil(y, ts)
    -- os.time of a UTC date table: the local offset cancels out against
    -- os.date("!*t") read the same way.
    local function utc(t)
      return os.time(t)
    end
    local now = utc(os.date("!*t"))
    local then_ = utc { year = y, month = mo, day = d, hour = hh, min = mi, sec = ss }
    assert.is_true(math.abs(now - then_) <= 5, ts)
  end)

  it("shows the recent failures and the timeout rates on the dashboard", function()
    local html = monitor.dashboard_html()
    assert.matches("<h2>Recent breaker failures</h2>", html, 1, true)
    assert.matches("<td>mon_br</td><td>connection</td><td>refused at", html, 1, true)
    assert.not_matches("hunter2", html, 1, true)
    assert.matches("<td>mon_slow</td><td>4</td><td>1</td><td>25.00%</td>", html, 1, true)
    assert.matches("<td>100.0%</td>", html, 1, true) -- mon_br's false-positive rate
  end)
end)
