-- How an operator tests a policy file with busted and mnemo.testing, on
-- the virtual clock: `busted --lua=luajit examples/policy_spec.lua`
-- (make test runs it).
local testing = require "mnemo.testing"

describe("policies/default.lua", function()
  local t
  before_each(function()
    t = testing.policy("policies/default.lua")
  end)
  after_each(function()
    t:close()
    for _, name in ipairs({ "redis", "embedding", "database" }) do
      require("mnemo").breaker.get(name):reset()
    end
  end)

  it("retries a refused Redis GET 3 times with backoff, within seconds", function()
    local ok, err, took = t:call("redis_get", testing.failing("connection"))
    assert.is_false(ok)
    assert.equal("connection", err.kind)
    assert.is_true(took <= 0.5 + 1.0 + 0.01, "full jitter: at most 0.5 s + 1 s of backoff")
  end)

  it("opens the redis breaker after 5 failed attempts, fails fast, half-opens after 30 s", function()
    t:call("redis_get", testing.failing("connection")) -- 3 attempts
    t:call("redis_get", testing.failing("connection")) -- 2 more: open
    assert.equal("open", t:breaker("redis"))
    local ok, err, took = t:call("redis_get", function()
      return "never called"
    end)
    assert.is_false(ok)
    assert.equal("circuit_open", err.kind)
    assert.is_true(took < 0.01, "no timeout is waited on")
    t:advance(30)
    assert.equal("half_open", t:breaker("redis"))
    assert.is_true((t:call("redis_get", function()
      return "hit"
    end)))
    assert.equal("closed", t:breaker("redis"))
  end)

  it("never retries a bad request to the embedder", function()
    local calls = 0
    local ok, err = t:call("embed_batch", function()
      calls = calls + 1
      error(require("mnemo").error("invalid_input", "413 payload too large"))
    end)
    assert.is_false(ok)
    assert.equal(1, calls)
    assert.equal("closed", t:breaker("embedding"), "bad input does not count against the dependency")
  end)

  it("gives a parse 5 seconds", function()
    local ok, err, took = t:call("parse_file", testing.slow(60))
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.near(5, took, 0.01)
  end)

  it("configures Redis, the embedder and the database with the specification's values", function()
    local function retry_of(op)
      local e = t:explain(op)
      local r = e.retry_policy
      table.sort(r.on)
      return { e.retry, r.attempts, r.base, r.max, r.jitter, table.concat(r.on, ",") }
    end
    local function breaker_of(name)
      local c = t:metrics(name).config
      return { c.failure_threshold, c.recovery_timeout, c.half_open_max_calls, t:metrics(name).critical }
    end
    for _, op in ipairs({ "redis_get", "redis_set" }) do
      assert.same({ "cache", 3, 0.5, 5, "full", "connection,timeout" }, retry_of(op))
      assert.equal("redis", t:explain(op).breaker)
      assert.equal(1, t:explain(op).timeout)
    end
    assert.same({ 5, 30, 1, false }, breaker_of("redis"))
    assert.same({ "embedding", 2, 2, 10, "full", "connection,http_5xx,rate_limited,timeout" },
      retry_of("embed_batch"))
    assert.same({ 0, 30, 1, true }, breaker_of("embedding"))
    local ec = t:metrics("embedding").config
    assert.same({ 0.5, 20, 10 }, { ec.failure_rate, ec.window_size, ec.minimum_calls })
    assert.equal("embedding", t:explain("embed_batch").bulkhead)
    for _, op in ipairs({ "db_connect", "db_query", "db_write", "graph_neighbors", "vector_search" }) do
      assert.same({ "database", 3, 1, 10, "full", "connection,deadlock,timeout,too_many_connections" },
        retry_of(op), op)
      assert.equal("database", t:explain(op).breaker, op)
      assert.is_true(t:explain(op).retried, op .. " is idempotent, so retried")
    end
    assert.same({ 3, 10, 1, true }, breaker_of("database"))
    assert.is_false(t:explain("error_flush").retried, "the flusher tries again itself")
    assert.same({ timeouts = true, retries = true, breakers = true, error_tracking = true },
      t:explain("db_query").switches)
  end)

  for _, class in ipairs({ "too_many_connections", "deadlock", "connection" }) do
    it("retries a database " .. class .. " 3 times, within 1 s + 2 s of backoff", function()
      local calls = 0
      local ok, err, took = t:call("db_query", function()
        calls = calls + 1
        error(require("mnemo").error(class, class .. " (injected)"))
      end)
      assert.is_false(ok)
      assert.equal(class, err.kind)
      assert.equal(3, calls)
      assert.is_true(took <= 3 + 0.01, "full jitter: at most 1 s + 2 s")
    end)
  end

  it("retries a database query that times out: 3 attempts of 10 s", function()
    local calls = 0
    local ok, err, took = t:call("db_query", function()
      calls = calls + 1
      require("mnemo").sleep(60)
    end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.equal(3, calls)
    assert.is_true(took >= 30 - 0.01 and took <= 33 + 0.01, "took " .. took)
    assert.equal("open", t:breaker("database"), "3 failed attempts open the database breaker")
  end)

  it("tries an operation it does not name once, under the 30 s default", function()
    local calls = 0
    local ok, err = t:call("some_new_call", function()
      calls = calls + 1
      error(require("mnemo").error("connection", "refused"))
    end)
    assert.is_false(ok)
    assert.equal(1, calls, "nothing says it is idempotent")
    local e = t:explain("some_new_call")
    assert.is_false(e.known)
    assert.equal(30, e.timeout)
    assert.is_false(e.retried)
  end)

  it("degrades Redis to L1 only while its breaker is open", function()
    assert.equal("normal", t:mode("redis"))
    for _ = 1, 2 do
      t:call("redis_get", testing.failing("timeout"))
    end
    assert.equal("l1_only", t:mode("redis"))
  end)
end)
