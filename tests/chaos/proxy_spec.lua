-- Chaos 7: a TCP proxy we control (tests/tools/tcp_proxy.lua, its own
-- process) between mnemo and Redis / PostgreSQL. Timeouts and retries
-- behave as the fast policy says:
--  - Redis latency above cache_operation (0.3 s): redis calls time out,
--    the redis breaker opens, indexing completes; latency removed -> the
--    breaker closes again.
--  - PostgreSQL connections reset (RST) repeatedly mid-run: the
--    connection errors are retried under the database retry policy (retry
--    events logged) and every file is stored once.
--  - PostgreSQL refused for a while: the files that could not be stored
--    are reported with a database reason; the next run completes.
local mnemo = require "mnemo"
local h = require "helpers"
local chaos = require "chaos"

local NFILES = 600

local function retry_events(lines, op, class)
  local n = 0
  for _, e in ipairs(h.events(lines, "retry")) do
    if e.operation == op and (not class or e.class == class) then
      n = n + 1
    end
  end
  return n
end

describe("chaos: TCP proxy faults", function()
  local dsn, root, lines, restore

  setup(function()
    chaos.policy()
    dsn = h.pg_migrated_database()
    root = chaos.corpus.tmpdir()
    chaos.corpus.generate(root, NFILES, { seed = 77 })
  end)
  teardown(function()
    os.execute("rm -rf " .. root)
    mnemo.policy._reset()
  end)
  before_each(function()
    lines, restore = h.capture_log()
    chaos.policy() -- fresh breakers for each test
  end)
  after_each(function()
    restore()
  end)

  it("Redis slower than cache_operation: calls time out, the breaker opens, indexing completes", function()
    local redis = h.redis_private_server()
    local proxy
    finally(function() -- also when an assertion below fails (one finally per test: the last one counts)
      if proxy then
        proxy.stop()
      end
      redis.stop()
    end)
    proxy = chaos.proxy(tonumber(redis.url:match(":(%d+)$")))
    local url = "redis://127.0.0.1:" .. proxy.port
    local ok, r = pcall(mnemo.run, mnemo.index, {
      root = root, repository = "proxy_redis", dsn = dsn, concurrency = 4, redis_url = url, backfill = false,
      on_file = function(_, done)
        if done == 100 then
          proxy.command("latency 500")
        elseif done == 400 then
          proxy.command("latency 0")
        end
      end,
    })
    local stats = proxy.command("stats")
    proxy.stop()
    redis.stop()
    assert(ok, r)
    assert.equal(NFILES, r.files_indexed, chaos.reasons(r))
    local timeouts = #chaos.events_where(lines, "timeout", "operation", "redis_get")
      + #chaos.events_where(lines, "timeout", "operation", "redis_set")
    assert.is_true(timeouts > 0, "redis calls timed out")
    local tr = chaos.transitions(lines, "redis")
    assert.matches("^open", tr)
    assert.matches("closed$", tr)
    local s = chaos.integrity(dsn, "proxy_redis")
    assert.equal(NFILES, s.files)
    chaos.figure("proxy_redis_latency", "files=%d indexed=%d failed=%d; latency 500 ms (> cache_operation 0.3 s) "
      .. "from file 100 to 400: redis timeouts=%d, cache retries=%d, transitions=%s, run=%.2fs; proxy %s",
      NFILES, r.files_indexed, r.files_failed, timeouts, retry_events(lines, "redis_get") + retry_events(lines,
      "redis_set"), tr, r.seconds, stats)
  end)

  for _, workers in ipairs { 1, 4 } do
  it(("PostgreSQL connections reset mid-run, %d worker(s): retried, every file stored once"):format(workers), function()
    local proxy = chaos.proxy(tonumber(dsn:match(":(%d+)/")))
    finally(proxy.stop) -- also when an assertion below fails
    local pdsn = dsn:gsub(":(%d+)/", ":" .. proxy.port .. "/")
    local resets = {}
    local r = mnemo.run(mnemo.index, {
      -- With four workers a reset used to leave a connection never polled
      -- again (libpq closed its socket, a new connection got the same
      -- number, closing the old poll unregistered the new one) and the
      -- shielded COMMIT on it waited for ever; pg.c now polls its own dup.
      root = root, repository = "proxy_reset" .. workers, dsn = pdsn, concurrency = workers, backfill = false,
      cache = mnemo.cache.cascade {},
      on_file = function(_, done)
        if done % 100 == 50 then
          resets[#resets + 1] = proxy.command("reset")
        end
      end,
    })
    local stats = proxy.command("stats")
    proxy.stop()
    local retries = retry_events(lines, "db_write", "connection")
    assert.is_true(retries > 0, "db_write retried the connection errors")
    assert.equal(NFILES, r.files_indexed + r.files_failed)
    -- Nearly always 0; a file whose db_write attempt hit the 3 s timeout
    -- (a connection left unpolled, the bug described in
    -- docs/RELIABILITY.md) is reported with store_timeout, never lost:
    -- the second run below stores it.
    for reason in pairs(r.reasons) do
      assert.matches("^store_", reason)
    end
    assert.is_true(r.files_failed <= 5, chaos.reasons(r))
    local r2 = mnemo.run(mnemo.index, { root = root, repository = "proxy_reset" .. workers, dsn = dsn, backfill = false,
      cache = mnemo.cache.cascade {} })
    assert.equal(0, r2.files_failed)
    assert.is_true(r2.files_indexed <= r.files_failed)
    local s = chaos.integrity(dsn, "proxy_reset" .. workers)
    assert.equal(NFILES, s.files)
    assert.equal(0, s.dups)
    assert.equal(0, s.mixed)
    assert.equal(0, s.gaps)
    chaos.figure("proxy_pg_reset_" .. workers, "files=%d indexed=%d failed=%d (%s); %d resets (%s); db_write retries "
      .. "(connection)=%d, db_connect retries=%d, database transitions=%s; stored files=%d dups=%d; run=%.2fs; proxy %s",
      NFILES, r.files_indexed, r.files_failed, chaos.reasons(r), #resets, table.concat(resets, " "), retries,
      retry_events(lines, "db_connect"), chaos.transitions(lines, "database"), s.files, s.dups, r.seconds, stats)
  end)

  end

  it("PostgreSQL refused for 1.5 s: the run waits for it and stores every file, reporting the outage", function()
    local proxy = chaos.proxy(tonumber(dsn:match(":(%d+)/")))
    finally(proxy.stop) -- also when an assertion below fails
    local pdsn = dsn:gsub(":(%d+)/", ":" .. proxy.port .. "/")
    local reopened
    local r = mnemo.run(mnemo.index, {
      root = root, repository = "proxy_refuse", dsn = pdsn, concurrency = 1, backfill = false,
      cache = mnemo.cache.cascade {},
      on_file = function(_, done)
        if done == 100 then
          proxy.command("refuse on")
          reopened = h.start(function()
            mnemo.sleep(1.5)
            proxy.command("refuse off")
          end)
        end
      end,
    })
    mnemo.run(function()
      while not reopened.result do
        mnemo.sleep(0.05)
      end
    end)
    assert.equal(NFILES, r.files_indexed + r.files_failed)
    local db_reasons = 0
    for reason, n in pairs(r.reasons) do
      if reason:match("^store_") or reason == "database_unavailable" then
        db_reasons = db_reasons + n
      end
    end
    assert.equal(r.files_failed, db_reasons, chaos.reasons(r))
    -- The files refused went round again once the breaker let calls through.
    assert.equal(0, r.files_failed, chaos.reasons(r))
    assert.is_true((r.database_outages or 0) >= 1)
    local s1 = chaos.integrity(dsn, "proxy_refuse")
    assert.equal(0, s1.dups + s1.mixed + s1.gaps)
    local r2 = mnemo.run(mnemo.index, { root = root, repository = "proxy_refuse", dsn = pdsn, backfill = false,
      cache = mnemo.cache.cascade {} })
    proxy.stop()
    assert.equal(0, r2.files_failed, chaos.reasons(r2))
    assert.equal(NFILES, r2.files_indexed + r2.files_unchanged)
    local s2 = chaos.integrity(dsn, "proxy_refuse")
    assert.equal(NFILES, s2.files)
    assert.equal(0, s2.dups + s2.mixed + s2.gaps)
    chaos.figure("proxy_pg_refuse", "files=%d; refused 1.5 s from file 100: run 1 indexed=%d failed=%d (%s) database rounds=%d, "
      .. "db_connect retries=%d, database transitions=%s; run 2 indexed=%d unchanged=%d failed=%d; final files=%d",
      NFILES, r.files_indexed, r.files_failed, chaos.reasons(r), r.database_outages or 0, retry_events(lines, "db_connect"),
      chaos.transitions(lines, "database"), r2.files_indexed, r2.files_unchanged, r2.files_failed, s2.files)
  end)
end)
