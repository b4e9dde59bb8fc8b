-- The indexing pipeline: walk a tree -> tree-sitter chunks -> embeddings ->
-- PostgreSQL, one transaction per file, each step under its policy's
-- deadline, retries and breaker. Nothing is marked done that is not
-- committed; a file that fails is recorded with its reason and the run goes
-- on. See docs/ARCHITECTURE.md ("The pipeline").
--
-- Each file's work (read, parse, chunk, embed, store, and its failure
-- record) runs under a correlation id of its own (mnemo.correlation.new(),
-- a new one each time a deferred file is tried again): its log lines,
-- error events and client calls (the HTTP embedder's X-Request-Id) name
-- it, and report.failed lists it beside the file.
local bit = require "bit"
local uv = require "luv"
local core = require "mnemo_core"
local guard = require "mnemo.guard"
local errors = require "mnemo.errors"
local log = require "mnemo.log"
local pg = require "mnemo.pg"
local timeout = require "mnemo.timeout"
local overrides = require "mnemo.overrides"
local degrade = require "mnemo.degrade"
local embed = require "mnemo.embed"
local backfill = require "mnemo.backfill"
local breaker = require "mnemo.breaker"
local mnemo_cache = require "mnemo.cache"
local redis = require "mnemo.redis"
local mnemo_chunker = require "mnemo.chunker"
local correlation = require "mnemo.correlation"
local cjson = require "cjson"

local _M = {}

_M.DEFAULTS = {
  max_file_bytes = 1024 * 1024,
  concurrency = 4,
  dims = 384,
  backfill_wait = 5,
  db_outage_wait = 30,
  cache_ttl = 7 * 24 * 3600,
  ignore = { [".git"] = true, ["node_modules"] = true, [".mnemo"] = true, ["build"] = true,
    ["__pycache__"] = true, [".venv"] = true },
}

local await_fs = timeout.await_call

-- A file may grow this much between the walk and the read; past it, the
-- file is skipped (grew_during_read) instead of read to its new end.
_M.GROWTH_BOUND = 64 * 1024

local function noop() end

-- The reason for an fs error (luv's message starts with the code).
local function fs_reason(err)
  local code = tostring(err):match("^(%u+)")
  if code == "ELOOP" then
    return "symlink" -- O_NOFOLLOW: the path became a symlink since the walk
  elseif code == "ENXIO" or code == "ENODEV" then
    return "not_regular_file" -- a socket, a device without a driver
  end
  return "unreadable"
end

local function read_open(fd, file, max_bytes)
  local serr, st = await_fs(uv.fs_fstat, fd)
  if serr or not st then
    return nil, "unreadable"
  end
  if st.type ~= "file" then
    return nil, "not_regular_file"
  end
  -- A followed link: what is open must be the target the walk resolved
  -- and checked (inside the root), not whatever took its place since.
  if file.ino and (st.ino ~= file.ino or st.dev ~= file.dev) then
    return nil, "symlink_changed"
  end
  if st.size > max_bytes then
    return nil, "too_large"
  end
  local cap = math.min(file.size + _M.GROWTH_BOUND, max_bytes)
  if st.size > cap then
    return nil, "grew_during_read"
  end
  -- One read for a regular file: a short one is its end (no second trip
  -- to the pool to see EOF); cap + 1 bytes read means it grew past cap.
  local parts, got = {}, 0
  while got <= cap do
    local want = cap + 1 - got
    local rerr, data = await_fs(uv.fs_read, fd, want, got)
    if rerr then
      return nil, "unreadable"
    end
    parts[#parts + 1] = data or ""
    got = got + #parts[#parts]
    if #parts[#parts] < want then
      break
    end
  end
  if got > cap then
    return nil, "grew_during_read"
  end
  return table.concat(parts)
end

-- Reads one file of the walk's list through the uv thread pool, never
-- blocking the loop: opened O_NONBLOCK (a FIFO without a writer does not
-- hang the open) and O_NOFOLLOW, at the real path the walk resolved (for a
-- followed link, its target); the open descriptor must be a regular file,
-- and at most what the walk saw plus GROWTH_BOUND (never more than
-- max_bytes) is read. Returns the text, or nil and the reason.
function _M.read_file(file, max_bytes)
  local c = core.open_flags
  local flags = bit.bor(c.O_RDONLY, c.O_NONBLOCK, c.O_NOCTTY, c.O_NOFOLLOW)
  local err, fd = await_fs(uv.fs_open, file.real or file.path, flags, 0)
  if err or not fd then
    return nil, fs_reason(err)
  end
  local ok, text, reason = pcall(read_open, fd, file, max_bytes or _M.DEFAULTS.max_file_bytes)
  uv.fs_close(fd, noop) -- on the pool; nothing waits for it
  if not ok then
    error(text, 0)
  end
  return text, reason
end

local function join(dir, name)
  return dir == "/" and "/" .. name or dir .. "/" .. name
end

-- Whether the real path `path` is `dir` or under it.
local function within(dir, path)
  return path == dir or path:sub(1, #dir + 1) == (dir == "/" and "/" or dir .. "/")
end

-- Walks root; returns the list of { path, rel, real, size } and the
-- skipped entries with their reasons. Only directories and regular files
-- are taken (not_regular_file: a FIFO, socket or device). A symlink is
-- resolved (realpath) and skipped: symlink_broken (dangling),
-- symlink_loop, symlink_outside_root (whatever the options say), symlink
-- (inside the root, not followed). With opts.follow_symlinks, one whose
-- target is inside the root is followed, after the tree itself has been
-- walked, so a file or directory reached both directly and through a link
-- is taken once, at its own path (symlink_duplicate); a link to a
-- directory that contains it is a symlink_loop.
function _M.walk(root, opts)
  opts = opts or {}
  local ignore = opts.ignore or _M.DEFAULTS.ignore
  local follow = opts.follow_symlinks == true
  local files, skipped = {}, {}
  local function skip(rel, reason)
    skipped[#skipped + 1] = { rel = rel, reason = reason }
  end
  local rerr, real_root = await_fs(uv.fs_realpath, root)
  if rerr or not real_root then
    skip("", "unreadable")
    return files, skipped
  end
  local seen_dirs, seen_files, links = {}, {}, {}
  -- dir: its path; real: what its real path must be (nil for the root);
  -- parent: the real path of the directory holding it.
  local function visit(dir, rel, real, parent, linked)
    local derr, actual = await_fs(uv.fs_realpath, dir)
    if derr or not actual then
      return skip(rel, "unreadable")
    end
    if real and actual ~= real then
      -- Became a symlink since its directory was read.
      links[#links + 1] = { path = dir, rel = rel, parent = parent }
      return
    end
    if seen_dirs[actual] then
      return skip(rel, "symlink_loop")
    end
    seen_dirs[actual] = true
    local serr, req = await_fs(uv.fs_scandir, actual)
    if serr or not req then
      return skip(rel, "unreadable")
    end
    local entries = {}
    while true do
      local name, kind = uv.fs_scandir_next(req)
      if not name then
        break
      end
      entries[#entries + 1] = { name = name, kind = kind }
    end
    table.sort(entries, function(a, b)
      return a.name < b.name
    end)
    for _, e in ipairs(entries) do
      local path = join(actual, e.name)
      local erel = rel == "" and e.name or (rel .. "/" .. e.name)
      if not ignore[e.name] then
        local kind, st = e.kind, nil
        if kind ~= "directory" then
          local lerr
          lerr, st = await_fs(uv.fs_lstat, path)
          kind = (not lerr and st) and st.type or "gone"
        end
        if kind == "directory" then
          visit(path, erel, path, actual, linked)
        elseif kind == "file" and seen_files[path] then
          skip(erel, "symlink_duplicate") -- in a followed directory, and reached before
        elseif kind == "file" then
          seen_files[path] = true
          files[#files + 1] = { path = path, rel = erel, real = path, size = st.size,
            dev = linked and st.dev or nil, ino = linked and st.ino or nil }
        elseif kind == "link" then
          links[#links + 1] = { path = path, rel = erel, parent = actual }
        elseif kind == "gone" then
          skip(erel, "unreadable")
        else
          skip(erel, "not_regular_file")
        end
      end
    end
  end
  visit(root, "", nil, nil, false)
  -- The links, once the tree itself is known (a followed directory adds
  -- the links it holds to the end of the list).
  local i = 1
  while i <= #links do
    local link = links[i]
    i = i + 1
    local lerr, target = await_fs(uv.fs_realpath, link.path)
    local code = lerr and tostring(lerr):match("^(%u+)")
    if not target then
      skip(link.rel, code == "ELOOP" and "symlink_loop"
        or (code == "ENOENT" or code == "ENOTDIR") and "symlink_broken" or "unreadable")
    elseif not within(real_root, target) then
      skip(link.rel, "symlink_outside_root")
    elseif not follow then
      skip(link.rel, "symlink")
    else
      local serr, st = await_fs(uv.fs_lstat, target)
      if serr or not st then
        skip(link.rel, "symlink_broken")
      elseif st.type == "directory" then
        if seen_dirs[target] then
          skip(link.rel, within(target, link.parent) and "symlink_loop" or "symlink_duplicate")
        else
          visit(target, link.rel, target, link.parent, true)
        end
      elseif st.type == "file" then
        if seen_files[target] then
          skip(link.rel, "symlink_duplicate")
        else
          seen_files[target] = true
          files[#files + 1] = { path = link.path, rel = link.rel, real = target, size = st.size,
            dev = st.dev, ino = st.ino }
        end
      elseif st.type == "link" then
        skip(link.rel, "symlink_changed") -- a real path is no link, unless it changed
      else
        skip(link.rel, "not_regular_file")
      end
    end
  end
  return files, skipped
end

-- Calls through the receiver (`self.area`, `this.render`, `cls.make`)
-- name a method: the edge keeps the method's name, which the graph query
-- resolves against `Class.method` name paths.
local RECEIVERS = { self = true, this = true, cls = true }

local function edge_target(name)
  local head, rest = name:match("^([%w_]+)%.(.+)$")
  if head and RECEIVERS[head] then
    return rest
  end
  return name
end

local function json_list(list)
  return #list == 0 and "[]" or cjson.encode(list)
end

-- Writes one file's chunks, graph and pending embeddings in one
-- transaction (BEGIN, one call, COMMIT — the rows travel as JSON
-- documents): the file's old rows are replaced, so re-indexing (or a retry
-- after an unknown COMMIT outcome) never duplicates, and an advisory lock
-- on the file serialises two processes writing it at once. Returns how
-- many chunks wait for their embedding.
local function store_file(conn, repo, file, chunks, embeddings)
  local rows, nodes, edges, pending = {}, {}, {}, 0
  for i, c in ipairs(chunks) do
    local emb = embeddings and embeddings[i] or nil
    if not emb then
      pending = pending + 1
    end
    rows[i] = { i = i, name_path = c.name_path, kind = c.kind, start_line = c.start_line, end_line = c.end_line,
      source = c.source, embedding = emb }
    nodes[i] = { name_path = c.name_path, kind = c.kind }
    for _, ref in ipairs(c.refs or {}) do
      edges[#edges + 1] = { name_path = c.name_path, target = edge_target(ref.name),
        kind = ref.kind == "import" and "imports" or "calls" }
    end
  end
  local chunk_doc, node_doc, edge_doc = json_list(rows), json_list(nodes), json_list(edges)
  conn:transaction(function(tx)
    -- db/migrations/004_store_file.sql: lock, delete, insert in one call.
    tx:exec("SELECT mnemo_store_file($1, $2, $3, $4, $5, $6, $7)",
      { repo, file.rel, file.hash, file.language, chunk_doc, node_doc, edge_doc })
  end)
  return pending
end

-- Embeddings for a file's chunks, computed before its transaction. Returns
-- a list of PostgreSQL array literals, or nil (store NULLs and queue them)
-- when the embedder is down, its breaker open, or the mode is "queue".
local function embed_chunks(run, chunks)
  if degrade.mode("embedding") == "queue" then
    return nil
  end
  -- A provider other than the built-in one (a model server) is worth a
  -- cache: an edited file re-embeds only the chunks that changed. The
  -- vectors found are used now; new ones are cached after the commit.
  local out, missing, keys = {}, chunks, nil
  if run.embedding_cache_prefix then
    keys, missing = {}, {}
    for i, c in ipairs(chunks) do
      keys[i] = run.embedding_cache_prefix .. core.hash64((c.name_path or "") .. "\n" .. (c.source or ""))
      out[i] = run.cache:get(keys[i])
      if not out[i] then
        missing[#missing + 1] = c
        missing[#missing].index = i
      end
    end
    run.report.embeddings_cached = run.report.embeddings_cached + (#chunks - #missing)
  end
  if #missing > 0 then
    local provider = run.embedder
    local ok, res = pcall(guard.guard, "embed_batch", function()
      return provider(missing)
    end)
    if not ok then
      run.report.embed_failures = run.report.embed_failures + 1
      -- The chunks go to the backfill queue. One line per run and breaker
      -- state (an outage is one line, not one per file), naming the state:
      -- "open" says the embedder is down, "closed" that it failed anyway.
      local name = guard.explain("embed_batch").breaker
      local b = name and breaker.get(name)
      local state = b and b:state() or "none"
      if run.embed_failure_state ~= state then
        run.embed_failure_state = state
        log.emit("warn", "embedding_failed", { repository = run.repository, breaker = name, breaker_state = state, error = tostring(res), class = errors.classify(res),
          queued = "backfill" })
      end
      return nil
    end
    if missing == chunks then
      return res
    end
    for j, c in ipairs(missing) do
      out[c.index] = res[j]
    end
  end
  return out, keys
end

-- After the commit: the vectors of a file go to the cache.
local function cache_embeddings(run, embeddings, keys)
  if keys and embeddings then
    for i, key in ipairs(keys) do
      run.cache:set(key, embeddings[i], run.opts.cache_ttl)
    end
  end
end

-- Process-wide totals over every run (for /metrics).
_M.totals = { files = { indexed = 0, unchanged = 0, skipped = 0, failed = 0 }, chunks = 0, embeddings_pending = 0 }

-- Failures that say only that PostgreSQL could not be reached: the file
-- is tried again at the end of the run (see db_outage_wait).
local DATABASE_DOWN = { database_unavailable = true, store_connection = true, store_circuit_open = true,
  store_timeout = true, store_too_many_connections = true, store_deadlock = true,
  index_circuit_open = true }

local function record(run, file, outcome, reason)
  if outcome == "failed" and DATABASE_DOWN[reason] and not run.final and run.deferred then
    run.deferred[#run.deferred + 1] = file
    run.deferred[file] = true
    return
  end
  local r = run.report
  local t = _M.totals.files
  t[outcome] = (t[outcome] or 0) + 1
  if outcome == "indexed" then
    r.files_indexed = r.files_indexed + 1
  elseif outcome == "unchanged" then
    r.files_unchanged = r.files_unchanged + 1
  elseif outcome == "skipped" then
    r.files_skipped = r.files_skipped + 1
    r.skipped[#r.skipped + 1] = { file = file.rel, reason = reason }
  else
    r.files_failed = r.files_failed + 1
    r.failed[#r.failed + 1] = { file = file.rel, reason = reason, correlation_id = correlation.current() }
  end
  if reason then
    r.reasons[reason] = (r.reasons[reason] or 0) + 1
    if outcome == "failed" then
      log.emit("warn", "file_failed", { file_path = file.rel, reason = reason, repository = run.repository })
    end
  end
end

-- The cache key of a file's content hash. The database's identity
-- (mnemo_instance, made by its first migration) is part of it: one Redis
-- may serve several databases, or outlive one, and a hash seen for one
-- says nothing about what another holds.
function _M.cache_key(instance, repository, rel)
  return ("file:%s:%s:%s"):format(instance, repository, rel)
end

-- A worker's connection, (re)opened under the db_connect policy.
local function worker_conn(run, w)
  if not w.conn or w.conn.broken then
    w.conn = pg.connect_guarded(run.dsn)
  end
  return w.conn
end

-- fn(conn) under db_query, on a connection of its own.
local function with_db(run, fn)
  return guard.guard("db_query", pg.with_connection, nil, run.dsn, fn)
end

local PENDING = [[SELECT count(*) AS n, (SELECT id FROM mnemo_instance) AS instance
  FROM pending_embeddings p JOIN code_chunks c ON c.id = p.chunk_id WHERE c.repository = $1]]

-- Chunks of the run's repository waiting for their embedding, and the
-- database's identity.
local function count_pending(run, conn)
  local row = conn:exec(PENDING, { run.repository })[1]
  return row.n, row.instance
end

-- What the database holds: file path -> content hash.
local function stored_hashes(run, conn)
  local map = {}
  for _, row in ipairs(conn:exec([[SELECT DISTINCT ON (file_path) file_path, content_hash
      FROM code_chunks WHERE repository = $1]], { run.repository })) do
    map[row.file_path] = row.content_hash
  end
  return map
end

-- One file's work. Returns its outcome and reason; index_file records
-- them (once). `state.committed` is set the moment its transaction has
-- committed: from then on the file is indexed, whatever happens after.
local function index_one(run, w, file, state)
  local opts = run.opts
  if file.size > opts.max_file_bytes then
    return "skipped", "too_large"
  end
  local chunker = run.chunker
  local text, why = _M.read_file(file, opts.max_file_bytes)
  if not text then
    return "skipped", why
  end
  -- Binary first: a PNG is "binary" whatever its name says.
  if core.looks_binary(text) then
    return "skipped", "binary"
  end
  file.language = chunker.language_for(file.rel)
  if not file.language then
    return "skipped", "unknown_language"
  end
  if not core.utf8_valid(text) then
    return "skipped", "invalid_utf8"
  end
  file.hash = core.hash64(text)
  local key = _M.cache_key(run.instance, run.repository, file.rel)
  if run.cache:get(key) == file.hash then
    run.report.cache_hits = run.report.cache_hits + 1
    return "unchanged"
  end
  if run.stored[file.rel] == file.hash then
    run.cache:set(key, file.hash, run.opts.cache_ttl)
    return "unchanged"
  end
  local context = { file_path = file.rel, repository = run.repository, language = file.language }
  local ok, chunks = pcall(guard.guard, "parse_file", function()
    local c, err = chunker.chunk { language = file.language, source = text, path = file.rel }
    if not c then
      error(err, 0)
    end
    return c
  end, { context = context, timeouts = file.timeouts })
  if not ok then
    local kind = errors.classify(chunks)
    return "failed", kind == "timeout" and "parse_timeout" or ("parse_" .. kind)
  end
  local embeddings, embedding_keys = embed_chunks(run, chunks)
  state.stage = "store"
  local _, err = pcall(guard.guard, "db_write", function()
    local p = store_file(worker_conn(run, w), run.repository, file, chunks, embeddings)
    state.committed, state.pending = true, p
    return p
  end, { context = context, timeouts = file.timeouts })
  -- A store that committed is the file indexed even when the guard calls
  -- it a failure: the shielded COMMIT finished after the attempt's (or the
  -- file's) deadline had passed.
  if not state.committed then
    -- Rolled back: nothing of this file was written; forget what the
    -- cache knew about it.
    state.stage = "rolled_back"
    run.cache:invalidate(key)
    return "failed", "store_" .. errors.classify(err)
  end
  state.stage = "committed"
  -- The counts first: the cache writes below are waits, and fail at once
  -- if the file's deadline passed during the COMMIT.
  run.report.chunks = run.report.chunks + #chunks
  _M.totals.chunks = _M.totals.chunks + #chunks
  if state.pending > 0 then
    run.queued = run.queued + state.pending
    run.start_backfill()
  end
  run.cache:set(key, file.hash, run.opts.cache_ttl) -- only after the commit
  cache_embeddings(run, embeddings, embedding_keys)
  return "indexed"
end

-- Runs index_one; keeps its outcome in `state` so that a deadline noticed
-- only when its scope is left (mnemo.timeout raises then) cannot add a
-- second one.
local function index_attempt(run, w, file, state)
  state.outcome, state.reason = index_one(run, w, file, state)
end

_M.hashing_embedder = embed.hashing

-- The cache when none is given: L1, plus Redis when $MNEMO_REDIS_URL is
-- set and answers (if it does not, the run goes on with L1 alone).
local function default_cache(opts)
  local l1 = mnemo_cache.new { max_bytes = opts.l1_bytes or 16 * 1024 * 1024 }
  local url = opts.redis_url or os.getenv("MNEMO_REDIS_URL")
  local client
  if url and url ~= "" then
    local err
    client, err = redis.connect(url)
    if not client then
      log.emit("warn", "redis_unavailable", { error = tostring(err), fallback = "l1_only" })
    end
  end
  return mnemo_cache.cascade { l1 = l1, redis = client }, client
end

local function progress_line(run, done, total, t0)
  local dt = core.now() - t0
  io.stderr:write(("indexing %s: %d/%d files, %.0f files/s, %d failed, %d embeddings queued\n"):format(
    run.repository, done, total, dt > 0 and done / dt or 0, run.report.files_failed, run.queued))
end

-- mnemo.index{ root = ..., repository = ..., dsn = ..., cache = cascade,
--   embedder = fn(chunks) -> literals, concurrency = 4, progress = bool,
--   backfill_wait = 5 (s to wait at the end for queued embeddings),
--   db_outage_wait = 30 (s a file that failed only because PostgreSQL was
--     unreachable may wait at the end of the run to be stored again),
--   backfill = { backoff_base = 1, interval = 1, batch = 64 } | false,
--   on_file = fn(path, done, total) called after each file,
--   embedding_cache = true (a given embedder's vectors are cached by chunk
--   content, under embedder_name = "custom"),
--   follow_symlinks = false (true: follow a symlink whose real target is
--     inside root; one pointing outside it is never followed) }
-- -> report table: counts, reasons (reason -> count), skipped (a list of
-- { file = rel, reason = ... }) and failed (a list of { file = rel, reason,
-- correlation_id }: the id the file's work ran under, which its log lines
-- and error_logs rows carry).
function _M.index(opts)
  if type(opts) ~= "table" or type(opts.root) ~= "string" then
    error("mnemo.index: expected { root = DIR, repository = NAME, ... }", 2)
  end
  local given = opts
  opts = {}
  for k, v in pairs(_M.DEFAULTS) do
    opts[k] = v
  end
  for k, v in pairs(given) do
    opts[k] = v
  end
  local t0 = core.now()
  local own_redis
  local cache = opts.cache
  if not cache then
    cache, own_redis = default_cache(opts)
  end
  local run = {
    opts = opts,
    dsn = opts.dsn or os.getenv("MNEMO_PG_DSN"),
    repository = opts.repository or opts.root:match("([^/]+)/*$"),
    chunker = opts.chunker or mnemo_chunker,
    embedder = opts.embedder or embed.hashing(opts.dims),
    -- Keyed by the provider's name (a model's vectors are not another's).
    embedding_cache_prefix = opts.embedder and opts.embedding_cache ~= false
      and ("emb:%s:"):format(opts.embedder_name or "custom") or nil,
    cache = cache,
    queued = 0,
    deferred = {},
    report = { files_total = 0, files_indexed = 0, files_unchanged = 0, files_skipped = 0, files_failed = 0,
      chunks = 0, embeddings_pending = 0, embeddings_backfilled = 0, embeddings_cached = 0, embed_failures = 0,
      cache_hits = 0,
      reasons = {}, skipped = {}, failed = {} },
  }
  local st = uv.fs_stat(opts.root)
  if not st or st.type ~= "directory" then
    error(errors.new("invalid_input", ("mnemo.index: %s is not a directory"):format(opts.root)), 2)
  end
  local backfiller
  function run.start_backfill()
    if not backfiller and opts.backfill ~= false then
      local b = type(opts.backfill) == "table" and opts.backfill or {}
      backfiller = backfill.start { dsn = run.dsn, embedder = run.embedder, repository = run.repository,
        backoff_base = b.backoff_base, backoff_max = b.backoff_max, interval = b.interval, batch = b.batch }
    end
  end
  -- Chunks queued by an earlier run are backfilled by this one. This is
  -- also where a wrong DSN or a PostgreSQL that is down stops the run,
  -- before anything is read. The stored content hashes are read once here:
  -- a file whose hash is there already is unchanged (one query per run,
  -- not one per file).
  local ok, pending_before, instance, stored = pcall(with_db, run, function(conn)
    local n, id = count_pending(run, conn)
    return n, id, stored_hashes(run, conn)
  end)
  if not ok then
    local kind = errors.classify(pending_before)
    local missing_table = type(pending_before) == "table" and pending_before.sqlstate == "42P01"
    local hint = missing_table and " (the schema is missing: run `mnemo-run --migrate` first)" or ""
    error(errors.new(kind, "mnemo.index: cannot use PostgreSQL: " .. tostring(pending_before) .. hint,
      { repository = run.repository }), 2)
  end
  run.instance = instance
  run.report.database = instance
  if pending_before > 0 then
    run.start_backfill()
  end
  run.stored = stored

  local files, skipped = _M.walk(opts.root, opts)
  run.report.files_total = #files + #skipped
  for _, s in ipairs(skipped) do
    record(run, s, "skipped", s.reason)
  end
  local done, last_progress = 0, t0
  local total = #files
  -- One file's work and its record: under the file's id. Exactly one
  -- outcome per file, and it matches the database: committed
  -- is indexed (even if the deadline fired during the shielded COMMIT or
  -- during the cache writes after it); else the outcome the work reached
  -- stands (an expiry seen only when the deadline's scope is left adds
  -- nothing); else the error that cut it: a deadline that fired with the
  -- store in flight (before its COMMIT) is store_timeout, a database
  -- reason like the store's own timeout.
  local function index_file(w, file)
    local state = {}
    -- The policy's per-repository and per-path timeouts for this file
    -- (mnemo.overrides): the guard's operations and index_file itself.
    local seconds = guard.explain("index_file").timeout
    if overrides.active() then
      local own = overrides.for_file(run.repository, file.rel)
      file.timeouts = own
      local name = guard.explain("index_file").timeout_name
      if own and name and own[name] then
        seconds = own[name]
      end
    end
    local ok, err = pcall(timeout.timeout, { seconds = seconds,
      operation = "index_file", context = { file_path = file.rel } }, index_attempt, run, w, file, state)
    if state.committed then
      record(run, file, "indexed")
    elseif state.outcome then
      record(run, file, state.outcome, state.reason)
    elseif not ok then
      local kind = errors.classify(err)
      local reason
      if kind == "connection" then
        reason = "database_unavailable"
      elseif state.stage == "store" or state.stage == "rolled_back" then
        reason = "store_" .. kind
      else
        reason = "index_" .. kind
      end
      record(run, file, "failed", reason)
    end
  end
  -- Runs the workers over `list` until it is done.
  local function run_files(list)
    local next_file, finished = 1, 0
    local workers = math.max(1, math.min(opts.concurrency, #list))
    for _ = 1, workers do
      core.spawn(function()
        local w = {}
        while next_file <= #list do
          local file = list[next_file]
          next_file = next_file + 1
          correlation.with(correlation.new(), index_file, w, file)
          if not run.deferred[file] then
            done = done + 1
            if opts.on_file then
              opts.on_file(file.rel, done, total)
            end
          end
          if opts.progress and core.now() - last_progress >= 1 then
            last_progress = core.now()
            progress_line(run, done, total, t0)
          end
        end
        if w.conn then
          w.conn:close()
        end
        finished = finished + 1
      end)
    end
    while finished < workers and #list > 0 do
      core.sleep(0.005)
    end
  end
  run_files(files)
  -- Files that failed only because PostgreSQL was unreachable go round
  -- again once its breaker lets calls through, for up to db_outage_wait
  -- seconds; after that they count as failed, with their reason.
  local give_up_at = core.now() + opts.db_outage_wait
  while #run.deferred > 0 do
    local again = run.deferred
    run.deferred = {}
    run.report.database_outages = (run.report.database_outages or 0) + 1
    if opts.progress then
      io.stderr:write(("database unavailable: %d files wait to be stored again (up to %g s)\n"):format(
        #again, math.max(0, give_up_at - core.now())))
    end
    local b = breaker.get(guard.explain("db_write").breaker or "")
    while b and b:state() == "open" and core.now() < give_up_at do
      core.sleep(0.05)
    end
    if core.now() >= give_up_at then
      run.final = true
    else
      core.sleep(math.min(0.2, give_up_at - core.now())) -- not a tight loop while it is down
    end
    run_files(again)
  end
  if opts.progress and total > 0 then
    progress_line(run, done, total, t0)
  end
  if backfiller then
    if opts.progress and opts.backfill_wait > 0 then
      io.stderr:write(("backfilling embeddings (up to %g s)\n"):format(opts.backfill_wait))
    end
    backfiller:drain(opts.backfill_wait)
    backfiller:stop()
    run.report.embeddings_backfilled = backfiller.embedded
  end
  local cok, left = pcall(with_db, run, function(conn)
    return count_pending(run, conn)
  end)
  run.report.embeddings_pending = cok and left or run.queued - run.report.embeddings_backfilled
  if own_redis then
    own_redis:close()
  end
  _M.totals.embeddings_pending = run.report.embeddings_pending
  run.report.seconds = core.now() - t0
  run.report.repository = run.repository
  return run.report
end

local REPORT_EXAMPLES = 3

-- Prints a report as a table (the end of `make run`): counts, then each
-- reason with its count and the first files skipped for it.
function _M.print_report(r, out)
  out = out or io.stdout
  out:write(("repository %s: %d files in %.2f s\n"):format(r.repository, r.files_total, r.seconds))
  local rows = {
    { "indexed", r.files_indexed }, { "unchanged", r.files_unchanged }, { "skipped", r.files_skipped },
    { "failed", r.files_failed }, { "chunks stored", r.chunks },
    { "embeddings backfilled", r.embeddings_backfilled or 0 }, { "embeddings pending", r.embeddings_pending },
  }
  local reasons, files = {}, {}
  for k in pairs(r.reasons) do
    reasons[#reasons + 1] = k
  end
  table.sort(reasons)
  for _, s in ipairs(r.skipped or {}) do
    files[s.reason] = files[s.reason] or {}
    table.insert(files[s.reason], s.file)
  end
  for _, k in ipairs(reasons) do
    rows[#rows + 1] = { "  " .. k, r.reasons[k] }
    -- Which files, for the first few of each reason.
    local list = files[k] or {}
    for i = 1, math.min(#list, REPORT_EXAMPLES) do
      rows[#rows + 1] = { "      " .. list[i] }
    end
    if #list > REPORT_EXAMPLES then
      rows[#rows + 1] = { ("      (%d more)"):format(#list - REPORT_EXAMPLES) }
    end
  end
  for _, row in ipairs(rows) do
    if row[2] then
      out:write(("  %-24s %6d\n"):format(row[1], row[2]))
    else
      out:write(("  %s\n"):format(row[1]))
    end
  end
end

return _M
