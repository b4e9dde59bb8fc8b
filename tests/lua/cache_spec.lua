-- The L1 cache and the L1 + Redis cascade, against real servers:
-- $MNEMO_REDIS_URL (scripts/run-tests starts one) and a private one that
-- this file kills mid-way.
local mnemo = require "mnemo"
local h = require "helpers"
local uv = require "luv"
local cache = mnemo.cache

local private_server, redis_url = h.redis_private_server, h.redis_url

local prefix_n = 0
local function fresh_prefix()
  prefix_n = prefix_n + 1
  return ("mnemo:test:%d:%d:"):format(uv.os_getpid(), prefix_n)
end

describe("mnemo.cache L1", function()
  it("gets, sets, deletes and counts", function()
    local l1 = cache.new { max_bytes = 1024 * 1024 }
    assert.is_nil(l1:get("a"))
    assert.is_true(l1:set("a", "1"))
    assert.equal("1", l1:get("a"))
    assert.is_true(l1:set("a", "22")) -- replaced
    assert.equal("22", l1:get("a"))
    assert.is_true(l1:delete("a"))
    assert.is_false(l1:delete("a"))
    assert.is_nil(l1:get("a"))
    l1:set("n", 42) -- numbers are stored as their text
    assert.equal("42", l1:get("n"))
    local s = l1:stats()
    assert.equal(3, s.hits)
    assert.equal(2, s.misses)
    assert.equal(3, s.sets)
    assert.equal(1, s.entries)
    assert.equal(1024 * 1024, s.max_bytes)
    assert.is_nil(s.max_entries)
    assert.is_true(s.bytes > 3 and s.bytes < 200)
    l1:clear()
    assert.equal(0, l1:stats().entries)
    assert.has_error(function()
      l1:set("t", {})
    end)
  end)

  it("is binary safe", function()
    local l1 = cache.new { max_bytes = 4096 }
    local k, v = "k\0ey", "v\0al\255"
    l1:set(k, v)
    assert.equal(v, l1:get(k))
    assert.is_nil(l1:get("k"))
  end)

  it("evicts the least recently used, by bytes and by count", function()
    local l1 = cache.new { max_bytes = 1024 * 1024, max_entries = 3 }
    for _, k in ipairs({ "a", "b", "c" }) do
      l1:set(k, k)
    end
    l1:get("a")
    l1:set("d", "d")
    assert.is_nil(l1:get("b"))
    assert.equal("a", l1:get("a"))
    assert.equal(1, l1:stats().evictions)
    assert.equal(3, l1:stats().max_entries)
    -- By bytes: a budget for about ten 1 KiB values.
    local small = cache.new { max_bytes = 10 * 1100 }
    local v = string.rep("x", 1000)
    for i = 1, 30 do
      small:set("k" .. i, v)
    end
    local s = small:stats()
    assert.is_true(s.entries >= 9 and s.entries <= 10, s.entries)
    assert.is_true(s.bytes <= 10 * 1100)
    assert.equal(30 - s.entries, s.evictions)
    assert.equal(v, small:get("k30"))
    assert.is_nil(small:get("k1"))
  end)

  it("refuses a value larger than the whole cache", function()
    local l1 = cache.new { max_bytes = 1000 }
    l1:set("keep", "x")
    l1:set("big", "old")
    local ok, err = l1:set("big", string.rep("x", 2000))
    assert.is_nil(ok)
    assert.equal("invalid_input", err.kind)
    assert.matches("larger than the whole cache %(max_bytes 1000%)", err.message)
    assert.is_nil(l1:get("big")) -- the old value would be stale
    assert.equal("x", l1:get("keep")) -- nothing evicted for it
    assert.equal(1, l1:stats().rejected)
  end)

  it("expires entries on the runtime clock", function()
    mnemo.clock.virtual(true)
    finally(function()
      mnemo.clock.virtual(false)
    end)
    local l1 = cache.new { max_bytes = 4096 }
    l1:set("short", "1", 1)
    l1:set("long", "2", 60)
    l1:set("forever", "3")
    mnemo.clock.advance(0.999)
    assert.equal("1", l1:get("short"))
    mnemo.clock.advance(0.001)
    assert.is_nil(l1:get("short"))
    mnemo.clock.advance(3600)
    assert.is_nil(l1:get("long"))
    assert.equal("3", l1:get("forever"))
    assert.equal(2, l1:stats().expirations)
    assert.has_error(function()
      l1:set("x", "y", 0)
    end)
  end)

  it("rejects bad sizes", function()
    assert.has_error(function()
      cache.new { max_bytes = 0 }
    end, "cache.new: max_bytes: expected an integer >= 1, got 0")
    assert.has_error(function()
      cache.new { max_bytes = "big" }
    end)
    assert.equal(64 * 1024 * 1024, cache.new():stats().max_bytes)
  end)
end)

describe("mnemo.cache cascade", function()
  local url, lines, restore
  setup(function()
    url = redis_url()
  end)
  before_each(function()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
  end)

  it("works from L1 alone without a Redis client", function()
    local c = cache.cascade { l1 = cache.new { max_bytes = 4096 } }
    mnemo.run(function()
      assert.is_nil(c:get("a"))
      assert.is_true(c:set("a", "1"))
      assert.equal("1", c:get("a"))
      assert.is_true(c:invalidate("a"))
      assert.is_nil(c:get("a"))
    end)
    assert.same({ hits = 0, misses = 0, errors = 0 }, c:stats().l2)
    assert.equal(1, c:stats().l1.hits)
  end)

  it("reads through to Redis, fills L1 with Redis' remaining time, and invalidates both", function()
    local prefix = fresh_prefix()
    mnemo.run(function()
      local client = assert(mnemo.redis.connect(url))
      local a = cache.cascade { l1 = cache.new { max_bytes = 1024 * 1024 }, redis = client, prefix = prefix }
      local b = cache.cascade { l1 = cache.new { max_bytes = 1024 * 1024 }, redis = client, prefix = prefix }
      assert.is_true(a:set("k", "v\0binary", 30))
      assert.equal("v\0binary", client:get(prefix .. "k"))
      local ttl = client:command("TTL", prefix .. "k")
      assert.is_true(ttl > 28 and ttl <= 30)
      -- b has it only in Redis: an L2 hit, then an L1 hit.
      assert.equal("v\0binary", b:get("k"))
      assert.equal("v\0binary", b:get("k"))
      local s = b:stats()
      assert.same({ hits = 1, misses = 0, errors = 0 }, s.l2)
      assert.equal(1, s.l1.hits)
      assert.equal(1, s.l1.entries)
      -- A miss in both.
      assert.is_nil(b:get("nothing"))
      assert.equal(1, b:stats().l2.misses)
      -- The L1 copy does not outlive Redis' TTL.
      client:command("SET", prefix .. "brief", "x", "PX", 150)
      assert.equal("x", b:get("brief"))
      mnemo.sleep(0.2)
      assert.is_nil(b:get("brief"))
      -- l1_ttl caps how long an L2 value stays in L1.
      local capped = cache.cascade { redis = client, prefix = prefix, l1_ttl = 0.1 }
      assert.equal("v\0binary", capped:get("k"))
      client:command("SET", prefix .. "k", "changed")
      assert.equal("v\0binary", capped:get("k")) -- from L1
      mnemo.sleep(0.15)
      assert.equal("changed", capped:get("k")) -- L1 expired: from Redis
      -- invalidate: gone from a's L1 and from Redis.
      assert.is_true(a:invalidate("k"))
      assert.is_nil(client:get(prefix .. "k"))
      assert.is_nil(a:get("k"))
      client:close()
    end)
  end)

  it("does not put a value in L1 that was overwritten while it was read", function()
    local prefix = fresh_prefix()
    mnemo.run(function()
      local client = assert(mnemo.redis.connect(url))
      local c = cache.cascade { redis = client, prefix = prefix }
      client:set(prefix .. "k", "old")
      local reader = h.start(function()
        return c:get("k")
      end)
      c:set("k", "new") -- while the read is in flight
      while not reader.result do
        mnemo.sleep(0.001)
      end
      assert.equal("new", c:get("k"))
      client:close()
    end)
  end)

  it("keeps working from L1 when Redis is killed, and opens the redis breaker", function()
    local server = private_server()
    finally(function()
      server.stop()
      mnemo.configure {}
    end)
    mnemo.configure {
      breakers = { redis = { failure_threshold = 3, recovery_timeout = 1 } },
      operations = {
        redis_get = { timeout = 0.5, breaker = "redis" },
        redis_set = { timeout = 0.5, breaker = "redis" },
      },
    }
    local breaker = mnemo.breaker.get("redis")
    mnemo.run(function()
      local client = assert(mnemo.redis.connect(server.url))
      local c = cache.cascade { l1 = cache.new { max_bytes = 1024 * 1024 }, redis = client }
      for i = 1, 5 do
        c:set("k" .. i, "v" .. i)
      end
      assert.equal("v1", client:get("mnemo:k1"))
      assert.equal(0, c:stats().l2.errors)

      server.kill()

      -- L1 hits do not touch Redis at all.
      assert.equal("v1", c:get("k1"))
      assert.equal("closed", breaker:state())
      -- L1 misses: nil, no error, and each failure counts on the breaker.
      local t0 = mnemo.now()
      for i = 1, 3 do
        assert.is_nil(c:get("missing" .. i))
      end
      assert.equal("open", breaker:state())
      assert.equal(3, c:stats().l2.errors)
      -- Open: failing fast, no connection attempts; sets still land in L1.
      assert.is_nil(c:get("missing4"))
      assert.is_true(c:set("k6", "v6"))
      assert.equal("v6", c:get("k6"))
      assert.is_true(c:invalidate("k2"))
      assert.is_nil(c:get("k2"))
      assert.equal("v3", c:get("k3"))
      assert.is_true(mnemo.now() - t0 < 1, "no waiting on a dead Redis")
      assert.equal(7, c:stats().l2.errors)

      -- Redis is back; after recovery_timeout the breaker lets a probe
      -- through, the client reconnects, and L2 serves again.
      server.start()
      mnemo.sleep(1.1)
      assert.is_true(c:set("k7", "v7"))
      assert.equal("closed", breaker:state())
      assert.equal("v7", client:get("mnemo:k7"))
      local other = cache.cascade { redis = client }
      assert.equal("v7", other:get("k7"))
      client:close()
    end)
  end)
end)
