-- Tests the specification lists that the suite lacked: lexical search while
-- the embedder is down, two backfill passes at once, and a graph traversal
-- that runs out of its deadline. Real PostgreSQL (a fresh database).
local mnemo = require "mnemo"
local h = require "helpers"

local function make_repo()
  local root = os.tmpname()
  os.remove(root)
  assert(os.execute("mkdir -p '" .. root .. "/pkg'") == 0)
  h.write_file(root .. "/pkg/geometry.py", "def square_area(x):\n    return x * x\n\n\n"
    .. "def total(xs):\n    return sum(square_area(x) for x in xs)\n")
  for i = 1, 12 do
    h.write_file(("%s/pkg/mod%02d.py"):format(root, i), ("def helper_%d(v):\n    return v + %d\n\n\n"
      .. "class Thing%d:\n    def run(self):\n        return helper_%d(1)\n"):format(i, i, i, i))
  end
  return root
end

describe("specification gaps", function()
  local dsn, root, restore

  local function sql(q, params)
    return h.sql(dsn, q, params)
  end

  setup(function()
    dsn = h.pg_migrated_database()
    root = make_repo()
    local _
    _, restore = h.capture_log()
    -- No embedding breaker: every chunk of the first run is queued.
    mnemo.policy._reset()
    mnemo.configure {
      timeouts = { default = 10 },
      operations = { embed_batch = { timeout = 5 }, graph_neighbors = { timeout = 0.3 },
        vector_search = { timeout = 5 } },
    }
    local r = mnemo.run(mnemo.index, { root = root, repository = "gaps", dsn = dsn, backfill_wait = 0,
      embedder = function()
        error(mnemo.error("http_5xx", "the embedder is down"), 0)
      end })
    assert.equal(13, r.files_indexed)
  end)
  teardown(function()
    restore()
    mnemo.configure {}
    os.execute("rm -rf '" .. root .. "'")
  end)

  it("answers a lexical search while the embeddings are still NULL, and finds the chunk by name", function()
    local queued = sql("SELECT count(*)::int AS n FROM code_chunks WHERE repository = 'gaps' AND embedding IS NULL")
    assert.is_true(queued[1].n > 0, "nothing was left without its vector: the test proves nothing")
    local hits = mnemo.run(mnemo.search, { query = "square_area", repository = "gaps", dsn = dsn, k = 3 })
    assert.is_true(#hits >= 1)
    assert.equal("square_area", hits[1].name_path)
    assert.equal("pkg/geometry.py", hits[1].file_path)
  end)

  it("lets two backfill passes at once claim disjoint chunks, each embedded once", function()
    local before = sql([[SELECT count(*)::int AS n FROM pending_embeddings p JOIN code_chunks c ON c.id = p.chunk_id
      WHERE c.repository = 'gaps']])[1].n
    assert.is_true(before >= 4)
    sql("UPDATE pending_embeddings SET next_attempt_at = clock_timestamp() - interval '1 s'")
    local seen, twice = {}, 0
    local hashing = mnemo.embed.hashing(384)
    local function embedder(chunks)
      for _, c in ipairs(chunks) do
        if seen[c.id] then
          twice = twice + 1
        end
        seen[c.id] = true
      end
      mnemo.sleep(0.3) -- both passes hold their claims at once
      return hashing(chunks)
    end
    local backfill = require "mnemo.backfill"
    local results = {}
    mnemo.run(function()
      for i = 1, 2 do
        mnemo.spawn(function()
          local conn = assert(mnemo.pg.connect(dsn))
          local embedded = backfill.pass(conn, { embedder = embedder, repository = "gaps",
            batch = math.ceil(before / 2) })
          results[i] = embedded
          conn:close()
        end)
      end
      local deadline = mnemo.now() + 10
      while not (results[1] and results[2]) and mnemo.now() < deadline do
        mnemo.sleep(0.02)
      end
    end)
    assert.equal(0, twice, "a chunk was claimed by both passes")
    assert.is_true(results[1] > 0 and results[2] > 0, "the passes did not run side by side")
    assert.equal(before, results[1] + results[2])
    local left = sql([[SELECT count(*)::int AS n FROM code_chunks WHERE repository = 'gaps' AND embedding IS NULL]])
    assert.equal(0, left[1].n)
  end)

  it("ends a graph traversal past its deadline with a timeout, and the next one works", function()
    local locked, release = false, false
    local first, second
    mnemo.run(function()
      -- Another session holds graph_nodes exclusively: the traversal waits
      -- on the lock until its 0.3 s deadline.
      mnemo.spawn(function()
        local c = assert(mnemo.pg.connect(dsn))
        c:exec("BEGIN")
        c:exec("LOCK TABLE graph_nodes IN ACCESS EXCLUSIVE MODE")
        locked = true
        while not release do
          mnemo.sleep(0.02)
        end
        c:exec("ROLLBACK")
        c:close()
      end)
      while not locked do
        mnemo.sleep(0.01)
      end
      local t0 = mnemo.now()
      local ok, err = pcall(mnemo.graph.neighbors, { name_path = "total", repository = "gaps", dsn = dsn })
      first = { ok = ok, err = err, took = mnemo.now() - t0 }
      release = true
      mnemo.sleep(0.1)
      second = { pcall(mnemo.graph.neighbors, { name_path = "total", repository = "gaps", dsn = dsn }) }
    end)
    assert.is_false(first.ok)
    assert.equal("timeout", first.err.kind, tostring(first.err))
    assert.is_true(first.took < 2, ("%.2f s"):format(first.took))
    assert.is_true(second[1], tostring(second[2]))
    local names = {}
    for _, n in ipairs(second[2]) do
      names[n.name_path] = true
    end
    assert.is_true(names.square_area, "total calls square_area")
  end)
  it("never holds a file's transaction open while the embedder works", function()
    -- The embedder stalls and, meanwhile, looks for an open transaction of
    -- any other session of this database: there must be none (one file at
    -- a time). Embedding moved inside the store's transaction fails this.
    local open_seen, calls = {}, 0
    local hashing = mnemo.embed.hashing(384)
    local probe
    local function embedder(chunks)
      calls = calls + 1
      mnemo.sleep(0.2)
      local rows = probe:exec([[SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL]])
      open_seen[#open_seen + 1] = rows[1].n
      return hashing(chunks)
    end
    h.write_file(root .. "/pkg/stalled.py", "def stalled_embedding(x):\n    return x\n")
    mnemo.run(function()
      probe = assert(mnemo.pg.connect(dsn))
      local r = mnemo.index { root = root, repository = "gaps_tx", dsn = dsn, concurrency = 1, embedder = embedder,
        backfill_wait = 0 }
      probe:close()
      assert.equal(14, r.files_indexed)
    end)
    assert.is_true(calls >= 1)
    for i, n in ipairs(open_seen) do
      assert.equal(0, n, "a transaction was open during embedder call " .. i)
    end
  end)
end)
