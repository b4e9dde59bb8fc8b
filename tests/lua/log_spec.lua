-- Logging during outages: the buffered sink, timestamps, levels, rate
-- limits, correlation ids, and the failure summaries that replace one line
-- per failed call.
local mnemo = require "mnemo"
local cjson = require "cjson"
local h = require "helpers"

local n = 0
local function uniq(prefix)
  n = n + 1
  return prefix .. n
end

local function env(level)
  local e = { "PATH=" .. (os.getenv("PATH") or "/usr/bin:/bin") }
  if level then
    e[#e + 1] = "MNEMO_LOG_LEVEL=" .. level
  end
  local lua_dir = os.getenv("MNEMO_LUA_DIR")
  if lua_dir then
    e[#e + 1] = "MNEMO_LUA_DIR=" .. lua_dir
  end
  return e
end

local function records(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    local rec = cjson.decode(line)
    out[#out + 1] = rec
  end
  return out
end

local function count(recs, event)
  local k = 0
  for _, r in ipairs(recs) do
    if r.event == event then
      k = k + 1
    end
  end
  return k
end

describe("log sink", function()
  it("writes RFC 3339 UTC timestamps with microseconds", function()
    local lines, restore = h.capture_log()
    mnemo.log.emit("warn", "ts_probe", {})
    restore()
    local rec = h.events(lines, "ts_probe")[1]
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$", rec.ts)
    assert.equal(os.date("!%Y-%m-%d"), rec.ts:sub(1, 10))
  end)

  it("takes the level from MNEMO_LOG_LEVEL in any case, also 'warning'", function()
    for _, level in ipairs { "warn", "WARNING", "Error" } do
      local r = h.mnemo_run({ "--policy", "policies/default.lua", "-e", "require('mnemo').log.emit('warn', 'w', {})" },
        { env = env(level) })
      assert.equal(0, r.code, r.stderr)
      assert.equal(0, count(records(r.stderr), "policy_loaded"), level .. ": " .. r.stderr)
      assert.equal(level == "Error" and 0 or 1, count(records(r.stderr), "w"), level .. ": " .. r.stderr)
    end
  end)

  it("reports an unknown MNEMO_LOG_LEVEL once and uses info", function()
    local r = h.mnemo_run({ "--policy", "policies/default.lua", "-e", "" }, { env = env("loud") })
    assert.equal(0, r.code, r.stderr)
    local recs = records(r.stderr)
    assert.equal(1, count(recs, "log_level_invalid"))
    assert.equal(1, count(recs, "policy_loaded"))
  end)

  it("loses no line on a normal exit, an os.exit or an error() exit", function()
    local emit = "local log = require('mnemo').log for i = 1, 3000 do log.emit('info', 'line' .. i % 150, { i = i }) end "
    for _, tail in ipairs { "", "os.exit(3)", "error('boom')" } do
      local r = h.mnemo_run({ "-e", emit .. tail }, { env = env("info") })
      local seen = 0
      for line in r.stderr:gmatch("[^\n]+") do
        if line:find('"event":"line', 1, true) then
          seen = seen + 1
        end
      end
      assert.equal(3000, seen, "after '" .. tail .. "'")
      if tail == "error('boom')" then
        assert.equal(1, r.code)
        -- the error's message comes after the lines written before it
        assert.matches("boom\n.*$", r.stderr:sub(-400))
        assert.is_nil(r.stderr:sub(-400):match("boom.*\n{"))
      end
    end
  end)

  it("writes a batch of lines in one write(2), not two per line", function()
    if os.execute("command -v strace >/dev/null 2>&1") ~= 0 then
      pending("strace is not installed")
      return
    end
    local out = os.tmpname()
    local r = mnemo.run(h.spawn, { "strace", "-f", "-e", "trace=write", "-o", out, h.MNEMO_RUN or "build/mnemo-run", "-e",
      "local log = require('mnemo').log for i = 1, 400 do log.emit('info', 'e' .. i % 20, { i = i }) end" },
      { env = env("info") })
    assert.equal(0, r.code, r.stderr)
    local writes = 0
    for line in io.lines(out) do
      if line:match("write%(2,") then
        writes = writes + 1
      end
    end
    os.remove(out)
    assert.is_true(writes >= 1 and writes <= 12, writes .. " writes for 400 lines")
  end)

  it("puts the running task's correlation id on each line", function()
    local lines, restore = h.capture_log()
    mnemo.run(function()
      mnemo.correlation.with("req-42", function()
        mnemo.log.emit("warn", "cid_probe", {})
        mnemo.spawn(function()
          mnemo.log.emit("warn", "cid_child", {})
        end)
        mnemo.sleep(0.001)
      end)
      mnemo.log.emit("warn", "cid_outside", {})
    end)
    restore()
    assert.equal("req-42", h.events(lines, "cid_probe")[1].correlation_id)
    assert.equal("req-42", h.events(lines, "cid_child")[1].correlation_id)
    assert.is_nil(h.events(lines, "cid_outside")[1].correlation_id)
  end)
end)

describe("log rate limits", function()
  before_each(function()
    mnemo.clock.virtual(true)
  end)
  after_each(function()
    mnemo.clock.virtual(false)
    mnemo.log.configure(nil)
  end)

  it("drops info lines of one event past the limit a second, and says how many", function()
    local lines, restore = h.capture_log()
    local event = uniq("chatty")
    for _ = 1, 200 do
      mnemo.log.emit("info", event, {})
    end
    mnemo.clock.advance(1)
    mnemo.log.emit("info", event, {})
    restore()
    local got = h.events(lines, event)
    assert.equal(51, #got)
    assert.equal(150, got[51].dropped)
  end)

  it("never drops an error line", function()
    local lines, restore = h.capture_log()
    local event = uniq("alarm")
    for _ = 1, 500 do
      mnemo.log.emit("error", event, {})
    end
    restore()
    assert.equal(500, #h.events(lines, event))
  end)
end)

describe("failure summaries", function()
  local lines, restore
  before_each(function()
    mnemo.clock.virtual(true)
    mnemo.log_summary._reset()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
    mnemo.clock.virtual(false)
    mnemo.configure {}
  end)

  local function open_breaker(name, op)
    mnemo.configure {
      breakers = { [name] = { failure_threshold = 5, recovery_timeout = 3600 } },
      operations = { [op] = { breaker = name } },
    }
    for _ = 1, 5 do
      local v, err = mnemo.try(op, function()
        error(mnemo.error("connection", "refused by the test"))
      end)
      assert(v == nil and err.kind == "connection")
    end
    assert.equal("open", mnemo.breaker.get(name):state())
  end

  it("a 100,000-call outage writes at most 100 lines, and the summaries add up to the calls that failed", function()
    local op, name = uniq("outage_op"), uniq("outage_br")
    open_breaker(name, op)
    local fallback = { fallback = function()
      return "stale"
    end }
    local N = 100000
    for i = 1, N do
      if i % 10000 == 0 then
        mnemo.clock.advance(10) -- the outage spans 10 summary intervals
      end
      assert(mnemo.guard(op, error, fallback) == "stale")
    end
    mnemo.log_summary.flush()
    assert.is_true(#lines <= 100, #lines .. " lines")
    local failed, fallbacks, summaries = 0, 0, h.events(lines, "failure_summary")
    assert.is_true(#summaries >= 10, #summaries .. " summaries")
    for _, s in ipairs(summaries) do
      local o = s.operations[op]
      if o then
        fallbacks = fallbacks + ((o.circuit_open or {}).fallback or 0)
        failed = failed + ((o.connection or {}).failed or 0)
      end
    end
    assert.equal(N, fallbacks)
    assert.equal(5, failed, "the calls that opened it")
    -- the first fast-fail of an interval is written in full
    local first = h.events(lines, "call_failed")
    assert.is_true(#first >= 1)
    assert.equal("circuit_open", first[#first].class)
  end)

  it("writes a summary per interval as the clock moves, with the policy's interval", function()
    local op, name = uniq("iv_op"), uniq("iv_br")
    open_breaker(name, op)
    mnemo.configure {
      log = { summary_interval = 2 },
      breakers = { [name] = { failure_threshold = 5, recovery_timeout = 3600 } },
      operations = { [op] = { breaker = name } },
    }
    for _ = 1, 3 do
      mnemo.try(op, error)
    end
    mnemo.clock.advance(2.5)
    mnemo.try(op, error)
    -- (the reload wrote the summary of the calls before it)
    local s = h.events(lines, "failure_summary")
    assert.equal(2, #s)
    assert.equal(5, s[1].failed)
    assert.equal(2, s[2].interval)
    assert.equal(3, s[2].failed, "the 3 fast-fails of the first 2 s")
    assert.equal(3, s[2].operations[op].circuit_open.failed)
    assert.is_nil(s[2].correlation_id)
  end)

  it("rejects a summary interval <= 0 and an unknown level, naming the field", function()
    local bad = {
      { { log = { summary_interval = 0 } }, "log.summary_interval: expected seconds in %(0, 3600%], got 0" },
      { { log = { summary_interval = -1 } }, "log.summary_interval: expected seconds in %(0, 3600%], got %-1" },
      { { log = { level = "loud" } }, 'log.level: expected one of debug, info, warn, error, critical, got "loud"' },
      { { log = { rate = 1 } }, 'log: unknown key "rate"' },
    }
    for _, c in ipairs(bad) do
      local ok, err = pcall(mnemo.configure, c[1])
      assert.is_false(ok)
      assert.matches(c[2], tostring(err))
    end
  end)
end)
