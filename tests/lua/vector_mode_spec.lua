-- The two vector search modes (lua/mnemo/vector.lua): native cosine over
-- real[] everywhere, pgvector when the server has the extension
-- (scripts/install-deps --pgvector). Both must rank the same way.
local mnemo = require "mnemo"
local vector = require "mnemo.vector"
local h = require "helpers"

local function make_repo()
  local root = os.tmpname()
  os.remove(root)
  assert(os.execute("mkdir -p '" .. root .. "/app'") == 0)
  h.write_file(root .. "/app/http.py", [[
def parse_request(raw):
    """Split an HTTP request line into method, path and version."""
    method, path, version = raw.split(" ")
    return method, path, version


def render_page(title, body):
    return "<h1>" + title + "</h1>" + body
]])
  h.write_file(root .. "/app/store.py", [[
class Store:
    def connect_database(self, dsn):
        self.conn = open_connection(dsn)

    def save_record(self, record):
        self.conn.insert(record)
]])
  h.write_file(root .. "/app/dates.js", [[
export function formatDate(d) {
  return d.toISOString().slice(0, 10);
}

export function parseDate(text) {
  return new Date(text);
}
]])
  return root
end

local sql = h.sql

-- Is the extension installed on the test server (its files, not CREATEd)?
local function pgvector_on_server()
  return #sql(h.pg_dsn(), "SELECT 1 AS x FROM pg_available_extensions WHERE name = 'vector'") > 0
end

local NO_PGVECTOR = "pgvector is not installed on this PostgreSQL server "
  .. "(scripts/install-deps --pgvector builds it): pgvector mode not tested"

describe("vector search modes", function()
  local root

  setup(function()
    root = make_repo()
    mnemo.policy._reset()
    assert(mnemo.policy.load("policies/default.lua"))
  end)
  teardown(function()
    os.execute("rm -rf '" .. root .. "'")
  end)

  -- A fresh database with the fixture indexed as repository "fx".
  local function indexed_database()
    local dsn = h.pg_fresh_database()
    mnemo.run(function()
      local c = assert(mnemo.pg.connect(dsn))
      mnemo.pg.migrate(c, mnemo.pg.MIGRATIONS)
      c:close()
    end)
    local report = mnemo.run(mnemo.index, { root = root, repository = "fx", dsn = dsn })
    assert.equal(3, report.files_indexed)
    return dsn
  end

  local function search(dsn, query, opts)
    opts = opts or {}
    opts.dsn, opts.query, opts.repository = dsn, query, "fx"
    opts.k = opts.k or 5
    return mnemo.run(mnemo.search, opts)
  end

  -- A query that shares words with a chunk, and one that shares none
  -- (plainto_tsquery ANDs its words): ranked by the vectors alone.
  local LEXICAL, VECTOR_ONLY = "parse request", "requests parsing"

  describe("native", function()
    local dsn
    setup(function()
      dsn = indexed_database()
    end)

    it("computes cosine over real[] and creates nothing pgvector", function()
      local hits = search(dsn, LEXICAL, { vector_mode = "native" })
      assert.matches("native cosine over real%[%]", hits.mode)
      assert.equal("parse_request", hits[1].name_path)
      assert.is_true(hits[1].lexical > 0 and hits[1].vector > 0)
      assert.equal(0, #sql(dsn, "SELECT 1 AS x FROM pg_extension WHERE extname = 'vector'"))
      assert.equal(0, #sql(dsn, [[SELECT 1 AS x FROM information_schema.columns
        WHERE table_name = 'code_chunks' AND column_name = 'embedding_v']]))
    end)

    it("ranks by the vectors alone when no word matches", function()
      local hits = search(dsn, VECTOR_ONLY, { vector_mode = "native" })
      assert.equal("parse_request", hits[1].name_path)
      for _, hit in ipairs(hits) do
        assert.equal(0, hit.lexical)
      end
    end)

    it("rejects an unknown mode", function()
      local ok, err = pcall(search, dsn, LEXICAL, { vector_mode = "faiss" })
      assert.is_false(ok)
      assert.equal("invalid_input", err.kind)
    end)
  end)

  describe("pgvector", function()
    local dsn, native_dsn
    setup(function()
      if pgvector_on_server() then
        dsn = indexed_database()
        native_dsn = indexed_database()
      end
    end)

    it("is chosen automatically and gives the same top hits as native", function()
      if not dsn then
        return pending(NO_PGVECTOR)
      end
      for _, q in ipairs({ LEXICAL, VECTOR_ONLY, "connect database", "format date" }) do
        local pv = search(dsn, q)
        local nat = search(native_dsn, q, { vector_mode = "native" })
        assert.equal("pgvector (hnsw, cosine)", pv.mode)
        assert.matches("native cosine", nat.mode)
        assert.equal(nat[1].name_path, pv[1].name_path, "top hit for " .. q)
        assert.near(nat[1].score, pv[1].score, 1e-4)
        assert.near(nat[1].vector, pv[1].vector, 1e-4)
      end
      assert.equal("parse_request", search(dsn, LEXICAL)[1].name_path)
    end)

    it("keeps embedding_v in step with embedding, and uses the HNSW index", function()
      if not dsn then
        return pending(NO_PGVECTOR)
      end
      search(dsn, LEXICAL) -- ensures the mode
      local n = sql(dsn, [[SELECT count(embedding) AS e, count(embedding_v) AS v,
        count(*) FILTER (WHERE vector_dims(embedding_v) = 384) AS d FROM code_chunks]])[1]
      assert.is_true(n.e > 0)
      assert.equal(n.e, n.v)
      assert.equal(n.e, n.d)
      -- The backfill writes embedding with an UPDATE: the column follows.
      local id = sql(dsn, "SELECT min(id) AS id FROM code_chunks")[1].id
      sql(dsn, "UPDATE code_chunks SET embedding = NULL WHERE id = $1", { id })
      assert.is_nil(sql(dsn, "SELECT embedding_v::text AS v FROM code_chunks WHERE id = $1", { id })[1].v)
      sql(dsn, [[UPDATE code_chunks SET embedding = array_fill(0.5::real, ARRAY[384]) WHERE id = $1]], { id })
      assert.near(0.5, sql(dsn, "SELECT (embedding_v::real[])[7] AS x FROM code_chunks WHERE id = $1",
        { id })[1].x, 1e-6)
      -- A vector pgvector refuses is stored, with no pgvector form.
      for _, bad in ipairs({ "{1,2,3}", "{NaN,1}", "{{1,2},{3,4}}" }) do
        sql(dsn, "UPDATE code_chunks SET embedding = $2::real[] WHERE id = $1", { id, bad })
        assert.is_nil(sql(dsn, "SELECT embedding_v::text AS v FROM code_chunks WHERE id = $1", { id })[1].v)
      end
      local plan = mnemo.run(function()
        local c = assert(mnemo.pg.connect(dsn))
        c:exec("SET enable_seqscan = off")
        local rows = c:exec(([[EXPLAIN SELECT id FROM code_chunks
          ORDER BY embedding_v <=> '%s' LIMIT 5]]):format(vector.literal(require("mnemo_core").embed_hashing("x", 384))))
        c:close()
        local lines = {}
        for _, r in ipairs(rows) do
          lines[#lines + 1] = r["QUERY PLAN"]
        end
        return table.concat(lines, "\n")
      end)
      assert.matches("code_chunks_embedding_v_idx", plan)
    end)

    it("is idempotent, and falls back to native for other dimensions", function()
      if not dsn then
        return pending(NO_PGVECTOR)
      end
      vector.forget(dsn)
      local state = mnemo.run(function()
        local c = assert(mnemo.pg.connect(dsn))
        local s1 = assert(vector.ensure(c))
        vector.forget(dsn)
        local s2 = assert(vector.ensure(c))
        c:close()
        return { s1, s2 }
      end)
      assert.equal("pgvector", state[1].mode)
      assert.same(state[1], state[2])
      assert.equal(1, #sql(dsn, [[SELECT 1 AS x FROM pg_indexes
        WHERE indexname = 'code_chunks_embedding_v_idx']]))
      local hits = search(dsn, LEXICAL, { dims = 256 })
      assert.matches("native cosine over real%[%] %(query has 256 dims", hits.mode)
      assert.equal("pgvector (hnsw, cosine)", search(dsn, LEXICAL, { vector_mode = "pgvector" }).mode)
    end)

    it("rebuilds its state when the schema is re-created under it", function()
      if not dsn then
        return pending(NO_PGVECTOR)
      end
      local fresh = h.pg_fresh_database()
      mnemo.run(function()
        local c = assert(mnemo.pg.connect(fresh))
        mnemo.pg.migrate(c, mnemo.pg.MIGRATIONS)
        c:close()
      end)
      mnemo.run(mnemo.index, { root = root, repository = "fx", dsn = fresh })
      assert.equal("pgvector (hnsw, cosine)", search(fresh, LEXICAL).mode)
      -- Everything dropped, the extension with it; the cached state is stale.
      sql(fresh, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
      mnemo.run(function()
        local c = assert(mnemo.pg.connect(fresh))
        mnemo.pg.migrate(c, mnemo.pg.MIGRATIONS)
        c:close()
      end)
      mnemo.run(mnemo.index, { root = root, repository = "fx", dsn = fresh })
      local hits = search(fresh, LEXICAL)
      assert.equal("pgvector (hnsw, cosine)", hits.mode)
      assert.equal("parse_request", hits[1].name_path)
    end)

    it("stays native, and says why, when the user may not create the extension", function()
      if not dsn then
        return pending(NO_PGVECTOR)
      end
      local role = ("mnemo_plain_%d"):format(require("luv").os_getpid())
      local base = h.pg_dsn()
      sql(base, "DROP DATABASE IF EXISTS " .. role)
      sql(base, "DROP ROLE IF EXISTS " .. role)
      sql(base, "CREATE ROLE " .. role .. " LOGIN")
      sql(base, "CREATE DATABASE " .. role .. " OWNER " .. role)
      local plain = base:gsub("//[^@/]*@", "//" .. role .. "@"):gsub("/[^/]*$", "/" .. role)
      finally(function()
        sql(base, "DROP DATABASE IF EXISTS " .. role)
        sql(base, "DROP ROLE IF EXISTS " .. role)
      end)
      mnemo.run(function()
        local c = assert(mnemo.pg.connect(plain))
        mnemo.pg.migrate(c, mnemo.pg.MIGRATIONS)
        c:close()
      end)
      mnemo.run(mnemo.index, { root = root, repository = "fx", dsn = plain })
      local hits = search(plain, LEXICAL)
      assert.matches("native cosine over real%[%] %(pgvector available but not enabled: .*permission denied",
        hits.mode)
      assert.equal("parse_request", hits[1].name_path)
      assert.equal(0, #sql(plain, "SELECT 1 AS x FROM pg_extension WHERE extname = 'vector'"))
    end)
  end)

  it("pgvector mode, when asked for, fails clearly where the server lacks it", function()
    if pgvector_on_server() then
      return pending("pgvector is installed here: the refusal is tested on servers without it")
    end
    local dsn = indexed_database()
    local ok, err = pcall(search, dsn, LEXICAL, { vector_mode = "pgvector" })
    assert.is_false(ok)
    assert.matches("pgvector not installed", tostring(err))
    assert.matches("pgvector not installed", search(dsn, LEXICAL).mode)
  end)
end)
