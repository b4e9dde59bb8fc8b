-- The recovery run's indexer and judge (started by scripts/recovery-run,
-- which sets up the servers and the faults; see docs/RELIABILITY.md,
-- "Recovery rate, measured"):
--
--   mnemo-run --policy policies/default.lua bench/recovery/run.lua reference ROOT REPOSITORY
--     indexes ROOT with no fault (MNEMO_PG_DSN straight to PostgreSQL, no
--     Redis, the built-in hashing embedder): what a faultless run stores.
--   mnemo-run --policy policies/default.lua bench/recovery/run.lua chaos ROOT REPOSITORY
--     indexes ROOT through the faults (MNEMO_PG_DSN through
--     bench/recovery/pg_proxy.lua, MNEMO_REDIS_URL restarted from outside,
--     MNEMO_EMBED_URL = bench/recovery/embedder.lua), then checks in
--     PostgreSQL (RECOVERY_DIRECT_DSN, not through the proxy) that every
--     file is stored whole, with the content hash of the file on disk and
--     the rows of the reference, and prints the report. Exit 1 when a file
--     is lost, a chunk is left without its vector at the end, or the
--     recovery rate is not above RECOVERY_TARGET (0.98).
-- Other settings (environment): RECOVERY_REFERENCE (repository name of the
-- reference, "reference"), RECOVERY_PROXY_CONTROL (the proxy's control
-- port), RECOVERY_RESTARTS (file holding the Redis restart count),
-- RECOVERY_LOG (where mnemo's log lines go), RECOVERY_BACKFILL_WAIT
-- (seconds the run may wait for queued embeddings, 420).
local mnemo = require "mnemo"
local uv = require "luv"
local core = require "mnemo_core"
local cjson = require "cjson"
local http = require "mnemo.http_client"

local mode, root, repository = arg[1], arg[2], arg[3]
if (mode ~= "reference" and mode ~= "chaos") or not root or not repository then
  io.stderr:write("usage: run.lua reference|chaos ROOT REPOSITORY\n")
  os.exit(2)
end
if not mnemo.policy.status().path then
  io.stderr:write("run.lua: run it with --policy (scripts/recovery-run uses policies/default.lua)\n")
  os.exit(2)
end

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then
    return default
  end
  return v
end

local MAX_FILE_BYTES = mnemo.indexer.DEFAULTS.max_file_bytes
local TARGET = tonumber(env("RECOVERY_TARGET", "0.98"))

------------------------------------------------------------------------
-- The reference: no fault.
------------------------------------------------------------------------
if mode == "reference" then
  mnemo.log.set_level("error")
  local r = mnemo.index { root = root, repository = repository, cache = mnemo.cache.cascade {}, backfill = false }
  local reasons = {}
  for k, v in pairs(r.reasons) do
    reasons[#reasons + 1] = k .. "=" .. v
  end
  table.sort(reasons)
  print(("reference: files=%d indexed=%d unchanged=%d skipped=%d failed=%d chunks=%d pending=%d %.1fs (%s)"):format(
    r.files_total, r.files_indexed, r.files_unchanged, r.files_skipped, r.files_failed, r.chunks,
    r.embeddings_pending, r.seconds, table.concat(reasons, " ")))
  os.exit(r.files_failed == 0 and r.embeddings_pending == 0 and 0 or 1)
end

------------------------------------------------------------------------
-- The chaos run.
------------------------------------------------------------------------
local direct_dsn = assert(os.getenv("RECOVERY_DIRECT_DSN"), "RECOVERY_DIRECT_DSN not set")
local embed_url = assert(os.getenv("MNEMO_EMBED_URL"), "MNEMO_EMBED_URL not set")
local reference = env("RECOVERY_REFERENCE", "reference")

-- mnemo's log lines go to a file; the events are counted on the way.
local events = {} -- "event" or "event/operation/class" -> count
local log_file = assert(io.open(env("RECOVERY_LOG", "/dev/null"), "w"))
local function count(key)
  events[key] = (events[key] or 0) + 1
end
mnemo.log.set_level("info")
mnemo.log.set_sink(function(line)
  log_file:write(line, "\n")
  local ok, e = pcall(cjson.decode, line)
  if ok and type(e) == "table" and e.event then
    count(e.event)
    if e.event == "retry" then
      count(("retry/%s/%s"):format(tostring(e.operation), tostring(e.class)))
    elseif e.event == "breaker_transition" then
      count(("breaker/%s/%s"):format(tostring(e.breaker), tostring(e.to)))
    elseif e.event == "file_failed" then
      count("file_failed/" .. tostring(e.reason))
    end
  end
end)

-- The embedding provider: mnemo.embed.http, watched. The guard calls it
-- once per attempt with the same table of chunks for every attempt of one
-- call (the indexer's list of missing chunks, the backfill's claimed rows),
-- so the table tells the calls apart: a call whose attempts all failed
-- left its chunks to the pipeline's fallback (stored with a NULL
-- embedding and queued, or postponed in the queue).
local http_embed = mnemo.embed.http { url = embed_url }
local embed_calls = {} -- chunks table -> { failed = n, ok = bool }
local embed_attempts, embed_attempt_failures = 0, 0
local function embedder(chunks)
  local c = embed_calls[chunks]
  if not c then
    c = { failed = 0, ok = false }
    embed_calls[chunks] = c
  end
  embed_attempts = embed_attempts + 1
  local ok, res = pcall(http_embed, chunks)
  if not ok then
    c.failed = c.failed + 1
    embed_attempt_failures = embed_attempt_failures + 1
    error(res, 0)
  end
  c.ok = true
  return res
end

local function text_key(name_path, source)
  return core.hash64((name_path or "") .. "\n" .. (source or ""))
end

local function restarts()
  local f = io.open(env("RECOVERY_RESTARTS", "/dev/null"))
  local n = f and tonumber(f:read("*l") or "") or 0
  if f then
    f:close()
  end
  return n or 0
end

-- One line to the proxy's control port, its answer.
local function proxy_stats()
  local port = tonumber(env("RECOVERY_PROXY_CONTROL", ""))
  if not port then
    return {}
  end
  local answer = mnemo.await(function(wake)
    local tcp = uv.new_tcp()
    local buf = ""
    tcp:connect("127.0.0.1", port, function(err)
      if err then
        tcp:close()
        return wake(nil)
      end
      tcp:write("stats\n")
      tcp:read_start(function(rerr, data)
        if rerr or not data then
          tcp:close()
          return wake(buf)
        end
        buf = buf .. data
        if buf:find("\n") then
          tcp:close()
          wake(buf)
        end
      end)
    end)
  end)
  local out = {}
  for k, v in tostring(answer):gmatch("([%w_]+)=(%d+)") do
    out[k] = tonumber(v)
  end
  return out
end

local function embedder_stats()
  local resp = http.request { url = embed_url:gsub("/*$", "") .. "/stats", method = "GET" }
  return resp and cjson.decode(resp.body) or {}
end

io.stderr:write(("recovery: indexing %s as %s through the faults (log: %s)\n"):format(root, repository,
  env("RECOVERY_LOG", "/dev/null")))
local t0 = mnemo.now()
-- When the last file of the walk is done (the backfill may go on after).
local files_done_at, restarts_by_then
local ok, r = pcall(mnemo.index, { root = root, repository = repository, embedder = embedder,
  embedder_name = "recovery", progress = true,
  on_file = function(_, done, total)
    if done == total then
      files_done_at, restarts_by_then = mnemo.now() - t0, restarts()
    end
  end,
  backfill_wait = tonumber(env("RECOVERY_BACKFILL_WAIT", "420")) })
local run_seconds = mnemo.now() - t0
local restarts_done = restarts()
local injected_pg = proxy_stats()
local injected_embed = embedder_stats()
if not ok then
  io.stderr:write("recovery: mnemo.index raised: ", tostring(r), "\n")
  r = nil
end

-- The guard's counters, copied now (the checks below use no guard).
local stats = {}
do
  local live = mnemo.stats()
  for op, s in pairs(live) do
    local copy = {}
    for k, v in pairs(s) do
      copy[k] = v
    end
    stats[op] = copy
  end
end

------------------------------------------------------------------------
-- What should be stored: the files of ROOT, read here (not by the
-- indexer), with the indexer's rules for what it indexes.
------------------------------------------------------------------------
local ignore = mnemo.indexer.DEFAULTS.ignore
local expected, expected_chunks, not_indexable, nexpected = {}, {}, {}, 0
local function walk(dir, rel)
  local req = assert(uv.fs_scandir(dir))
  while true do
    local name, kind = uv.fs_scandir_next(req)
    if not name then
      break
    end
    local path, erel = dir .. "/" .. name, rel == "" and name or rel .. "/" .. name
    if not ignore[name] then
      if kind == "directory" then
        walk(path, erel)
      else
        local st = uv.fs_lstat(path)
        local why
        if st.type ~= "file" then
          why = st.type == "link" and "symlink" or "not_regular_file"
        elseif not mnemo.chunker.language_for(erel) then
          why = "unknown_language"
        elseif st.size > MAX_FILE_BYTES then
          why = "too_large"
        else
          local f = assert(io.open(path, "rb"))
          local text = f:read("*a")
          f:close()
          if core.looks_binary(text) then
            why = "binary"
          elseif not core.utf8_valid(text) then
            why = "invalid_utf8"
          else
            expected[erel] = core.hash64(text)
            nexpected = nexpected + 1
            -- How many chunks it has (no deadline here: nothing is faulted).
            local chunks = mnemo.chunker.chunk { language = mnemo.chunker.language_for(erel), source = text,
              path = erel }
            expected_chunks[erel] = chunks and #chunks or -1
          end
        end
        if why then
          not_indexable[why] = (not_indexable[why] or 0) + 1
        end
      end
    end
  end
end
walk(root:gsub("/+$", ""), "")

------------------------------------------------------------------------
-- What is stored.
------------------------------------------------------------------------
local check = mnemo.run(function()
  local conn = assert(mnemo.pg.connect(direct_dsn))
  local function rows(sql, params)
    return conn:exec(sql, params)
  end
  local out = { files = {}, ref_files = {} }
  local PER_FILE = [[
    SELECT file_path, count(*) AS n, count(DISTINCT content_hash) AS hashes, min(content_hash) AS hash,
      count(DISTINCT chunk_index) AS distinct_idx, min(chunk_index) AS lo, max(chunk_index) AS hi,
      count(*) FILTER (WHERE embedding IS NULL) AS null_emb,
      count(*) FILTER (WHERE array_length(embedding, 1) = 384) AS full_emb
    FROM code_chunks WHERE repository = $1 GROUP BY file_path]]
  for _, row in ipairs(rows(PER_FILE, { repository })) do
    out.files[row.file_path] = row
  end
  for _, row in ipairs(rows(PER_FILE, { reference })) do
    out.ref_files[row.file_path] = row
  end
  -- Rows that differ from the reference's, each way: any column of a
  -- chunk, its embedding included (the embedder serves the same vectors
  -- as the built-in one).
  local DIFF = [[
    SELECT count(*) AS n FROM (
      SELECT file_path, chunk_index, content_hash, name_path, kind, language, start_line, end_line, source,
        embedding FROM code_chunks WHERE repository = $1
      EXCEPT
      SELECT file_path, chunk_index, content_hash, name_path, kind, language, start_line, end_line, source,
        embedding FROM code_chunks WHERE repository = $2) d]]
  out.rows_not_in_reference = rows(DIFF, { repository, reference })[1].n
  out.reference_rows_missing = rows(DIFF, { reference, repository })[1].n
  -- The same with the embedding left out (tells a vector difference from
  -- a content difference).
  local DIFF_TEXT = DIFF:gsub(",%s*embedding FROM", " FROM")
  out.text_rows_not_in_reference = rows(DIFF_TEXT, { repository, reference })[1].n
  out.reference_text_rows_missing = rows(DIFF_TEXT, { reference, repository })[1].n
  local GRAPH = [[SELECT (SELECT count(*) FROM graph_nodes WHERE repository = $1) AS nodes,
    (SELECT count(*) FROM graph_edges WHERE repository = $1) AS edges]]
  out.graph = rows(GRAPH, { repository })[1]
  out.ref_graph = rows(GRAPH, { reference })[1]
  out.pending = rows([[SELECT count(*) AS n FROM pending_embeddings p JOIN code_chunks c ON c.id = p.chunk_id
    WHERE c.repository = $1]], { repository })[1].n
  out.null_chunks = {}
  for _, row in ipairs(rows([[SELECT name_path, source FROM code_chunks WHERE repository = $1
      AND embedding IS NULL]], { repository })) do
    out.null_chunks[text_key(row.name_path, row.source)] = true
  end
  conn:close()
  return out
end)

local files = { expected = nexpected, stored = 0, empty = 0, missing = 0, wrong_hash = 0, mixed = 0, gaps = 0,
  partial = 0, null_embeddings = 0, not_expected = 0, not_in_reference = 0 }
local missing_list, bad_list = {}, {}
for rel, hash in pairs(expected) do
  local row = check.files[rel]
  local ref = check.ref_files[rel]
  if not ref and expected_chunks[rel] ~= 0 then
    files.not_in_reference = files.not_in_reference + 1
  end
  if not row and expected_chunks[rel] == 0 then
    -- No chunk (an empty __init__.py): nothing to store, and nothing
    -- stored for it; it counts as stored.
    files.empty = files.empty + 1
    files.stored = files.stored + 1
  elseif not row then
    files.missing = files.missing + 1
    missing_list[#missing_list + 1] = rel
  else
    local bad
    if row.hashes ~= 1 then
      files.mixed = files.mixed + 1
      bad = "mixed"
    elseif row.hash ~= hash then
      files.wrong_hash = files.wrong_hash + 1
      bad = "wrong_hash"
    elseif row.distinct_idx ~= row.n or row.lo ~= 1 or row.hi ~= row.n then
      files.gaps = files.gaps + 1
      bad = "gaps"
    elseif row.n ~= expected_chunks[rel] or (ref and ref.n ~= row.n) then
      files.partial = files.partial + 1
      bad = "partial"
    end
    if row.null_emb > 0 or row.full_emb ~= row.n then
      files.null_embeddings = files.null_embeddings + 1
    end
    if bad then
      bad_list[#bad_list + 1] = rel .. " (" .. bad .. ")"
    else
      files.stored = files.stored + 1
    end
  end
end
for rel in pairs(check.files) do
  if not expected[rel] then
    files.not_expected = files.not_expected + 1
  end
end
table.sort(missing_list)
table.sort(bad_list)

------------------------------------------------------------------------
-- The accounting. For each guarded operation (mnemo.stats()):
--   met a fault  = calls that did not succeed at their first attempt
--                = recovered + failures (a call refused by an open
--                  breaker is one of them)
--   by retry     = recovered (a later attempt succeeded)
--   by fallback  = failures whose work was done another way:
--     redis_get, redis_set: the guard's fallback (L1 only: a miss, the
--       value not cached) — the caller goes on with a right answer;
--     embed_batch: the pipeline's (chunks stored with a NULL embedding and
--       queued, or postponed in the queue, then embedded by the backfill):
--       done when none of the call's chunks is left without its vector;
--     db_write: the pipeline's end-of-run round for files that failed
--       only for the database: done when every file is stored (each file
--       not stored in the end counts as one failed db_write);
--     any other operation: none (its failures are failed).
--   failed       = met a fault - by retry - by fallback
-- Plus the backfill's own passes, which are not guarded: a pass whose
-- transaction was reset (backfill_pass_failed) is tried again by the
-- next pass: recovered by retry when the queue is empty at the end.
------------------------------------------------------------------------
local ops = {}
for op in pairs(stats) do
  ops[#ops + 1] = op
end
table.sort(ops)

local db_files_failed = 0
local DB_REASON = { database_unavailable = true, index_circuit_open = true }
for reason, n in pairs(r and r.reasons or {}) do
  if reason:match("^store_") or DB_REASON[reason] then
    db_files_failed = db_files_failed + n
  end
end

-- embed_batch calls seen by the provider whose every attempt failed, and
-- how many of them left a chunk without its vector.
local embed_failed_calls, embed_failed_unmade = 0, 0
for chunks, c in pairs(embed_calls) do
  if not c.ok then
    embed_failed_calls = embed_failed_calls + 1
    for _, chunk in ipairs(chunks) do
      if check.null_chunks[text_key(chunk.name_path, chunk.source)] then
        embed_failed_unmade = embed_failed_unmade + 1
        break
      end
    end
  end
end
local any_null = next(check.null_chunks) ~= nil

local rows, totals = {}, { calls = 0, clean = 0, met = 0, retry = 0, fallback = 0, failed = 0 }
local by_dep = {}
local DEP = { redis_get = "redis", redis_set = "redis", embed_batch = "embedding", db_write = "database",
  db_connect = "database", db_query = "database" }
for _, op in ipairs(ops) do
  local s = stats[op]
  local met = s.recovered + s.failures
  local by_fallback = 0
  if op == "redis_get" or op == "redis_set" then
    by_fallback = s.fallbacks
  elseif op == "embed_batch" then
    -- Calls refused by the breaker never reached the provider: their
    -- chunks are unknown here, so they count as made up only when no
    -- chunk at all is left without a vector.
    local unseen = s.failures - embed_failed_calls
    local unmade = embed_failed_unmade + ((any_null and unseen > 0) and unseen or 0)
    by_fallback = math.max(0, s.failures - unmade)
  elseif op == "db_write" then
    by_fallback = math.max(0, s.failures - db_files_failed)
  else
    by_fallback = s.fallbacks
  end
  local failed = met - s.recovered - by_fallback
  rows[#rows + 1] = { op = op, s = s, met = met, fallback = by_fallback, failed = failed }
  totals.calls = totals.calls + s.calls
  totals.clean = totals.clean + (s.successes - s.recovered)
  totals.met = totals.met + met
  totals.retry = totals.retry + s.recovered
  totals.fallback = totals.fallback + by_fallback
  totals.failed = totals.failed + failed
  local d = DEP[op] or op
  by_dep[d] = by_dep[d] or { met = 0, recovered = 0 }
  by_dep[d].met = by_dep[d].met + met
  by_dep[d].recovered = by_dep[d].recovered + s.recovered + by_fallback
end
local backfill_faults = events.backfill_pass_failed or 0
local drained = check.pending == 0 and not any_null
do
  local rec = drained and backfill_faults or 0
  rows[#rows + 1] = { op = "backfill pass (unguarded)", s = { calls = 0, successes = 0, recovered = rec,
    fallbacks = 0, failures = backfill_faults - rec, retries = 0, fast_fails = 0, timeouts = 0 },
    met = backfill_faults, fallback = 0, failed = backfill_faults - rec, no_calls = true }
  totals.met = totals.met + backfill_faults
  totals.retry = totals.retry + rec
  totals.failed = totals.failed + backfill_faults - rec
  by_dep.database = by_dep.database or { met = 0, recovered = 0 }
  by_dep.database.met = by_dep.database.met + backfill_faults
  by_dep.database.recovered = by_dep.database.recovered + rec
end
local recovery = totals.met > 0 and (totals.retry + totals.fallback) / totals.met or 1

------------------------------------------------------------------------
-- The report.
------------------------------------------------------------------------
local out = io.stdout
local function p(fmt, ...)
  out:write(fmt:format(...), "\n")
end
local function pct(a, b)
  return b > 0 and 100 * a / b or 100
end

p("")
p("== recovery run: %s (%s) ==", repository, root)
if r then
  p("index: %d files, indexed %d, unchanged %d, skipped %d, failed %d; %d chunks; embeddings backfilled %d, "
    .. "pending %d; database rounds %d; %.1f s (report), %.1f s (wall)", r.files_total, r.files_indexed,
    r.files_unchanged, r.files_skipped, r.files_failed, r.chunks, r.embeddings_backfilled or 0,
    r.embeddings_pending, r.database_outages or 0, r.seconds, run_seconds)
  local reasons = {}
  for k, v in pairs(r.reasons) do
    reasons[#reasons + 1] = k .. "=" .. v
  end
  table.sort(reasons)
  p("index reasons: %s", #reasons > 0 and table.concat(reasons, " ") or "none")
  p("last file of the walk done at %.1f s (%d Redis restarts by then); the rest is the backfill's",
    files_done_at or -1, restarts_by_then or -1)
else
  p("index: mnemo.index raised (see above); %.1f s", run_seconds)
end
p("")
p("faults injected:")
p("  embedder: %d requests, %d answered 500 (%.1f%%); provider attempts %d, failed %d", injected_embed.requests or 0,
  injected_embed.served_500 or 0, pct(injected_embed.served_500 or 0, injected_embed.requests or 0), embed_attempts,
  embed_attempt_failures)
p("  postgresql: %d transactions through the proxy, %d drawn for a fault (%.1f%%), %d connections reset "
  .. "(at BEGIN %d, at the first statement %d, COMMIT done but its answer lost %d); %d connections accepted",
  injected_pg.transactions or 0, injected_pg.faulted or 0, pct(injected_pg.faulted or 0, injected_pg.transactions or 0),
  injected_pg.resets or 0, injected_pg.at_begin or 0, injected_pg.at_statement or 0, injected_pg.commit_lost or 0,
  injected_pg.accepted or 0)
p("  redis: %d restarts (SIGKILL, then started again on the same port) in the run, %d of them while files were "
  .. "indexed", restarts_done, restarts_by_then or restarts_done)
p("")
p("%-26s %7s %7s %7s %7s %7s %7s %7s %7s | %7s %7s %7s %7s", "operation", "calls", "success", "recov", "fallbk",
  "failure", "retries", "fastfl", "timeout", "met", "byretry", "byfallb", "failed")
for _, row in ipairs(rows) do
  local s = row.s
  if row.no_calls or s.calls > 0 then
  p("%-26s %7s %7s %7d %7d %7d %7d %7d %7d | %7d %7d %7d %7d", row.op, row.no_calls and "-" or tostring(s.calls),
    row.no_calls and "-" or tostring(s.successes), s.recovered, s.fallbacks, s.failures, s.retries, s.fast_fails,
    s.timeouts, row.met, s.recovered, row.fallback, row.failed)
  end
end
p("")
p("operations attempted:     %d (%d succeeded at the first attempt)", totals.calls, totals.clean)
p("met a transient fault:    %d", totals.met)
p("  recovered by retry:     %d", totals.retry)
p("  recovered by fallback:  %d", totals.fallback)
p("  failed:                 %d", totals.failed)
p("recovery:                 %.3f%% (target > %.0f%%)", 100 * recovery, 100 * TARGET)
local deps, DEP_SHOWN = {}, { redis = true, embedding = true, database = true }
for d, b in pairs(by_dep) do
  if b.met > 0 or DEP_SHOWN[d] then
    deps[#deps + 1] = d
  end
end
table.sort(deps)
for _, d in ipairs(deps) do
  local b = by_dep[d]
  p("  %-10s %6d met, %6d recovered: %.3f%%", d, b.met, b.recovered, pct(b.recovered, b.met))
end
-- Every fault injected, as the client saw it: a failed attempt is either
-- followed by a retry or ends its call.
local function failed_attempts(op)
  local s = stats[op] or { retries = 0, failures = 0, fast_fails = 0 }
  return s.retries + s.failures - s.fast_fails
end
p("faults seen by mnemo: embedder %d failed provider attempts (of %d 500s served); PostgreSQL %d failed db_write "
  .. "attempts + %d failed backfill passes = %d (of %d resets); Redis %d failed attempts (after %d restarts)",
  embed_attempt_failures, injected_embed.served_500 or 0, failed_attempts("db_write"), backfill_faults,
  failed_attempts("db_write") + backfill_faults, injected_pg.resets or 0,
  failed_attempts("redis_get") + failed_attempts("redis_set"), restarts_done)
p("embed_batch calls whose attempts all failed, seen by the provider: %d (%d left a chunk without its vector); "
  .. "refused by the open breaker: %d", embed_failed_calls, embed_failed_unmade, stats.embed_batch and
  stats.embed_batch.fast_fails or 0)
p("")
p("files: %d in the repository to index (not indexable: %s)", files.expected, (function()
  local t = {}
  for k, v in pairs(not_indexable) do
    t[#t + 1] = k .. "=" .. v
  end
  table.sort(t)
  return #t > 0 and table.concat(t, " ") or "none"
end)())
p("  stored whole (hash of the file on disk, chunks 1..n, as many as the reference): %d / %d = %.2f%%",
  files.stored, files.expected, pct(files.stored, files.expected))
p("  of which empty (no chunk, nothing to store) %d", files.empty)
p("  missing %d, wrong hash %d, mixed %d, gaps %d, partial %d; stored but not in the tree %d; "
  .. "not in the reference %d", files.missing, files.wrong_hash, files.mixed, files.gaps, files.partial,
  files.not_expected, files.not_in_reference)
p("  rows differing from the reference: %d stored not in it, %d of it not stored (without the embedding: %d, %d)",
  check.rows_not_in_reference, check.reference_rows_missing, check.text_rows_not_in_reference,
  check.reference_text_rows_missing)
p("  graph: %d nodes, %d edges (reference %d, %d)", check.graph.nodes, check.graph.edges, check.ref_graph.nodes,
  check.ref_graph.edges)
p("  embeddings: files with a chunk lacking its vector %d; queue left %d", files.null_embeddings, check.pending)
for i = 1, math.min(10, #missing_list) do
  p("  missing: %s", missing_list[i])
end
for i = 1, math.min(10, #bad_list) do
  p("  bad: %s", bad_list[i])
end
local breakers = {}
for k, v in pairs(events) do
  if k:match("^breaker/") then
    breakers[#breakers + 1] = k:sub(9) .. "=" .. v
  end
end
table.sort(breakers)
p("breaker transitions: %s", #breakers > 0 and table.concat(breakers, " ") or "none")
local retry_keys = {}
for k, v in pairs(events) do
  if k:match("^retry/") then
    retry_keys[#retry_keys + 1] = k:sub(7) .. "=" .. v
  end
end
table.sort(retry_keys)
p("retries logged (operation/class): %s", table.concat(retry_keys, " "))
p("other events: backfill_failed=%d backfill_pass_failed=%d file_failed=%d timeout=%d degraded=%d",
  events.backfill_failed or 0, events.backfill_pass_failed or 0, events.file_failed or 0, events.timeout or 0,
  events.degraded or 0)

-- One line for docs/RELIABILITY.md.
p("")
p("RECOVERY files=%d/%d vectors_left=%d recovery=%.3f%% attempted=%d met=%d by_retry=%d by_fallback=%d failed=%d "
  .. "500s=%d/%d pg_resets=%d/%d redis_restarts=%d run=%.1fs", files.stored, files.expected, check.pending,
  100 * recovery,
  totals.calls, totals.met, totals.retry, totals.fallback, totals.failed, injected_embed.served_500 or 0,
  injected_embed.requests or 0, injected_pg.resets or 0, injected_pg.transactions or 0, restarts_done, run_seconds)

-- Three verdicts: every file stored whole (its chunks and graph as the
-- reference has them), every chunk's vector there by the end of the run
-- (a chunk still queued is not lost, but its work is not done), and the
-- recovery rate.
local lost = not r or files.stored ~= files.expected or files.not_expected > 0
  or check.text_rows_not_in_reference > 0 or check.reference_text_rows_missing > 0
  or check.graph.nodes ~= check.ref_graph.nodes or check.graph.edges ~= check.ref_graph.edges
local vectors_done = drained and check.rows_not_in_reference == 0 and check.reference_rows_missing == 0
local problems = {}
if lost then
  problems[#problems + 1] = "files lost or not stored whole"
end
if not vectors_done then
  problems[#problems + 1] = ("%d chunks still without their vector at the end (queue left %d)"):format(
    check.rows_not_in_reference, check.pending)
end
if not (recovery > TARGET) then
  problems[#problems + 1] = ("recovery %.3f%% is not above %.0f%%"):format(100 * recovery, 100 * TARGET)
end
log_file:close()
if #problems > 0 then
  p("RESULT: FAIL (%s)", table.concat(problems, "; "))
  os.exit(1)
end
p("RESULT: PASS")
os.exit(0)
