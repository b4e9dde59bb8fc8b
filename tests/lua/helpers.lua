-- Test helpers: run build/mnemo-run as a real child process on the loop.
local uv = require "luv"
local mnemo = require "mnemo"
local cjson = require "cjson"

local _M = {}

_M.MNEMO_RUN = os.getenv("MNEMO_RUN") or "build/mnemo-run"

local function read_all(pipe, sink)
  pipe:read_start(function(err, data)
    assert(not err, err)
    if data then
      sink[#sink + 1] = data
    else
      pipe:close()
    end
  end)
end

-- Runs a command (argument list) to completion, inside a mnemo task.
-- opts.signal/opts.signal_after: send a signal after that many seconds.
-- opts.stdin: text written to the child's standard input.
-- Returns { code = exit code, signal = n, stdout = text, stderr = text }.
function _M.spawn(args, opts)
  opts = opts or {}
  local stdin, stdout, stderr = uv.new_pipe(false), uv.new_pipe(false), uv.new_pipe(false)
  local out, err = {}, {}
  local result
  local handle, pid_or_err
  handle, pid_or_err = uv.spawn(args[1], {
    args = { select(2, unpack(args)) },
    stdio = { stdin, stdout, stderr },
    env = opts.env,
  }, function(code, signal)
    result = { code = code, signal = signal }
    handle:close()
  end)
  assert(handle, pid_or_err)
  read_all(stdout, out)
  read_all(stderr, err)
  if opts.stdin then
    stdin:write(opts.stdin)
  end
  stdin:shutdown(function()
    stdin:close()
  end)
  if opts.signal then
    mnemo.sleep(opts.signal_after or 0.2)
    uv.process_kill(handle, opts.signal)
  end
  local deadline = mnemo.now() + (opts.timeout or 20)
  while not (result and stdout:is_closing() and stderr:is_closing()) do
    assert(mnemo.now() < deadline, "child process did not finish: " .. table.concat(args, " "))
    mnemo.sleep(0.005)
  end
  result.stdout = table.concat(out)
  result.stderr = table.concat(err)
  return result
end

-- Runs mnemo-run with the given arguments (from outside any task).
function _M.mnemo_run(args, opts)
  local full = { _M.MNEMO_RUN }
  for _, a in ipairs(args) do
    full[#full + 1] = a
  end
  return mnemo.run(_M.spawn, full, opts)
end

function _M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

function _M.tmpname(suffix)
  return os.tmpname() .. (suffix or "")
end

-- Starts fn(...) in its own task; returns a box that gets
-- `result = { pcall results }` when the task ends.
function _M.start(fn, ...)
  local box = {}
  local args = { n = select("#", ...), ... }
  mnemo.spawn(function()
    box.result = { pcall(fn, unpack(args, 1, args.n)) }
  end)
  return box
end

-- curl -i; returns { status, headers (lower-case), body, json }.
function _M.curl(url, opts)
  opts = opts or {}
  local args = { "curl", "-s", "-S", "-i", "--max-time", "5" }
  for _, a in ipairs(opts) do
    args[#args + 1] = a
  end
  args[#args + 1] = url
  local r = _M.spawn(args)
  assert(r.code == 0, "curl failed: " .. r.stderr)
  local raw = r.stdout:gsub("^HTTP/1%.1 100 Continue\r\n\r\n", "")
  local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no response head in: " .. raw)
  local res = { status = tonumber(head:match("^HTTP/1%.1 (%d+)")), headers = {}, body = body }
  for k, v in head:gmatch("\r\n([^:\r\n]+): *([^\r\n]*)") do
    res.headers[k:lower()] = v
  end
  if (res.headers["content-type"] or ""):match("^application/json") then
    res.json = cjson.decode(body)
  end
  return res
end

-- The environment of a child mnemo-run: quiet logs, and the Lua files
-- (build/asan/mnemo-run does not find them next to itself).
function _M.child_env(extra)
  local env = { "MNEMO_LOG_LEVEL=error", "PATH=" .. (os.getenv("PATH") or "/usr/bin:/bin") }
  local lua_dir = os.getenv("MNEMO_LUA_DIR")
  if lua_dir then
    env[#env + 1] = "MNEMO_LUA_DIR=" .. lua_dir
  end
  for _, e in ipairs(extra or {}) do
    env[#env + 1] = e
  end
  return env
end
-- mnemo-run --serve: started as a child, read its stderr for the URL.
function _M.start_serving(args, env)
  local proc = { err = {}, out = {} }
  local stdout, stderr = uv.new_pipe(false), uv.new_pipe(false)
  local handle, pid
  -- Closed in its exit callback, as h.spawn does: luv crashes at exit on
  -- a process handle closed but not yet released by the loop.
  handle, pid = uv.spawn(_M.MNEMO_RUN, { args = args, stdio = { nil, stdout, stderr }, env = env },
    function(code, signal)
      proc.code, proc.signal = code, signal
      handle:close()
    end)
  assert(handle, pid)
  proc.handle = handle
  stdout:read_start(function(_, data)
    if data then
      proc.out[#proc.out + 1] = data
    else
      stdout:close()
    end
  end)
  stderr:read_start(function(_, data)
    if data then
      proc.err[#proc.err + 1] = data
    else
      stderr:close()
    end
  end)
  local deadline = mnemo.now() + 15
  while not proc.url do
    proc.url = table.concat(proc.err):match("mnemo: serving (http://%S+)")
    if proc.code or mnemo.now() > deadline then
      break
    end
    mnemo.sleep(0.01)
  end
  function proc.wait()
    local until_ = mnemo.now() + 15
    while not (proc.code and stdout:is_closing() and stderr:is_closing()) do
      assert(mnemo.now() < until_, "mnemo-run did not exit")
      mnemo.sleep(0.01)
    end
    proc.stderr, proc.stdout = table.concat(proc.err), table.concat(proc.out)
    return proc
  end
  function proc.stop()
    uv.process_kill(handle, "sigterm")
    return proc.wait()
  end
  return proc
end

-- Captures mnemo's JSON log lines; returns the list and a restore function.
function _M.capture_log()
  local lines = {}
  local old = mnemo.log.set_sink(function(line)
    lines[#lines + 1] = line
  end)
  return lines, function()
    mnemo.log.set_sink(old)
  end
end

-- The decoded log records of one event.
function _M.events(lines, name)
  local out = {}
  for _, l in ipairs(lines) do
    local rec = cjson.decode(l)
    if rec.event == name then
      out[#out + 1] = rec
    end
  end
  return out
end

-- For before_each / after_each: tests that run on the virtual clock.
-- (busted's hooks are globals of the spec file, not of this module.)
function _M.virtual_clock_on()
  mnemo.clock.virtual(true)
end

function _M.virtual_clock_off()
  mnemo.clock.virtual(false)
end

-- A PostgreSQL server for the specs: $MNEMO_PG_DSN (scripts/run-tests
-- starts a private one), else a private server started here, in a
-- temporary directory, and stopped when the Lua state closes.
local pg_server
function _M.pg_dsn()
  local dsn = os.getenv("MNEMO_PG_DSN")
  if dsn and dsn ~= "" then
    return dsn
  end
  if not pg_server then
    local dir = os.tmpname()
    os.remove(dir)
    local p = io.popen("scripts/pg-server start " .. dir .. " 2>&1")
    local out = p:read("*a")
    p:close()
    local found = out:match("(postgresql://%S+)%s*$")
    assert(found, "could not start a PostgreSQL server:\n" .. out)
    pg_server = setmetatable({ dsn = found, dir = dir }, {
      __gc = function(self)
        os.execute("scripts/pg-server stop " .. self.dir .. " >/dev/null 2>&1")
      end,
    })
    -- Lua 5.1 runs __gc only on userdata: tie the stop to one.
    local anchor = newproxy(true)
    getmetatable(anchor).__gc = function()
      os.execute("scripts/pg-server stop " .. dir .. " >/dev/null 2>&1; rm -rf " .. dir)
    end
    pg_server.anchor = anchor
  end
  return pg_server.dsn
end

-- A fresh, empty database on that server; returns its DSN.
local db_count = 0
function _M.pg_fresh_database()
  local base = _M.pg_dsn()
  db_count = db_count + 1
  local name = ("mnemo_test_%d_%d"):format(uv.os_getpid(), db_count)
  mnemo.run(function()
    local conn = assert(mnemo.pg.connect(base))
    conn:exec("DROP DATABASE IF EXISTS " .. name)
    conn:exec("CREATE DATABASE " .. name)
    conn:close()
  end)
  return (base:gsub("/[^/]*$", "/" .. name))
end

-- A fresh database with the shipped schema applied.
function _M.pg_migrated_database()
  local dsn = _M.pg_fresh_database()
  mnemo.run(function()
    local c = assert(mnemo.pg.connect(dsn))
    mnemo.pg.migrate(c, mnemo.pg.MIGRATIONS)
    c:close()
  end)
  return dsn
end

-- Runs one statement on its own connection (from outside any task).
function _M.sql(dsn, q, params)
  return mnemo.run(function()
    local c = assert(mnemo.pg.connect(dsn))
    local rows = c:exec(q, params)
    c:close()
    return rows
  end)
end

-- Starts a private redis-server in a fresh directory; returns
-- { url =, dir =, pid = fn, kill = fn (SIGKILL), start = fn, stop = fn }.
function _M.redis_private_server()
  local dir = os.tmpname()
  os.remove(dir)
  local server = { dir = dir }
  function server.start()
    local p = io.popen("scripts/redis-server start " .. dir .. " 2>&1")
    local out = p:read("*a")
    p:close()
    server.url = out:match("(redis://%S+)%s*$")
    assert(server.url, "could not start redis-server:\n" .. out)
    return server.url
  end
  function server.pid()
    local f = assert(io.open(dir .. "/redis.pid"))
    local pid = tonumber(f:read("*a"))
    f:close()
    return pid
  end
  function server.kill()
    -- For real: SIGKILL, no goodbye to the clients. Then wait until it is
    -- gone (its sockets close as it exits), without running the loop.
    local pid = server.pid()
    assert(uv.kill(pid, "sigkill") == 0)
    for _ = 1, 500 do
      local f = io.open("/proc/" .. pid .. "/cmdline")
      local cmd = f and f:read("*a") or ""
      if f then
        f:close()
      end
      if not cmd:find("redis-server", 1, true) then
        return
      end
      uv.sleep(10)
    end
    error("redis-server did not die")
  end
  function server.stop()
    os.execute("scripts/redis-server stop " .. dir .. " >/dev/null 2>&1; rm -rf " .. dir)
  end
  server.start()
  return server
end

-- The server for the specs: $MNEMO_REDIS_URL (scripts/run-tests starts
-- one), else a private one, stopped when the Lua state closes (like pg_dsn).
local shared_redis
function _M.redis_url()
  local url = os.getenv("MNEMO_REDIS_URL")
  if url and url ~= "" then
    return url
  end
  if not shared_redis then
    shared_redis = _M.redis_private_server()
    local anchor = newproxy(true)
    getmetatable(anchor).__gc = shared_redis.stop
    shared_redis.anchor = anchor
  end
  return shared_redis.url
end

-- A real HTTP embedding server (tests/tools/fake_embedder.lua) in its own
-- process; `script` lists its answers, one per request, the last repeating
-- (ok | 500 | 429 | stall | drop). Returns { url, pid, stop() }.
function _M.fake_embedder(script)
  local p = assert(io.popen(("sh -c 'echo $$; exec %s tests/tools/fake_embedder.lua %s'"):format(_M.MNEMO_RUN,
    script)))
  local pid = tonumber(p:read("*l"))
  local port = (p:read("*l") or ""):match("listening (%d+)")
  assert(pid and port, "fake embedder did not start")
  local server = { pid = pid, url = "http://127.0.0.1:" .. port }
  function server.stop()
    if server.pipe then
      uv.kill(pid, "sigkill")
      server.pipe:close()
      server.pipe = nil
    end
  end
  server.pipe = p
  return server
end

return _M
