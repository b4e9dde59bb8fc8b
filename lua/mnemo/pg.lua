-- PostgreSQL from Lua tasks: connections on the shared loop (libpq in
-- non-blocking mode, runtime/loop/pg.c), queries that park the task and can be
-- cancelled by its deadline, errors classified by SQLSTATE, transactions
-- whose COMMIT is shielded, a small pool, and versioned migrations.
local core = require "mnemo_core"
local mnemo_timeout = require "mnemo.timeout"
local errors = require "mnemo.errors"
local guard = require "mnemo.guard"

local type, tostring, error, pcall, setmetatable = type, tostring, error, pcall, setmetatable
local scrub = core.error_scrub

local _M = {}

-- The deadline of a connect, in seconds, when pg.connect is given none
-- ($MNEMO_PG_CONNECT_TIMEOUT, else 10). An enclosing deadline (a guard's,
-- a mnemo.timeout) still applies when it is shorter.
_M.CONNECT_TIMEOUT = tonumber(os.getenv("MNEMO_PG_CONNECT_TIMEOUT") or "") or 10

local Conn = {}
Conn.__index = Conn

-- A failed connect has no SQLSTATE; its message tells the class.
local function connect_error_class(message)
  local m = message:lower()
  if m:find("invalid uri", 1, true) or m:find("missing \"=\"", 1, true)
    or m:find("invalid port", 1, true) or m:find("invalid connection option", 1, true)
    or m:find("unterminated quoted string", 1, true) or m:find("invalid integer value", 1, true) then
    return "invalid_input"
  elseif m:find("authentication failed", 1, true) or m:find("role .- does not exist") then
    return "auth"
  elseif m:find("database .- does not exist") then
    return "not_found"
  elseif m:find("too many clients", 1, true) then
    return "too_many_connections"
  end
  return "connection"
end

-- Every message mnemo.pg returns goes through here: libpq repeats pieces
-- of a DSN it cannot use (a password it took for a port or a host, a word
-- of an unquoted one, a value it cannot decode), and only the DSN tells
-- they are secret (mnemo_scrub_dsn, runtime/core/error_track.c).
local function scrubbed(message, dsn)
  message = tostring(message)
  if type(dsn) == "string" and dsn ~= "" then
    return scrub(message, dsn)
  end
  return scrub(message)
end

-- The DSN as it may be shown: scrubbed of its own secrets.
local function shown(dsn)
  return scrub(dsn, dsn)
end

local function pg_error(message, sqlstate, sql, dsn)
  local kind = sqlstate and errors.class_from_sqlstate(sqlstate) or "connection"
  return errors.new(kind, "PostgreSQL: " .. scrubbed(message, dsn), { sqlstate = sqlstate, sql = sql })
end

-- libpq's connect_timeout, added when the DSN has none. libpq applies it
-- only to blocking connects (not to PQconnectPoll, which runtime/loop/pg.c
-- drives): the loop's timer is the deadline that holds; this one is for
-- whatever libpq does synchronously. Whole seconds, at least 2 (libpq's
-- own minimum).
local function with_connect_timeout(dsn, seconds)
  if dsn:find("connect_timeout", 1, true) or os.getenv("PGCONNECT_TIMEOUT") or dsn:sub(-1) == "\\" then
    return dsn
  end
  local value = ("connect_timeout=%d"):format(math.max(2, math.ceil(seconds)))
  if dsn:find("^postgres://") or dsn:find("^postgresql://") then
    local last = dsn:sub(-1)
    if last == "?" or last == "&" then
      return dsn .. value
    end
    return dsn .. (dsn:find("?", 1, true) and "&" or "?") .. value
  elseif dsn:find("=", 1, true) then
    return dsn .. " " .. value
  end
  return dsn -- not a connection string: libpq says so, unchanged
end

-- Waits for a callback-style call; a deadline that expires meanwhile
-- closes the connection (the server sees the socket go) and re-raises.
local function wait_on(conn, start)
  local ok, a, b, c = pcall(mnemo_timeout.await, start)
  if not ok then
    conn.ud:close()
    conn.broken = true
    error(a, 0)
  end
  return a, b, c
end

-- pg.connect under the policy's `db_connect` operation (timeout, retries,
-- the database breaker); raises the classified error.
function _M.connect_guarded(dsn, opts)
  return guard.guard("db_connect", function()
    local c, err = _M.connect(dsn, opts)
    if not c then
      error(err, 0)
    end
    return c
  end)
end

-- Runs fn(conn) on a new connection to dsn and closes it whatever fn did;
-- returns fn's results or raises its error (or the connect error).
-- connect: pg.connect_guarded (the default) or pg.connect.
function _M.with_connection(dsn, fn, connect)
  local conn, err = (connect or _M.connect_guarded)(dsn)
  if not conn then
    error(err, 0)
  end
  local results = { pcall(fn, conn) }
  conn:close()
  if not results[1] then
    error(results[2], 0)
  end
  return unpack(results, 2, table.maxn(results))
end

-- A PostgreSQL array literal of text values (for $n::text[] parameters):
-- every element quoted, backslashes and quotes escaped; nil -> NULL.
function _M.text_array(list, n)
  local out = {}
  for i = 1, n or #list do
    local v = list[i]
    out[i] = v == nil and "NULL" or '"' .. tostring(v):gsub('[\\"]', "\\%0") .. '"'
  end
  return "{" .. table.concat(out, ",") .. "}"
end

-- pg.connect(dsn [, opts]) -> conn | nil, err   (inside a task)
-- opts.timeout: the connect's deadline in seconds (default CONNECT_TIMEOUT);
-- past it, nil and a `timeout` error ("connect to DSN timed out after N s",
-- the DSN scrubbed), the half-open connection closed. An enclosing
-- deadline that ends first raises its TimeoutError, as at any wait.
-- Error messages never hold the DSN's password, even when libpq repeats
-- pieces of a malformed one.
function _M.connect(dsn, opts)
  if type(dsn) ~= "string" or dsn == "" then
    return nil, errors.new("invalid_input", "PostgreSQL: no DSN given (set MNEMO_PG_DSN)")
  end
  local seconds = opts and opts.timeout or _M.CONNECT_TIMEOUT
  if type(seconds) ~= "number" or not (seconds > 0) or seconds == math.huge then
    error(("pg.connect: timeout: expected a number of seconds > 0, got %s"):format(tostring(seconds)), 2)
  end
  local conn = setmetatable({ dsn = dsn }, Conn)
  local conninfo = with_connect_timeout(dsn, seconds)
  local started_err
  local ok, err, why = wait_on(conn, function(wake)
    local ud, e = core.pg_connect(conninfo, wake, seconds)
    if not ud then
      started_err = e
      wake(nil, e)
      return
    end
    conn.ud = ud
  end)
  if not ok then
    if conn.ud then
      conn.ud:close()
    end
    if why == "timeout" then
      return nil, errors.new("timeout",
        ("PostgreSQL: connect to %s timed out after %g s"):format(shown(dsn), seconds),
        { operation = "pg_connect", timeout = seconds, dsn_given = true })
    end
    local message = err or started_err or "connection failed"
    if conninfo ~= dsn then
      -- libpq may quote the whole string: show the one the caller gave.
      local at = message:find(conninfo, 1, true)
      if at then
        message = message:sub(1, at - 1) .. dsn .. message:sub(at + #conninfo)
      end
    end
    message = scrubbed(message, dsn)
    return nil, errors.new(connect_error_class(message), "PostgreSQL: " .. message, { dsn_given = true })
  end
  return conn
end

-- conn:query(sql, params) -> rows | nil, err. rows[i] is a table keyed by
-- column name; rows.columns, rows.affected. A NULL is an absent key.
function Conn:query(sql, params)
  if self.broken or not self.ud then
    return nil, errors.new("connection", "PostgreSQL: the connection is closed")
  end
  local sent_err
  local rows, message, sqlstate = wait_on(self, function(wake)
    local ok, e = self.ud:query(sql, params, wake)
    if not ok then
      sent_err = e
      wake(nil, e)
    end
  end)
  if rows then
    return rows
  end
  if not sqlstate then
    -- No SQLSTATE: the connection itself failed. Close it now rather than
    -- at collection: the server may still hold its transaction (and the
    -- locks in it) until the socket goes.
    self.broken = true
    if self.ud then
      self.ud:close()
    end
  end
  return nil, pg_error(message or sent_err or "query failed", sqlstate, sql, self.dsn)
end

-- Raises instead of returning nil, err.
function Conn:exec(sql, params)
  local rows, err = self:query(sql, params)
  if not rows then
    error(err, 2)
  end
  return rows
end

-- The longest a shielded COMMIT or ROLLBACK may take. Shielded, they are
-- not cut by the caller's deadline (a commit is never abandoned because
-- the work around it ran late), but one that never answers (a lost
-- socket) must not hang its task for ever: past this, the connection is
-- closed and the outcome is unknown (callers retry idempotent work).
_M.FINISH_TIMEOUT = 30

local function finish(self, sql)
  return mnemo_timeout.shield(function()
    local ok, rows, err = pcall(mnemo_timeout.timeout, { seconds = _M.FINISH_TIMEOUT, operation = "pg_" .. sql:lower() },
      self.query, self, sql)
    if not ok then
      return nil, rows
    end
    return rows, err
  end)
end

-- conn:transaction(fn): BEGIN; fn(conn); COMMIT (shielded from deadlines,
-- with a limit of its own: FINISH_TIMEOUT), or ROLLBACK if fn raised;
-- returns fn's results or raises its error.
function Conn:transaction(fn, ...)
  self:exec("BEGIN")
  local results = { pcall(fn, self, ...) }
  if not results[1] then
    if not self.broken then
      finish(self, "ROLLBACK")
    end
    error(results[2], 0)
  end
  local ok, err = finish(self, "COMMIT")
  if not ok then
    error(err, 0)
  end
  return unpack(results, 2, table.maxn(results))
end

function Conn:close()
  if self.ud then
    self.ud:close()
    self.ud = nil
  end
  self.broken = true
end

function Conn:status()
  return self.ud and self.ud:status() or "closed"
end

-- Migrations: files NNN_name.sql in `dir`, applied in order, each in its
-- own transaction, recorded in schema_migrations; an advisory lock keeps two
-- processes from migrating at once. Idempotent.
function _M.migrate(conn, dir)
  local files = {}
  local req, serr = require("luv").fs_scandir(dir)
  if not req then
    error(errors.new("invalid_input", ("migrate: cannot list %s: %s"):format(tostring(dir), tostring(serr))), 0)
  end
  while true do
    local name = require("luv").fs_scandir_next(req)
    if not name then
      break
    end
    local version = name:match("^(%d+)_.+%.sql$")
    if version then
      files[#files + 1] = { version = tonumber(version), name = name }
    end
  end
  if #files == 0 then
    error(errors.new("invalid_input", ("migrate: no NNN_name.sql files in %s"):format(dir)), 0)
  end
  table.sort(files, function(a, b)
    return a.version < b.version
  end)
  -- The lock first: even CREATE TABLE IF NOT EXISTS races between two
  -- migrators (a duplicate key in pg_type).
  conn:exec("SELECT pg_advisory_lock(727274)")
  local already, applied = {}, {}
  local ok, err = pcall(function()
    conn:exec([[CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())]])
    for _, row in ipairs(conn:exec("SELECT version FROM schema_migrations")) do
      already[row.version] = true
    end
    for _, f in ipairs(files) do
      if not already[f.version] then
        local fh = assert(io.open(dir .. "/" .. f.name, "rb"))
        local sql = fh:read("*a")
        fh:close()
        conn:transaction(function(c)
          c:exec(sql)
          c:exec("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", { f.version, f.name })
        end)
        applied[#applied + 1] = f.name
      end
    end
  end)
  conn:query("SELECT pg_advisory_unlock(727274)")
  if not ok then
    error(err, 0)
  end
  return applied
end

-- db/migrations of this checkout or installation (found from this file).
do
  local src = debug.getinfo(1, "S").source
  local root = src:match("^@(.*)/lua/mnemo/pg%.lua$") or "."
  _M.MIGRATIONS = root .. "/db/migrations"
end

_M.Conn = Conn
return _M
