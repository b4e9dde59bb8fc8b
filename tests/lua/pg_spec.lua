-- PostgreSQL on the loop, against a real server (see helpers.pg_dsn).
local mnemo = require "mnemo"
local uv = require "luv"
local h = require "helpers"
local faults = require "dsn_faults"
local pg = mnemo.pg

describe("mnemo.pg", function()
  local dsn
  setup(function()
    dsn = h.pg_fresh_database()
  end)

  local function with_conn(fn)
    return mnemo.run(function()
      local conn = assert(pg.connect(dsn))
      local results = { pcall(fn, conn) }
      conn:close()
      if not results[1] then
        error(results[2], 0)
      end
      return unpack(results, 2, table.maxn(results))
    end)
  end

  it("runs queries on the loop and converts types", function()
    local rows = with_conn(function(c)
      return c:exec("SELECT 42 AS i, 2.5::float8 AS f, true AS b, 'x'::text AS t, NULL::int AS n, "
        .. "12345678901::int8 AS big, '3.14'::numeric AS num")
    end)
    assert.equal(1, #rows)
    local r = rows[1]
    assert.equal(42, r.i)
    assert.equal(2.5, r.f)
    assert.is_true(r.b)
    assert.equal("x", r.t)
    assert.is_nil(r.n)
    assert.equal(12345678901, r.big)
    assert.equal("3.14", r.num, "numeric stays exact text")
    assert.same({ "i", "f", "b", "t", "n", "big", "num" }, rows.columns)
  end)

  it("passes parameters as data, never as SQL", function()
    local rows = with_conn(function(c)
      c:exec("CREATE TEMP TABLE people (name text)")
      c:exec("INSERT INTO people VALUES ($1), ($2)", { "Robert'); DROP TABLE people;--", "ok" })
      return c:exec("SELECT name FROM people ORDER BY name")
    end)
    assert.equal(2, #rows)
    assert.equal("Robert'); DROP TABLE people;--", rows[1].name)
  end)

  it("classifies SQL errors by SQLSTATE", function()
    with_conn(function(c)
      local rows, err = c:query("SELECT * FROM no_such_table")
      assert.is_nil(rows)
      assert.equal("invalid_input", err.kind)
      assert.equal("42P01", err.sqlstate)
      assert.matches('relation "no_such_table" does not exist', tostring(err))
      c:exec("CREATE TEMP TABLE u (k int PRIMARY KEY)")
      c:exec("INSERT INTO u VALUES (1)")
      rows, err = c:query("INSERT INTO u VALUES (1)")
      assert.equal("constraint", err.kind)
      assert.equal("23505", err.sqlstate)
      -- The connection is still usable after an SQL error.
      assert.equal(1, c:exec("SELECT count(*) AS n FROM u")[1].n)
    end)
  end)

  it("says clearly what is wrong with a bad DSN", function()
    local port = dsn:match(":(%d+)/")
    local cases = {
      { "postgresql://mnemo@127.0.0.1:1/mnemo", "connection", "Connection refused" },
      { "nonsense dsn", "invalid_input", 'missing "=" after "nonsense"' },
      { ("postgresql://nobody@127.0.0.1:%s/mnemo"):format(port), "auth", 'role "nobody" does not exist' },
      { ("postgresql://mnemo@127.0.0.1:%s/no_such_db"):format(port), "not_found", 'database "no_such_db" does not exist' },
      { "", "invalid_input", "no DSN given" },
    }
    mnemo.run(function()
      for _, case in ipairs(cases) do
        local conn, err = pg.connect(case[1])
        assert.is_nil(conn, case[1])
        assert.equal(case[2], err.kind, case[1])
        assert.matches(case[3], tostring(err), 1, true)
      end
    end)
  end)

  it("never shows the password of a DSN libpq refuses, whatever its form", function()
    mnemo.run(function()
      for _, bad in ipairs(faults.BAD_DSNS) do
        local conn, err = pg.connect(bad)
        assert.is_nil(conn, bad)
        local text = tostring(err)
        assert.matches("^PostgreSQL: ", text, 1, false)
        faults.assert_no_password(text, bad)
        -- The rest of libpq's message stays.
        assert.is_true(#text > #"PostgreSQL: connection failed: ", text)
      end
    end)
    -- What the message still says.
    mnemo.run(function()
      local _, err = pg.connect("postgresql://mnemo:S3c/PW9@127.0.0.1/mnemo")
      assert.equal('PostgreSQL: connection failed: invalid integer value "***" for connection option "port"',
        tostring(err))
      assert.equal("invalid_input", err.kind)
      _, err = pg.connect("host=127.0.0.1 password=S3c PW9 user=mnemo")
      assert.equal('PostgreSQL: connection failed: missing "=" after "***" in connection info string', tostring(err))
      _, err = pg.connect("postgresql://mnemo:S3cretPW9@[::1/mnemo")
      assert.matches('in URI: "postgresql://mnemo:***@[::1/mnemo"', tostring(err), 1, true)
    end)
  end)

  it("gives up a connect at its deadline when the server accepts and never answers", function()
    local hole = faults.black_hole()
    local url = ("postgresql://mnemo:S3cretPW9@127.0.0.1:%d/mnemo"):format(hole.port)
    mnemo.run(function()
      local ticks = 0
      local timer = uv.new_timer()
      timer:start(20, 20, function()
        ticks = ticks + 1
      end)
      local t0 = mnemo.now()
      local conn, err = pg.connect(url, { timeout = 0.3 })
      local elapsed = mnemo.now() - t0
      assert.is_nil(conn)
      assert.equal("timeout", err.kind)
      assert.equal(("PostgreSQL: connect to postgresql://mnemo:***@127.0.0.1:%d/mnemo timed out after 0.3 s")
        :format(hole.port), tostring(err))
      assert.is_true(elapsed >= 0.3 and elapsed < 2, "elapsed " .. elapsed)
      -- The loop went on meanwhile (15 ticks expected; a loaded machine
      -- may run late).
      assert.is_true(ticks >= 5, "ticks " .. ticks)
      timer:close()

      -- Without a timeout: CONNECT_TIMEOUT (10 s by default).
      local saved = pg.CONNECT_TIMEOUT
      pg.CONNECT_TIMEOUT = 0.2
      local kv = ("host=127.0.0.1 port=%d user=mnemo password=S3cretPW9 dbname=mnemo"):format(hole.port)
      t0 = mnemo.now()
      conn, err = pg.connect(kv)
      pg.CONNECT_TIMEOUT = saved
      assert.is_nil(conn)
      assert.equal(("PostgreSQL: connect to host=127.0.0.1 port=%d user=mnemo password=*** dbname=mnemo "
        .. "timed out after 0.2 s"):format(hole.port), tostring(err))
      assert.is_true(mnemo.now() - t0 < 2)

      -- An enclosing deadline that ends first wins: its TimeoutError.
      t0 = mnemo.now()
      local lines, restore = h.capture_log()
      local ok, terr = pcall(mnemo.timeout, 0.2, pg.connect, url, { timeout = 5 })
      restore()
      assert.equal(1, #h.events(lines, "timeout"))
      assert.is_false(ok)
      assert.equal("timeout", terr.kind)
      assert.is_true(mnemo.now() - t0 < 2)

      -- Every half-open connection was closed: the server saw each go.
      local deadline = mnemo.now() + 2
      while hole.closed_by_client < hole.accepted and mnemo.now() < deadline do
        mnemo.sleep(0.01)
      end
      assert.equal(3, hole.accepted)
      assert.equal(3, hole.closed_by_client)
      hole.close()

      -- The real server is reached as before.
      local c = assert(pg.connect(dsn, { timeout = 5 }))
      assert.equal(1, c:exec("SELECT 1 AS one")[1].one)
      c:close()
    end)
    local ok, err = pcall(mnemo.run, pg.connect, dsn, { timeout = 0 })
    assert.is_false(ok)
    assert.matches("timeout: expected a number of seconds > 0", tostring(err))
  end)

  it("cancels a query at the deadline and drops its connection", function()
    local t0 = mnemo.now()
    local ok, err, status = mnemo.run(function()
      local c = assert(pg.connect(dsn))
      local lines, restore = h.capture_log()
      local ok, err = pcall(mnemo.timeout, 0.2, function()
        return c:query("SELECT pg_sleep(5)")
      end)
      restore()
      return ok, err, c:status()
    end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.equal("closed", status)
    assert.is_true(mnemo.now() - t0 < 2)
    -- The server is fine and a new connection works.
    assert.equal(1, with_conn(function(c)
      return c:exec("SELECT 1 AS one")[1].one
    end))
  end)

  it("rolls a transaction back on error and keeps a commit from being cancelled", function()
    with_conn(function(c)
      c:exec("CREATE TABLE tx_test (x int)")
      local ok, err = pcall(c.transaction, c, function(tx)
        tx:exec("INSERT INTO tx_test VALUES (1)")
        error(mnemo.error("invalid_input", "bad file"))
      end)
      assert.is_false(ok)
      assert.equal("invalid_input", err.kind)
      assert.equal(0, c:exec("SELECT count(*) AS n FROM tx_test")[1].n)
      c:transaction(function(tx)
        tx:exec("INSERT INTO tx_test VALUES (2)")
      end)
      assert.equal(1, c:exec("SELECT count(*) AS n FROM tx_test")[1].n)
    end)
    -- A shielded query outlives the deadline around it; the timeout comes after.
    local _, restore = h.capture_log()
    local finished = false
    local ok, err = pcall(with_conn, function(c)
      return mnemo.timeout(0.05, function()
        mnemo.shield(function()
          c:exec("SELECT pg_sleep(0.2)")
          finished = true
        end)
        mnemo.sleep(0)
      end)
    end)
    restore()
    assert.is_true(finished)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
  end)

  -- The shipped migrations, in order.
  local function migration_files()
    local names = {}
    local p = io.popen("ls db/migrations")
    for name in p:lines() do
      names[#names + 1] = name
    end
    p:close()
    return names
  end

  it("applies migrations once, also with two migrators at once", function()
    local fresh = h.pg_fresh_database()
    local a, b = mnemo.run(function()
      local r = {}
      local done = 0
      for i = 1, 2 do
        mnemo.spawn(function()
          local c = assert(pg.connect(fresh))
          r[i] = pg.migrate(c, pg.MIGRATIONS)
          c:close()
          done = done + 1
        end)
      end
      while done < 2 do
        mnemo.sleep(0.01)
      end
      return r[1], r[2]
    end)
    local files = migration_files()
    assert.equal(#files, #a + #b, "each migration applied by exactly one of them")
    assert.is_true(#a == 0 or #b == 0, "one migrator did everything under the lock")
    local tables = mnemo.run(function()
      local c = assert(pg.connect(fresh))
      local again = pg.migrate(c, pg.MIGRATIONS)
      assert.equal(0, #again)
      local rows = c:exec([[SELECT string_agg(tablename, ',' ORDER BY tablename) AS t
        FROM pg_tables WHERE schemaname = 'public'
          AND tablename NOT IN (SELECT relname FROM pg_class WHERE relispartition)]]) -- error_logs' days (007)
      c:close()
      return rows[1].t
    end)
    assert.equal("circuit_breaker_state,code_chunks,error_logs,graph_edges,graph_nodes,index_jobs,mnemo_instance,pending_embeddings,"
      .. "schema_migrations", tables)
  end)

  it("mnemo-run --migrate reports what it applied, and fails clearly without a DSN", function()
    local fresh = h.pg_fresh_database()
    local env = { "MNEMO_PG_DSN=" .. fresh, "PATH=" .. os.getenv("PATH") }
    local r = h.mnemo_run({ "--migrate" }, { env = env })
    assert.equal(0, r.code, r.stderr)
    local files = migration_files()
    assert.equal(("migrations: %d applied (%s)\n"):format(#files, table.concat(files, ", ")), r.stdout)
    r = h.mnemo_run({ "--migrate" }, { env = env })
    assert.equal("migrations: 0 applied, schema up to date\n", r.stdout)
    r = h.mnemo_run({ "--migrate" }, { env = { "PATH=" .. os.getenv("PATH") } })
    assert.equal(1, r.code)
    assert.matches("no DSN given %(set MNEMO_PG_DSN%)", r.stderr)
  end)
  it("retries a real deadlock into a success under the database retry policy", function()
    -- Two transactions lock two rows in opposite orders; PostgreSQL breaks
    -- the deadlock by failing one (SQLSTATE 40P01, class deadlock), which
    -- the guard retries: both end committed.
    local op = "deadlock_write_" .. math.random(1e6)
    mnemo.configure {
      retry = { database = { attempts = 3, base = 0.05, max = 0.2, jitter = "none", on = { "deadlock" } } },
      operations = { [op] = { timeout = 10, retry = "database", idempotent = true } },
    }
    local classes, done = {}, {}
    mnemo.run(function()
      local setup_conn = assert(pg.connect(dsn))
      setup_conn:exec("DROP TABLE IF EXISTS deadlock_rows")
      setup_conn:exec("CREATE TABLE deadlock_rows (id int PRIMARY KEY, v int)")
      setup_conn:exec("INSERT INTO deadlock_rows VALUES (1, 0), (2, 0)")
      setup_conn:close()
      local function writer(first, second, name)
        local conn = assert(pg.connect(dsn))
        local attempt = 0
        mnemo.guard(op, function()
          attempt = attempt + 1
          local ok, err = pcall(conn.transaction, conn, function(c)
            c:exec("UPDATE deadlock_rows SET v = v + 1 WHERE id = $1", { first })
            mnemo.sleep(0.2) -- both hold their first row now
            c:exec("UPDATE deadlock_rows SET v = v + 1 WHERE id = $1", { second })
          end)
          if not ok then
            classes[#classes + 1] = mnemo.errors.classify(err)
            error(err, 0)
          end
        end)
        done[name] = attempt
        conn:close()
      end
      local a = mnemo.spawn(writer, 1, 2, "a")
      local b = mnemo.spawn(writer, 2, 1, "b")
      local deadline = mnemo.now() + 15
      while not (done.a and done.b) and mnemo.now() < deadline do
        mnemo.sleep(0.05)
      end
      assert(a and b)
    end)
    assert.same({ "deadlock" }, classes)
    assert.is_true(done.a + done.b == 3, "one of them retried once")
    local rows = with_conn(function(c)
      return c:exec("SELECT sum(v)::int AS total FROM deadlock_rows")
    end)
    assert.equal(4, rows[1].total, "both transactions committed, each once")
  end)
end)
