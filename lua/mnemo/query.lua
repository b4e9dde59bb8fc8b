-- Reading what the pipeline stored: chunk listings, hybrid search (full
-- text + vector similarity), the code graph, and the embedding backfill.
local core = require "mnemo_core"
local guard = require "mnemo.guard"
local pg = require "mnemo.pg"
local log = require "mnemo.log"

local _M = {}

local function connect(opts)
  local conn, err = pg.connect(opts.dsn or os.getenv("MNEMO_PG_DSN"))
  if not conn then
    error(err, 0)
  end
  return conn
end

local function with_conn(opts, fn)
  local conn = connect(opts)
  local results = { pcall(fn, conn) }
  conn:close()
  if not results[1] then
    error(results[2], 0)
  end
  return unpack(results, 2, table.maxn(results))
end

-- mnemo.chunks{repository=} -> list of { file_path, name_path, start_line, end_line, kind }
function _M.chunks(opts)
  return with_conn(opts, function(conn)
    return conn:exec([[SELECT file_path, name_path, kind, start_line, end_line FROM code_chunks
      WHERE repository = $1 ORDER BY file_path, start_line, chunk_index]], { opts.repository })
  end)
end

-- pgvector is not packaged for Debian 12: vectors are real[] and the
-- similarity is computed here, over the lexical candidates plus a bounded
-- sample of the rest.
_M.VECTOR_MODE = "native cosine over real[] (pgvector not installed)"

-- mnemo.search{query=, repository=, k=10} -> hits with score, lexical,
-- vector; under the vector_search timeout.
function _M.search(opts)
  local k = opts.k or 10
  local dims = opts.dims or 384
  local qvec = core.embed_hashing(opts.query, dims)
  return guard.guard("vector_search", function()
    return with_conn(opts, function(conn)
      local rows = conn:exec([[
        SELECT id, file_path, name_path, kind, start_line, end_line, embedding::text AS embedding,
               ts_rank(to_tsvector('simple', name_path || ' ' || source),
                       plainto_tsquery('simple', $2)) AS lexical
        FROM code_chunks
        WHERE repository = $1
          AND (to_tsvector('simple', name_path || ' ' || source) @@ plainto_tsquery('simple', $2)
               OR embedding IS NOT NULL)
        ORDER BY lexical DESC
        LIMIT 2000]], { opts.repository, opts.query })
      local max_lex = 0
      for _, r in ipairs(rows) do
        if r.lexical > max_lex then
          max_lex = r.lexical
        end
      end
      for _, r in ipairs(rows) do
        r.vector = r.embedding and core.cosine(qvec, r.embedding) or 0
        r.lexical = max_lex > 0 and r.lexical / max_lex or 0
        r.score = 0.5 * r.lexical + 0.5 * r.vector
        r.embedding = nil
      end
      table.sort(rows, function(a, b)
        return a.score > b.score
      end)
      local hits = {}
      for i = 1, math.min(k, #rows) do
        hits[i] = rows[i]
      end
      hits.mode = _M.VECTOR_MODE
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

-- One pass of the backfill: embeds up to `batch` queued chunks whose time
-- has come. Returns how many were embedded and how many remain queued.
function _M.backfill(opts)
  local embedder = opts.embedder
  return with_conn(opts, function(conn)
    local rows = conn:exec([[
      SELECT c.id, c.name_path, c.source, p.attempts FROM pending_embeddings p
      JOIN code_chunks c ON c.id = p.chunk_id
      WHERE p.next_attempt_at <= now() AND ($1::text IS NULL OR c.repository = $1)
      ORDER BY p.next_attempt_at LIMIT $2]], { opts.repository, opts.batch or 64, n = 2 })
    local done = 0
    if #rows > 0 then
      local ok, vectors = pcall(guard.guard, "embed_batch", function()
        return embedder(rows)
      end)
      if ok then
        conn:transaction(function(tx)
          for i, r in ipairs(rows) do
            tx:exec("UPDATE code_chunks SET embedding = $2::real[] WHERE id = $1", { r.id, vectors[i] })
            tx:exec("DELETE FROM pending_embeddings WHERE chunk_id = $1", { r.id })
          end
        end)
        done = #rows
      else
        for _, r in ipairs(rows) do
          -- Back off per chunk: 2^attempts seconds, at most 10 minutes.
          conn:exec([[UPDATE pending_embeddings SET attempts = attempts + 1, last_error = $2,
            next_attempt_at = now() + make_interval(secs => least(600, power(2, attempts + 1)))
            WHERE chunk_id = $1]], { r.id, tostring(vectors) })
        end
        log.emit("warn", "backfill_failed", { chunks = #rows, error = tostring(vectors) })
      end
    end
    local left = conn:exec("SELECT count(*) AS n FROM pending_embeddings")[1].n
    return done, left
  end)
end

return _M
