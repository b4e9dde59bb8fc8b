-- Embedding backfill: chunks stored with a NULL embedding (the embedder was
-- down, its breaker open, or the degradation mode said "queue") wait in
-- pending_embeddings; a background task embeds them once the embedder is
-- back, with a per-chunk exponential backoff kept in the table itself, so
-- a restart loses no queued work and two processes never embed a chunk
-- twice at once (rows are claimed with FOR UPDATE SKIP LOCKED).
--
--   backfill.pass(conn, opts) -> embedded, left     one batch
--   backfill.start(opts) -> handle                  the background task
--     handle:drain(seconds) -> left                 wait until nothing is due
--     handle:stop()
-- opts: embedder (fn(chunks) -> array literals), repository (nil: all),
--   batch = 64, backoff_base = 1 (s; a chunk that failed k times waits
--   base * 2^k, at most backoff_max = 600), interval = 1 (s between passes
--   when idle), dsn (start only; default $MNEMO_PG_DSN).
local core = require "mnemo_core"
local guard = require "mnemo.guard"
local errors = require "mnemo.errors"
local log = require "mnemo.log"
local pg = require "mnemo.pg"
local breaker = require "mnemo.breaker"

local type, pcall, tostring, setmetatable = type, pcall, tostring, setmetatable

local _M = {}

local CLAIM = [[
  SELECT c.id, c.name_path, c.source, p.attempts FROM pending_embeddings p
  JOIN code_chunks c ON c.id = p.chunk_id
  WHERE p.next_attempt_at <= clock_timestamp() AND ($1::text IS NULL OR c.repository = $1)
  ORDER BY p.next_attempt_at LIMIT $2
  FOR UPDATE OF p SKIP LOCKED]]

local LEFT = [[
  SELECT count(*) AS n FROM pending_embeddings p JOIN code_chunks c ON c.id = p.chunk_id
  WHERE $1::text IS NULL OR c.repository = $1]]

local POSTPONE = [[
  UPDATE pending_embeddings SET attempts = attempts + 1, last_error = $2,
    next_attempt_at = clock_timestamp() + make_interval(secs => least($4, $3 * power(2, attempts)))
  WHERE chunk_id = ANY($1::bigint[])]]

local function ids_literal(rows)
  local ids = {}
  for i, r in ipairs(rows) do
    ids[i] = tostring(r.id)
  end
  return "{" .. table.concat(ids, ",") .. "}"
end

-- The embedder's breaker, when the policy defines one for embed_batch.
local function embedding_breaker()
  local name = guard.explain("embed_batch").breaker
  return name and breaker.get(name) or nil
end

-- One batch: claims up to opts.batch due chunks, embeds them and stores the
-- vectors in one transaction. A failure postpones the claimed chunks
-- (except a fast-fail of the open breaker, which says nothing about them).
-- Returns how many were embedded and how many remain queued.
function _M.pass(conn, opts)
  local repository = opts.repository
  local embedded = 0
  conn:transaction(function(tx)
    local rows = tx:exec(CLAIM, { repository, opts.batch or 64, n = 2 })
    if #rows == 0 then
      return
    end
    local ok, vectors = pcall(guard.guard, "embed_batch", function()
      return opts.embedder(rows)
    end)
    if not ok then
      if errors.classify(vectors) ~= "circuit_open" then
        tx:exec(POSTPONE, { ids_literal(rows), tostring(vectors), opts.backoff_base or 1, opts.backoff_max or 600 })
        log.emit("warn", "backfill_failed", { chunks = #rows, error = tostring(vectors) })
      end
      return
    end
    local ids, vecs = {}, {}
    for i, r in ipairs(rows) do
      ids[i] = r.id
      vecs[i] = vectors[i]
    end
    -- One statement for the batch: unnest pairs each id with its vector.
    tx:exec([[
      WITH v AS (SELECT * FROM unnest($1::bigint[], $2::text[]) AS v(id, vec)),
      u AS (UPDATE code_chunks c SET embedding = v.vec::real[] FROM v WHERE c.id = v.id)
      DELETE FROM pending_embeddings p USING v WHERE p.chunk_id = v.id]],
      { ids_literal(rows), pg.text_array(vecs) })
    embedded = #rows
  end)
  local left = conn:exec(LEFT, { repository, n = 1 })[1].n
  return embedded, left
end

local Handle = {}
Handle.__index = Handle

-- Waits (at most `seconds`) until the queue is empty; returns how many
-- chunks are still queued.
-- Waits until a pass that began after this call finds the queue empty
-- (an older pass's count says nothing of chunks queued since: one that
-- ran before the files were stored, then the embedding breaker opened and
-- no pass ran, ended the run with thousands of chunks queued).
function Handle:drain(seconds)
  local until_t = core.now() + (seconds or 0)
  local after = self.begun
  self.draining = true
  while not self.finished and core.now() < until_t do
    if self.left == 0 and self.counted_from > after and not self.busy then
      break
    end
    core.sleep(0.02)
  end
  self.draining = false
  return self.left
end

function Handle:stop()
  self.stopped = true
  while not self.finished do
    core.sleep(0.01)
  end
end

function _M.start(opts)
  if type(opts) ~= "table" or type(opts.embedder) ~= "function" then
    error("backfill.start: expected { embedder = fn, ... }", 2)
  end
  -- begun: passes started; counted_from: the pass whose count `left` is.
  local self = setmetatable({ opts = opts, embedded = 0, passes = 0, left = nil, stopped = false,
    finished = false, busy = false, begun = 0, counted_from = 0 }, Handle)
  local dsn = opts.dsn or os.getenv("MNEMO_PG_DSN")
  local interval = opts.interval or 1
  core.spawn(function()
    local conn
    while not self.stopped do
      local b = embedding_breaker()
      local wait = interval
      if b and b:state() == "open" then
        wait = math.min(interval, 0.05) -- it may half-open any moment
      else
        self.busy = true
        self.begun = self.begun + 1
        local seq = self.begun
        local ok, done, left = pcall(function()
          if not conn or conn.broken then
            conn = pg.connect_guarded(dsn)
          end
          return _M.pass(conn, opts)
        end)
        self.busy = false
        self.passes = self.passes + 1
        if ok then
          self.embedded = self.embedded + done
          self.left, self.counted_from = left, seq
          if done > 0 then
            wait = 0
          end
        else
          log.emit("warn", "backfill_pass_failed", { error = tostring(done) })
        end
      end
      if wait > 0 then
        local wake_at = core.now() + wait
        repeat
          core.sleep(math.min(0.05, wait))
        until self.stopped or self.draining or core.now() >= wake_at
      end
    end
    if conn then
      conn:close()
    end
    self.finished = true
  end)
  return self
end

return _M
