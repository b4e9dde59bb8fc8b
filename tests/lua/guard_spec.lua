-- mnemo.guard and its parts: breakers, retries, bulkheads, on virtual time.
local mnemo = require "mnemo"

local h = require "helpers"
local quiet, events, start = h.capture_log, h.events, h.start

local failing = function(kind)
  return function()
    error(mnemo.error(kind, kind .. " failure"))
  end
end

local n = 0
local function uniq(prefix)
  n = n + 1
  return prefix .. n
end

describe("circuit breaker", function()
  local lines, restore
  before_each(function()
    mnemo.clock.virtual(true)
    lines, restore = quiet()
  end)
  after_each(function()
    restore()
    mnemo.clock.virtual(false)
  end)

  it("follows the seeds' scenario: 5 failures open it, 30 s to half-open, one success closes", function()
    local name = uniq("redis")
    local b = mnemo.breaker(name, { failure_threshold = 5, recovery_timeout = 30 })
    local seen = {}
    b:on_transition(function(_, from, to)
      seen[#seen + 1] = from .. "->" .. to
    end)
    mnemo.run(function()
      for _ = 1, 4 do
        assert.is_false(pcall(b.call, b, failing("connection")))
      end
      assert.equal("closed", b:state())
      assert.is_false(pcall(b.call, b, failing("connection")))
      assert.equal("open", b:state())
      -- Fails fast: fn is not called, no timeout is waited on.
      local called = false
      local ok, err = pcall(b.call, b, function()
        called = true
      end)
      assert.is_false(ok)
      assert.is_false(called)
      assert.equal("circuit_open", err.kind)
      assert.equal(name, err.breaker)
      assert.near(30, err.retry_after, 1e-6)
      mnemo.clock.advance(29.999)
      assert.equal("open", b:state())
      mnemo.clock.advance(0.001)
      assert.equal("half_open", b:state())
      assert.equal("ok", b:call(function()
        return "ok"
      end))
      assert.equal("closed", b:state())
      for _ = 1, 5 do
        pcall(b.call, b, failing("connection"))
      end
      mnemo.clock.advance(30)
      assert.is_false(pcall(b.call, b, failing("connection")))
      assert.equal("open", b:state(), "a failed probe reopens it")
      local m = b:metrics()
      assert.near(30, m.retry_after, 1e-6)
    end)
    assert.same({ "closed->open", "open->half_open", "half_open->closed", "closed->open",
      "open->half_open", "half_open->open" }, seen)
    assert.equal(6, #events(lines, "breaker_transition"))
  end)

  it("does not count bad input against the dependency", function()
    local b = mnemo.breaker(uniq("db"), { failure_threshold = 2 })
    for _ = 1, 5 do
      pcall(b.call, b, failing("invalid_input"))
    end
    assert.equal("closed", b:state())
    assert.equal(5, b:metrics().ignored)
  end)

  it("trips on a failure rate over a count window after minimum_calls", function()
    local b = mnemo.breaker(uniq("rate"), { failure_threshold = 0, failure_rate = 0.5, window = "count",
      window_size = 10, minimum_calls = 6 })
    local ok_fn = function() end
    for i = 1, 5 do
      pcall(b.call, b, i % 2 == 0 and ok_fn or failing("timeout"))
    end
    assert.equal("closed", b:state(), "below minimum_calls")
    pcall(b.call, b, failing("timeout"))
    assert.equal("open", b:state())
  end)

  it("reports metrics and resets", function()
    local name = uniq("m")
    local b = mnemo.breaker { name = name, failure_threshold = 1, critical = true }
    pcall(b.call, b, failing("connection"))
    local m = b:metrics()
    assert.equal("open", m.state)
    assert.equal(1, m.failures)
    assert.is_true(m.critical)
    assert.is_number(m.last_failure_at)
    assert.equal(1, m.config.failure_threshold)
    b:reset()
    assert.equal("closed", mnemo.breaker.get(name):state())
  end)

  it("refuses a name reused with a different config, naming the field", function()
    local name = uniq("dup")
    mnemo.breaker(name, { failure_threshold = 3 })
    assert.equal(mnemo.breaker.get(name), mnemo.breaker(name, { failure_threshold = 3 }))
    local ok, err = pcall(mnemo.breaker, name, { failure_threshold = 4 })
    assert.is_false(ok)
    assert.matches("breaker " .. name .. ": already exists with failure_threshold = 3; got 4", err)
  end)

  it("rejects bad configs with the field named", function()
    local ok, err = pcall(mnemo.breaker, uniq("bad"), { failure_threshold = 0, recovery_timeout = 0 })
    assert.is_false(ok)
    assert.matches("recovery_timeout", err)
  end)

  it("half-opens early when its health probe succeeds", function()
    local healthy = false
    local b = mnemo.breaker(uniq("probe"), { failure_threshold = 1, recovery_timeout = 600,
      health_probe = function()
        return healthy
      end, probe_interval = 5 })
    mnemo.run(function()
      pcall(b.call, b, failing("connection"))
      assert.equal("open", b:state())
      mnemo.clock.advance(5)
      assert.equal("open", b:state())
      healthy = true
      mnemo.clock.advance(5)
      assert.equal("half_open", b:state())
    end)
  end)
end)

describe("mnemo.guard", function()
  local lines, restore
  before_each(function()
    mnemo.clock.virtual(true)
    lines, restore = quiet()
  end)
  after_each(function()
    restore()
    mnemo.clock.virtual(false)
  end)

  local function configure(ops_name, op, extra)
    local c = {
      timeouts = { cache_operation = 1, default = 30 },
      retry = { cache = { attempts = 3, base = 0.5, max = 5, jitter = "none", on = { "connection", "timeout" } } },
      breakers = {},
      operations = {},
    }
    c.operations[ops_name] = op
    for k, v in pairs(extra or {}) do
      c[k] = v
    end
    mnemo.configure(c)
  end

  it("returns results on the success path", function()
    local op = uniq("op")
    configure(op, { timeout = "cache_operation" })
    local a, b = mnemo.guard(op, function(x)
      return x, "y"
    end, nil, "x")
    assert.equal("x", a)
    assert.equal("y", b)
  end)

  it("retries a retryable error with backoff, logging each retry", function()
    local op = uniq("get")
    configure(op, { timeout = "cache_operation", retry = "cache", idempotent = true })
    local calls = {}
    local box = mnemo.run(function()
      local box = start(mnemo.guard, op, function()
        calls[#calls + 1] = mnemo.now()
        if #calls < 3 then
          error(mnemo.error("connection", "refused"))
        end
        return "value"
      end)
      mnemo.clock.advance(0.5)
      mnemo.clock.advance(1.0)
      return box
    end)
    assert.is_true(box.result[1], tostring(box.result[2]))
    assert.equal("value", box.result[2])
    assert.equal(3, #calls)
    assert.near(0.5, calls[2] - calls[1], 1e-6)
    assert.near(1.0, calls[3] - calls[2], 1e-6)
    local retries = events(lines, "retry")
    assert.equal(2, #retries)
    assert.equal(op, retries[1].operation)
    assert.equal(1, retries[1].attempt)
    assert.equal(2, mnemo.stats()[op].retries)
  end)

  it("never retries a non-retryable or unknown error", function()
    local op = uniq("get")
    configure(op, { timeout = "cache_operation", retry = "cache", idempotent = true })
    for _, kind in ipairs({ "invalid_input", "constraint", "auth", "not_found" }) do
      local calls = 0
      local ok, err = pcall(mnemo.guard, op, function()
        calls = calls + 1
        error(mnemo.error(kind))
      end)
      assert.is_false(ok)
      assert.equal(kind, err.kind)
      assert.equal(1, calls)
    end
    local calls = 0
    local ok, err = pcall(mnemo.guard, op, function()
      calls = calls + 1
      error("a plain string error")
    end)
    assert.is_false(ok)
    assert.matches("plain string", err)
    assert.equal(1, calls)
  end)

  it("times out each attempt and retries the timeout", function()
    local op = uniq("slow")
    configure(op, { timeout = "cache_operation", retry = "cache", idempotent = true })
    local calls = 0
    local box = mnemo.run(function()
      local box = start(mnemo.guard, op, function()
        calls = calls + 1
        if calls == 1 then
          mnemo.sleep(10) -- stalls past the 1 s attempt timeout
        end
        return "second try"
      end)
      mnemo.clock.advance(1) -- attempt 1 times out
      mnemo.clock.advance(0.5) -- backoff, then attempt 2 succeeds
      return box
    end)
    assert.equal("second try", box.result[2])
    assert.equal(1, #events(lines, "timeout"))
    assert.equal(1, mnemo.stats()[op].timeouts)
  end)

  it("never sleeps past the caller's deadline", function()
    local op = uniq("db")
    configure(op, { timeout = "cache_operation", retry = "cache", idempotent = true })
    local calls = 0
    local box = mnemo.run(function()
      local box = start(mnemo.timeout, 0.7, mnemo.guard, op, function()
        calls = calls + 1
        error(mnemo.error("connection"))
      end)
      mnemo.clock.advance(10)
      return box
    end)
    -- attempt 1 at 0 s, backoff 0.5 s, attempt 2 at 0.5 s; the next backoff
    -- (1 s) would end past 0.7 s: the call fails at once instead.
    assert.equal(2, calls)
    assert.equal("connection", box.result[2].kind)
  end)

  it("fails fast when the breaker is open, and uses the fallback", function()
    local op, br = uniq("embed"), uniq("embedding")
    configure(op, { timeout = 10, breaker = br }, { breakers = { [br] = { failure_threshold = 2, recovery_timeout = 60 } } })
    for _ = 1, 2 do
      pcall(mnemo.guard, op, failing("http_5xx"))
    end
    local called = false
    local r = mnemo.guard(op, function()
      called = true
    end, { fallback = function(err)
      return "fallback:" .. err.kind
    end })
    assert.is_false(called)
    assert.equal("fallback:circuit_open", r)
    assert.equal(1, mnemo.stats()[op].fast_fails)
  end)

  it("lets a call nested in another on the same breaker through, so a half-open breaker can close", function()
    local outer, inner, br = uniq("db_write"), uniq("db_connect"), uniq("database")
    -- Both operations on one breaker, as the indexer's db_write and db_connect.
    mnemo.configure {
      breakers = { [br] = { failure_threshold = 2, recovery_timeout = 5, half_open_max_calls = 1 } },
      operations = { [outer] = { timeout = 10, breaker = br }, [inner] = { timeout = 10, breaker = br } },
    }
    for _ = 1, 2 do
      pcall(mnemo.guard, outer, failing("connection"))
    end
    assert.equal("open", mnemo.breaker.get(br):state())
    mnemo.clock.advance(5)
    local r = mnemo.guard(outer, function()
      return mnemo.guard(inner, function()
        return "stored"
      end)
    end)
    assert.equal("stored", r)
    assert.equal("closed", mnemo.breaker.get(br):state())
  end)

  it("honours retry_after from the error", function()
    local op = uniq("http")
    configure(op, { retry = "r", idempotent = true }, {
      retry = { r = { attempts = 2, base = 0.1, max = 1, jitter = "none", on = { "rate_limited" } } } })
    local times = {}
    local box = mnemo.run(function()
      local box = start(mnemo.guard, op, function()
        times[#times + 1] = mnemo.now()
        if #times == 1 then
          error(mnemo.error("rate_limited", "429", { retry_after = 3 }))
        end
        return "ok"
      end)
      mnemo.clock.advance(2.9)
      assert.equal(1, #times)
      mnemo.clock.advance(0.1)
      return box
    end)
    assert.equal("ok", box.result[2])
    assert.near(3, times[2] - times[1], 1e-6)
  end)

  describe("a next_delay hook", function()
    local clamps = require("mnemo.guard").hook_clamps

    -- An operation retried up to `attempts` times on connection errors
    -- with a jitter-free backoff, whose next_delay hook is `hook`.
    local function hooked(hook, retry, op_extra)
      local op = uniq("hooked")
      local spec = { retry = "r", idempotent = true, next_delay = hook }
      for k, v in pairs(op_extra or {}) do
        spec[k] = v
      end
      local r = { attempts = 3, base = 0.01, max = 0.05, jitter = "none", on = { "connection" } }
      for k, v in pairs(retry or {}) do
        r[k] = v
      end
      mnemo.configure { retry = { r = r }, operations = { [op] = spec } }
      return op
    end

    -- Runs a call of op that always fails; returns the attempt times and
    -- the pcall results.
    local function run_failing(op, advance)
      local times = {}
      local box = mnemo.run(function()
        local box = start(mnemo.guard, op, function()
          times[#times + 1] = mnemo.now()
          error(mnemo.error("connection", "refused"))
        end)
        for _ = 1, 10 do
          mnemo.clock.advance(advance or 0.1)
        end
        return box
      end)
      return times, box.result
    end

    it("cannot wait longer than the retry policy's max (cut to it, logged once)", function()
      local op = hooked(function()
        return 1e9
      end)
      local times, result = run_failing(op)
      assert.is_not_nil(result, "the call never returned")
      assert.is_false(result[1])
      assert.equal("connection", result[2].kind)
      assert.equal(3, #times)
      assert.near(0.05, times[2] - times[1], 1e-6)
      assert.near(0.05, times[3] - times[2], 1e-6)
      assert.equal(2, clamps[op].above_max)
      local logged = events(lines, "hook_clamped")
      assert.equal(1, #logged)
      assert.equal(op, logged[1].owner)
      assert.equal("above_max", logged[1].reason)
      assert.equal(0.05, logged[1].bound)
    end)

    it("returning 1e9 on the real clock: the call still ends within a second", function()
      mnemo.clock.virtual(false)
      local op = hooked(function()
        return 1e9
      end)
      local calls = 0
      local elapsed, ok, err = mnemo.run(function()
        local t0 = mnemo.now()
        -- The outer timeout only keeps a regression from hanging the suite.
        local ok, err = pcall(mnemo.timeout, 5, mnemo.guard, op, function()
          calls = calls + 1
          error(mnemo.error("connection", "refused"))
        end)
        return mnemo.now() - t0, ok, err
      end)
      assert.is_false(ok)
      assert.equal("connection", err.kind)
      assert.equal(3, calls)
      assert.is_true(elapsed < 1, "took " .. elapsed .. " s")
    end)

    it("returning -1, NaN or math.huge is refused and the built-in delay is used", function()
      local hook_failures = require("mnemo.hooks").failures
      for _, bad in ipairs({ -1, 0 / 0, math.huge }) do
        local before = hook_failures.next_delay or 0
        local op = hooked(function()
          return bad
        end)
        local times, result = run_failing(op)
        assert.is_false(result[1], tostring(bad))
        assert.equal(3, #times, tostring(bad))
        -- base 0.01, doubling, no jitter
        assert.near(0.01, times[2] - times[1], 1e-6, tostring(bad))
        assert.near(0.02, times[3] - times[2], 1e-6, tostring(bad))
        assert.equal(before + 2, hook_failures.next_delay, tostring(bad))
        assert.is_nil(clamps[op], tostring(bad))
      end
    end)

    it("cannot retry past the operation's deadline, whatever its max", function()
      local op = hooked(function()
        return 5
      end, { attempts = 5, max = 10 }, { deadline = 0.3 })
      local times, result = run_failing(op)
      -- 5 s is within max but cannot start before the 0.3 s deadline: the
      -- first failure is final, at once (not a timeout).
      assert.is_false(result[1])
      assert.equal("connection", result[2].kind)
      assert.equal(1, #times)
      assert.equal(1, clamps[op].past_deadline)
      assert.is_nil(clamps[op].above_max)
      assert.equal(0, mnemo.stats()[op].retries)
      local logged = events(lines, "hook_clamped")
      assert.equal(1, #logged)
      assert.equal("past_deadline", logged[1].reason)
    end)

    it("is honoured within the bounds; a server's retry_after may exceed max, never the deadline", function()
      local op = hooked(function()
        return 0.1
      end, { attempts = 4, max = 0.2 }, { deadline = 1 })
      local times = {}
      local box = mnemo.run(function()
        local box = start(mnemo.guard, op, function()
          times[#times + 1] = mnemo.now()
          -- The second failure asks for 0.5 s (above max: honoured), the
          -- third for more than the deadline leaves (no retry).
          local after = ({ nil, 0.5, 5 })[#times]
          error(mnemo.error("connection", "refused", { retry_after = after }))
        end)
        for _ = 1, 20 do
          mnemo.clock.advance(0.1)
        end
        return box
      end)
      assert.is_false(box.result[1])
      assert.equal(3, #times)
      assert.near(0.1, times[2] - times[1], 1e-6)
      assert.near(0.5, times[3] - times[2], 1e-6)
      assert.is_nil(clamps[op])
    end)
  end)

  it("bounds concurrency with a bulkhead", function()
    local op, bh = uniq("embed"), uniq("bh")
    configure(op, { timeout = 100, bulkhead = bh }, { bulkheads = { [bh] = { max_concurrent = 2, max_queue = 1, max_wait = 5 } } })
    local running, peak = 0, 0
    local work = function()
      running = running + 1
      peak = math.max(peak, running)
      mnemo.sleep(1)
      running = running - 1
      return "done"
    end
    local boxes = mnemo.run(function()
      local boxes = {}
      for i = 1, 4 do
        boxes[i] = start(mnemo.guard, op, work)
      end
      mnemo.clock.advance(1)
      mnemo.clock.advance(1)
      return boxes
    end)
    assert.equal(2, peak)
    assert.equal("done", boxes[1].result[2])
    assert.equal("done", boxes[2].result[2])
    assert.equal("done", boxes[3].result[2], "queued, then admitted")
    assert.equal("bulkhead_full", boxes[4].result[2].kind, "queue of 1 was full")
  end)

  it("gives up a bulkhead wait after max_wait", function()
    local op, bh = uniq("embed"), uniq("bh")
    configure(op, { timeout = 100, bulkhead = bh }, { bulkheads = { [bh] = { max_concurrent = 1, max_queue = 5, max_wait = 2 } } })
    local boxes = mnemo.run(function()
      local a = start(mnemo.guard, op, function()
        mnemo.sleep(10)
      end)
      local b = start(mnemo.guard, op, function() end)
      mnemo.clock.advance(2)
      assert.is_not_nil(b.result)
      mnemo.clock.advance(8)
      return { a, b }
    end)
    assert.equal("bulkhead_full", boxes[2].result[2].kind)
    assert.matches("max_wait", boxes[2].result[2].reason)
  end)

  it("runs an unknown operation under the default timeout and counts it", function()
    mnemo.configure { timeouts = { default = 2 } }
    local op = uniq("never_configured")
    local box = mnemo.run(function()
      local box = start(mnemo.guard, op, function()
        mnemo.sleep(5)
      end)
      mnemo.clock.advance(2)
      return box
    end)
    assert.equal("timeout", box.result[2].kind)
    local _, unknown = mnemo.stats()
    assert.equal(1, unknown[op])
    assert.is_false(mnemo.explain(op).known)
    assert.equal(2, mnemo.explain(op).timeout)
  end)

  it("refuses to retry a non-idempotent operation at configure time", function()
    local ok, err = pcall(mnemo.configure, {
      retry = { r = { attempts = 3 } },
      operations = { insert = { retry = "r" } },
    })
    assert.is_false(ok)
    assert.matches("operations.insert.retry: refusing to retry an operation not marked idempotent", err)
  end)

  it("lists every problem of a bad configuration and applies nothing", function()
    local op = uniq("kept")
    configure(op, { timeout = 7 })
    local ok, err = pcall(mnemo.configure, {
      timeouts = { parse = -1 },
      retry = { cache = { attempts = 0, jitter = "sometimes", on = { "connection", "cosmic_rays" } } },
      breakers = { redis = { failure_threshold = "five" } },
      operations = { get = { retry = "nope", timeout = "missing" } },
      surprise = true,
    })
    assert.is_false(ok)
    for _, want in ipairs({
      "timeouts.parse: expected a number of seconds > 0, got %-1",
      "retry.cache.attempts: expected integer >= 1, got 0",
      'retry.cache.jitter: expected none, full, equal, decorrelated or proportional, got "sometimes"',
      'retry.cache.on%[2%]: expected an error class',
      'breakers.redis.failure_threshold: expected integer >= 0, got "five"',
      'operations.get.retry: expected a name in retry, got "nope"',
      'operations.get.timeout: expected a name in timeouts, got "missing"',
      'config: unknown key "surprise"',
    }) do
      assert.matches(want, err)
    end
    -- The previous configuration is still in force.
    assert.equal(7, mnemo.explain(op).timeout)
  end)

  it("keeps a breaker's live state when the configuration changes", function()
    local op, br = uniq("x"), uniq("br")
    configure(op, { breaker = br }, { breakers = { [br] = { failure_threshold = 5 } } })
    for _ = 1, 3 do
      pcall(mnemo.guard, op, failing("connection"))
    end
    configure(op, { breaker = br }, { breakers = { [br] = { failure_threshold = 4 } } })
    assert.equal(3, mnemo.breaker.get(br):metrics().consecutive_failures)
    pcall(mnemo.guard, op, failing("connection"))
    assert.equal("open", mnemo.breaker.get(br):state())
  end)
end)

describe("mnemo.retry", function()
  it("spreads delays with jitter within bounds (fixed seed)", function()
    mnemo.clock.virtual(true)
    local lines, restore = quiet()
    local gaps = {}
    mnemo.run(function()
      for _ = 1, 50 do
        local last
        local box = start(mnemo.retry, { attempts = 2, base = 1, max = 1, jitter = "full", seed = 7,
          on = { "timeout" } }, function()
          local t = mnemo.now()
          if last then
            gaps[#gaps + 1] = t - last
            return true
          end
          last = t
          error(mnemo.error("timeout"))
        end)
        mnemo.clock.advance(1)
        assert.is_true(box.result[1])
      end
    end)
    restore()
    mnemo.clock.virtual(false)
    local sum = 0
    for _, g in ipairs(gaps) do
      assert.is_true(g >= 0 and g <= 1)
      sum = sum + g
    end
    assert.equal(50, #gaps)
    -- Same seed each call: every client of this spec draws the same delay;
    -- the point here is the bound, the spread is tested in C.
    assert.is_true(sum / #gaps <= 1)
    assert.is_true(#lines >= 50)
  end)
end)

describe("retry policies", function()
  local core = require "mnemo_core"

  it("keeps every jitter within its bounds, with the expected mean (fixed seed)", function()
    local cases = {
      { jitter = "none", lo = 4, hi = 4, mean = 4 },
      { jitter = "full", lo = 0, hi = 4, mean = 2 },
      { jitter = "equal", lo = 2, hi = 4, mean = 3 },
    }
    for _, c in ipairs(cases) do
      local p = assert(core.retry_policy_new { attempts = 5, base = 1, max = 10, multiplier = 2,
        jitter = c.jitter, seed = 42 })
      local sum, n = 0, 20000
      for _ = 1, n do
        local d = p:delay(3, 0) -- third retry: 1 * 2^2 = 4 s before jitter
        assert.is_true(d >= c.lo - 1e-9 and d <= c.hi + 1e-9, c.jitter .. " gave " .. d)
        sum = sum + d
      end
      assert.near(c.mean, sum / n, c.mean * 0.02 + 1e-9, c.jitter)
    end
    local p = assert(core.retry_policy_new { attempts = 5, base = 1, max = 10, jitter = "decorrelated", seed = 1 })
    local prev = 0
    for _ = 1, 1000 do
      prev = p:delay(2, prev)
      assert.is_true(prev >= 1 and prev <= 10)
    end
  end)

  it("proportional jitter: delay x U(0.75, 1.25), never past max, seeded", function()
    local function draws(seed, attempt, n)
      local p = assert(core.retry_policy_new { attempts = 5, base = 1, max = 10, jitter = "proportional",
        seed = seed })
      local out = {}
      for i = 1, n do
        out[i] = p:delay(attempt, 0)
      end
      return out
    end
    -- attempt 3: 1 * 2^2 = 4 s before jitter, so [3, 5] around a mean of 4
    local sum, lo, hi = 0, math.huge, 0
    for _, d in ipairs(draws(42, 3, 20000)) do
      assert.is_true(d >= 3 - 1e-9 and d <= 5 + 1e-9, "gave " .. d)
      sum, lo, hi = sum + d, math.min(lo, d), math.max(hi, d)
    end
    assert.near(4, sum / 20000, 0.04)
    assert.is_true(lo < 3.05 and hi > 4.95, "spread over the whole +-25%")
    -- attempt 5: 16 s, capped to 10 before the jitter; 12.5 is cut to 10
    for _, d in ipairs(draws(42, 5, 5000)) do
      assert.is_true(d >= 7.5 - 1e-9 and d <= 10, "gave " .. d)
    end
    assert.same(draws(7, 2, 50), draws(7, 2, 50), "the same seed, the same delays")
    assert.are_not.same(draws(7, 2, 50), draws(8, 2, 50))
    -- accepted by the policy format, rejected when misspelt
    local config = require "mnemo.config"
    assert.is_true(config.validate { retry = { r = { jitter = "proportional" } } })
    local ok, problems = config.validate { retry = { r = { jitter = "proportion" } } }
    assert.is_nil(ok)
    assert.equal('retry.r.jitter: expected none, full, equal, decorrelated or proportional, got "proportion"',
      problems[1])
    -- and what a guarded retry waits: base 1, max 1: within [0.75, 1]
    mnemo.clock.virtual(true)
    local _, restore = quiet()
    local times = {}
    mnemo.run(function()
      local box = start(mnemo.retry, { attempts = 2, base = 1, max = 1, jitter = "proportional", seed = 3,
        on = { "timeout" } }, function()
        times[#times + 1] = mnemo.now()
        if #times == 1 then
          error(mnemo.error("timeout"))
        end
        return "ok"
      end)
      mnemo.clock.advance(1)
      assert.equal("ok", box.result[2])
    end)
    restore()
    mnemo.clock.virtual(false)
    local gap = times[2] - times[1]
    assert.is_true(gap >= 0.75 - 1e-9 and gap <= 1 + 1e-9, "waited " .. gap)
  end)

  it("two clients with different seeds spread out", function()
    local a = core.retry_policy_new { attempts = 3, base = 1, max = 10, jitter = "full", seed = 1 }
    local b = core.retry_policy_new { attempts = 3, base = 1, max = 10, jitter = "full", seed = 2 }
    local same = 0
    for _ = 1, 100 do
      if a:delay(1, 0) == b:delay(1, 0) then
        same = same + 1
      end
    end
    assert.is_true(same < 5)
  end)

  it("stops a retry storm once the budget is spent", function()
    mnemo.clock.virtual(true)
    local lines, restore = quiet()
    local op = uniq("storm")
    mnemo.configure {
      retry = { r = { attempts = 5, base = 0.1, max = 0.1, jitter = "none", on = { "connection" },
        budget = { ratio = 0, min_retries = 3, window = 60 } } },
      operations = { [op] = { retry = "r", idempotent = true } },
    }
    local calls = 0
    mnemo.run(function()
      for _ = 1, 5 do
        local box = start(mnemo.guard, op, function()
          calls = calls + 1
          error(mnemo.error("connection"))
        end)
        mnemo.clock.advance(1)
        assert.equal("connection", box.result[2].kind)
      end
    end)
    restore()
    mnemo.clock.virtual(false)
    -- 5 first attempts + the 3 retries the budget allows in the window.
    assert.equal(8, calls)
    assert.equal(3, mnemo.stats()[op].retries)
    assert.is_true(mnemo.stats()[op].budget_denials >= 2)
    assert.is_true(#events(lines, "retry_budget_exhausted") >= 2)
  end)
end)

describe("error classes", function()
  it("classifies error objects, luv error strings and protocol codes", function()
    local errors = mnemo.errors
    assert.equal("timeout", errors.classify(mnemo.error("timeout")))
    assert.equal("connection", errors.classify("ECONNREFUSED: connection refused"))
    assert.equal("connection", errors.classify("connect: ECONNRESET: connection reset by peer"))
    assert.equal("unknown", errors.classify("something odd"))
    assert.equal("unknown", errors.classify(nil))
    assert.equal("deadlock", errors.class_from_sqlstate("40P01"))
    assert.equal("constraint", errors.class_from_sqlstate("23505"))
    assert.equal("too_many_connections", errors.class_from_sqlstate("53300"))
    assert.equal("http_5xx", errors.class_from_http_status(503))
    assert.equal("rate_limited", errors.class_from_http_status(429))
    assert.equal("busy", errors.class_from_redis(0, "LOADING Redis is loading the dataset in memory"))
    assert.equal("connection", errors.class_from_redis(1, nil))
  end)
end)

describe("operation deadline", function()
  it("bounds all attempts together", function()
    mnemo.clock.virtual(true)
    local lines, restore = quiet()
    local op = uniq("bounded")
    mnemo.configure {
      retry = { r = { attempts = 10, base = 1, max = 1, jitter = "none", on = { "timeout" } } },
      operations = { [op] = { timeout = 2, deadline = 5, retry = "r", idempotent = true } },
    }
    local calls = 0
    local box = mnemo.run(function()
      local box = start(mnemo.guard, op, function()
        calls = calls + 1
        mnemo.sleep(100)
      end)
      mnemo.clock.advance(100)
      return box
    end)
    restore()
    mnemo.clock.virtual(false)
    -- attempts at 0 s (times out at 2 s), 3 s (cut at 5 s by the deadline)
    assert.equal(2, calls)
    assert.equal("timeout", box.result[2].kind)
    assert.equal(op .. " (all attempts)", box.result[2].operation)
  end)
end)

-- The composition order, retry( bulkhead( deadline_per_attempt( breaker(
-- call ) ) ) ): a call queued for a bulkhead slot neither burns its attempt
-- timeout nor holds a half-open trial, and one whose deadline runs out in
-- the queue leaves nothing behind. tests/c/test_guard.c runs the same three
-- scenarios through the C guard.
describe("mnemo.guard, queued in a bulkhead", function()
  local lines, restore
  before_each(function()
    mnemo.clock.virtual(true)
    lines, restore = quiet()
  end)
  after_each(function()
    restore()
    mnemo.clock.virtual(false)
  end)

  -- Operations on one breaker `br`: `slow` (attempt timeout 1 s) and
  -- `short` (0.2 s) share bulkhead `bh` (1 slot) with `plain` (no
  -- breaker); `side` has a bulkhead of its own. With half_open, the breaker
  -- is made half-open (one trial).
  local function setup_ops(half_open)
    local br, bh = uniq("br"), uniq("bh")
    local ops = { slow = uniq("slow"), short = uniq("short"), side = uniq("side"), plain = uniq("plain") }
    mnemo.configure {
      timeouts = { default = 30 },
      breakers = { [br] = { failure_threshold = 1, recovery_timeout = 1, half_open_max_calls = 1 } },
      bulkheads = { [bh] = { max_concurrent = 1, max_queue = 5, max_wait = 10 },
        [bh .. "_side"] = { max_concurrent = 1, max_queue = 5, max_wait = 10 } },
      operations = {
        [ops.slow] = { timeout = 1, bulkhead = bh, breaker = br },
        [ops.short] = { timeout = 0.2, bulkhead = bh, breaker = br },
        [ops.side] = { timeout = 1, bulkhead = bh .. "_side", breaker = br },
        [ops.plain] = { timeout = 1, bulkhead = bh },
      },
    }
    if half_open then
      mnemo.run(function()
        pcall(mnemo.guard, ops.side, failing("connection"))
        mnemo.clock.advance(1)
      end)
      assert.equal("half_open", mnemo.breaker.get(br):state())
    end
    return ops, mnemo.breaker.get(br)
  end

  it("does not count queue time against the attempt timeout", function()
    local ops = setup_ops(false)
    local boxes = mnemo.run(function()
      local a = start(mnemo.guard, ops.slow, function()
        mnemo.sleep(0.5)
        return "a"
      end)
      local b = start(mnemo.guard, ops.short, function()
        mnemo.sleep(0.1)
        return "b"
      end)
      mnemo.clock.advance(0.3) -- past b's 0.2 s, while it waits
      mnemo.clock.advance(0.2) -- a is done, b runs
      mnemo.clock.advance(0.1)
      return { a, b }
    end)
    assert.same({ true, "a" }, boxes[1].result)
    assert.same({ true, "b" }, boxes[2].result, "queued 0.5 s, then ran 0.1 s of its 0.2 s")
  end)

  it("does not hold the half-open trial while queued", function()
    local ops, br = setup_ops(true)
    local boxes = mnemo.run(function()
      -- the shared bulkhead is busy with a call that has no breaker...
      local filler = start(mnemo.guard, ops.plain, function()
        mnemo.sleep(0.5)
        return "filler"
      end)
      local queued = start(mnemo.guard, ops.short, function() return "queued" end)
      -- ...so a call on the breaker admitted elsewhere gets the trial
      local side = start(mnemo.guard, ops.side, function()
        mnemo.sleep(0.1)
        return "side"
      end)
      mnemo.clock.advance(0.1)
      assert.equal("closed", br:state(), "the side call's trial closed the breaker")
      mnemo.clock.advance(0.4)
      return { filler, queued, side }
    end)
    assert.same({ true, "filler" }, boxes[1].result)
    assert.same({ true, "queued" }, boxes[2].result, "admitted once the filler was done")
    assert.same({ true, "side" }, boxes[3].result)
  end)

  it("leaves nothing behind when the caller's deadline runs out in the queue", function()
    local ops, br = setup_ops(true)
    local boxes = mnemo.run(function()
      local filler = start(mnemo.guard, ops.plain, function()
        mnemo.sleep(0.9)
        return "filler"
      end)
      local queued = start(function()
        local ok, err = pcall(mnemo.timeout, 0.3, mnemo.guard, ops.short, function() return "never" end)
        -- the expired deadline is not left on the task: it can sleep again
        local slept = pcall(mnemo.sleep, 0.1)
        return ok, err and err.kind, slept
      end)
      mnemo.clock.advance(0.3)
      mnemo.clock.advance(0.1)
      -- the queued call gave back nothing it did not hold: the half-open
      -- breaker's trial goes to the next call, which closes it
      local after = start(mnemo.guard, ops.side, function() return "side" end)
      mnemo.clock.advance(0.5)
      return { filler, queued, after }
    end)
    assert.same({ true, "filler" }, boxes[1].result)
    assert.same({ true, false, "timeout", true }, boxes[2].result)
    assert.same({ true, "side" }, boxes[3].result)
    assert.equal("closed", br:state())
  end)
end)

describe("fast paths", function()
  local lines, restore
  before_each(function()
    lines, restore = quiet()
  end)
  after_each(function()
    restore()
  end)

  local function open_op(extra)
    local op, name = uniq("fast"), uniq("fast_br")
    local spec = { breaker = name }
    for k, v in pairs(extra or {}) do
      spec[k] = v
    end
    mnemo.configure {
      retry = { r = { attempts = 3, base = 0.001, max = 0.001, jitter = "none", on = { "connection" } } },
      breakers = { [name] = { failure_threshold = 3, recovery_timeout = 3600 } },
      operations = { [op] = spec },
    }
    for i = 1, 3 do
      local v, err = mnemo.try(op, function()
        error(mnemo.error("connection", "refused #" .. i))
      end)
      assert(v == nil and err.kind == "connection", tostring(err))
    end
    assert.equal("open", mnemo.breaker.get(name):state())
    return op, name
  end

  it("mnemo.try returns fn's results, or nil and the error, and never raises", function()
    local op = uniq("try")
    mnemo.configure { operations = { [op] = { timeout = 1 } } }
    assert.same({ 1, 2, 3 }, { mnemo.try(op, function(a, b)
      return a, b, 3
    end, nil, 1, 2) })
    local v, err = mnemo.try(op, function()
      error(mnemo.error("auth", "denied"))
    end)
    assert.is_nil(v)
    assert.equal("auth", err.kind)
    assert.equal("fell back", mnemo.try(op, error, { fallback = function()
      return "fell back"
    end }))
    -- a raising fallback's error is the call's: returned, not raised
    v, err = mnemo.try(op, error, { fallback = function()
      error("fallback broke", 0)
    end })
    assert.is_nil(v)
    assert.equal("fallback broke", err)
    -- mnemo.guard raises the same errors
    local ok, gerr = pcall(mnemo.guard, op, error, { fallback = function()
      error("fallback broke", 0)
    end })
    assert.is_false(ok)
    assert.equal("fallback broke", gerr)
  end)

  it("fast-fails return one shared, read-only error carrying what opened the breaker", function()
    local op, name = open_op()
    local _, e1 = mnemo.try(op, error)
    local ok, e2 = pcall(mnemo.guard, op, error)
    assert.is_false(ok)
    assert.is_true(rawequal(e1, e2), "one error object for every fast-fail")
    assert.equal("circuit_open", e1.kind)
    assert.equal(name, e1.breaker)
    assert.equal(op, e1.operation)
    assert.is_true(e1.retry_after > 3500)
    assert.equal("connection", e1.cause.kind)
    assert.equal("refused #3", e1.cause.message)
    assert.matches("it opened on: refused #3", tostring(e1))
    local wrote = pcall(function()
      e1.cause = "mine"
    end)
    assert.is_false(wrote, "a shared error cannot be changed")
    assert.equal("connection", e1.cause.kind)
    local copy = mnemo.errors.plain_copy(e1)
    copy.note = "kept"
    assert.equal("circuit_open", copy.kind)
    assert.equal("connection", copy.cause.kind)
    assert.is_true(copy.retry_after > 3500)
  end)

  it("a full bulkhead's rejection is a shared error too", function()
    local op, bh = uniq("bh_op"), uniq("bh")
    mnemo.configure {
      bulkheads = { [bh] = { max_concurrent = 1, max_queue = 0 } },
      operations = { [op] = { bulkhead = bh } },
    }
    local errs = {}
    mnemo.run(function()
      local holder = start(mnemo.guard, op, function()
        mnemo.sleep(0.02)
      end)
      mnemo.sleep(0.001)
      for i = 1, 2 do
        local _, err = mnemo.try(op, error)
        errs[i] = err
      end
      while not holder.result do
        mnemo.sleep(0.005)
      end
    end)
    assert.equal("bulkhead_full", errs[1].kind)
    assert.is_true(rawequal(errs[1], errs[2]))
  end)

  it("allocates nothing per call on the success path or per fast-fail", function()
    local op = uniq("alloc")
    mnemo.configure {
      retry = { r = { attempts = 3, base = 0.001, max = 0.001, jitter = "none", on = { "connection" } } },
      breakers = { [op] = { failure_threshold = 5, recovery_timeout = 3600 } },
      operations = { [op] = { timeout = 1, retry = "r", breaker = op, idempotent = true } },
    }
    local function work()
      return 1
    end
    local function per_call(fn)
      fn(2000)
      collectgarbage()
      collectgarbage("stop")
      local before = collectgarbage("count")
      fn(20000)
      local grew = (collectgarbage("count") - before) * 1024
      collectgarbage("restart")
      return grew / 20000
    end
    local guard, try = mnemo.guard, mnemo.try
    local success = per_call(function(n)
      for _ = 1, n do
        guard(op, work)
      end
    end)
    assert.is_true(success < 1, ("%.1f bytes per successful call"):format(success))
    local b = mnemo.breaker.get(op)
    for _ = 1, 5 do
      pcall(b.call, b, function()
        error(mnemo.error("connection"))
      end)
    end
    assert.equal("open", b:state())
    local fallback = { fallback = function()
      return 0
    end }
    local fast = per_call(function(n)
      for _ = 1, n do
        try(op, work)
        guard(op, work, fallback)
      end
    end) / 2
    assert.is_true(fast < 1, ("%.1f bytes per fast-fail"):format(fast))
  end)

  it("gives a call outside any correlation id its own, seen by its log lines and errors", function()
    local op = uniq("cid")
    mnemo.configure { operations = { [op] = { timeout = 1 } } }
    local seen = {}
    for i = 1, 2 do
      mnemo.try(op, function()
        seen[i] = mnemo.correlation.current()
        error(mnemo.error("auth", "denied"))
      end)
    end
    assert.is_string(seen[1])
    assert.are_not.equal(seen[1], seen[2])
    assert.is_nil(mnemo.correlation.current(), "released after the call")
    local failed = events(lines, "call_failed")
    assert.equal(seen[1], failed[#failed].correlation_id)
    -- inside an id, the call uses it, also when nested
    mnemo.correlation.with("outer-1", function()
      mnemo.try(op, function()
        mnemo.try(op, function()
          seen.inner = mnemo.correlation.current()
        end)
      end)
    end)
    assert.equal("outer-1", seen.inner)
    -- released after a raise too
    pcall(mnemo.guard, op, error)
    assert.is_nil(mnemo.correlation.current())
  end)
end)

describe("operations the policy does not name", function()
  local lines, restore
  before_each(function()
    mnemo.clock.virtual(true)
    lines, restore = quiet()
  end)
  after_each(function()
    restore()
    mnemo.clock.virtual(false)
  end)

  -- Runs mnemo.guard(op, fn) to the end on the virtual clock; returns the
  -- call's box and the times of its attempts.
  local function attempts_of(op, fail_with, succeed_on)
    local times = {}
    local box = mnemo.run(function()
      local box = start(mnemo.guard, op, function()
        times[#times + 1] = mnemo.now()
        if not succeed_on or #times < succeed_on then
          error(mnemo.error(fail_with, fail_with .. " failure"))
        end
        return "done"
      end)
      for _ = 1, 200 do
        if box.result then
          break
        end
        mnemo.clock.advance(0.25)
      end
      return box
    end)
    return box, times
  end

  it("are tried once when nothing declares them idempotent, even with a retry.default", function()
    mnemo.configure {
      retry = { default = { attempts = 5, base = 0.1, max = 0.1, jitter = "none", on = { "connection" } } },
    }
    local op = uniq("unnamed")
    local box, times = attempts_of(op, "connection")
    assert.equal("connection", box.result[2].kind)
    assert.equal(1, #times)
    local e = mnemo.explain(op)
    assert.is_false(e.known)
    assert.is_nil(e.retry)
    assert.is_false(e.retried)
    -- operations.default without idempotent = true: still once
    mnemo.configure {
      retry = { default = { attempts = 5, base = 0.1, max = 0.1, jitter = "none", on = { "connection" } } },
      operations = { default = { timeout = 5 } },
    }
    box, times = attempts_of(uniq("unnamed"), "connection")
    assert.equal(1, #times)
  end)

  it("get retry.default once operations.default declares them idempotent", function()
    mnemo.configure {
      retry = { default = { attempts = 2, base = 0.25, max = 0.25, jitter = "none", on = { "busy" } },
        other = { attempts = 4, base = 0.25, on = { "busy" } } },
      operations = { default = { idempotent = true }, named = { timeout = 1 } },
    }
    local op = uniq("unnamed")
    local box, times = attempts_of(op, "busy")
    assert.equal("busy", box.result[2].kind)
    assert.equal(2, #times)
    assert.near(0.25, times[2] - times[1], 1e-6)
    local e = mnemo.explain(op)
    assert.equal("default", e.retry)
    assert.is_true(e.retried)
    assert.equal(2, e.retry_policy.attempts)
    -- a named operation without a retry is not given retry.default
    local _, named = attempts_of("named", "busy")
    assert.equal(1, #named)
    assert.is_false(mnemo.explain("named").retried)
  end)

  it("are explained with the C policy's own defaults filled in", function()
    local core = require "mnemo_core"
    local config = require "mnemo.config"
    -- RETRY_DEFAULTS are what C takes for a key left out; DEFAULT_RETRY
    -- is given in full.
    for _, d in ipairs({ config.RETRY_DEFAULTS, config.DEFAULT_RETRY }) do
      local given = d == config.DEFAULT_RETRY and d or {}
      local p = assert(core.retry_policy_new(given))
      local plain = { jitter = "none" }
      for k, v in pairs(given) do
        plain[k] = k == "jitter" and "none" or v
      end
      local none = assert(core.retry_policy_new(plain))
      assert.equal(d.attempts, p:attempts())
      assert.near(d.base, none:delay(1, 0), 1e-9)
      assert.near(d.base * d.multiplier, none:delay(2, 0), 1e-9)
      assert.near(d.max, none:delay(1000, 0), 1e-9)
      local on, never = {}, {}
      for _, c in ipairs(d.on) do
        on[c] = true
      end
      for _, c in ipairs(d.never) do
        never[c] = true
      end
      for _, class in ipairs(mnemo.errors.CLASSES) do
        assert.equal(on[class] == true, p:should(class, 1), class)
        local one, err = core.retry_policy_new { on = { class } }
        if never[class] then
          assert.is_nil(one, class)
          assert.matches("also in never", err)
        else
          assert.is_truthy(one, class)
        end
      end
    end
  end)

  it("get the built-in default (3 attempts, 1 s base, 30 s cap, transient classes) without a retry.default", function()
    mnemo.configure { operations = { default = { idempotent = true } } }
    local op = uniq("unnamed")
    local e = mnemo.explain(op)
    assert.equal("(built-in default)", e.retry)
    assert.is_true(e.retried)
    assert.equal(3, e.retry_policy.attempts)
    assert.equal(1.0, e.retry_policy.base)
    assert.equal(30, e.retry_policy.max)
    for _, class in ipairs({ "connection", "timeout", "too_many_connections", "busy", "rate_limited", "http_5xx",
      "deadlock" }) do
      local box, times = attempts_of(op, class)
      assert.equal(class, box.result[2].kind)
      assert.equal(3, #times, class)
      assert.is_true(times[2] - times[1] <= 1 + 1e-6, "full jitter under the 1 s base")
      assert.is_true(times[3] - times[2] <= 2 + 1e-6)
    end
    for _, class in ipairs({ "invalid_input", "constraint", "auth", "not_found", "unknown", "circuit_open" }) do
      local _, times = attempts_of(op, class)
      assert.equal(1, #times, class)
    end
    local box, times = attempts_of(op, "connection", 2)
    assert.equal("done", box.result[2])
    assert.equal(2, #times)
  end)
end)

describe("switches", function()
  local lines, restore
  before_each(function()
    mnemo.clock.virtual(true)
    lines, restore = quiet()
  end)
  after_each(function()
    mnemo.configure {}
    restore()
    mnemo.clock.virtual(false)
  end)

  local function policy(op, br, switches)
    return {
      timeouts = { short = 1 },
      retry = { r = { attempts = 3, base = 0.5, max = 0.5, jitter = "none", on = { "connection", "timeout" } } },
      breakers = { [br] = { failure_threshold = 1, recovery_timeout = 3600 } },
      operations = { [op] = { timeout = "short", retry = "r", breaker = br, idempotent = true } },
      switches = switches,
    }
  end

  it("are validated: unknown names and non-booleans are refused, naming the field", function()
    local config = require "mnemo.config"
    local ok, problems = config.validate { switches = { bulkheads = false, retries = "no", [1] = true } }
    assert.is_nil(ok)
    assert.same({
      'switches.1: unknown switch (expected one of timeouts, retries, breakers, error_tracking)',
      'switches.bulkheads: unknown switch (expected one of timeouts, retries, breakers, error_tracking)',
      'switches.retries: expected true or false, got "no"',
    }, problems)
    assert.matches("switches: expected a table", select(2, config.validate { switches = false })[1])
    assert.is_true(config.validate { switches = { timeouts = true, retries = false, breakers = false,
      error_tracking = false } })
    local op, br = uniq("sw"), uniq("swbr")
    mnemo.configure(policy(op, br, { retries = false }))
    assert.is_false(pcall(mnemo.configure, policy(op, br, { retry = false })))
    assert.is_false(mnemo.explain(op).switches.retries, "a refused configuration changes nothing")
  end)

  it("breakers = false: an open breaker lets calls through and keeps its state; back on, it fails fast", function()
    local op, br = uniq("sw"), uniq("swbr")
    mnemo.configure(policy(op, br))
    assert.is_false(pcall(mnemo.guard, op, failing("invalid_input")))
    pcall(mnemo.guard, op, failing("auth"))
    mnemo.run(function()
      local box = start(mnemo.guard, op, failing("connection"))
      mnemo.clock.advance(1)
      return box
    end)
    local b = mnemo.breaker.get(br)
    assert.equal("open", b:state())
    assert.equal("circuit_open", select(2, mnemo.try(op, function()
      return "x"
    end)).kind)
    local before = b:metrics()
    mnemo.configure(policy(op, br, { breakers = false }))
    assert.equal("through", mnemo.guard(op, function()
      return "through"
    end))
    assert.equal("direct", b:call(function()
      return "direct"
    end), "Breaker:call is bypassed too")
    assert.equal("open", b:state(), "its state is kept")
    assert.same(before.failures, b:metrics().failures)
    assert.is_false(mnemo.explain(op).switches.breakers)
    assert.equal(br, mnemo.explain(op).breaker, "explain still names it")
    local ev = events(lines, "switch_changed")
    assert.equal("breakers", ev[#ev].switch)
    assert.is_false(ev[#ev].enabled)
    mnemo.configure(policy(op, br))
    assert.equal("circuit_open", select(2, mnemo.try(op, function()
      return "x"
    end)).kind)
  end)

  it("retries = false: a retryable failure is tried once; back on, three times", function()
    local op, br = uniq("sw"), uniq("swbr")
    local function calls_for(switches)
      mnemo.configure(policy(op, br, switches))
      mnemo.breaker.get(br):reset()
      local calls = 0
      local box = mnemo.run(function()
        local box = start(mnemo.guard, op, function()
          calls = calls + 1
          error(mnemo.error("connection"))
        end)
        mnemo.clock.advance(5)
        return box
      end)
      assert.equal("connection", box.result[2].kind)
      return calls
    end
    -- a breaker that opens on the first failure would stop the retries:
    -- with breakers off too, only the retry switch decides
    assert.equal(3, calls_for({ breakers = false }))
    assert.equal(1, calls_for({ breakers = false, retries = false }))
    assert.is_false(mnemo.explain(op).retried)
    assert.equal("r", mnemo.explain(op).retry)
    local once = 0
    assert.is_false(pcall(mnemo.retry, { attempts = 3, base = 0.01, on = { "connection" } }, function()
      once = once + 1
      error(mnemo.error("connection"))
    end))
    assert.equal(1, once, "mnemo.retry too")
    assert.equal(3, calls_for({ breakers = false }))
  end)

  it("timeouts = false: an attempt runs past its timeout, and past the deadline; back on, it times out", function()
    local op, br = uniq("sw"), uniq("swbr")
    local function run_slow(switches, deadline)
      local p = policy(op, br, switches)
      p.operations[op].deadline = deadline
      mnemo.configure(p)
      mnemo.breaker.get(br):reset()
      return mnemo.run(function()
        local box = start(mnemo.guard, op, function()
          mnemo.sleep(5)
          return "slow but done"
        end)
        for _ = 1, 10 do
          mnemo.clock.advance(1)
        end
        return box
      end)
    end
    local box = run_slow({ timeouts = false })
    assert.is_true(box.result[1])
    assert.equal("slow but done", box.result[2])
    box = run_slow({ timeouts = false }, 2)
    assert.equal("slow but done", box.result[2], "the operation's deadline is a policy timeout too")
    assert.equal(1, mnemo.explain(op).timeout, "explain still says what the policy sets")
    assert.is_false(mnemo.explain(op).switches.timeouts)
    box = run_slow({ breakers = false }) -- (the breaker would open at the first timeout)
    assert.is_false(box.result[1])
    assert.equal("timeout", box.result[2].kind)
  end)

  it("error_tracking = false: nothing is recorded, from the guard, the breakers or tracking.record", function()
    local tracking = mnemo.tracking
    local op, br = uniq("sw"), uniq("swbr")
    local function recorded()
      return tracking.counters().recorded
    end
    local function outage()
      mnemo.breaker.get(br):reset()
      mnemo.run(function()
        local box = start(mnemo.guard, op, function()
          mnemo.sleep(5) -- a timeout, then the breaker opens
        end)
        mnemo.clock.advance(1)
        return box
      end)
      assert.equal("open", mnemo.breaker.get(br):state())
      pcall(mnemo.guard, op, failing("connection")) -- a fast-fail
      local direct = { mnemo.errors.record { severity = "ERROR", category = "database", message = "direct" } }
      local rok, rwhy = tracking.record { severity = "ERROR", category = "database", message = "by hand" }
      return rok, rwhy, direct
    end
    mnemo.configure(policy(op, br, { error_tracking = false }))
    local before = recorded()
    local ok, why, direct = outage()
    assert.is_false(ok)
    assert.equal("error tracking is switched off", why)
    assert.same({ false, "error tracking is switched off" }, direct)
    assert.equal(before, recorded())
    assert.is_true(#events(lines, "timeout") >= 1, "still logged")
    mnemo.configure(policy(op, br))
    before = recorded()
    assert.is_true(outage())
    -- the timeout, the opening, the failed call, the fast-fail, by hand
    assert.is_true(recorded() - before >= 4, "recorded: " .. (recorded() - before))
  end)

  it("are compiled into the operations: a success allocates nothing with every switch off", function()
    local op, br = uniq("sw"), uniq("swbr")
    mnemo.configure(policy(op, br, { timeouts = false, retries = false, breakers = false, error_tracking = false }))
    local function work()
      return 1
    end
    local guard = mnemo.guard
    for _ = 1, 2000 do
      guard(op, work)
    end
    collectgarbage()
    collectgarbage("stop")
    local before = collectgarbage("count")
    for _ = 1, 20000 do
      guard(op, work)
    end
    local grew = (collectgarbage("count") - before) * 1024
    collectgarbage("restart")
    assert.is_true(grew / 20000 < 1, grew / 20000 .. " B per call")
    assert.same({ timeouts = false, retries = false, breakers = false, error_tracking = false },
      mnemo.explain(op).switches)
  end)
end)

-- Timeout rates over the guard's window, breaker false positives and the
-- breaker's recent failures (mnemo.stats(), Breaker:metrics()).
describe("rates and recent failures", function()
  local restore
  before_each(function()
    mnemo.clock.virtual(true)
    local _
    _, restore = quiet()
  end)
  after_each(function()
    restore()
    mnemo.clock.virtual(false)
  end)

  -- A success that overruns its attempt timeout without yielding: a
  -- timeout counted, whatever the clock.
  local function overrun()
    mnemo.clock.advance(2)
    return true
  end
  local function ok_fn()
    return true
  end

  it("gives the timeout rate of an operation over about a minute, forgetting older calls", function()
    local op = uniq("rated")
    mnemo.configure { operations = { [op] = { timeout = 1 } } }
    mnemo.run(function()
      for _ = 1, 8 do
        assert.is_true(mnemo.try(op, ok_fn))
      end
      assert.is_nil(mnemo.try(op, overrun))
      assert.is_nil(mnemo.try(op, overrun))
    end)
    local s = mnemo.stats()[op]
    assert.equal(10, s.window_calls)
    assert.equal(2, s.window_timeouts)
    assert.near(0.2, s.timeout_rate, 1e-9)
    assert.near(0.2, require("mnemo.guard").rates()[op].rate, 1e-9)
    -- Read twice at the same instant: the same figures (a read does not
    -- start the window over).
    assert.near(0.2, mnemo.stats()[op].timeout_rate, 1e-9)
    -- Read every 6 s for two minutes with only successes: the timeouts
    -- leave the window.
    for _ = 1, 20 do
      mnemo.clock.advance(6)
      mnemo.run(function()
        assert.is_true(mnemo.try(op, ok_fn))
      end)
      mnemo.stats()
    end
    s = mnemo.stats()[op]
    assert.equal(0, s.window_timeouts)
    assert.is_true(s.window_calls >= 9 and s.window_calls <= 11, tostring(s.window_calls))
    assert.equal(0, s.timeout_rate)
    assert.equal(2, s.timeouts) -- the total stays
  end)

  it("costs the success path no allocation with a breaker and a window", function()
    local op = uniq("cheap")
    mnemo.configure { breakers = { [op] = { failure_threshold = 5 } },
      operations = { [op] = { timeout = 1, breaker = op } } }
    local guard = mnemo.guard
    mnemo.run(function()
      for _ = 1, 2000 do
        guard(op, ok_fn)
      end
      mnemo.stats()
      collectgarbage()
      collectgarbage("stop")
      local before = collectgarbage("count")
      for _ = 1, 20000 do
        guard(op, ok_fn)
      end
      local grew = (collectgarbage("count") - before) * 1024
      collectgarbage("restart")
      assert.is_true(grew / 20000 < 1, grew / 20000 .. " B per call")
    end)
    assert.same({}, mnemo.breaker.get(op):metrics().recent_failures)
  end)

  local function trip(op, n)
    for _ = 1, n do
      assert.is_nil(mnemo.try(op, failing("connection")))
    end
  end

  it("counts a trip whose first half-open trial succeeded as a false positive", function()
    local op = uniq("fp")
    mnemo.configure { breakers = { [op] = { failure_threshold = 2, recovery_timeout = 1 } },
      operations = { [op] = { timeout = 5, breaker = op } } }
    local b = mnemo.breaker.get(op)
    mnemo.run(function()
      trip(op, 2)
      assert.equal("open", b:state())
      local m = b:metrics()
      assert.equal(1, m.trips)
      assert.equal(0, m.trips_decided)
      assert.equal(0, m.false_positive_rate)
      mnemo.clock.advance(1)
      assert.is_true(mnemo.try(op, ok_fn)) -- the first trial: a false positive
      assert.equal("closed", b:state())
      trip(op, 2)
      mnemo.clock.advance(1)
      assert.is_nil(mnemo.try(op, failing("connection"))) -- the first trial fails: a real trip
      assert.equal("open", b:state())
    end)
    local m = b:metrics()
    assert.equal(3, m.trips)
    assert.equal(2, m.trips_decided)
    assert.equal(1, m.false_positives)
    assert.near(0.5, m.false_positive_rate, 1e-9)
    -- A reset ends the pending trip undecided.
    b:reset()
    assert.equal(2, b:metrics().trips_decided)
  end)

  it("decides on the first trial when half-open takes several, and ignores ignored classes", function()
    local op = uniq("fp2")
    mnemo.configure { breakers = { [op] = { failure_threshold = 1, recovery_timeout = 1, half_open_max_calls = 2 } },
      operations = { [op] = { timeout = 5, breaker = op } } }
    local b = mnemo.breaker.get(op)
    mnemo.run(function()
      trip(op, 1)
      mnemo.clock.advance(1)
      assert.is_nil(mnemo.try(op, failing("invalid_input"))) -- decides nothing
      assert.equal(0, b:metrics().trips_decided)
      assert.is_true(mnemo.try(op, ok_fn)) -- first trial succeeded
      assert.equal("half_open", b:state())
      assert.is_nil(mnemo.try(op, failing("connection"))) -- reopens: the trip was already decided
    end)
    local m = b:metrics()
    assert.equal(2, m.trips)
    assert.equal(1, m.trips_decided)
    assert.equal(1, m.false_positives)
  end)

  it("decides by the first health probe, also through Breaker:call", function()
    local name = uniq("probed")
    local healthy = { true }
    local b = mnemo.breaker(name, { failure_threshold = 1, recovery_timeout = 60, probe_interval = 1,
      health_probe = function()
        return table.remove(healthy, 1) or false
      end })
    mnemo.run(function()
      assert.is_false(pcall(b.call, b, failing("connection")))
      assert.equal("open", b:state())
      mnemo.clock.advance(1) -- the probe succeeds: half-open, a false positive
      assert.equal("half_open", b:state())
      assert.equal(1, b:metrics().false_positives)
      assert.is_false(pcall(b.call, b, failing("connection"))) -- reopens; the next probe fails
      healthy = { false, true }
      mnemo.clock.advance(1)
      assert.equal("open", b:state())
    end)
    local m = b:metrics()
    assert.equal(2, m.trips)
    assert.equal(2, m.trips_decided)
    assert.equal(1, m.false_positives)
    b:reset()
    mnemo.breaker.remove(name)
  end)

  it("keeps the last 10 counted failures, scrubbed and cut to 200 bytes, with kind and time", function()
    local op = uniq("recent")
    mnemo.configure { breakers = { [op] = { failure_threshold = 1000 } },
      operations = { [op] = { timeout = 1, breaker = op } } }
    local b = mnemo.breaker.get(op)
    mnemo.run(function()
      for i = 1, 12 do
        mnemo.try(op, function()
          error(mnemo.error("connection", "refused #" .. i))
        end)
      end
      mnemo.try(op, failing("not_found")) -- ignored: not counted, not kept
      mnemo.try(op, function()
        error(mnemo.error("http_5xx", "at /home/alice/x token password=hunter2 " .. ("x"):rep(500)))
      end)
      mnemo.try(op, overrun) -- a timeout
    end)
    local recent = b:metrics().recent_failures
    assert.equal(10, #recent)
    assert.equal("refused #5", recent[1].message)
    assert.equal("refused #12", recent[8].message)
    assert.equal("connection", recent[8].kind)
    assert.equal("http_5xx", recent[9].kind)
    assert.is_true(#recent[9].message <= 200, #recent[9].message)
    assert.not_matches("hunter2", recent[9].message)
    assert.not_matches("alice", recent[9].message)
    assert.equal("timeout", recent[10].kind)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", recent[10].time)
    -- a copy: changing it changes nothing
    recent[1].message = "x"
    assert.equal("refused #5", b:metrics().recent_failures[1].message)
  end)
end)

describe("a success while the breaker is open", function()
  it("is counted and logged once per open period, with the count", function()
    local lines, restore = quiet()
    mnemo.clock.virtual(true)
    local op, br = uniq("late"), uniq("late_br")
    mnemo.configure {
      breakers = { [br] = { failure_threshold = 3, recovery_timeout = 10 } },
      operations = { [op] = { timeout = 60, breaker = br } },
    }
    mnemo.run(function()
      -- Two slow calls are admitted while closed; three fast failures open
      -- the breaker; then the slow ones succeed.
      local slow = {}
      for i = 1, 2 do
        slow[i] = start(mnemo.try, op, function()
          mnemo.sleep(5)
          return "late"
        end)
      end
      for _ = 1, 3 do
        mnemo.try(op, failing("connection"))
      end
      assert.equal("open", mnemo.breaker.get(br):state())
      mnemo.clock.advance(5)
      assert.equal("late", slow[1].result[2])
      assert.equal("late", slow[2].result[2])
      mnemo.clock.advance(6) -- past the recovery: the next look half-opens it
      assert.equal("half_open", mnemo.breaker.get(br):state())
    end)
    restore()
    mnemo.clock.virtual(false)
    local warned = events(lines, "breaker_success_while_open")
    assert.equal(1, #warned)
    assert.equal(br, warned[1].breaker)
    assert.equal(2, warned[1].successes)
    assert.equal(2, mnemo.breaker.get(br):metrics().successes_while_open)
  end)
end)
