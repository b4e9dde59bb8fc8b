-- Reading what the pipeline stored: chunk listings, hybrid search (full
-- text + vector similarity), the code graph, and the embedding backfill.
local core = require "mnemo_core"
local guard = require "mnemo.guard"
local pg = require "mnemo.pg"
local errors = require "mnemo.errors"
local vector = require "mnemo.vector"

local _M = {}

-- The callers run under their own guarded operation (retries included):
-- a plain connect, not db_connect's retries nested in theirs.
local function with_conn(opts, fn)
  return pg.with_connection(opts.dsn or os.getenv("MNEMO_PG_DSN"), fn, pg.connect)
end

-- mnemo.chunks{repository=} -> list of { file_path, name_path, start_line, end_line, kind }
function _M.chunks(opts)
  return with_conn(opts, function(conn)
    return conn:exec([[SELECT file_path, name_path, kind, start_line, end_line FROM code_chunks
      WHERE repository = $1 ORDER BY file_path, start_line, chunk_index]], { opts.repository })
  end)
end

-- Two vector modes (lua/mnemo/vector.lua says how one is chosen):
--   native   — vectors are real[] and the similarity is computed here, in C,
--              over the lexical candidates plus a bounded sample of the rest;
--   pgvector — candidates are the lexical matches plus the nearest
--              neighbours by the HNSW index on embedding_v (cosine
--              distance), and similarity is 1 - distance.
-- Both score the same way: 0.5 * lexical (ts_rank of the chunks that match
-- the query, normalised to the best; 0 for the others: ts_rank gives a
-- non-match a tiny rank, which normalised to 1 when nothing matched) +
-- 0.5 * cosine similarity. hits.mode says which one ran.
_M.VECTOR_MODE = vector.NATIVE .. " (pgvector not installed)"

local MAX_LEXICAL = 2000

local function native_candidates(conn, opts, qvec)
  local rows = conn:exec([[
    SELECT id, file_path, name_path, kind, start_line, end_line, embedding::text AS embedding,
           CASE WHEN to_tsvector('simple', name_path || ' ' || source) @@ plainto_tsquery('simple', $2)
             THEN ts_rank(to_tsvector('simple', name_path || ' ' || source),
                          plainto_tsquery('simple', $2)) ELSE 0 END AS lexical
    FROM code_chunks
    WHERE repository = $1
      AND (to_tsvector('simple', name_path || ' ' || source) @@ plainto_tsquery('simple', $2)
           OR embedding IS NOT NULL)
    ORDER BY lexical DESC
    LIMIT ]] .. MAX_LEXICAL, { opts.repository, opts.query })
  for _, r in ipairs(rows) do
    r.vector = r.embedding and core.cosine(qvec, r.embedding) or 0
    r.embedding = nil
  end
  return rows
end

-- Lexical matches UNION the top-N nearest by the index. The ANN branch
-- filters by repository after the index scan: pgvector 0.8's iterative
-- scan keeps reading the index until N rows pass the filter.
local function pgvector_candidates(conn, opts, qvec, state, k)
  local s = state.schema
  local n = math.min(1000, math.max(100, 10 * k, opts.candidates or 0))
  local vtype = ("%s.vector(%d)"):format(s, vector.DIMS)
  local dist = ("OPERATOR(%s.<=>)"):format(s)
  local sql = ([[
    WITH lex AS (
      SELECT id FROM code_chunks
      WHERE repository = $1
        AND to_tsvector('simple', name_path || ' ' || source) @@ plainto_tsquery('simple', $2)
      ORDER BY ts_rank(to_tsvector('simple', name_path || ' ' || source),
                       plainto_tsquery('simple', $2)) DESC
      LIMIT %d
    ), ann AS (
      SELECT id FROM code_chunks
      WHERE repository = $1 AND embedding_v IS NOT NULL
      ORDER BY embedding_v %s $3::%s
      LIMIT $4
    )
    SELECT c.id, c.file_path, c.name_path, c.kind, c.start_line, c.end_line,
           CASE WHEN c.id IN (SELECT id FROM lex)
             THEN ts_rank(to_tsvector('simple', c.name_path || ' ' || c.source),
                          plainto_tsquery('simple', $2)) ELSE 0 END AS lexical,
           1 - (c.embedding_v %s $3::%s) AS vector
    FROM code_chunks c
    WHERE c.id IN (SELECT id FROM lex UNION SELECT id FROM ann)]]):format(MAX_LEXICAL, dist, vtype, dist, vtype)
  -- The index's knobs for this query only (SET LOCAL): a search list as
  -- long as the candidates wanted, and pgvector 0.8's iterative scan.
  local rows = conn:transaction(function(tx)
    tx:exec(("SET LOCAL hnsw.ef_search = %d"):format(n))
    if vector.version_at_least(state.version, "0.8.0") then
      tx:exec("SET LOCAL hnsw.iterative_scan = relaxed_order")
    end
    return tx:exec(sql, { opts.repository, opts.query, vector.literal(qvec), n })
  end)
  for _, r in ipairs(rows) do
    -- NULL (no pgvector form) or NaN (a zero vector): no similarity, as
    -- core.cosine says for those.
    if not r.vector or r.vector ~= r.vector then
      r.vector = 0
    end
  end
  return rows
end

-- The mode for this search: state from vector.ensure, or a native one.
local function choose_mode(conn, opts, dims)
  local want = opts.vector_mode or os.getenv("MNEMO_VECTOR_MODE") or "auto"
  if want == "" then
    want = "auto"
  end
  if want == "native" then
    return { mode = "native", label = vector.NATIVE .. " (native mode requested)" }
  elseif want ~= "auto" and want ~= "pgvector" then
    error(errors.new("invalid_input", ("search: vector_mode must be auto, native or pgvector, got %s")
      :format(tostring(want))), 0)
  end
  local state, err = vector.ensure(conn)
  if not state then
    error(err, 0)
  end
  if state.mode == "pgvector" and dims ~= vector.DIMS then
    state = { mode = "native", label = ("%s (query has %d dims; the pgvector column holds %d)")
      :format(vector.NATIVE, dims, vector.DIMS) }
  end
  if want == "pgvector" and state.mode ~= "pgvector" then
    error(errors.new("not_found", "search: pgvector mode requested, but: " .. state.label), 0)
  end
  return state
end

-- Rows whose schema vanished under a cached pgvector state: the column,
-- its function or the extension were dropped (a re-created database).
local SCHEMA_GONE = { ["42703"] = true, ["42883"] = true, ["42704"] = true, ["42P01"] = true }

-- mnemo.search{query=, repository=, k=10, dims=384, vector_mode="auto"}
-- -> hits with score, lexical, vector; hits.mode names the vector mode.
-- vector_mode: "auto" (pgvector when the server has it, else native; the
-- default, or $MNEMO_VECTOR_MODE), "native", or "pgvector" (an error when
-- it cannot be used). Under the vector_search timeout.
function _M.search(opts)
  local k = opts.k or 10
  local dims = opts.dims or vector.DIMS
  local qvec = core.embed_hashing(opts.query, dims)
  return guard.guard("vector_search", function()
    return with_conn(opts, function(conn)
      local state = choose_mode(conn, opts, dims)
      local rows
      if state.mode == "pgvector" then
        local ok, res = pcall(pgvector_candidates, conn, opts, qvec, state, k)
        if not ok and type(res) == "table" and SCHEMA_GONE[res.sqlstate] then
          vector.forget(conn.dsn)
          state = choose_mode(conn, opts, dims)
          if state.mode == "pgvector" then
            res = pgvector_candidates(conn, opts, qvec, state, k)
          else
            res = native_candidates(conn, opts, qvec)
          end
        elseif not ok then
          error(res, 0)
        end
        rows = res
      else
        rows = native_candidates(conn, opts, qvec)
      end
      local max_lex = 0
      for _, r in ipairs(rows) do
        if r.lexical > max_lex then
          max_lex = r.lexical
        end
      end
      for _, r in ipairs(rows) do
        r.lexical = max_lex > 0 and r.lexical / max_lex or 0
        r.score = 0.5 * r.lexical + 0.5 * r.vector
      end
      -- Ties broken by id, so both modes rank equal scores the same way.
      table.sort(rows, function(a, b)
        if a.score ~= b.score then
          return a.score > b.score
        end
        return a.id < b.id
      end)
      local hits = {}
      for i = 1, math.min(k, #rows) do
        hits[i] = rows[i]
      end
      hits.mode = state.label
      return hits
    end)
  end)
end

-- mnemo.graph.neighbors{name_path=, repository=, depth=2} -> nodes reached
-- by calls/imports edges (resolved by name within the repository), with
-- their distance; under the graph_traversal timeout.
function _M.neighbors(opts)
  local depth = opts.depth or 2
  return guard.guard("graph_neighbors", function()
    return with_conn(opts, function(conn)
      return conn:exec([[
        WITH RECURSIVE walk(id, name_path, file_path, depth) AS (
          SELECT id, name_path, file_path, 0 FROM graph_nodes
          WHERE repository = $1 AND name_path = $2
          UNION
          SELECT n.id, n.name_path, n.file_path, w.depth + 1
          FROM walk w
          JOIN graph_edges e ON e.source_id = w.id
          JOIN graph_nodes n ON n.repository = $1
            AND (n.name_path = e.target_name OR n.name_path LIKE '%.' || e.target_name)
          WHERE w.depth < $3
        )
        SELECT name_path, file_path, min(depth) AS depth FROM walk
        WHERE depth > 0 GROUP BY name_path, file_path ORDER BY depth, name_path]],
        { opts.repository, opts.name_path, depth })
    end)
  end)
end

return _M
