-- The indexing pipeline against a real PostgreSQL (fresh database per
-- block), with the built-in chunker and embedder.
local mnemo = require "mnemo"
local h = require "helpers"

local function mkdir(p)
  assert(os.execute("mkdir -p '" .. p .. "'") == 0)
end

local function make_repo()
  local root = os.tmpname()
  os.remove(root)
  mkdir(root .. "/pkg")
  h.write_file(root .. "/pkg/shapes.py", [[
import math


class Circle:
    def __init__(self, r):
        self.r = r

    def area(self):
        return math.pi * square(self.r)


def square(x):
    return x * x
]])
  h.write_file(root .. "/pkg/app.js", [[
import { square } from "./math.js";

export function total(items) {
  return items.reduce((a, b) => a + square(b), 0);
}
]])
  h.write_file(root .. "/pkg/blob.bin", "\0\1\2\3binary")
  h.write_file(root .. "/pkg/latin1.py", "x = 'caf\233'\n")
  h.write_file(root .. "/README.txt", "not code\n")
  h.write_file(root .. "/pkg/huge.py", ("x = 1\n"):rep(400000))
  assert(os.execute("ln -s .. '" .. root .. "/pkg/loop'") == 0)
  return root
end

describe("mnemo.index", function()
  local dsn, root, lines, restore
  setup(function()
    dsn = h.pg_migrated_database()
    root = make_repo()
    mnemo.policy._reset()
    assert(mnemo.policy.load("policies/default.lua"))
  end)
  before_each(function()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
  end)

  local function index(opts)
    opts = opts or {}
    opts.root = opts.root or root
    opts.repository = opts.repository or "fixture"
    opts.dsn = dsn
    opts.max_file_bytes = opts.max_file_bytes or 1024 * 1024
    return mnemo.run(mnemo.index, opts)
  end

  local function sql(q, params)
    return h.sql(dsn, q, params)
  end

  it("indexes code, skips what it cannot, and says why", function()
    local r = index()
    assert.equal(2, r.files_indexed)
    assert.equal(0, r.files_failed)
    assert.equal(1, r.reasons.binary)
    assert.equal(1, r.reasons.invalid_utf8)
    assert.equal(1, r.reasons.unknown_language)
    assert.equal(1, r.reasons.too_large)
    -- pkg/loop -> ..: a symlink inside the root, not followed by default
    -- (tests/lua/indexer_files_spec.lua follows them).
    assert.equal(1, r.reasons.symlink)
    local chunks = mnemo.run(mnemo.chunks, { repository = "fixture", dsn = dsn })
    local seen = {}
    for _, c in ipairs(chunks) do
      seen[c.file_path .. "\t" .. c.name_path] = c.start_line .. "-" .. c.end_line
    end
    assert.equal("4-9", seen["pkg/shapes.py\tCircle"])
    assert.equal("5-6", seen["pkg/shapes.py\tCircle.__init__"])
    assert.equal("8-9", seen["pkg/shapes.py\tCircle.area"])
    assert.equal("12-13", seen["pkg/shapes.py\tsquare"])
    assert.equal("3-5", seen["pkg/app.js\ttotal"])
    assert.is_not_nil(seen["pkg/shapes.py\t<module>"])
    assert.equal(0, sql("SELECT count(*) AS n FROM pending_embeddings")[1].n)
    assert.equal(0, sql("SELECT count(*) AS n FROM code_chunks WHERE embedding IS NULL")[1].n)
  end)

  it("does not rewrite unchanged files, and replaces a changed one atomically", function()
    local before = sql("SELECT max(indexed_at)::text AS t, count(*) AS n FROM code_chunks")[1]
    local r = index()
    assert.equal(2, r.files_unchanged)
    assert.equal(0, r.files_indexed)
    local after = sql("SELECT max(indexed_at)::text AS t, count(*) AS n FROM code_chunks")[1]
    assert.same(before, after)
    h.write_file(root .. "/pkg/shapes.py", "def only():\n    return 1\n")
    r = index()
    assert.equal(1, r.files_indexed)
    local names = sql([[SELECT string_agg(name_path, ',' ORDER BY name_path) AS n FROM code_chunks
      WHERE file_path = 'pkg/shapes.py']])[1].n
    assert.equal("only", names)
    local dup = sql([[SELECT count(*) AS n FROM (SELECT file_path, chunk_index FROM code_chunks
      GROUP BY 1, 2 HAVING count(*) > 1) d]])[1].n
    assert.equal(0, dup)
  end)

  it("stores chunks with NULL embeddings when the embedder fails, then backfills them", function()
    h.write_file(root .. "/pkg/extra.py", "def extra():\n    return square(2)\n")
    local r = index { backfill = false, embedder = function()
      error(mnemo.error("http_5xx", "embedder down"))
    end }
    assert.equal(1, r.files_indexed)
    assert.is_true(r.embeddings_pending >= 1)
    local pending = sql("SELECT count(*) AS n FROM pending_embeddings")[1].n
    assert.equal(r.embeddings_pending, pending)
    local done, left = mnemo.run(function()
      local c = assert(mnemo.pg.connect(dsn))
      local d, l = require("mnemo.backfill").pass(c, { embedder = mnemo.embed.hashing(384) })
      c:close()
      return d, l
    end)
    assert.equal(pending, done)
    assert.equal(0, left)
    assert.equal(0, sql("SELECT count(*) AS n FROM code_chunks WHERE embedding IS NULL")[1].n)
  end)

  it("rolls a file back when its transaction fails, and forgets its cache entry", function()
    sql([[CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger AS $$
      BEGIN
        IF NEW.name_path = 'poison' THEN
          RAISE EXCEPTION 'poisoned chunk' USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
      END $$ LANGUAGE plpgsql]])
    sql([[CREATE TRIGGER refuse_poison BEFORE INSERT ON code_chunks
      FOR EACH ROW EXECUTE FUNCTION refuse_poison()]])
    h.write_file(root .. "/pkg/poisoned.py", "def fine():\n    return 1\n\n\ndef poison():\n    return 2\n")
    local l1 = mnemo.cache.new { max_bytes = 1024 * 1024 }
    local cache = mnemo.cache.cascade { l1 = l1 }
    local r = index { cache = cache }
    assert.equal(1, r.files_failed)
    assert.equal(1, r.reasons.store_constraint)
    assert.equal(0, sql("SELECT count(*) AS n FROM code_chunks WHERE file_path = 'pkg/poisoned.py'")[1].n)
    assert.is_nil(l1:get(mnemo.indexer.cache_key(r.database, "fixture", "pkg/poisoned.py")))
    assert.is_not_nil(l1:get(mnemo.indexer.cache_key(r.database, "fixture", "pkg/extra.py")))
    sql("DROP TRIGGER refuse_poison ON code_chunks")
  end)

  it("re-embeds only the chunks that changed when the embedder is a model server", function()
    local embedded = 0
    local hashing = mnemo.embed.hashing(384)
    local function counting(chunks)
      embedded = embedded + #chunks
      return hashing(chunks)
    end
    local repo = os.tmpname()
    os.remove(repo)
    mkdir(repo)
    h.write_file(repo .. "/m.py", "def a():\n    return 1\n\n\ndef b():\n    return 2\n")
    local cache = mnemo.cache.cascade { l1 = mnemo.cache.new { max_bytes = 1024 * 1024 } }
    local r = index { root = repo, repository = "embcache", embedder = counting, cache = cache }
    assert.equal(2, embedded)
    assert.equal(0, r.embeddings_cached)
    h.write_file(repo .. "/m.py", "def a():\n    return 1\n\n\ndef b():\n    return 3\n")
    r = index { root = repo, repository = "embcache", embedder = counting, cache = cache }
    assert.equal(1, r.files_indexed)
    assert.equal(3, embedded, "only b() was embedded again")
    assert.equal(1, r.embeddings_cached)
    assert.equal(0, sql("SELECT count(*) AS n FROM code_chunks WHERE repository = 'embcache' AND embedding IS NULL")[1].n)
  end)

  it("refuses a wrong DSN or a missing root with a clear error, and touches nothing", function()
    local before = sql("SELECT count(*) AS n, max(indexed_at)::text AS t FROM code_chunks")[1]
    local ok, err = pcall(mnemo.run, mnemo.index, { root = root, repository = "fixture",
      dsn = "postgresql://mnemo@127.0.0.1:1/nowhere?connect_timeout=2" })
    assert.is_false(ok)
    -- Its retries open the database breaker; the error says why.
    assert.matches("mnemo.index: cannot use PostgreSQL", tostring(err))
    assert.matches("Connection refused", tostring(err))
    mnemo.breaker.get("database"):reset()
    ok, err = pcall(mnemo.run, mnemo.index, { root = root, repository = "fixture", dsn = "not a dsn" })
    assert.is_false(ok)
    assert.equal("invalid_input", err.kind)
    ok, err = pcall(mnemo.run, mnemo.index, { root = root .. "/no/such/dir", dsn = dsn })
    assert.is_false(ok)
    assert.matches("is not a directory", tostring(err))
    assert.same(before, sql("SELECT count(*) AS n, max(indexed_at)::text AS t FROM code_chunks")[1])
  end)

  it("searches by words and meaning, and walks the graph", function()
    -- shapes.py was rewritten above: `square` is defined only here now.
    h.write_file(root .. "/pkg/geometry.py", "def square(x):\n    return x * x\n")
    h.write_file(root .. "/pkg/box.py", "class Box:\n    def helper(self):\n        return 1\n\n"
      .. "    def size(self):\n        return self.helper()\n")
    index()
    local hits = mnemo.run(mnemo.search, { query = "square", repository = "fixture", dsn = dsn, k = 5 })
    assert.is_true(#hits >= 1)
    -- Either vector mode (tests/lua/vector_mode_spec.lua tests both).
    assert.is_truthy(hits.mode:match("^native cosine") or hits.mode:match("^pgvector"), hits.mode)
    assert.equal("square", hits[1].name_path)
    assert.equal("pkg/geometry.py", hits[1].file_path)
    local near = mnemo.run(mnemo.graph.neighbors, { name_path = "total", repository = "fixture", dsn = dsn })
    local names = {}
    for _, n in ipairs(near) do
      names[#names + 1] = n.name_path
    end
    assert.is_true(#names >= 1, "total calls square")
    -- A call through self resolves to the method of the class.
    near = mnemo.run(mnemo.graph.neighbors, { name_path = "Box.size", repository = "fixture", dsn = dsn, depth = 1 })
    assert.equal(1, #near)
    assert.equal("Box.helper", near[1].name_path)
    assert.equal(1, near[1].depth)
  end)
end)
