-- Helpers for the chaos specs (tests/chaos/*_spec.lua, scripts/run-chaos)
-- and tests/lua/chaos_short_spec.lua: private servers the tests may break,
-- the TCP proxy's client, the integrity checks, and a record of figures
-- (printed as "# FIGURE ..." TAP comments, for docs/RELIABILITY.md).
-- Every process started here is ended by its PID (never by name).
local uv = require "luv"
local mnemo = require "mnemo"
local h = require "helpers"
local corpus = require "corpus"

local _M = { corpus = corpus }

local PG_BIN = os.getenv("PG_BIN") or "/usr/lib/postgresql/15/bin"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  local ok, _, code = p:close()
  return out, code or (ok and 0 or 1)
end
_M.sh = sh

-- A figure for the report: printed at once (stderr is kept by run-chaos).
function _M.figure(scenario, fmt, ...)
  local line = ("# FIGURE %s: " .. fmt):format(scenario, ...)
  io.stderr:write(line, "\n")
  io.stderr:flush()
  local path = os.getenv("MNEMO_CHAOS_FIGURES")
  if path and path ~= "" then
    local f = io.open(path, "a")
    if f then
      f:write(line, "\n")
      f:close()
    end
  end
end

------------------------------------------------------------------------
-- A private PostgreSQL (scripts/pg-server in its own temporary directory,
-- never the shared one), which a test may stop hard and start again.
------------------------------------------------------------------------
function _M.private_pg()
  local dir = corpus.tmpdir("mnemo-chaos-pg")
  local server = { dir = dir }
  function server.start()
    local out = sh("scripts/pg-server start " .. dir)
    server.dsn = out:match("(postgresql://%S+)%s*$")
    assert(server.dsn, "could not start PostgreSQL:\n" .. out)
    return server.dsn
  end
  -- The postmaster's PID (first line of postmaster.pid), or nil.
  function server.pid()
    local f = io.open(dir .. "/data/postmaster.pid")
    if not f then
      return nil
    end
    local pid = tonumber(f:read("*l"))
    f:close()
    return pid
  end
  -- The argument list of `pg_ctl stop -m immediate` (for h.spawn in a task).
  function server.stop_immediate_args()
    return { "/usr/sbin/runuser", "-u", "postgres", "--", PG_BIN .. "/pg_ctl", "-D", dir .. "/data", "stop", "-w",
      "-m", "immediate" }
  end
  function server.start_args()
    return { "scripts/pg-server", "start", dir }
  end
  -- Stops and removes it (teardown).
  function server.destroy()
    sh("scripts/pg-server stop " .. dir)
    local pid = server.pid()
    if pid then
      uv.kill(pid, "sigkill")
    end
    sh("rm -rf " .. dir)
  end
  server.start()
  -- The shipped schema, applied once.
  mnemo.run(function()
    local c = assert(mnemo.pg.connect(server.dsn))
    mnemo.pg.migrate(c, mnemo.pg.MIGRATIONS)
    c:close()
  end)
  return server
end

------------------------------------------------------------------------
-- The TCP proxy (tests/tools/tcp_proxy.lua) in its own process.
------------------------------------------------------------------------
function _M.proxy(upstream_port, upstream_host)
  local p = assert(io.popen(("echo $$; exec %s tests/tools/tcp_proxy.lua %s %d"):format(h.MNEMO_RUN,
    upstream_host or "127.0.0.1", upstream_port)))
  local pid = tonumber(p:read("*l"))
  local port, control = (p:read("*l") or ""):match("listening (%d+) (%d+)")
  assert(pid and port, "tcp proxy did not start")
  local proxy = { pid = pid, port = tonumber(port), control = tonumber(control), pipe = p }
  -- Sends one control line and returns the answer. Synchronous (bash's
  -- /dev/tcp): usable in or out of a task; it blocks the loop for ~5 ms.
  function proxy.command(line)
    local out = sh(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d && echo %q >&3 && read -r -t 5 answer <&3 && echo \"$answer\"'")
      :format(proxy.control, line))
    assert(out:match("^ok"), "proxy command " .. line .. ": " .. out)
    return (out:gsub("%s+$", ""))
  end
  function proxy.stop()
    if proxy.pipe then
      uv.kill(pid, "sigkill")
      proxy.pipe:close()
      proxy.pipe = nil
    end
  end
  return proxy
end

------------------------------------------------------------------------
-- Integrity of a repository's rows.
------------------------------------------------------------------------
-- { files, chunks, dups (file, chunk_index) pairs stored twice, mixed
-- (files with chunks of two content hashes), gaps (files whose chunk_index
-- is not exactly 1..n) }
function _M.integrity(dsn, repository)
  return h.sql(dsn, [[
    WITH per_file AS (
      SELECT file_path, count(*) AS n, count(DISTINCT chunk_index) AS distinct_idx,
        min(chunk_index) AS lo, max(chunk_index) AS hi, count(DISTINCT content_hash) AS hashes
      FROM code_chunks WHERE repository = $1 GROUP BY file_path)
    SELECT count(*) AS files, coalesce(sum(n), 0)::bigint AS chunks,
      count(*) FILTER (WHERE distinct_idx <> n) AS dups,
      count(*) FILTER (WHERE hashes <> 1) AS mixed,
      count(*) FILTER (WHERE lo <> 1 OR hi <> n) AS gaps
    FROM per_file]], { repository })[1]
end

-- Indexes the tree at root into `repository` with no fault (the
-- reference partial_against compares with) and checks every file is in.
function _M.index_reference(dsn, root, nfiles, repository)
  local ref = mnemo.run(mnemo.index, { root = root, repository = repository or "ref", dsn = dsn, backfill = false,
    cache = mnemo.cache.cascade {} })
  assert(ref.files_indexed == nfiles, ("reference: %d of %d files indexed"):format(ref.files_indexed, nfiles))
  return ref
end

-- Files whose chunk count differs from the same file in a reference
-- repository indexed without faults (a partially stored file shows here).
function _M.partial_against(dsn, repository, reference)
  return h.sql(dsn, [[
    WITH a AS (SELECT file_path, count(*) AS n, min(content_hash) AS hash FROM code_chunks
               WHERE repository = $1 GROUP BY file_path),
         b AS (SELECT file_path, count(*) AS n, min(content_hash) AS hash FROM code_chunks
               WHERE repository = $2 GROUP BY file_path)
    SELECT count(*) FILTER (WHERE a.n <> b.n OR a.hash <> b.hash) AS partial,
           count(*) FILTER (WHERE a.file_path IS NULL) AS missing
    FROM b LEFT JOIN a USING (file_path)]], { repository, reference })[1]
end

-- Breaker transitions of one breaker in captured log lines: "open,half_open,closed".
function _M.transitions(lines, name)
  local seen = {}
  for _, e in ipairs(h.events(lines, "breaker_transition")) do
    if e.breaker == name then
      seen[#seen + 1] = e.to
    end
  end
  return table.concat(seen, ",")
end

-- Events of one name whose field `key` equals `value`.
function _M.events_where(lines, name, key, value)
  local out = {}
  for _, e in ipairs(h.events(lines, name)) do
    if e[key] == value then
      out[#out + 1] = e
    end
  end
  return out
end

function _M.reasons(r)
  local keys = {}
  for k, v in pairs(r.reasons or {}) do
    keys[#keys + 1] = k .. "=" .. v
  end
  table.sort(keys)
  return table.concat(keys, " ")
end

-- Loads a policy for in-process runs (the fast fixture unless given).
function _M.policy(path)
  mnemo.policy._reset()
  assert(mnemo.policy.load(path or "tests/fixtures/policies/fast.lua"))
end

return _M
