-- Breaker state survives a restart (lua/mnemo/breaker_store.lua,
-- db/migrations/006_breaker_state.sql): saved on transition off the
-- caller's path, restored by a fresh mnemo-run.
local h = require "tests.lua.helpers"
local mnemo = require "mnemo"
local uv = require "luv"
local cjson = require "cjson"
local store = require "mnemo.breaker_store"

-- The child's script: makes breaker `dep` (recovery_timeout RT), starts the
-- store, then does WHAT ("trip": one failure, written; "call": one call,
-- reports whether fn ran) and prints one JSON line.
local CHILD = [[
local mnemo = require "mnemo"
local cjson = require "cjson"
local store = require "mnemo.breaker_store"
local what, rt = arg[1], tonumber(arg[2])
local b = mnemo.breaker { name = "dep", failure_threshold = 1, recovery_timeout = rt }
local ok, report = store.start { dsn = os.getenv("MNEMO_PG_DSN") }
assert(ok, tostring(report))
local out = { restored = report and report.restored or {}, ignored = report and report.ignored }
if what == "trip" then
  pcall(b.call, b, function() error(mnemo.error("connection", "dependency down")) end)
  out.state = b:state()
  out.flushed = store.flush()
elseif what == "call" then
  local ran = false
  local cok, err = pcall(b.call, b, function() ran = true return 1 end)
  out.ran, out.ok = ran, cok
  out.kind = not cok and type(err) == "table" and err.kind or nil
  out.retry_after = b:metrics().retry_after
  out.state = b:state()
end
store.stop { flush = true }
print(cjson.encode(out))
]]

local script, dsn

local function child(what, rt)
  local env = {}
  for _, e in ipairs(h.child_env { "MNEMO_PG_DSN=" .. dsn }) do
    env[#env + 1] = e:find("^MNEMO_LOG_LEVEL=") and "MNEMO_LOG_LEVEL=warn" or e
  end
  local r = h.mnemo_run({ script, what, tostring(rt) }, { env = env })
  assert(r.code == 0, r.stderr .. r.stdout)
  return cjson.decode(r.stdout:match("[^\n]+\n?$")), r
end

local function rows()
  return h.sql(dsn, "SELECT name, state, recovery_timeout, extract(epoch from now() - opened_at)::float8 AS ago"
    .. " FROM circuit_breaker_state ORDER BY name")
end

describe("breaker_store", function()
  setup(function()
    dsn = h.pg_migrated_database()
    script = h.write_file(h.tmpname(".lua"), CHILD)
  end)
  teardown(function()
    os.remove(script)
  end)
  before_each(function()
    h.sql(dsn, "DELETE FROM circuit_breaker_state")
  end)

  it("a fresh process restores an OPEN breaker and fails fast without calling the function", function()
    local t = child("trip", 3)
    assert.equal("open", t.state)
    assert.is_true(t.flushed)
    local r = rows()
    assert.equal(1, #r)
    assert.equal("dep", r[1].name)
    assert.equal("open", r[1].state)
    assert.equal(3, r[1].recovery_timeout)
    assert.is_true(r[1].ago >= 0 and r[1].ago < 3)
    local c = child("call", 3)
    assert.same({ "dep" }, c.restored)
    assert.is_false(c.ran)
    assert.is_false(c.ok)
    assert.equal("circuit_open", c.kind)
    assert.equal("open", c.state)
    -- The time left, not a whole new recovery_timeout.
    assert.is_true(c.retry_after > 0 and c.retry_after <= 3 - r[1].ago + 0.05, tostring(c.retry_after))
    -- The row still says when it opened (the restore re-saves the same time).
    local again = rows()
    assert.is_true(math.abs((again[1].ago - r[1].ago)) < 1.5)
  end)

  it("a half-open breaker's row keeps when it opened", function()
    mnemo.run(function()
      assert(store.start { dsn = dsn, restore = false })
      local b = mnemo.breaker { name = "probe_dep", failure_threshold = 1, recovery_timeout = 0.2 }
      pcall(b.call, b, function() error(mnemo.error("connection", "down")) end)
      assert.is_true(store.flush())
      mnemo.sleep(0.25)
      assert.equal("half_open", b:state())
      assert.is_true(store.flush())
      local r = rows()
      assert.equal("half_open", r[1].state)
      assert.is_true(r[1].ago >= 0.2 and r[1].ago < 2, tostring(r[1].ago))
      store.reset()
      mnemo.breaker.remove("probe_dep")
    end)
  end)

  it("once the recovery time has passed, a stale row does not reopen it", function()
    local t = child("trip", 0.5)
    assert.equal("open", t.state)
    mnemo.run(mnemo.sleep, 0.7)
    local c = child("call", 0.5)
    assert.same({}, c.restored)
    assert.is_true(c.ran)
    assert.is_true(c.ok)
    assert.equal("closed", c.state)
  end)

  it("restores half_open as HALF_OPEN (probes, not full traffic) while recent", function()
    h.sql(dsn, [[INSERT INTO circuit_breaker_state (name, state, opened_at, recovery_timeout, updated_at)
      VALUES ('dep', 'half_open', now() - interval '5 seconds', 30, now() - interval '1 second')]])
    local c = child("call", 30)
    assert.same({ "dep" }, c.restored)
    assert.is_true(c.ran) -- the probe
    assert.equal("closed", c.state) -- it succeeded
    local r = rows()
    assert.equal("closed", r[1].state)
    assert.is_nil(r[1].ago) -- closed: no opening time
  end)

  it("caps the remaining time at the breaker's current recovery_timeout", function()
    h.sql(dsn, [[INSERT INTO circuit_breaker_state (name, state, opened_at, recovery_timeout)
      VALUES ('dep', 'open', now(), 600)]])
    local c = child("call", 2)
    assert.is_false(c.ran)
    assert.is_true(c.retry_after <= 2, tostring(c.retry_after))
  end)

  it("ignores hostile rows with one warning and still restores the good one", function()
    h.sql(dsn, [[INSERT INTO circuit_breaker_state (name, state, opened_at, recovery_timeout) VALUES
      ('a', 'exploded', now(), 30),
      ('b', 'open', now(), 'NaN'),
      ('c', 'open', 'infinity', 30),
      ('d', 'open', '-infinity', 30),
      ('e', 'open', now(), 1e300),
      ('f', 'open', now() + interval '1 hour', 30),
      ('g', 'open', now(), -1),
      ('h', 'open', NULL, 30),
      ('i', 'open', now(), 'Infinity'),
      ('dep', 'open', now(), 30)]])
    local c, r = child("call", 30)
    assert.same({ "dep" }, c.restored)
    assert.equal(9, c.ignored)
    assert.is_false(c.ran)
    local warnings = 0
    for line in r.stderr:gmatch("[^\n]+") do
      if line:find("breaker_state_rows_ignored", 1, true) then
        warnings = warnings + 1
        assert.truthy(line:find('"count":9', 1, true), line)
      end
    end
    assert.equal(1, warnings, r.stderr)
  end)

  it("a row for a breaker made later is applied when it appears", function()
    h.sql(dsn, [[INSERT INTO circuit_breaker_state (name, state, opened_at, recovery_timeout)
      VALUES ('later', 'open', now() - interval '1 second', 30)]])
    mnemo.run(function()
      local ok, report = store.start { dsn = dsn }
      assert.is_true(ok)
      assert.same({ "later" }, report.waiting)
      local b = mnemo.breaker { name = "later", failure_threshold = 1, recovery_timeout = 30 }
      mnemo.sleep(store.INTERVAL * 3)
      assert.equal("open", b:state())
      local ra = b:metrics().retry_after
      assert.is_true(ra > 27 and ra < 29.5, tostring(ra))
      store.reset()
      mnemo.breaker.remove("later")
    end)
  end)

  it("mnemo-run --serve restores, also a breaker the script makes after the start", function()
    h.sql(dsn, [[INSERT INTO circuit_breaker_state (name, state, opened_at, recovery_timeout)
      VALUES ('dep', 'open', now() - interval '1 second', 30)]])
    local code = [[
      local mnemo = require "mnemo"
      local b = mnemo.breaker { name = "dep", failure_threshold = 1, recovery_timeout = 30 }
      mnemo.sleep(0.3)
      local ran = false
      pcall(b.call, b, function() ran = true end)
      print(b:state(), ran, math.floor(b:metrics().retry_after))
      io.stdout:flush()
    ]]
    mnemo.run(function()
      local proc = h.start_serving({ "--serve", "127.0.0.1:0", "-e", code }, h.child_env { "MNEMO_PG_DSN=" .. dsn })
      assert.truthy(proc.url, table.concat(proc.err))
      local deadline = mnemo.now() + 10
      while not table.concat(proc.out):find("\n") and mnemo.now() < deadline do
        mnemo.sleep(0.02)
      end
      local r = proc.stop()
      local state, ran, left = r.stdout:match("^(%S+)\t(%S+)\t(%d+)")
      assert.equal("open", state, r.stdout .. r.stderr)
      assert.equal("false", ran)
      assert.is_true(tonumber(left) >= 27 and tonumber(left) <= 29, left)
    end)
  end)

  describe("with the database down at write time", function()
    -- A server that accepts and never answers: a connect hangs until its
    -- deadline.
    local server, port, held
    before_each(function()
      server = uv.new_tcp()
      assert(server:bind("127.0.0.1", 0))
      port = server:getsockname().port
      held = {}
      server:listen(16, function()
        local c = uv.new_tcp()
        server:accept(c)
        held[#held + 1] = c
      end)
    end)
    after_each(function()
      mnemo.run(function()
        store.reset()
        for _, c in ipairs(held) do
          c:close()
        end
        server:close()
        -- The writer's connect in flight fails now; let it and the closes end.
        local deadline = mnemo.now() + 3
        while store.status().writing and mnemo.now() < deadline do
          mnemo.sleep(0.01)
        end
        mnemo.sleep(0.05)
      end)
    end)

    it("transitions stay fast, the latest state is kept, and calls are not delayed", function()
      local black_hole = ("postgresql://u@127.0.0.1:%d/x"):format(port)
      mnemo.run(function()
        local ok = store.start { dsn = black_hole, restore = false }
        assert.is_true(ok)
        local b = mnemo.breaker { name = "down_dep", failure_threshold = 1, recovery_timeout = 0.05 }
        local slowest = 0
        for _ = 1, 5 do
          local t0 = uv.hrtime()
          pcall(b.call, b, function() error(mnemo.error("connection", "down")) end) -- closed -> open
          slowest = math.max(slowest, (uv.hrtime() - t0) / 1e9)
          mnemo.sleep(0.06)
          t0 = uv.hrtime()
          b:call(function() return 1 end) -- open -> half_open -> closed
          slowest = math.max(slowest, (uv.hrtime() - t0) / 1e9)
        end
        assert.is_true(slowest < 0.01, ("slowest transition call %.4f s"):format(slowest))
        local s = store.status()
        assert.equal(1, s.pending) -- one breaker, its latest state
        assert.equal(0, s.written)
        mnemo.breaker.remove("down_dep")
      end)
    end)

    it("gives up a write at its deadline and keeps the state for the next try", function()
      local black_hole = ("postgresql://u@127.0.0.1:%d/x"):format(port)
      mnemo.run(function()
        local saved = store.WRITE_TIMEOUT
        store.WRITE_TIMEOUT = 0.2
        store.start { dsn = black_hole, restore = false }
        local b = mnemo.breaker { name = "down_dep2", failure_threshold = 1, recovery_timeout = 30 }
        pcall(b.call, b, function() error(mnemo.error("connection", "down")) end)
        store.stop() -- keep the writer from trying in the background
        local t0 = mnemo.now()
        local ok, err = store.flush { dsn = black_hole }
        local took = mnemo.now() - t0
        store.WRITE_TIMEOUT = saved
        assert.is_nil(ok)
        assert.equal("timeout", err.kind)
        assert.is_true(took < 1, tostring(took))
        assert.equal(1, store.status().pending)
        -- The database back: the kept state is written.
        assert.is_true(store.flush { dsn = dsn })
        local r = rows()
        assert.equal("down_dep2", r[1].name)
        assert.equal("open", r[1].state)
        mnemo.breaker.remove("down_dep2")
      end)
    end)
  end)
end)
