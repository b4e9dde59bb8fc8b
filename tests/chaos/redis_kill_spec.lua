-- Chaos 1: Redis SIGKILLed after 50 of 1,000 files. Every file is still
-- indexed (the cache degrades to L1), the redis breaker opens; once Redis
-- is started again the breaker half-opens and closes and the cache is used
-- again (a second run finds every file unchanged through Redis).
local mnemo = require "mnemo"
local h = require "helpers"
local chaos = require "chaos"

local NFILES, KILL_AT = 1000, 50

describe("chaos: Redis killed mid-run", function()
  local dsn, lines, restore, root, redis

  setup(function()
    chaos.policy()
    dsn = h.pg_migrated_database()
    root = chaos.corpus.tmpdir()
    chaos.corpus.generate(root, NFILES, { seed = 11 })
    redis = h.redis_private_server()
  end)
  teardown(function()
    redis.stop()
    os.execute("rm -rf " .. root)
    mnemo.policy._reset()
  end)
  before_each(function()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
  end)

  it("indexes all 1,000 files, opens the breaker, and closes it again once Redis is back", function()
    local url = redis.url
    local killed_at, t_kill
    local t0 = mnemo.now()
    local r = mnemo.run(mnemo.index, {
      root = root, repository = "chaos_redis", dsn = dsn, concurrency = 4, redis_url = url, backfill = false,
      on_file = function(_, done)
        if done == KILL_AT then
          killed_at = done
          t_kill = mnemo.now()
          redis.kill()
        end
      end,
    })
    local elapsed = mnemo.now() - t0
    assert.equal(KILL_AT, killed_at)
    assert.equal(NFILES, r.files_indexed, chaos.reasons(r))
    assert.equal(0, r.files_failed)
    local s = chaos.integrity(dsn, "chaos_redis")
    assert.equal(NFILES, s.files)
    assert.equal(r.chunks, s.chunks)
    assert.equal(0, s.dups)
    assert.equal(0, s.mixed)
    local tr = chaos.transitions(lines, "redis")
    assert.matches("^open", tr)
    chaos.figure("redis_kill", "files=%d indexed=%d failed=%d chunks=%d run=%.2fs transitions=%s",
      NFILES, r.files_indexed, r.files_failed, r.chunks, elapsed, tr)

    -- Back: the next run's cache calls half-open the breaker, a probe
    -- succeeds, it closes, and Redis answers "unchanged" for every file.
    local t_back = mnemo.now()
    redis.start()
    mnemo.run(mnemo.sleep, 0.4) -- the fast policy's recovery_timeout is 0.3 s
    local again = mnemo.run(mnemo.index, { root = root, repository = "chaos_redis", dsn = dsn, redis_url = url,
      backfill = false })
    assert.equal(NFILES, again.files_unchanged)
    assert.equal("closed", mnemo.breaker.get("redis"):state())
    tr = chaos.transitions(lines, "redis")
    assert.matches("^open.*half_open.*closed$", tr)
    -- Calls made while the half-open probe is in flight are refused
    -- (half_open_max_calls = 1), so some of the second run's writes are
    -- lost, by design (the cache is best-effort). The third run finds the
    -- rest in Redis and writes back the missing ones: Redis holds every key.
    local rejected = #chaos.events_where(lines, "fallback", "operation", "redis_set")
    local third = mnemo.run(mnemo.index, { root = root, repository = "chaos_redis", dsn = dsn, redis_url = url,
      backfill = false })
    assert.equal(NFILES, third.files_unchanged)
    assert.is_true(third.cache_hits > 0, "cache hits: " .. third.cache_hits)
    local keys = mnemo.run(function()
      local c = assert(mnemo.redis.connect(url))
      local n = c:command("DBSIZE")
      c:close()
      return n
    end)
    assert.is_true(keys >= NFILES, "keys in Redis: " .. tostring(keys))
    chaos.figure("redis_kill", "killed after %d files (%.2fs into the run); restart -> closed within %.2fs; "
      .. "transitions=%s; redis_set fallbacks (both runs)=%d; third run cache_hits=%d, redis keys=%d", KILL_AT,
      t_kill - t0, mnemo.now() - t_back, tr, rejected, third.cache_hits, keys)
  end)
end)
