-- Policy files: sandboxed evaluation, validation, atomic reload, watching.
local mnemo = require "mnemo"
local h = require "helpers"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir) == 0)

local function write(name, text)
  return h.write_file(dir .. "/" .. name, text)
end

local n = 0
local function fresh(prefix)
  n = n + 1
  return prefix .. n
end

describe("policy files", function()
  local lines, restore
  before_each(function()
    mnemo.policy._reset()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
    mnemo.policy._reset()
  end)

  it("loads the shipped default policy with the seeds' values", function()
    assert.equal(1, mnemo.policy.load("policies/default.lua"))
    assert.equal(5, mnemo.explain("parse_file").timeout)
    assert.equal(10, mnemo.explain("embed_batch").timeout)
    assert.equal("embedding", mnemo.explain("embed_batch").breaker)
    assert.is_true(mnemo.breaker.get("database"):metrics().critical)
    local st = mnemo.policy.status()
    assert.equal("policies/default.lua", st.path)
    assert.is_string(st.hash)
    assert.is_number(st.loaded_at)
  end)

  it("lists every problem of a bad file as path: key: message, and keeps the old policy", function()
    local good = write("good.lua", "return { timeouts = { default = 7 } }")
    assert.equal(1, mnemo.policy.load(good))
    local bad = write("bad.lua", [[
      return {
        retry = { cache = { attempts = 0, jitter = "wobbly" } },
        breakers = { redis = { recovery_timeout = -1 } },
        operations = { get = { breaker = "missing" } },
        sections = {},
      }]])
    local gen, err = mnemo.policy.load(bad)
    assert.is_nil(gen)
    for _, want in ipairs({
      bad .. ": retry.cache.attempts: expected integer >= 1, got 0",
      bad .. ': retry.cache.jitter: expected none, full, equal, decorrelated or proportional, got "wobbly"',
      bad .. ": breakers.redis.recovery_timeout: expected a number of seconds > 0, got %-1",
      bad .. ': operations.get.breaker: expected a name in breakers, got "missing"',
      bad .. ': config: unknown key "sections"',
    }) do
      assert.matches(want:gsub("%-", "%%-"):gsub("%%%%%-", "%%-"), err)
    end
    local st = mnemo.policy.status()
    assert.equal(1, st.generation, "the old generation stays in force")
    assert.equal(1, st.errors)
    assert.equal(err, st.last_error)
    assert.equal(7, mnemo.explain("anything").timeout)
    assert.equal(1, #h.events(lines, "policy_rejected"))
  end)

  it("rejects syntax errors and non-table results with the file's name", function()
    local gen, err = mnemo.policy.load(write("syntax.lua", "return { timeouts = "))
    assert.is_nil(gen)
    assert.matches("syntax.lua:1:", err)
    gen, err = mnemo.policy.load(write("number.lua", "return 42"))
    assert.is_nil(gen)
    assert.matches("expected the file to return a table, got number", err)
    gen, err = mnemo.policy.load(dir .. "/missing.lua")
    assert.is_nil(gen)
    assert.matches("cannot read", err)
  end)

  it("evaluates in a sandbox: escapes fail, globals do not leak", function()
    for _, code in ipairs({
      "os.execute('touch " .. dir .. "/pwned')",
      "io.open('/etc/passwd')",
      "require('os')",
      "load('return 1')",
      "loadstring('return 1')",
      "debug.getinfo(1)",
      "string.dump(function() end)",
      "('').dump(function() end)",
      "getmetatable('').__index.dump(function() end)",
      "setfenv(1, {})",
      "dofile('/etc/passwd')",
    }) do
      local gen, err = mnemo.policy.load(write("escape.lua", code .. "\nreturn {}"))
      assert.is_nil(gen, code)
      assert.matches("evaluation failed", err, code)
    end
    assert.is_nil(io.open(dir .. "/pwned"))
    assert.equal(1, mnemo.policy.load(write("global.lua", "leak = 1 return {}")))
    assert.is_nil(rawget(_G, "leak"))
  end)

  it("refuses a string.rep of gigabytes before it allocates them", function()
    for _, code in ipairs { "local x = ('x'):rep(2^30)", "local x = string.rep('ab', 2^29, ',')" } do
      local before = collectgarbage("count")
      local gen, err = mnemo.policy.load(write("rep.lua", code .. "\nreturn {}"))
      assert.is_nil(gen, code)
      assert.matches("memory limit of 64 MiB exceeded", err)
      assert.is_true(collectgarbage("count") - before < 16 * 1024, "the refused memory is not kept")
    end
    assert.equal(1, mnemo.policy.load(write("rep_ok.lua", "local x = ('x'):rep(1000) return {}")))
  end)

  it("stops an endless loop with a clear error", function()
    local gen, err = mnemo.policy.load(write("loop.lua", "while true do end return {}"))
    assert.is_nil(gen)
    assert.matches("instruction budget of %d+ exceeded", err)
  end)

  it("includes a file from the same directory; the including file wins", function()
    write("base.lua", "return { timeouts = { default = 3, parse = 1 } }")
    local top = write("top.lua", "return { include = 'base.lua', timeouts = { parse = 2 } }")
    assert.equal(1, mnemo.policy.load(top))
    assert.equal(2, mnemo.explain("parse").timeout)
    assert.equal(3, mnemo.explain("other").timeout)
    local gen, err = mnemo.policy.load(write("up.lua", "return { include = '../etc/x.lua' }"))
    assert.is_nil(gen)
    assert.matches("include: expected a file name in the same directory", err)
  end)

  it("keeps a breaker's live state across reloads, also when its threshold changes", function()
    local br = fresh("db")
    local op = fresh("q")
    local path = write("live.lua", ([[return { breakers = { %s = { failure_threshold = 5 } },
      operations = { %s = { breaker = "%s" } } }]]):format(br, op, br))
    assert.equal(1, mnemo.policy.load(path))
    for _ = 1, 3 do
      pcall(mnemo.guard, op, function()
        error(mnemo.error("connection"))
      end)
    end
    write("live.lua", ([[return { breakers = { %s = { failure_threshold = 4 } },
      operations = { %s = { breaker = "%s" } } }]]):format(br, op, br))
    assert.equal(2, mnemo.policy.reload())
    local m = mnemo.breaker.get(br):metrics()
    assert.equal(3, m.consecutive_failures)
    assert.equal(4, m.config.failure_threshold)
    pcall(mnemo.guard, op, function()
      error(mnemo.error("connection"))
    end)
    assert.equal("open", mnemo.breaker.get(br):state())
    -- A breaker the new policy drops is dropped.
    write("live.lua", "return {}")
    assert.equal(3, mnemo.policy.reload())
    assert.is_nil(mnemo.breaker.get(br))
  end)

  it("switches a mechanism off with a reload and back on, the breaker's state kept; a misspelt switch is refused",
    function()
    local br, op = fresh("swbr"), fresh("swop")
    write("sw_base.lua", ([[return { breakers = { %s = { failure_threshold = 1, recovery_timeout = 3600 } },
      operations = { %s = { breaker = "%s" } } }]]):format(br, op, br))
    local path = write("sw.lua", 'return { include = "sw_base.lua" }')
    assert.equal(1, mnemo.policy.load(path))
    local function fn()
      return "through"
    end
    pcall(mnemo.guard, op, function()
      error(mnemo.error("connection"))
    end)
    assert.equal("open", mnemo.breaker.get(br):state())
    assert.equal("circuit_open", select(2, mnemo.try(op, fn)).kind)
    -- The incident: one line in the watched file.
    write("sw.lua", 'return { include = "sw_base.lua", switches = { breakers = false } }')
    assert.equal(2, mnemo.policy.reload())
    assert.equal("through", mnemo.guard(op, fn))
    assert.equal("open", mnemo.breaker.get(br):state())
    assert.is_false(mnemo.explain(op).switches.breakers)
    local changed = h.events(lines, "switch_changed")
    assert.equal(1, #changed)
    assert.same({ "breakers", false }, { changed[1].switch, changed[1].enabled })
    write("sw.lua", 'return { include = "sw_base.lua", switches = { breaker = false } }')
    local gen, err = mnemo.policy.reload()
    assert.is_nil(gen)
    assert.matches("switches.breaker: unknown switch", err)
    assert.equal("through", mnemo.guard(op, fn), "the policy in force stays")
    write("sw.lua", 'return { include = "sw_base.lua" }')
    assert.equal(3, mnemo.policy.reload())
    assert.equal("circuit_open", select(2, mnemo.try(op, fn)).kind)
  end)

  it("lets 1,000 calls in flight finish under the generation they started with", function()
    local op = fresh("slow")
    local path = write("gen.lua", ("return { operations = { %s = { timeout = 0.2 } } }"):format(op))
    assert.equal(1, mnemo.policy.load(path))
    local results = mnemo.run(function()
      local boxes = {}
      for i = 1, 1000 do
        boxes[i] = h.start(mnemo.guard, op, function()
          mnemo.sleep(0.05)
          return i
        end)
      end
      -- Reload to a policy whose timeout would kill them, mid-flight.
      write("gen.lua", ("return { operations = { %s = { timeout = 0.01 } } }"):format(op))
      assert.equal(2, mnemo.policy.reload())
      mnemo.sleep(0.1)
      return boxes
    end)
    for i = 1, 1000 do
      assert.is_true(results[i].result[1], tostring(results[i].result[2]))
      assert.equal(i, results[i].result[2])
    end
    assert.equal(0.01, mnemo.explain(op).timeout, "new calls see the new generation")
  end)

  it("reloads on a file change, debounced, settling on the last write", function()
    local op = fresh("w")
    local path = write("watched.lua", ("return { operations = { %s = { timeout = 1 } } }"):format(op))
    assert.equal(1, mnemo.policy.load(path, { watch = true }))
    mnemo.run(function()
      -- An editor's save: truncate, a half write, then the whole file; and
      -- a second save right after.
      write("watched.lua", "")
      write("watched.lua", "return { operations = { ")
      write("watched.lua", ("return { operations = { %s = { timeout = 2 } } }"):format(op))
      write("watched.lua", ("return { operations = { %s = { timeout = 3 } } }"):format(op))
      local deadline = mnemo.now() + 3
      while mnemo.explain(op).timeout ~= 3 and mnemo.now() < deadline do
        mnemo.sleep(0.02)
      end
    end)
    assert.equal(3, mnemo.explain(op).timeout)
    local st = mnemo.policy.status()
    assert.equal(2, st.generation, "one reload for the burst of writes")
    assert.equal(0, st.errors, "the half-written file was never loaded")
  end)

  it("watches the file in force: a second load with watch follows the new file", function()
    local op = fresh("follow")
    local a = write("follow_a.lua", ("return { operations = { %s = { timeout = 1 } } }"):format(op))
    local b = write("follow_b.lua", ("return { operations = { %s = { timeout = 2 } } }"):format(op))
    assert.equal(1, mnemo.policy.load(a, { watch = true }))
    assert.equal(2, mnemo.policy.load(b, { watch = true }))
    mnemo.run(function()
      write("follow_a.lua", ("return { operations = { %s = { timeout = 7 } } }"):format(op))
      write("follow_b.lua", ("return { operations = { %s = { timeout = 3 } } }"):format(op))
      local deadline = mnemo.now() + 3
      while mnemo.explain(op).timeout ~= 3 and mnemo.now() < deadline do
        mnemo.sleep(0.02)
      end
      mnemo.sleep(0.1) -- an edit of A, wrongly watched, would land meanwhile
    end)
    assert.equal(3, mnemo.explain(op).timeout)
    assert.equal(b, mnemo.policy.status().path)
    assert.equal(3, mnemo.policy.status().generation)
  end)

  it("validates the lsp section: languages, the command as a list, the limits", function()
    local validate = require("mnemo.config").validate
    assert.is_true(validate { lsp = { python = { cmd = { "pylsp" }, max_in_flight = 8 },
      c = { cmd = { "clangd", "--background-index=false" }, init_timeout = 20, restarts_per_minute = 5 } } })
    local bad = {
      { { lsp = { cobol = { cmd = { "x" } } } }, 'lsp.cobol: expected a language %(c, javascript, lua, python%), got "cobol"' },
      { { lsp = { python = { cmd = "pylsp --stdio" } } }, "lsp.python.cmd: expected a list of 1 to 64 non%-empty strings" },
      { { lsp = { python = { cmd = {} } } }, "lsp.python.cmd: expected a list" },
      { { lsp = { python = { cmd = { "pylsp", "" } } } }, "lsp.python.cmd: expected a list" },
      { { lsp = { python = { cmd = { "pylsp" }, max_in_flight = 0 } } }, "lsp.python.max_in_flight: expected integer in %[1, 256%], got 0" },
      { { lsp = { python = { cmd = { "pylsp" }, shell = true } } }, 'lsp.python: unknown key "shell"' },
      { { lsp = { python = { cmd = { "pylsp" }, enabled = "no" } } }, 'lsp.python.enabled: expected true or false, got "no"' },
    }
    for _, c in ipairs(bad) do
      local ok, problems = validate(c[1])
      assert.is_nil(ok, c[2])
      assert.matches(c[2], table.concat(problems, "\n"))
    end
  end)

  it("refuses in validation what the C parts would refuse at configure (--check-policy agrees with load)", function()
    local validate = require("mnemo.config").validate
    local ok, problems = validate { breakers = { x = { failure_threshold = 0 } } }
    assert.is_nil(ok)
    assert.matches("breakers.x.failure_threshold: expected integer >= 1 when failure_rate", problems[1])
    ok, problems = validate {
      retry = { r = { attempts = 3 } },
      operations = { o = { retry = "r", idempotent = "yes" } },
    }
    assert.is_nil(ok)
    assert.matches('operations.o.idempotent: expected true or false, got "yes"', table.concat(problems, "\n"))
  end)

  it("survives unwatch as the last thing a task does (luv's close callbacks run before the state closes)", function()
    local path = write("last_unwatch.lua", "return {}")
    local script = write("last_unwatch_run.lua", ([[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = "build/?.so;" .. package.cpath
      local mnemo = require "mnemo"
      mnemo.run(function()
        assert(mnemo.policy.load(%q, { watch = true }))
        mnemo.policy.unwatch()
      end)
      print("done")
    ]]):format(path))
    local p = io.popen("MNEMO_LOG_LEVEL=error luajit " .. script .. " 2>&1; echo rc=$?")
    local out = p:read("*a")
    p:close()
    assert.matches("done\nrc=0", out)
  end)

  it("keeps the policy in force while its file is gone, counting no rejection, and reloads when it returns", function()
    local op = fresh("gone")
    local path = write("vanishing.lua", ("return { operations = { %s = { timeout = 1 } } }"):format(op))
    local lines, restore = h.capture_log()
    assert.equal(1, mnemo.policy.load(path, { watch = true }))
    mnemo.run(function()
      os.remove(path)
      local deadline = mnemo.now() + 3
      while #h.events(lines, "policy_file_missing") == 0 and mnemo.now() < deadline do
        mnemo.sleep(0.02)
      end
      mnemo.sleep(0.1)
      write("vanishing.lua", ("return { operations = { %s = { timeout = 4 } } }"):format(op))
      deadline = mnemo.now() + 3
      while mnemo.explain(op).timeout ~= 4 and mnemo.now() < deadline do
        mnemo.sleep(0.02)
      end
    end)
    restore()
    assert.equal(1, #h.events(lines, "policy_file_missing"))
    assert.equal(4, mnemo.explain(op).timeout)
    local st = mnemo.policy.status()
    assert.equal(2, st.generation)
    assert.equal(0, st.errors, "a missing file is not a rejected policy")
  end)
end)

describe("mnemo-run policy options", function()
  it("--check-policy exits 0 for a good file and 1 listing problems for a bad one", function()
    local r = h.mnemo_run({ "--check-policy", "policies/default.lua" })
    assert.equal(0, r.code, r.stderr)
    assert.equal("policies/default.lua: ok\n", r.stdout)
    local bad = write("cli_bad.lua", "return { retry = { r = { attempts = 0, base = -1 } } }")
    r = h.mnemo_run({ "--check-policy", bad })
    assert.equal(1, r.code)
    assert.matches(bad:gsub("%p", "%%%0") .. ": retry.r.attempts: expected integer >= 1, got 0", r.stderr)
    assert.matches("retry.r.base: expected a number of seconds > 0, got %-1", r.stderr)
  end)

  it("--explain prints the effective settings of an operation", function()
    local r = h.mnemo_run({ "--policy", "policies/default.lua", "--explain", "redis_get" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("timeout%s+1s per attempt", r.stdout)
    assert.matches("retry%s+cache: 3 attempts", r.stdout)
    assert.matches("breaker%s+redis: 5 consecutive failures, recovery 30s", r.stdout)
  end)

  it("--policy with a broken file stops with the problems listed", function()
    local bad = write("start_bad.lua", "return { timeouts = { default = 0 } }")
    local r = h.mnemo_run({ "--policy", bad, "-e", "print('not reached')" })
    assert.equal(1, r.code)
    assert.equal("", r.stdout)
    assert.matches("timeouts.default: expected a number of seconds > 0, got 0", r.stderr)
  end)
end)

describe("decision hooks", function()
  local lines, restore
  before_each(function()
    mnemo.policy._reset()
    mnemo.clock.virtual(true)
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
    mnemo.clock.virtual(false)
    mnemo.policy._reset()
  end)

  -- Loads a policy with one retried operation `op` whose extra fields are
  -- given as Lua source, runs a call failing `failures` times with `kind`,
  -- and returns the attempt times and the outcome.
  local function run_with(extra, failures, kind)
    mnemo.policy._reset()
    local op = fresh("hooked")
    local path = write("hooks.lua", ([[return {
      retry = { r = { attempts = 4, base = 1, max = 1, jitter = "none", on = { "connection" } } },
      operations = { %s = { retry = "r", idempotent = true, %s } } }]]):format(op, extra))
    assert.equal(1, mnemo.policy.load(path))
    local times = {}
    local box = mnemo.run(function()
      local box = h.start(mnemo.guard, op, function()
        times[#times + 1] = mnemo.now()
        if #times <= failures then
          error(mnemo.error(kind or "connection", "down", { status = 413 }))
        end
        return "ok"
      end)
      for _ = 1, 20 do
        mnemo.clock.advance(1)
      end
      return box
    end)
    return times, box.result
  end

  it("should_retry can veto a retry the built-in rule would make", function()
    local times, result = run_with("should_retry = function(err, attempt) return err.status ~= 413 end", 1)
    assert.equal(1, #times)
    assert.is_false(result[1])
  end)

  it("should_retry can allow what the built-in rule refuses", function()
    local times, result = run_with("should_retry = function(err) return err.kind == 'busy' end", 2, "busy")
    assert.equal(3, #times)
    assert.equal("ok", result[2])
  end)

  it("falls back to the built-in decision when a hook errors, loops or returns nonsense", function()
    for _, hook in ipairs({
      "should_retry = function() error('hook bug') end",
      "should_retry = function() while true do end end",
      "should_retry = function() return 'yes please' end",
      "next_delay = function() return -5 end",
      "next_delay = function() local t = {} t.x.y = 1 end",
    }) do
      local before = #h.events(lines, "hook_failed")
      local times, result = run_with(hook, 2)
      assert.equal(3, #times, hook)
      assert.equal("ok", result[2], hook)
      assert.is_true(#h.events(lines, "hook_failed") > before, hook)
    end
    assert.is_true((require("mnemo.hooks").failures.should_retry or 0) >= 3)
  end)

  it("next_delay sets the backoff, within the retry policy's max", function()
    local times = run_with("next_delay = function(attempt, err, proposed) return proposed / 4 end", 1)
    assert.equal(2, #times)
    assert.near(0.25, times[2] - times[1], 1e-6)
    -- 3 s is past the policy's max of 1 s: cut to it.
    times = run_with("next_delay = function(attempt, err, proposed) return proposed * 3 end", 1)
    assert.equal(2, #times)
    assert.near(1, times[2] - times[1], 1e-6)
  end)

  it("a fallback hook answers when the call fails; a broken one leaves the error", function()
    local _, result = run_with("fallback = function(err, ctx) return 'cached:' .. ctx.operation end", 9)
    assert.is_true(result[1])
    assert.matches("^cached:hooked", result[2])
    _, result = run_with("fallback = function() error('oops') end", 9)
    assert.is_false(result[1])
    assert.equal("connection", result[2].kind)
  end)

  it("on_transition hooks see breaker changes", function()
    local br = fresh("hb")
    local path = write("tr.lua", ([[return {
      breakers = { %s = { failure_threshold = 1,
        on_transition = function(name, from, to) if to == "open" then error("hook sees " .. name) end end } } }]]):format(br))
    assert.equal(1, mnemo.policy.load(path))
    local b = mnemo.breaker.get(br)
    pcall(b.call, b, function()
      error(mnemo.error("connection"))
    end)
    assert.equal("open", b:state(), "a failing hook does not stop the transition")
    local failed = h.events(lines, "hook_failed")
    assert.matches("hook sees " .. br, failed[#failed].error)
  end)
end)

describe("degradation ladders", function()
  local restore
  before_each(function()
    mnemo.policy._reset()
    mnemo.clock.virtual(true)
    local _
    _, restore = h.capture_log()
  end)
  after_each(function()
    restore()
    mnemo.clock.virtual(false)
  end)

  it("steps down by breaker state and error counts, and back up only after recover_after", function()
    local br, op = fresh("emb"), fresh("embed")
    local path = write("degrade.lua", ([[return {
      breakers = { %s = { failure_threshold = 6, recovery_timeout = 10 } },
      degrade = { embedding = { breaker = "%s", recover_after = 30, rungs = {
        { mode = "smaller_batches", errors = 3, window = 60 },
        { mode = "queue", state = "open" } } } },
      operations = { %s = { breaker = "%s" } } }]]):format(br, br, op, br))
    assert.equal(1, mnemo.policy.load(path))
    local fail = function()
      pcall(mnemo.guard, op, function()
        error(mnemo.error("http_5xx"))
      end)
    end
    local ok_call = function()
      mnemo.guard(op, function() end)
    end
    assert.equal("normal", mnemo.degrade.mode("embedding"))
    for _ = 1, 3 do
      fail()
    end
    assert.equal("smaller_batches", mnemo.degrade.mode("embedding"))
    for _ = 1, 3 do
      fail()
    end
    assert.equal("open", mnemo.breaker.get(br):state())
    assert.equal("queue", mnemo.degrade.mode("embedding"))
    -- The breaker recovers after 10 s, but the mode holds for 30 s more
    -- of clear conditions (and the errors must leave their 60 s window).
    mnemo.clock.advance(10)
    ok_call()
    assert.equal("closed", mnemo.breaker.get(br):state())
    assert.equal("queue", mnemo.degrade.mode("embedding"))
    mnemo.clock.advance(29)
    assert.equal("queue", mnemo.degrade.mode("embedding"))
    mnemo.clock.advance(1)
    -- Still 6 errors in the last 60 s: only one rung up.
    assert.equal("smaller_batches", mnemo.degrade.mode("embedding"))
    mnemo.clock.advance(21) -- the errors leave the window at 60 s
    assert.equal("smaller_batches", mnemo.degrade.mode("embedding"))
    mnemo.clock.advance(30)
    assert.equal("normal", mnemo.degrade.mode("embedding"))
  end)

  it("a plain string rule is one rung while the breaker is open", function()
    local path = write("simple.lua", [[return {
      breakers = { redis = { failure_threshold = 1 } },
      degrade = { redis = "l1_only" } }]])
    assert.equal(1, mnemo.policy.load(path))
    assert.equal("normal", mnemo.degrade.mode("redis"))
    local b = mnemo.breaker.get("redis")
    pcall(b.call, b, function()
      error(mnemo.error("connection"))
    end)
    assert.equal("l1_only", mnemo.degrade.mode("redis"))
  end)

  it("validates rungs", function()
    local gen, err = mnemo.policy.load(write("bad_degrade.lua", [[return {
      degrade = { x = { breaker = "nope", rungs = { { mode = 3 }, { mode = "q", state = "ajar" } } } } }]]))
    assert.is_nil(gen)
    assert.matches('degrade.x.breaker: expected a name in breakers, got "nope"', err)
    assert.matches("degrade.x.rungs%[1%].mode: expected a mode name", err)
    assert.matches("degrade.x.rungs%[1%]: expected a condition", err)
    assert.matches('degrade.x.rungs%[2%].state: expected "open" or "half_open", got "ajar"', err)
  end)
end)

describe("shipped policies", function()
  it("all pass --check-policy", function()
    local files = { "policies/default.lua" }
    for name in io.popen("ls policies/examples/*.lua"):lines() do
      files[#files + 1] = name
    end
    assert.is_true(#files >= 4)
    for _, f in ipairs(files) do
      local t, err = mnemo.policy.check(f)
      assert.is_table(t, err)
    end
  end)
end)

describe("live state across reloads", function()
  it("keeps a retry budget's spent window when the policy is reloaded", function()
    mnemo.policy._reset()
    mnemo.clock.virtual(true)
    local _, restore = h.capture_log()
    local op = fresh("budgeted")
    local src = [[return {
      retry = { r = { attempts = 3, base = 0.1, max = 0.1, jitter = "none", on = { "connection" },
        budget = { ratio = 0, min_retries = 2, window = 60 } } },
      operations = { %s = { retry = "r", idempotent = true } } }]]
    local path = write("budget.lua", src:format(op))
    assert.equal(1, mnemo.policy.load(path))
    local t = require("mnemo.testing")
    local calls = 0
    local failing = function()
      calls = calls + 1
      error(mnemo.error("connection"))
    end
    mnemo.run(function()
      local b = h.start(mnemo.guard, op, failing)
      mnemo.clock.advance(1)
    end)
    assert.equal(3, calls, "1 attempt + the 2 retries the budget allows")
    assert.equal(2, mnemo.policy.reload())
    mnemo.run(function()
      local b = h.start(mnemo.guard, op, failing)
      mnemo.clock.advance(1)
    end)
    assert.equal(4, calls, "the reloaded policy still knows the budget is spent")
    restore()
    mnemo.clock.virtual(false)
    mnemo.policy._reset()
  end)
end)

describe("mnemo-run --policy", function()
  it("reloads the policy on SIGHUP while the script runs", function()
    local path = write("hup.lua", "return { timeouts = { default = 4 } }")
    local r = h.mnemo_run({ "--policy", path, "-e", [[
      local mnemo = require "mnemo"
      print("generation " .. mnemo.policy.status().generation)
      io.stdout:flush()
      local t0 = mnemo.now()
      while mnemo.policy.status().generation < 2 and mnemo.now() - t0 < 5 do
        mnemo.sleep(0.01)
      end
      print("generation " .. mnemo.policy.status().generation)
    ]] }, { signal = "sighup", signal_after = 0.3 })
    assert.equal(0, r.code, r.stderr)
    assert.equal("generation 1\ngeneration 2\n", r.stdout)
  end)
end)
