-- Secrets never leave the process: a DSN whose password libpq repeats in
-- its errors (mnemo-run --migrate, examples/index.lua as a user runs them),
-- log lines, error_logs rows; and a database that never answers ends
-- examples/index.lua with one clear line, not a hang.
local mnemo = require "mnemo"
local cjson = require "cjson"
local h = require "helpers"
local faults = require "dsn_faults"

local function env_with(dsn, extra)
  local env = { "MNEMO_PG_DSN=" .. dsn, "PATH=" .. os.getenv("PATH"), "MNEMO_REDIS_URL=redis://127.0.0.1:1" }
  for _, name in ipairs { "MNEMO_LUA_DIR", "ASAN_OPTIONS" } do -- for build/asan/mnemo-run
    if os.getenv(name) then
      env[#env + 1] = name .. "=" .. os.getenv(name)
    end
  end
  for _, e in ipairs(extra or {}) do
    env[#env + 1] = e
  end
  return env
end

describe("secrets", function()
  it("mnemo-run --migrate and examples/index.lua never print the password of a DSN libpq refuses", function()
    for _, bad in ipairs(faults.BAD_DSNS) do
      for _, args in ipairs { { "--migrate" }, { "examples/index.lua", "examples/sample-repo" } } do
        local r = h.mnemo_run(args, { env = env_with(bad) })
        local what = table.concat(args, " ") .. " with " .. bad
        assert.equal(1, r.code, what .. "\n" .. r.stderr)
        faults.assert_no_password(r.stdout .. r.stderr, what)
        -- A clear error all the same: libpq's reason, on one line for index.lua.
        assert.matches("PostgreSQL: ", r.stderr, 1, true)
        if args[1] == "examples/index.lua" then
          assert.matches("\nindex: PostgreSQL: [^\n]+\n$", "\n" .. r.stderr)
        end
      end
    end
  end)

  it("examples/index.lua against a server that never answers ends with one line, in time", function()
    local hole = faults.black_hole()
    local dsn = ("postgresql://mnemo:S3cretPW9@127.0.0.1:%d/mnemo"):format(hole.port)
    local t0 = mnemo.now()
    local r = h.mnemo_run({ "examples/index.lua", "examples/sample-repo" },
      { env = env_with(dsn, { "MNEMO_PG_CONNECT_TIMEOUT=0.5" }), timeout = 15 })
    local elapsed = mnemo.now() - t0
    hole.close()
    assert.equal(1, r.code, r.stderr)
    assert.is_true(elapsed < 10, "took " .. elapsed .. " s")
    local last = r.stderr:match("([^\n]+)\n$")
    assert.equal(("index: PostgreSQL: connect to postgresql://mnemo:***@127.0.0.1:%d/mnemo timed out after 0.5 s")
      :format(hole.port), last)
    faults.assert_no_password(r.stdout .. r.stderr, "index.lua")
    assert.is_true(hole.accepted >= 1)
  end)

  it("log lines: string values are scrubbed, the caller's fields are left alone", function()
    local lines, restore = h.capture_log()
    local nested = { msg = "host=db password = S3cretPW9 user=u", n = 1 }
    mnemo.log.emit("error", "test_secret", {
      error = "connect postgresql://u:S3cretPW9@db/x failed",
      query = "postgresql://u@db/x?sslmode=disable&password=S3cretPW9",
      dsn = "host=db PASSWORD='S3c PW9' user=u",
      cut = 'invalid URI: "postgresql://u:S3cretPW9',
      header = "Authorization: Bearer S3cretPW9",
      value = setmetatable({}, { __tostring = function() return "token=S3cretPW9" end }),
      nested = nested,
      plain = "nothing to hide: a/b c",
      count = 3,
    })
    restore()
    assert.equal(1, #lines)
    faults.assert_no_password(lines[1], "log line")
    local rec = cjson.decode(lines[1])
    assert.equal("connect postgresql://u:***@db/x failed", rec.error)
    assert.equal("postgresql://u@db/x?sslmode=disable&password=***", rec.query)
    assert.equal("host=db PASSWORD='***' user=u", rec.dsn)
    assert.equal("host=db password = *** user=u", rec.nested.msg)
    assert.equal("nothing to hide: a/b c", rec.plain)
    assert.equal(3, rec.count)
    assert.equal("host=db password = S3cretPW9 user=u", nested.msg, "the caller's table is not changed")
  end)

  it("error_logs rows: recorded messages, contexts and a failed guarded connect are scrubbed", function()
    local db = h.pg_migrated_database()
    mnemo.tracking.reset()
    local messages = {
      "postgres://u:S3cretPW9@h/db refused",
      "postgresql://u:S3c/PW9@h/db",
      "postgresql://u@h/db?password=S3cr%65tPW9",
      "host=h password='S3c PW9' dbname=x",
      "host=h password = S3cretPW9 dbname=x",
      "host=h password=S3c PW9 dbname=x",
      "PASSWORD=S3cretPW9",
      'bad URI "postgresql://u:S3cretPW9',
    }
    for i, m in ipairs(messages) do
      assert.is_true(mnemo.errors.record { severity = "ERROR", category = "database", service = "secrets_spec",
        operation = "op" .. i, message = m, context = { dsn = m }, traceback = "at " .. m })
    end
    -- A real failure through the guard: libpq's message about a DSN.
    local ok = mnemo.run(function()
      return pcall(mnemo.pg.connect_guarded, "postgresql://mnemo:S3c@PW9@127.0.0.1/mnemo")
    end)
    assert.is_false(ok)
    assert(mnemo.run(mnemo.tracking.flush, { dsn = db }))
    local rows = h.sql(db, [[SELECT message, context::text AS ctx, coalesce(traceback, '') AS tb FROM error_logs]])
    assert.is_true(#rows >= #messages + 1, #rows)
    local connect_row
    for _, row in ipairs(rows) do
      faults.assert_no_password(row.message .. row.ctx .. row.tb, "error_logs row")
      if row.message:find("could not translate host name", 1, true) then
        connect_row = row
      end
    end
    assert.is_truthy(connect_row, "the guarded connect's failure is stored")
    mnemo.tracking.reset()
  end)
end)
