-- Which vector search mode a database supports, and getting it ready.
--
-- pgvector is not packaged for Debian 12 (`scripts/install-deps --pgvector`
-- builds it from Debian's next release). The schema therefore keeps
-- embeddings as `real[]`, which works everywhere, and search computes cosine
-- similarity natively in C over the candidates. When the `vector` extension
-- is available on the server, `ensure` switches the database to pgvector
-- mode:
--   * CREATE EXTENSION IF NOT EXISTS vector (pgvector is not a trusted
--     extension: this needs a superuser, as the private test servers'
--     `mnemo` is; without the right, the mode stays native, with the reason);
--   * a column `embedding_v vector(384)` GENERATED ALWAYS AS a conversion of
--     `embedding` ... STORED, so it stays in step with the real[] column on
--     every INSERT and UPDATE without the indexer or the backfill knowing
--     about it. The conversion is an IMMUTABLE plpgsql function that gives
--     NULL (instead of failing the row) for a vector pgvector refuses: a
--     dimension other than 384, NaN or infinity;
--   * an HNSW index on it with cosine ops.
-- This is not a numbered migration: a migration must apply everywhere, and
-- this one would fail wherever pgvector is missing. It is an idempotent step,
-- run under an advisory lock in one transaction, that first reads the
-- catalog and does nothing when all is in place. Search calls it once per
-- process and DSN (the result is cached); examples/index.lua calls it right
-- after migrating, so the one-time work (adding a stored column rewrites
-- the table, the index is built over the rows already there) happens there
-- and not under a search's deadline. On a large existing table, run it once
-- by hand the same way.
local _M = {}

-- The dimension of the pgvector column: the built-in embedder's default.
-- Queries of another dimension use the native mode.
_M.DIMS = 384

_M.NATIVE = "native cosine over real[]"

local LOCK_KEY = 727275 -- pg.migrate uses 727274

local PROBE = [[
SELECT (SELECT default_version FROM pg_available_extensions WHERE name = 'vector') AS available,
       e.extversion AS installed,
       quote_ident(n.nspname) AS schema,
       to_regclass('code_chunks') IS NOT NULL AS has_table,
       (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
         WHERE a.attrelid = to_regclass('code_chunks') AND a.attname = 'embedding_v'
           AND NOT a.attisdropped) AS column_type,
       (SELECT am.amname FROM pg_class i JOIN pg_am am ON am.oid = i.relam
         WHERE i.oid = to_regclass('code_chunks_embedding_v_idx')) AS index_am,
       EXISTS (SELECT 1 FROM pg_am WHERE amname = 'hnsw') AS has_hnsw
FROM (SELECT 1) AS one
LEFT JOIN pg_extension e ON e.extname = 'vector'
LEFT JOIN pg_namespace n ON n.oid = e.extnamespace]]

local cache = {}

local function native(reason)
  return { mode = "native", reason = reason, label = ("%s (%s)"):format(_M.NATIVE, reason) }
end

local function pgvector(p)
  local index = p.index_am or "exact scan"
  return {
    mode = "pgvector",
    version = p.installed,
    schema = p.schema,
    index = p.index_am,
    label = ("pgvector (%s, cosine)"):format(index),
  }
end

-- Everything in place? Then the pgvector state; else nil and what is missing.
local function ready(p)
  if not p.installed then
    return nil
  end
  if not p.column_type then
    return nil
  end
  if not p.column_type:match("vector%(" .. _M.DIMS .. "%)$") then
    return nil, ("code_chunks.embedding_v is %s, not vector(%d)"):format(p.column_type, _M.DIMS)
  end
  if p.has_hnsw and not p.index_am then
    return nil
  end
  return pgvector(p)
end

local function setup(conn)
  conn:transaction(function(tx)
    tx:exec("SELECT pg_advisory_xact_lock(" .. LOCK_KEY .. ")")
    tx:exec("CREATE EXTENSION IF NOT EXISTS vector")
    local s = tx:exec([[SELECT quote_ident(n.nspname) AS schema FROM pg_extension e
      JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector']])[1].schema
    local vtype = ("%s.vector(%d)"):format(s, _M.DIMS)
    -- Fixed search_path: the body must resolve the type whatever the
    -- caller's is. The EXCEPTION block turns a refused vector into NULL.
    tx:exec(([[CREATE OR REPLACE FUNCTION mnemo_embedding_vector(e real[]) RETURNS %s
      LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = %s, pg_catalog AS $fn$
      BEGIN
        IF e IS NULL OR array_ndims(e) <> 1 OR cardinality(e) <> %d THEN
          RETURN NULL;
        END IF;
        RETURN e::%s;
      EXCEPTION WHEN data_exception THEN
        RETURN NULL;
      END $fn$]]):format(vtype, s, _M.DIMS, vtype))
    tx:exec(([[ALTER TABLE code_chunks ADD COLUMN IF NOT EXISTS embedding_v %s
      GENERATED ALWAYS AS (mnemo_embedding_vector(embedding)) STORED]]):format(vtype))
    if tx:exec("SELECT 1 AS x FROM pg_am WHERE amname = 'hnsw'")[1] then
      tx:exec(([[CREATE INDEX IF NOT EXISTS code_chunks_embedding_v_idx ON code_chunks
        USING hnsw (embedding_v %s.vector_cosine_ops)]]):format(s))
    end
    -- Statistics for the new column: without them the planner prefers an
    -- exact scan of the repository's rows to the index (seen: 150 ms
    -- instead of 4 ms over 10 000 rows).
    tx:exec("ANALYZE code_chunks")
  end)
end

-- ensure(conn) -> state | nil, err
-- state.mode is "pgvector" or "native"; state.label says it in words (what
-- search reports as hits.mode); state.reason tells why native. nil, err
-- only for a failure of the connection itself: then nothing is known.
function _M.ensure(conn)
  local key = conn.dsn
  if key and cache[key] then
    return cache[key]
  end
  local rows, err = conn:query(PROBE)
  if not rows then
    return nil, err
  end
  local p = rows[1]
  local state, why
  if not p.has_table then
    -- Not migrated yet: say so, but do not remember it.
    return native("no code_chunks table")
  elseif not p.available then
    state = native("pgvector not installed")
  else
    state, why = ready(p)
    if not state and not why then
      local ok, e = pcall(setup, conn)
      if not ok then
        if type(e) ~= "table" or not e.sqlstate then
          return nil, e
        end
        -- Refused: native, and why. Remembered only when it will not
        -- change by itself (no privilege, not the owner, files missing:
        -- SQLSTATE classes 42, 0A, 58); a deadlock or a lock timeout is
        -- tried again by the next search.
        local native_now = native(("pgvector available but not enabled: %s"):format(tostring(e.message or e)))
        if not (e.sqlstate:match("^42") or e.sqlstate:match("^0A") or e.sqlstate:match("^58")) then
          return native_now
        end
        state = native_now
      else
        rows, err = conn:query(PROBE)
        if not rows then
          return nil, err
        end
        state, why = ready(rows[1])
        why = why or (not state and "pgvector set-up incomplete") or nil
      end
    end
    state = state or native(why)
  end
  if key then
    cache[key] = state
  end
  return state
end

-- The cached state for a DSN, if any; forget(dsn) drops it (the schema
-- changed under us: the next ensure reads the catalog again).
function _M.cached(dsn)
  return cache[dsn]
end

function _M.forget(dsn)
  if dsn then
    cache[dsn] = nil
  else
    cache = {}
  end
end

-- version_at_least("0.10.1", "0.8.0") -> true (numeric, part by part).
function _M.version_at_least(version, wanted)
  if not version then
    return false
  end
  local a, b = {}, {}
  for d in version:gmatch("%d+") do
    a[#a + 1] = tonumber(d)
  end
  for d in wanted:gmatch("%d+") do
    b[#b + 1] = tonumber(d)
  end
  for i = 1, math.max(#a, #b) do
    local x, y = a[i] or 0, b[i] or 0
    if x ~= y then
      return x > y
    end
  end
  return true
end

-- A query vector in pgvector's text form: "{a,b}" -> "[a,b]".
function _M.literal(array_literal)
  return "[" .. array_literal:sub(2, -2) .. "]"
end

return _M
