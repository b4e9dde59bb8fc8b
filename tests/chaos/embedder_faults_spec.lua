-- Chaos 3: an embedding server (tests/tools/fake_embedder.lua, its own
-- process) that stalls past the embedding timeout, then answers 500, then
-- drops connections, then recovers. Every chunk is stored (NULL embedding
-- + pending_embeddings while the embedder is down), every embedding is
-- backfilled, and the breaker's transitions are logged.
local mnemo = require "mnemo"
local h = require "helpers"
local chaos = require "chaos"

local NFILES = 200
-- One behaviour per request, the last repeating.
local SCRIPT = "stall,stall,stall,500,500,500,500,drop,drop,drop,drop,ok"

describe("chaos: embedder stalls, fails, drops, recovers", function()
  local dsn, root, lines, restore

  setup(function()
    chaos.policy()
    dsn = h.pg_migrated_database()
    root = chaos.corpus.tmpdir()
    chaos.corpus.generate(root, NFILES, { seed = 33 })
  end)
  teardown(function()
    os.execute("rm -rf " .. root)
    mnemo.policy._reset()
  end)
  before_each(function()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
  end)

  it("stores 100% of chunks and backfills 100% of embeddings", function()
    local server = h.fake_embedder(SCRIPT)
    finally(server.stop) -- also when an assertion below fails
    local t0 = mnemo.now()
    local ok, r = pcall(mnemo.run, mnemo.index, {
      root = root, repository = "chaos_embed", dsn = dsn, concurrency = 4, backfill_wait = 30,
      cache = mnemo.cache.cascade {},
      embedder = mnemo.embed.http { url = server.url },
      backfill = { backoff_base = 0.05, interval = 0.05 },
    })
    local elapsed = mnemo.now() - t0
    server.stop()
    assert(ok, r)
    assert.equal(NFILES, r.files_indexed, chaos.reasons(r))
    assert.equal(0, r.files_failed)
    assert.is_true(r.embed_failures > 0, "the embedder failed at first")
    assert.equal(0, r.embeddings_pending)
    local c = h.sql(dsn, [[SELECT count(*) AS chunks,
        count(*) FILTER (WHERE embedding IS NULL) AS missing,
        count(*) FILTER (WHERE array_length(embedding, 1) = 384) AS full
      FROM code_chunks WHERE repository = 'chaos_embed']])[1]
    assert.equal(r.chunks, c.chunks)
    assert.equal(0, c.missing)
    assert.equal(c.chunks, c.full)
    assert.equal(0, h.sql(dsn, "SELECT count(*) AS n FROM pending_embeddings")[1].n)
    local tr = chaos.transitions(lines, "embedding")
    assert.matches("^open,half_open.*,closed$", tr)
    local timeouts = #chaos.events_where(lines, "timeout", "operation", "embed_batch")
    local retries = #chaos.events_where(lines, "retry", "operation", "embed_batch")
    assert.is_true(timeouts > 0, "the stall ran into the embedding timeout")
    chaos.figure("embedder", "script=%s files=%d indexed=%d chunks=%d embed_failures=%d backfilled=%d "
      .. "pending=%d null_embeddings=%d embed_batch timeouts=%d retries=%d transitions=%s run=%.2fs", SCRIPT,
      NFILES, r.files_indexed, c.chunks, r.embed_failures, r.embeddings_backfilled, r.embeddings_pending,
      c.missing, timeouts, retries, tr, elapsed)
  end)
end)
