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

  it("degrades Redis to L1 only while its breaker is open", function()
    assert.equal("normal", t:mode("redis"))
    for _ = 1, 2 do
      t:call("redis_get", testing.failing("timeout"))
    end
    assert.equal("l1_only", t:mode("redis"))
  end)
end)
