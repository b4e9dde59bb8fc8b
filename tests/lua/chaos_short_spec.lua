-- A short subset of the chaos suite (tests/chaos/, `make chaos`) for
-- `make test`: real faults, bounded, every process ended by its PID.
--  - Redis behind the TCP proxy (tests/tools/tcp_proxy.lua) slower than
--    the cache_operation timeout: redis calls time out, the breaker opens,
--    indexing completes; latency removed -> the breaker closes.
--  - kill -9 of a mnemo-run process mid-run: no duplicate, mixed or partial
--    file; the next run finishes the work.
package.path = "tests/chaos/?.lua;tests/tools/?.lua;" .. package.path
local mnemo = require "mnemo"
local h = require "helpers"
local chaos = require "chaos"

describe("chaos (short)", function()
  local dsn, root, lines, restore
  local NFILES = 300

  setup(function()
    dsn = h.pg_migrated_database()
    root = chaos.corpus.tmpdir()
    chaos.corpus.generate(root, NFILES, { seed = 5 })
  end)
  teardown(function()
    os.execute("rm -rf " .. root)
    mnemo.policy._reset()
  end)
  before_each(function()
    chaos.policy()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
  end)

  it("Redis slower than its timeout behind a proxy: breaker opens, every file indexed, breaker closes", function()
    local redis = h.redis_private_server()
    local proxy
    finally(function() -- also when an assertion below fails (one finally per test: the last one counts)
      if proxy then
        proxy.stop()
      end
      redis.stop()
    end)
    proxy = chaos.proxy(tonumber(redis.url:match(":(%d+)$")))
    local ok, r = pcall(mnemo.run, mnemo.index, {
      root = root, repository = "short_redis", dsn = dsn, concurrency = 4, backfill = false,
      redis_url = "redis://127.0.0.1:" .. proxy.port,
      on_file = function(_, done)
        if done == 30 then
          proxy.command("latency 500")
        elseif done == 150 then
          proxy.command("latency 0")
        end
      end,
    })
    -- Latency gone, the breaker closes on its next trial after the
    -- recovery timeout (0.3 s); a loaded machine may end the first run
    -- before one comes, so a second run (files unchanged) gives it one.
    local again_ok, again = pcall(mnemo.run, function()
      mnemo.sleep(0.4)
      return mnemo.index { root = root, repository = "short_redis", dsn = dsn, concurrency = 4, backfill = false,
        redis_url = "redis://127.0.0.1:" .. proxy.port }
    end)
    proxy.stop()
    redis.stop()
    assert(ok, r)
    assert(again_ok, again)
    assert.equal(NFILES, r.files_indexed)
    assert.equal(NFILES, again.files_unchanged)
    local tr = chaos.transitions(lines, "redis")
    assert.matches("^open", tr)
    assert.matches("closed$", tr)
    assert.is_true(#chaos.events_where(lines, "timeout", "operation", "redis_get")
      + #chaos.events_where(lines, "timeout", "operation", "redis_set") > 0)
  end)

  it("kill -9 of mnemo-run leaves no partial file, and the next run finishes", function()
    chaos.index_reference(dsn, root, NFILES, "short_ref")
    local env = { "MNEMO_PG_DSN=" .. dsn, "PATH=" .. os.getenv("PATH") }
    local args = { h.MNEMO_RUN, "--policy", "tests/fixtures/policies/fast.lua", "tests/chaos/index_child.lua", root,
      "short_kill", "4" }
    local seed = os.time()
    math.randomseed(seed)
    local delay = 0.2 + math.random() * 0.8
    local first = mnemo.run(h.spawn, args, { env = env, signal = "sigkill", signal_after = delay, timeout = 30 })
    local s = chaos.integrity(dsn, "short_kill")
    assert.equal(0, s.dups + s.mixed + s.gaps, ("seed %d delay %.3f"):format(seed, delay))
    assert.equal(0, chaos.partial_against(dsn, "short_kill", "short_ref").partial)
    local second = mnemo.run(h.spawn, args, { env = env, timeout = 60 })
    assert.equal(0, second.code, second.stderr)
    assert.matches("failed=0 ", second.stdout)
    local final = chaos.integrity(dsn, "short_kill")
    assert.equal(NFILES, final.files)
    assert.equal(0, final.dups + final.mixed + final.gaps)
    local p = chaos.partial_against(dsn, "short_kill", "short_ref")
    assert.equal(0, p.partial + p.missing)
    local _ = first
  end)
end)
