-- The indexing pipeline against a real PostgreSQL (fresh database per
-- block), with the built-in chunker and embedder.
local mnemo = require "mnemo"
local h = require "helpers"
local uv = require "luv"
local cjson = require "cjson"

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

-- An OpenAI-style embedding server in this process (a luv TCP server)
-- that keeps each request's headers and input.
local function embedding_server()
  local server = uv.new_tcp()
  assert(server:bind("127.0.0.1", 0))
  local got = {}
  server:listen(16, function()
    local client = uv.new_tcp()
    server:accept(client)
    local buf = ""
    client:read_start(function(err, chunk)
      if err or not chunk then
        if not client:is_closing() then
          client:close()
        end
        return
      end
      buf = buf .. chunk
      local head, body = buf:match("^(.-)\r\n\r\n(.*)$")
      local len = head and tonumber(head:match("[Cc]ontent%-[Ll]ength:%s*(%d+)")) or 0
      if head and #body >= len then
        client:read_stop()
        local headers = {}
        for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
          headers[k:lower()] = v
        end
        local doc = cjson.decode(body)
        local _, id_headers = head:gsub("\r\n[Xx]%-[Rr]equest%-[Ii]d:", "")
        got[#got + 1] = { headers = headers, input = doc.input, id_headers = id_headers }
        local data = {}
        for i, text in ipairs(doc.input) do
          local vec = {}
          for x in require("mnemo_core").embed_hashing(text, 384):gmatch("[^{},]+") do
            vec[#vec + 1] = tonumber(x)
          end
          data[i] = { index = i - 1, embedding = vec }
        end
        local out = cjson.encode { data = data }
        client:write(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
          .. "Connection: close\r\n\r\n%s"):format(#out, out), function()
          client:close()
        end)
      end
    end)
  end)
  -- close() lets the loop run the close callbacks (luv calls into Lua from
  -- them: left for the state's teardown, they crash it).
  return { url = ("http://127.0.0.1:%d"):format(server:getsockname().port), got = got,
    close = function()
      server:close()
      mnemo.run(function()
        mnemo.sleep(0.02)
      end)
    end }
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

  it("runs each file under its own correlation id: the file's errors, log lines and report carry it", function()
    local repo = os.tmpname()
    os.remove(repo)
    mkdir(repo)
    h.write_file(repo .. "/a.py", "def fn_a():\n    return 1\n")
    h.write_file(repo .. "/b.py", "def fn_b():\n    return 2\n")
    h.write_file(repo .. "/c.py", "def corr_poison():\n    return 3\n")
    sql([[CREATE OR REPLACE FUNCTION refuse_corr_poison() RETURNS trigger AS $$
      BEGIN
        IF NEW.name_path = 'corr_poison' THEN
          RAISE EXCEPTION 'poisoned chunk' USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
      END $$ LANGUAGE plpgsql]])
    sql([[CREATE TRIGGER refuse_corr_poison BEFORE INSERT ON code_chunks
      FOR EACH ROW EXECUTE FUNCTION refuse_corr_poison()]])
    finally(function()
      sql("DROP TRIGGER refuse_corr_poison ON code_chunks")
    end)
    mnemo.tracking.reset()
    local ids = {}
    local hashing = mnemo.embed.hashing(384)
    local function embedder(chunks)
      local name
      for _, c in ipairs(chunks) do
        name = name or (c.source or ""):match("def ([%w_]+)")
      end
      ids[name] = mnemo.correlation.current()
      if name == "fn_b" then
        error(mnemo.error("invalid_input", "the model refused fn_b"))
      end
      return hashing(chunks)
    end
    local cache = mnemo.cache.cascade { l1 = mnemo.cache.new { max_bytes = 1024 * 1024 } }
    local r = index { root = repo, repository = "correlated", embedder = embedder, embedding_cache = false,
      cache = cache, backfill = false, concurrency = 2 }
    assert.equal(2, r.files_indexed) -- b.py with its embedding pending
    assert.equal(1, r.files_failed)
    for _, name in ipairs({ "fn_a", "fn_b", "corr_poison" }) do
      assert.matches("^%x+%-%x+$", ids[name], 1, false, name)
    end
    assert.are_not.equal(ids.fn_a, ids.fn_b)
    assert.are_not.equal(ids.fn_b, ids.corr_poison)
    assert.are_not.equal(ids.fn_a, ids.corr_poison)
    -- The report names the failed file with its id.
    assert.same({ { file = "c.py", reason = "store_constraint", correlation_id = ids.corr_poison } }, r.failed)
    -- Each failure was recorded under its own file's id.
    local by_op = {}
    for _, e in ipairs(mnemo.tracking.queued()) do
      by_op[e.operation or e.error_type] = e
    end
    assert.equal(ids.fn_b, by_op.embed_batch.correlation_id)
    assert.equal(ids.corr_poison, by_op.db_write.correlation_id)
    assert.matches("c.py", by_op.db_write.context)
    local failed = h.events(lines, "file_failed")
    assert.equal(1, #failed)
    assert.equal("c.py", failed[1].file_path)
    assert.equal(ids.corr_poison, failed[1].correlation_id)
    -- Nothing of it is left on the caller.
    assert.is_nil(mnemo.correlation.current())
    mnemo.tracking.reset()
  end)

  it("sends each file's id to an HTTP embedder as X-Request-Id", function()
    local server = embedding_server()
    finally(server.close)
    local repo = os.tmpname()
    os.remove(repo)
    mkdir(repo)
    for _, name in ipairs({ "one", "two", "three" }) do
      h.write_file(repo .. "/" .. name .. ".py", ("def via_http_%s():\n    return 1\n"):format(name))
    end
    local cache = mnemo.cache.cascade { l1 = mnemo.cache.new { max_bytes = 1024 * 1024 } }
    local r = index { root = repo, repository = "viahttp", embedder = mnemo.embed.http { url = server.url },
      embedding_cache = false, cache = cache, backfill = false }
    assert.equal(3, r.files_indexed)
    assert.equal(0, r.embed_failures)
    assert.equal(3, #server.got)
    local seen = {}
    for _, req in ipairs(server.got) do
      local id = req.headers["x-request-id"]
      assert.matches("^%x+%-%x+$", id)
      assert.equal(1, req.id_headers)
      assert.is_nil(seen[id], "one id per file")
      seen[id] = true
      assert.matches("via_http_", table.concat(req.input, "\n"))
    end
    assert.equal(0, sql("SELECT count(*) AS n FROM code_chunks WHERE repository = 'viahttp' AND embedding IS NULL")[1].n)

    -- The client sends the caller's id, never two, never one unsafe in a header.
    mnemo.run(function()
      local client = require "mnemo.http_client"
      local function post(headers)
        assert(client.request { url = server.url .. "/v1/embeddings", method = "POST", headers = headers,
          body = cjson.encode { input = { "x" } } })
        return server.got[#server.got]
      end
      local got = mnemo.correlation.with("abc-1", post, {})
      assert.equal("abc-1", got.headers["x-request-id"])
      got = mnemo.correlation.with("abc-1", post, { ["X-Request-Id"] = "mine" })
      assert.equal("mine", got.headers["x-request-id"])
      assert.equal(1, got.id_headers)
      got = mnemo.correlation.with("bad\r\nInjected: yes", post, {})
      assert.is_nil(got.headers["x-request-id"])
      assert.is_nil(got.headers["injected"])
      got = post({})
      assert.is_nil(got.headers["x-request-id"], "no id outside a correlation")
    end)
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

-- Issue item 12: a file whose index_file deadline fires while its store is
-- in flight ends as exactly one outcome, and the outcome matches the
-- database. The store is held just past the deadline for one file
-- (pkg/slow.py): its COMMIT by a deferred trigger that sleeps (the COMMIT
-- is shielded, so it completes after the deadline), or its transaction by
-- an advisory lock on the file that another connection holds (so it is
-- cancelled before its COMMIT).
describe("mnemo.index: one outcome per file when the deadline fires during the store", function()
  local DEADLINE = 0.4
  local NFILES = 8 -- pkg/f1.py .. pkg/f7.py and pkg/slow.py
  local dsn, root, policy_path

  setup(function()
    dsn = h.pg_migrated_database()
    root = os.tmpname()
    os.remove(root)
    mkdir(root .. "/pkg")
    for i = 1, NFILES - 1 do
      h.write_file(("%s/pkg/f%d.py"):format(root, i), ("def f%d(x):\n    return x + %d\n"):format(i, i))
    end
    h.write_file(root .. "/pkg/slow.py", "def slow(x):\n    return x * 2\n")
    -- The default policy with a short index_file deadline.
    local f = assert(io.open("policies/default.lua"))
    local text = f:read("*a")
    f:close()
    local n
    text, n = text:gsub("index_file = [%d.]+", ("index_file = %g"):format(DEADLINE), 1)
    assert.equal(1, n)
    policy_path = os.tmpname() .. ".lua"
    h.write_file(policy_path, text)
    mnemo.policy._reset()
    assert(mnemo.policy.load(policy_path))
  end)
  teardown(function()
    os.execute("rm -rf '" .. root .. "'")
    os.remove(policy_path)
    mnemo.policy._reset()
    assert(mnemo.policy.load("policies/default.lua"))
  end)

  local function sql(q, params)
    return h.sql(dsn, q, params)
  end

  -- Indexes the tree into `repository` (no cache shared with another run);
  -- `beside(repository)`, if given, runs in a task of its own alongside.
  local function index(repository, extra, beside)
    local opts = { root = root, repository = repository, dsn = dsn, concurrency = 2, backfill = false,
      cache = mnemo.cache.cascade {} }
    local calls = {} -- rel -> how many times the file was finished (on_file)
    opts.on_file = function(rel)
      calls[rel] = (calls[rel] or 0) + 1
    end
    for k, v in pairs(extra or {}) do
      opts[k] = v
    end
    local box
    local r = mnemo.run(function()
      if beside then
        box = h.start(beside, repository)
        mnemo.sleep(0.05) -- it holds what it holds before the run starts
      end
      local report = mnemo.index(opts)
      while box and not box.result do
        mnemo.sleep(0.02)
      end
      return report
    end)
    if box then
      assert.is_true(box.result[1], tostring(box.result[2]))
    end
    return r, calls
  end

  -- One outcome per file, and the report is the database: the files
  -- reported indexed are exactly the files stored.
  local function assert_one_outcome(r, calls, repository)
    assert.equal(NFILES, r.files_total)
    assert.equal(NFILES, r.files_indexed + r.files_failed + r.files_unchanged + r.files_skipped,
      cjson.encode(r.reasons))
    local failed = {}
    for _, f in ipairs(r.failed) do
      assert.is_nil(failed[f.file], "reported failed twice: " .. f.file)
      failed[f.file] = f.reason
    end
    for rel, n in pairs(calls) do
      assert.equal(1, n, rel .. " finished " .. n .. " times")
    end
    local stored = {}
    for _, row in ipairs(sql("SELECT DISTINCT file_path FROM code_chunks WHERE repository = $1", { repository })) do
      stored[row.file_path] = true
    end
    local nstored = 0
    for rel in pairs(stored) do
      nstored = nstored + 1
      assert.is_nil(failed[rel], rel .. " is stored but reported failed (" .. tostring(failed[rel]) .. ")")
    end
    assert.equal(r.files_indexed, nstored)
    assert.equal(NFILES, nstored + #r.failed)
    return stored, failed
  end

  it("a COMMIT that completes after the deadline is the file indexed, once", function()
    -- Sleeps once per transaction, at its COMMIT, for pkg/slow.py of the
    -- repository held_commit: past the file's deadline.
    sql(([[CREATE OR REPLACE FUNCTION hold_commit() RETURNS trigger AS $$
      BEGIN
        IF current_setting('mnemo_test.held', true) IS DISTINCT FROM 'y' THEN
          PERFORM set_config('mnemo_test.held', 'y', true);
          PERFORM pg_sleep(%g);
        END IF;
        RETURN NULL;
      END $$ LANGUAGE plpgsql]]):format(DEADLINE * 2))
    sql([[CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON code_chunks
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
      WHEN (NEW.repository = 'held_commit' AND NEW.file_path = 'pkg/slow.py') EXECUTE FUNCTION hold_commit()]])
    local ok, r, calls = pcall(index, "held_commit")
    sql("DROP TRIGGER hold_commit ON code_chunks")
    assert(ok, r)
    assert_one_outcome(r, calls, "held_commit")
    assert.equal(NFILES, r.files_indexed, cjson.encode(r.reasons))
    assert.equal(0, r.files_failed, cjson.encode(r.reasons))
  end)

  -- Holds pkg/slow.py's advisory transaction lock (the one
  -- mnemo_store_file takes) for `seconds`.
  local function hold_lock(seconds)
    return function(repository)
      local c = assert(mnemo.pg.connect(dsn))
      c:exec("BEGIN")
      c:exec("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", { repository .. "/pkg/slow.py" })
      mnemo.sleep(seconds)
      c:exec("COMMIT")
      c:close()
    end
  end

  it("a store cancelled before its COMMIT is the file failed, once, and nothing of it is stored", function()
    -- Held past the deadline of the file's first try and of its second
    -- (db_outage_wait = 0: the end-of-run round, tried once more).
    local r, calls = index("held_lock", { db_outage_wait = 0 }, hold_lock(DEADLINE * 4))
    local stored, failed = assert_one_outcome(r, calls, "held_lock")
    assert.equal(NFILES - 1, r.files_indexed, cjson.encode(r.reasons))
    assert.equal(1, r.files_failed, cjson.encode(r.reasons))
    assert.equal("store_timeout", failed["pkg/slow.py"])
    assert.is_nil(stored["pkg/slow.py"])
  end)

  it("a store cancelled before its COMMIT is tried again at the end of the run and indexed, once", function()
    local r, calls = index("held_lock_wait", { db_outage_wait = 10 }, hold_lock(DEADLINE * 3))
    local stored = assert_one_outcome(r, calls, "held_lock_wait")
    assert.equal(NFILES, r.files_indexed, cjson.encode(r.reasons))
    assert.equal(0, r.files_failed, cjson.encode(r.reasons))
    assert.is_true(stored["pkg/slow.py"])
    assert.is_true((r.database_outages or 0) >= 1)
  end)
end)
