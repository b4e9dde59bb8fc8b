-- The pipeline under real faults: an HTTP embedding server that answers
-- 500 and then recovers, and a Redis killed with SIGKILL in the middle of a
-- run. Real PostgreSQL (fresh database), real processes; the fast policy
-- keeps retries and breaker recovery under a second.
local mnemo = require "mnemo"
local h = require "helpers"

local NFILES = 40

local function make_repo(n)
  local root = os.tmpname()
  os.remove(root)
  assert(os.execute("mkdir -p '" .. root .. "/src'") == 0)
  for i = 1, n do
    h.write_file(("%s/src/mod%03d.py"):format(root, i), ([[
import os


class Store%d:
    def load(self, key):
        return os.path.join("data", key)

    def save(self, key, value):
        return self.load(key) + str(value)


def helper_%d(x):
    return Store%d().save("k", x)
]]):format(i, i, i))
  end
  return root
end

describe("the pipeline under faults", function()
  local dsn, lines, restore

  local function sql(q, params)
    return h.sql(dsn, q, params)
  end

  setup(function()
    dsn = h.pg_migrated_database()
    mnemo.policy._reset()
    assert(mnemo.policy.load("tests/fixtures/policies/fast.lua"))
  end)
  teardown(function()
    mnemo.policy._reset()
  end)
  before_each(function()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
  end)

  local function transitions(breaker)
    local seen = {}
    for _, e in ipairs(h.events(lines, "breaker_transition")) do
      if e.breaker == breaker then
        seen[#seen + 1] = e.to
      end
    end
    return table.concat(seen, ",")
  end

  it("stores every chunk while the embedder answers 500, then backfills every embedding", function()
    local root = make_repo(12)
    local server = h.fake_embedder("500,500,500,500,500,500,500,500,ok")
    finally(server.stop) -- also when an assertion below fails
    local ok, r = pcall(mnemo.run, mnemo.index, {
      root = root, repository = "embed500", dsn = dsn, concurrency = 2, backfill_wait = 5,
      embedder = mnemo.embed.http { url = server.url },
      backfill = { backoff_base = 0.05, interval = 0.05 },
    })
    server.stop()
    assert(ok, r)
    assert.equal(12, r.files_indexed)
    assert.equal(0, r.files_failed)
    assert.is_true(r.embed_failures > 0, "the embedder failed at first")
    assert.is_true(r.embeddings_backfilled > 0, "and the backfill caught up")
    assert.equal(0, r.embeddings_pending)
    local counts = sql([[SELECT count(*) AS chunks,
        count(*) FILTER (WHERE embedding IS NULL) AS missing,
        count(*) FILTER (WHERE array_length(embedding, 1) = 384) AS full
      FROM code_chunks WHERE repository = 'embed500']])[1]
    assert.equal(r.chunks, counts.chunks)
    assert.equal(0, counts.missing)
    assert.equal(counts.chunks, counts.full)
    assert.equal(0, sql("SELECT count(*) AS n FROM pending_embeddings")[1].n)
    assert.matches("^open,half_open.*,closed$", transitions("embedding"))
  end)

  it("records a file whose parse exceeds its deadline as failed and indexes the rest", function()
    local root = make_repo(8)
    -- 2,000 lines of 1,000-deep parentheses: ~4 MB that tree-sitter needs
    -- seconds for; the fast policy gives a parse 2 s.
    local line = "x = " .. ("("):rep(1000) .. "1" .. (")"):rep(1000) .. "\n"
    h.write_file(root .. "/src/zz_pathological.py", line:rep(2000))
    local t0 = mnemo.now()
    local r = mnemo.run(function()
      return mnemo.index { root = root, repository = "slowparse", dsn = dsn, concurrency = 2,
        max_file_bytes = 8 * 1024 * 1024, backfill = false }
    end)
    local elapsed = mnemo.now() - t0
    assert.equal(8, r.files_indexed)
    assert.equal(1, r.files_failed)
    assert.equal(1, r.reasons.parse_timeout)
    assert.is_true(elapsed < 6, ("the run took %.1f s"):format(elapsed))
    local failed = h.events(lines, "file_failed")
    assert.equal("src/zz_pathological.py", failed[1].file_path)
    assert.equal(0, sql("SELECT count(*) AS n FROM code_chunks WHERE file_path = 'src/zz_pathological.py'")[1].n)
  end)

  it("indexes every file when Redis is killed mid-run, and uses Redis again once it is back", function()
    local root = make_repo(NFILES)
    local redis = h.redis_private_server()
    finally(redis.stop) -- also when an assertion below fails
    local url = redis.url
    local killed_at
    local r = mnemo.run(mnemo.index, {
      root = root, repository = "rediskill", dsn = dsn, concurrency = 2, redis_url = url,
      on_file = function(_, done)
        if done == 10 then
          killed_at = done
          redis.kill()
        end
      end,
    })
    assert.equal(10, killed_at)
    assert.equal(NFILES, r.files_indexed)
    assert.equal(0, r.files_failed)
    local stored = sql([[SELECT count(DISTINCT file_path) AS files, count(*) AS chunks FROM code_chunks
      WHERE repository = 'rediskill']])[1]
    assert.equal(NFILES, stored.files)
    assert.equal(r.chunks, stored.chunks)
    assert.matches("^open", transitions("redis"))

    -- Back: after the breaker's recovery timeout the next run's writes go
    -- to Redis again (half-open, then closed) and its keys are there.
    redis.start()
    mnemo.run(mnemo.sleep, 0.4)
    local again = mnemo.run(mnemo.index, { root = root, repository = "rediskill", dsn = dsn, redis_url = url })
    assert.equal(NFILES, again.files_unchanged)
    assert.equal("closed", mnemo.breaker.get("redis"):state())
    -- The half-open trial of that run may have timed out on a loaded
    -- machine (its client was connecting), skipping the first files' writes
    -- until the breaker closed: a third run, breaker closed from the start,
    -- reads through to Redis and writes whatever was missing.
    local third = mnemo.run(mnemo.index, { root = root, repository = "rediskill", dsn = dsn, redis_url = url })
    assert.equal(NFILES, third.files_unchanged)
    assert.is_true(third.cache_hits > 0, "the third run found keys in Redis")
    local key = "mnemo:" .. mnemo.indexer.cache_key(again.database, "rediskill", "src/mod001.py")
    local value = mnemo.run(function()
      local c = assert(mnemo.redis.connect(url))
      local v = c:command("GET", key)
      c:close()
      return v
    end)
    assert.is_string(value)
    redis.stop()
  end)
  it("waits out an embedding breaker that opened after a backfill pass saw the queue empty", function()
    -- Provider calls 1-2 fail (the first file's chunks are queued and the
    -- backfill embeds them, then sees the queue empty), calls 12-14 fail
    -- (the breaker opens: later files are queued and no pass runs while
    -- it is open). The run must end with every chunk embedded: it used to
    -- end at once on the early pass's empty count.
    local root = make_repo(NFILES)
    local calls = 0
    local hashing = mnemo.embed.hashing(384)
    local function embedder(chunks)
      calls = calls + 1
      mnemo.sleep(0.02)
      if calls <= 2 or (calls >= 12 and calls <= 14) then
        error(mnemo.error("http_5xx", "scripted 500 #" .. calls), 0)
      end
      return hashing(chunks)
    end
    local r = mnemo.run(mnemo.index, { root = root, repository = "drain_stale", dsn = dsn, concurrency = 1,
      embedder = embedder, backfill_wait = 30 })
    os.execute("rm -rf '" .. root .. "'")
    assert.is_true(#transitions("embedding") >= 1, "the breaker never opened: the test proves nothing")
    -- A line when the breaker state the failures meet changes, naming it
    -- (not one per file: 5 failed calls, a few lines).
    local failed_lines = h.events(lines, "embedding_failed")
    assert.is_true(#failed_lines >= 1 and #failed_lines <= 4, #failed_lines .. " lines")
    for i, e in ipairs(failed_lines) do
      assert.equal("embedding", e.breaker)
      assert.is_truthy(({ closed = true, open = true, half_open = true })[e.breaker_state], e.breaker_state)
      if i > 1 then
        assert.are_not.equal(failed_lines[i - 1].breaker_state, e.breaker_state)
      end
    end
    assert.equal(NFILES, r.files_indexed)
    assert.equal(0, r.embeddings_pending)
    local missing = sql([[SELECT count(*)::int AS n FROM code_chunks
      WHERE repository = 'drain_stale' AND embedding IS NULL]])[1].n
    assert.equal(0, missing)
  end)
end)
