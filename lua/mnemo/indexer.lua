-- The indexing pipeline: walk a tree -> tree-sitter chunks -> embeddings ->
-- PostgreSQL, one transaction per file, each step under its policy's
-- deadline, retries and breaker. Nothing is marked done that is not
-- committed; a file that fails is recorded with its reason and the run goes
-- on. See docs/ARCHITECTURE.md ("The pipeline").
local uv = require "luv"
local core = require "mnemo_core"
local guard = require "mnemo.guard"
local errors = require "mnemo.errors"
local log = require "mnemo.log"
local pg = require "mnemo.pg"
local timeout = require "mnemo.timeout"
local degrade = require "mnemo.degrade"

local _M = {}

_M.DEFAULTS = {
  max_file_bytes = 1024 * 1024,
  concurrency = 4,
  dims = 384,
  ignore = { [".git"] = true, ["node_modules"] = true, [".mnemo"] = true, ["build"] = true,
    ["__pycache__"] = true, [".venv"] = true },
}

local function await_fs(fn, ...)
  local args = { n = select("#", ...), ... }
  return timeout.await(function(wake)
    args[args.n + 1] = wake
    fn(unpack(args, 1, args.n + 1))
  end)
end

-- Reads a whole file through the loop (the uv thread pool), never blocking
-- it. Returns the text, or nil and the reason.
local function read_file(path, size)
  local err, fd = await_fs(uv.fs_open, path, "r", 420)
  if err or not fd then
    return nil, tostring(err)
  end
  local rerr, data = await_fs(uv.fs_read, fd, size, 0)
  await_fs(uv.fs_close, fd)
  if rerr then
    return nil, tostring(rerr)
  end
  return data
end

-- Walks root; returns the list of { path, rel, size } and the skipped
-- entries with their reasons. Symlinks are followed once: a directory seen
-- before (by real path) is a loop and is skipped.
function _M.walk(root, opts)
  opts = opts or {}
  local ignore = opts.ignore or _M.DEFAULTS.ignore
  local files, skipped = {}, {}
  local seen = {}
  local function visit(dir, rel)
    local rerr, real = await_fs(uv.fs_realpath, dir)
    if rerr or not real then
      skipped[#skipped + 1] = { rel = rel, reason = "unreadable" }
      return
    end
    if seen[real] then
      skipped[#skipped + 1] = { rel = rel, reason = "symlink_loop" }
      return
    end
    seen[real] = true
    local serr, req = await_fs(uv.fs_scandir, dir)
    if serr or not req then
      skipped[#skipped + 1] = { rel = rel, reason = "unreadable" }
      return
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
      local path = dir .. "/" .. e.name
      local erel = rel == "" and e.name or (rel .. "/" .. e.name)
      if not ignore[e.name] then
        local kind = e.kind
        local size
        if kind == "link" or kind == nil then
          local st_err, st = await_fs(uv.fs_stat, path)
          if st_err or not st then
            skipped[#skipped + 1] = { rel = erel, reason = "broken_link" }
            kind = nil
          else
            kind, size = st.type, st.size
          end
        end
        if kind == "directory" then
          visit(path, erel)
        elseif kind == "file" then
          if not size then
            local st_err, st = await_fs(uv.fs_stat, path)
            size = (not st_err and st) and st.size or 0
          end
          files[#files + 1] = { path = path, rel = erel, size = size }
        end
      end
    end
  end
  visit(root, "")
  return files, skipped
end

-- Writes one file's chunks, graph and pending embeddings in one
-- transaction (re-indexing replaces the old rows atomically).
local function store_file(conn, repo, file, chunks, embeddings)
  return conn:transaction(function(tx)
    tx:exec("DELETE FROM code_chunks WHERE repository = $1 AND file_path = $2", { repo, file.rel })
    tx:exec("DELETE FROM graph_nodes WHERE repository = $1 AND file_path = $2", { repo, file.rel })
    local pending = 0
    for i, c in ipairs(chunks) do
      local emb = embeddings and embeddings[i] or nil
      local rows = tx:exec([[INSERT INTO code_chunks
        (repository, file_path, chunk_index, content_hash, name_path, kind, language,
         start_line, end_line, source, embedding)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::real[]) RETURNING id]],
        { repo, file.rel, i, file.hash, c.name_path, c.kind, file.language, c.start_line, c.end_line,
          c.source, emb, n = 11 })
      if not emb then
        tx:exec("INSERT INTO pending_embeddings (chunk_id) VALUES ($1)", { rows[1].id })
        pending = pending + 1
      end
      local node = tx:exec([[INSERT INTO graph_nodes (repository, name_path, file_path, kind)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (repository, name_path, file_path) DO UPDATE SET kind = EXCLUDED.kind
        RETURNING id]], { repo, c.name_path, file.rel, c.kind })
      local done = {}
      for _, ref in ipairs(c.refs or {}) do
        local key = ref.kind .. ":" .. ref.name
        if not done[key] then
          done[key] = true
          tx:exec([[INSERT INTO graph_edges (repository, source_id, target_name, kind, file_path)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING]],
            { repo, node[1].id, ref.name, ref.kind == "import" and "imports" or "calls", file.rel })
        end
      end
    end
    return pending
  end)
end

-- Embeddings for a file's chunks, computed before its transaction. Returns
-- a list of PostgreSQL array literals, or nil (store NULLs and queue them)
-- when the embedder is down, its breaker open, or the mode is "queue".
local function embed_chunks(run, chunks)
  if degrade.mode("embedding") == "queue" then
    return nil, "degraded: queued"
  end
  local provider = run.embedder
  local ok, res = pcall(guard.guard, "embed_batch", function()
    return provider(chunks)
  end)
  if not ok then
    return nil, res
  end
  return res
end

local function record(run, file, outcome, reason)
  local r = run.report
  if outcome == "indexed" then
    r.files_indexed = r.files_indexed + 1
  elseif outcome == "unchanged" then
    r.files_unchanged = r.files_unchanged + 1
  elseif outcome == "skipped" then
    r.files_skipped = r.files_skipped + 1
  else
    r.files_failed = r.files_failed + 1
  end
  if reason then
    r.reasons[reason] = (r.reasons[reason] or 0) + 1
    if outcome == "failed" then
      log.emit("warn", "file_failed", { file_path = file.rel, reason = reason, repository = run.repository })
    end
  end
end

local function index_one(run, conn, file)
  local opts = run.opts
  if file.size > opts.max_file_bytes then
    return record(run, file, "skipped", "too_large")
  end
  local chunker = run.chunker
  file.language = chunker.language_for(file.rel)
  if not file.language then
    return record(run, file, "skipped", "unknown_language")
  end
  local text, rerr = read_file(file.path, file.size)
  if not text then
    return record(run, file, "skipped", "unreadable")
  end
  if core.looks_binary(text) then
    return record(run, file, "skipped", "binary")
  end
  if not core.utf8_valid(text) then
    return record(run, file, "skipped", "invalid_utf8")
  end
  file.hash = core.hash64(text)
  local key = "file:" .. run.repository .. ":" .. file.rel
  if run.cache:get(key) == file.hash then
    return record(run, file, "unchanged")
  end
  local stored = conn:query("SELECT content_hash FROM code_chunks WHERE repository = $1 AND file_path = $2 LIMIT 1",
    { run.repository, file.rel })
  if stored and stored[1] and stored[1].content_hash == file.hash then
    run.cache:set(key, file.hash)
    return record(run, file, "unchanged")
  end
  local ok, chunks = pcall(guard.guard, "parse_file", function()
    local c, err = chunker.chunk { language = file.language, source = text, path = file.rel }
    if not c then
      error(err, 0)
    end
    return c
  end, { context = { file_path = file.rel, repository = run.repository, language = file.language } })
  if not ok then
    local kind = errors.classify(chunks)
    return record(run, file, "failed", kind == "timeout" and "parse_timeout" or ("parse_" .. kind))
  end
  local embeddings = embed_chunks(run, chunks)
  local sok, pending = pcall(guard.guard, "db_write", function()
    return store_file(conn, run.repository, file, chunks, embeddings)
  end, { context = { file_path = file.rel, repository = run.repository } })
  if not sok then
    -- Rolled back: nothing of this file was written; forget what the
    -- cache knew about it.
    run.cache:invalidate(key)
    if conn.broken then
      run.reconnect = true
    end
    return record(run, file, "failed", "store_" .. errors.classify(pending))
  end
  run.cache:set(key, file.hash) -- only after the commit
  run.report.chunks = run.report.chunks + #chunks
  run.report.embeddings_pending = run.report.embeddings_pending + (pending or 0)
  return record(run, file, "indexed")
end

local hashing_embedder = require("mnemo.embed").hashing
_M.hashing_embedder = hashing_embedder

-- mnemo.index{ root = ..., repository = ..., dsn = ..., cache = cascade,
-- embedder = fn(chunks) -> literals, concurrency = 4, progress = bool }
-- -> report table.
function _M.index(opts)
  assert(type(opts) == "table" and opts.root, "index: root is required")
  local defaults = _M.DEFAULTS
  for k, v in pairs(defaults) do
    if opts[k] == nil then
      opts[k] = v
    end
  end
  local t0 = core.now()
  local run = {
    opts = opts,
    repository = opts.repository or opts.root:match("([^/]+)/*$"),
    chunker = opts.chunker or require("mnemo.chunker"),
    embedder = opts.embedder or hashing_embedder(opts.dims),
    cache = opts.cache or require("mnemo.cache").cascade { l1 = require("mnemo.cache").new { max_bytes = 16 * 1024 * 1024 } },
    report = { files_total = 0, files_indexed = 0, files_unchanged = 0, files_skipped = 0, files_failed = 0,
      chunks = 0, embeddings_pending = 0, reasons = {} },
  }
  local dsn = opts.dsn or os.getenv("MNEMO_PG_DSN")
  local files, skipped = _M.walk(opts.root, opts)
  run.report.files_total = #files + #skipped
  for _, s in ipairs(skipped) do
    record(run, s, "skipped", s.reason)
  end
  local next_file, done = 1, 0
  local workers = math.max(1, math.min(opts.concurrency, #files))
  local last_progress = core.now()
  local finished = 0
  for _ = 1, workers do
    core.spawn(function()
      local conn
      while next_file <= #files do
        local file = files[next_file]
        next_file = next_file + 1
        if not conn or conn.broken then
          local ok, c = pcall(guard.guard, "db_connect", function()
            local c, err = pg.connect(dsn)
            if not c then
              error(err, 0)
            end
            return c
          end)
          conn = ok and c or nil
        end
        if not conn then
          record(run, file, "failed", "database_unavailable")
        else
          local ok, err = pcall(timeout.timeout, { seconds = guard.explain("index_file").timeout,
            operation = "index_file", context = { file_path = file.rel } }, index_one, run, conn, file)
          if not ok then
            record(run, file, "failed", "index_" .. errors.classify(err))
          end
        end
        done = done + 1
        if opts.progress and core.now() - last_progress >= 1 then
          last_progress = core.now()
          io.stderr:write(("indexing %s: %d/%d files, %.0f files/s, %d failed\n"):format(run.repository, done,
            #files, done / (core.now() - t0), run.report.files_failed))
        end
      end
      if conn then
        conn:close()
      end
      finished = finished + 1
    end)
  end
  while finished < workers and #files > 0 do
    core.sleep(0.005)
  end
  run.report.seconds = core.now() - t0
  run.report.repository = run.repository
  return run.report
end

-- Prints a report as a table (the end of `make run`).
function _M.print_report(r, out)
  out = out or io.stdout
  out:write(("repository %s: %d files in %.2f s\n"):format(r.repository, r.files_total, r.seconds))
  out:write(("  indexed %d, unchanged %d, skipped %d, failed %d\n"):format(r.files_indexed, r.files_unchanged,
    r.files_skipped, r.files_failed))
  out:write(("  chunks stored %d, embeddings pending %d\n"):format(r.chunks, r.embeddings_pending))
  local reasons = {}
  for k, v in pairs(r.reasons) do
    reasons[#reasons + 1] = ("%s=%d"):format(k, v)
  end
  table.sort(reasons)
  if #reasons > 0 then
    out:write("  reasons: " .. table.concat(reasons, ", ") .. "\n")
  end
end

return _M
