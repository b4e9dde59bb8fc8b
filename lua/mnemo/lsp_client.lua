-- An LSP client on luv: spawns a language server as a child process and
-- speaks JSON-RPC 2.0 over its stdio with the base protocol's framing
-- (mnemo.lsp_frame). Requests are task waits; many may be in flight at
-- once (ids and a pending table). When the server exits or its framing
-- fails, every pending request ends at once with a "connection" error,
-- later requests fail fast and alive() is false.
local uv = require "luv"
local cjson = require "cjson.safe"
local frame = require "mnemo.lsp_frame"
local errors = require "mnemo.errors"
local timeout = require "mnemo.timeout"

local _M = {}
local Client = {}

-- A write to a server that has just exited raises SIGPIPE, whose default
-- action ends the whole process; EPIPE is all we need (as http_server.c
-- and redis.c do). A handler someone installed is left alone.
local sigpipe_done = false
local function ignore_sigpipe()
  if sigpipe_done then
    return
  end
  sigpipe_done = true
  local ok, ffi = pcall(require, "ffi")
  if not ok then
    return
  end
  pcall(ffi.cdef, "typedef void (*mnemo_sighandler_t)(int); mnemo_sighandler_t signal(int, mnemo_sighandler_t);")
  local SIGPIPE = 13 -- Linux and the BSDs
  local ign = ffi.cast("mnemo_sighandler_t", 1)
  local old = ffi.C.signal(SIGPIPE, ign)
  if old ~= nil and ffi.cast("intptr_t", old) ~= 0 then
    ffi.C.signal(SIGPIPE, old) -- not SIG_DFL: someone else's, restore it
  end
end
Client.__index = Client

local function err(kind, message)
  return errors.new(kind, message)
end

-- Ends the connection: every pending request fails with `reason`.
local function fail(self, reason)
  if self.dead then
    return
  end
  self.dead = reason
  local pending = self.pending
  self.pending = {}
  for _, wake in pairs(pending) do
    wake(nil, err("connection", reason))
  end
  for _, p in ipairs({ self.stdin, self.stdout, self.stderr }) do
    if not p:is_closing() then
      p:close()
    end
  end
  if self.exited == nil and self.handle and not self.handle:is_closing() then
    pcall(uv.process_kill, self.handle, "sigkill")
  end
end

local function send(self, msg)
  if self.dead then
    return nil, err("connection", self.dead)
  end
  msg.jsonrpc = "2.0"
  local ok, werr = self.stdin:write(frame.encode(msg), function(e)
    if e then
      fail(self, string.format("lsp %s: write failed: %s", self.name, tostring(e)))
    end
  end)
  if not ok then
    return nil, err("connection", string.format("lsp %s: write failed: %s", self.name, tostring(werr)))
  end
  return true
end

local function on_message(self, msg)
  if msg.method ~= nil and msg.id ~= nil then
    -- A server->client request: answer so the server doesn't stall.
    local known = { ["workspace/configuration"] = true, ["window/workDoneProgress/create"] = true,
      ["client/registerCapability"] = true, ["client/unregisterCapability"] = true,
      ["window/showMessageRequest"] = true, ["workspace/workspaceFolders"] = true }
    if known[msg.method] then
      local result = cjson.null
      if msg.method == "workspace/configuration" and type(msg.params) == "table"
        and type(msg.params.items) == "table" then
        result = {}
        for i = 1, #msg.params.items do
          result[i] = cjson.null
        end
        if #result == 0 then result = cjson.empty_array end
      end
      send(self, { id = msg.id, result = result })
    else
      send(self, { id = msg.id, error = { code = -32601, message = "method not found: " .. tostring(msg.method) } })
    end
  elseif msg.method ~= nil then
    -- Notifications (window/logMessage, publishDiagnostics...): ignored.
    self.notifications = (self.notifications or 0) + 1
  elseif msg.id ~= nil then
    local wake = self.pending[msg.id]
    if wake then
      self.pending[msg.id] = nil
      self.in_flight = self.in_flight - 1
      if msg.error ~= nil then
        local e = type(msg.error) == "table" and msg.error or {}
        wake(nil, err("unknown", string.format("lsp %s: %s (code %s)", self.name, tostring(e.message),
          tostring(e.code))))
      else
        wake(msg.result)
      end
    end
  end
end

-- client.start{ cmd = {...}, root = dir, name =, env =, max_bytes =, init_timeout = }
function _M.start(opts)
  local cmd = assert(opts.cmd, "lsp_client.start: cmd required")
  ignore_sigpipe()
  local self = setmetatable({
    name = opts.name or cmd[1], pending = {}, next_id = 0, in_flight = 0,
    decoder = frame.decoder.new({ max_bytes = opts.max_bytes }),
    stderr_tail = "",
  }, Client)
  self.stdin, self.stdout, self.stderr = uv.new_pipe(false), uv.new_pipe(false), uv.new_pipe(false)
  local handle, pid = uv.spawn(cmd[1], {
    args = { select(2, unpack(cmd)) }, stdio = { self.stdin, self.stdout, self.stderr },
    env = opts.env, cwd = opts.root,
  }, function(code, signal)
    self.exited = { code = code, signal = signal }
    fail(self, string.format("lsp %s: server exited (code %d, signal %d)", self.name, code, signal))
    self.handle:close()
    if self.on_exit then self.on_exit() end
  end)
  if not handle then
    for _, p in ipairs({ self.stdin, self.stdout, self.stderr }) do p:close() end
    local kind = tostring(pid):match("^ENOENT") and "not_found" or "connection"
    return nil, err(kind, string.format("lsp %s: cannot start %s: %s", self.name, cmd[1], tostring(pid)))
  end
  self.handle, self.pid = handle, pid
  self.stdout:read_start(function(rerr, data)
    if rerr or not data then
      if not self.dead then
        -- EOF: the exit callback gives the precise reason; fail now if it never comes.
        self.stdout:read_stop()
      end
      return
    end
    local msgs, ferr = self.decoder:feed(data)
    if not msgs then
      fail(self, string.format("lsp %s: framing error: %s", self.name, ferr))
      return
    end
    for _, m in ipairs(msgs) do
      if self.dead then break end
      on_message(self, m)
    end
  end)
  self.stderr:read_start(function(_, data)
    if data then -- bounded tail, for diagnostics
      self.stderr_tail = (self.stderr_tail .. data):sub(-4096)
    end
  end)
  local root = opts.root or uv.cwd()
  local root_uri = "file://" .. root
  local tok, result, ierr = pcall(timeout.timeout, { seconds = opts.init_timeout or 10, operation = "lsp " .. self.name .. " initialize" },
    function()
      return self:request("initialize", {
        processId = uv.os_getpid(), rootUri = root_uri,
        workspaceFolders = { { uri = root_uri, name = root:match("[^/]+$") or root } },
        capabilities = { textDocument = {
          documentSymbol = { hierarchicalDocumentSymbolSupport = true },
          hover = { contentFormat = { "plaintext", "markdown" } },
        } },
      })
    end)
  if not tok then
    result, ierr = nil, result
  end
  if not result then
    self:kill()
    if type(ierr) ~= "table" then ierr = err("connection", tostring(ierr)) end
    return nil, ierr
  end
  if type(result) == "table" and type(result.serverInfo) == "table" then
    self.serverInfo = { name = result.serverInfo.name, version = result.serverInfo.version }
  end
  self.capabilities = type(result) == "table" and result.capabilities or nil
  self:notify("initialized", {})
  return self
end

function Client:alive()
  return not self.dead
end

-- request(method, params) -> result | nil, err (a task wait)
function Client:request(method, params)
  if self.dead then
    return nil, err("connection", self.dead)
  end
  self.next_id = self.next_id + 1
  local id = self.next_id
  local ok, serr = send(self, { id = id, method = method, params = params })
  if not ok then
    return nil, serr
  end
  self.in_flight = self.in_flight + 1
  local done, res, rerr = pcall(timeout.await, function(wake)
    self.pending[id] = wake
  end)
  if not done then -- cancelled (deadline): forget the request, then re-raise
    if self.pending[id] then
      self.pending[id] = nil
      self.in_flight = self.in_flight - 1
    end
    error(res, 0)
  end
  return res, rerr
end

function Client:notify(method, params)
  return send(self, { method = method, params = params })
end

function Client:didOpen(uri, languageId, text)
  return self:notify("textDocument/didOpen",
    { textDocument = { uri = uri, languageId = languageId, version = 1, text = text } })
end

function Client:didClose(uri)
  return self:notify("textDocument/didClose", { textDocument = { uri = uri } })
end

function Client:documentSymbol(uri)
  return self:request("textDocument/documentSymbol", { textDocument = { uri = uri } })
end

function Client:hover(uri, line, character)
  return self:request("textDocument/hover",
    { textDocument = { uri = uri }, position = { line = line, character = character } })
end

function Client:kill()
  fail(self, self.dead or string.format("lsp %s: killed", self.name))
  while self.exited == nil do
    timeout.sleep(0.005)
  end
end

-- close(timeout): shutdown request, exit notification, kill if it lingers.
function Client:close(seconds)
  seconds = seconds or 2
  if not self.dead then
    pcall(timeout.timeout, { seconds = seconds, operation = "lsp " .. self.name .. " shutdown" }, function()
      return self:request("shutdown", cjson.null)
    end)
    self:notify("exit", cjson.null)
    if not self.dead then self.stdin:shutdown() end
    local deadline = uv.now() + seconds * 1000
    while self.exited == nil and uv.now() < deadline do
      timeout.sleep(0.01)
    end
  end
  if self.exited == nil then
    self:kill()
  end
  fail(self, string.format("lsp %s: closed", self.name))
  while not self.handle:is_closing() do
    timeout.sleep(0.005)
  end
  return true
end

return _M
