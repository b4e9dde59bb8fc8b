-- Redis from Lua tasks: a hiredis connection on the shared loop
-- (runtime/loop/redis.c), commands that park the task and can be cancelled by
-- its deadline, errors classified like every other (connection, busy,
-- invalid_input, auth, ...), and a lazy reconnect after the connection was
-- lost, so a client outlives a Redis restart.
--
--   local client, err = redis.connect("redis://127.0.0.1:6379/0")
--   client:set("k", "v", 10)        -- EX 10
--   client:get("k")                  -- "v" | nil
--   client:command("HSET", "h", "f", 1)
local core = require "mnemo_core"
local uv = require "luv"
local mnemo_timeout = require "mnemo.timeout"
local errors = require "mnemo.errors"

local type, tostring, tonumber, error, pcall, select, setmetatable, ipairs =
  type, tostring, tonumber, error, pcall, select, setmetatable, ipairs
local await = mnemo_timeout.await
local unpack = unpack

local _M = {}

-- Stands for a nil inside an array reply (MGET); a NULL light userdata,
-- equal to cjson.null.
_M.null = core.redis_null

local Client = {}
Client.__index = Client

-- Commands whose replies do not pair with commands (pub/sub, MONITOR):
-- they need a connection of their own, which this client is not.
local UNPAIRED = {
  subscribe = true, psubscribe = true, ssubscribe = true, unsubscribe = true,
  punsubscribe = true, sunsubscribe = true, monitor = true,
}

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h)
    return string.char(tonumber(h, 16))
  end))
end

local function bad_url(url, why)
  return nil, ("invalid URL %q: %s (expected redis://[[user]:password@]host[:port][/db])"):format(url, why)
end

-- redis.parse_url(url) -> { host, port, db, username, password } | nil, message
function _M.parse_url(url)
  if type(url) ~= "string" or url == "" then
    return nil, "no URL given (set MNEMO_REDIS_URL)"
  end
  local rest = url:match("^[Rr][Ee][Dd][Ii][Ss]://(.*)$")
  if not rest then
    return bad_url(url, "the scheme must be redis://")
  end
  local cfg = {}
  local userinfo, hostpart = rest:match("^(.*)@([^@]*)$")
  if userinfo then
    local user, pass = userinfo:match("^([^:]*):(.*)$")
    if user then
      cfg.username = user ~= "" and unescape(user) or nil
      cfg.password = unescape(pass)
    else
      cfg.password = unescape(userinfo) -- redis://secret@host
    end
  else
    hostpart = rest
  end
  local authority, path = hostpart:match("^([^/?#]*)(.*)$")
  local host, port
  if authority:sub(1, 1) == "[" then
    host, port = authority:match("^%[([%x:.]+)%]:?(.*)$")
  else
    host, port = authority:match("^([^:]*):?(.*)$")
  end
  if not host or host == "" then
    return bad_url(url, "no host")
  end
  if port == "" then
    port = 6379
  else
    port = port:match("^%d+$") and tonumber(port)
    if not port or port < 1 or port > 65535 then
      return bad_url(url, "the port must be a number in 1..65535")
    end
  end
  cfg.host, cfg.port = host, port
  if path ~= "" and path ~= "/" then
    local db = path:match("^/(%d+)$")
    if not db then
      return bad_url(url, "the path must be a database number")
    end
    cfg.db = tonumber(db)
  end
  return cfg
end

local function is_ip(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") or host:find(":", 1, true)
end

-- The class of a failure that is not the server's error reply, from
-- hiredis' error type and text (classified before `context` is added).
local function connection_error(message, err_type, fields, context)
  local kind = errors.class_from_redis(err_type or 0, message)
  if kind == "unknown" then
    kind = "connection" -- a name that does not resolve, a poll error
  end
  fields = fields or {}
  fields.err_type = err_type
  return errors.new(kind, "Redis: " .. (context and context .. ": " or "") .. message, fields)
end

-- The server's error reply ("WRONGTYPE ...", "LOADING ...").
local function reply_error(message, command)
  local fields = { command = command, reply = message }
  if message:match("^LOADING") then
    fields.retry_after = 1 -- loading the dataset: come back in a while
  end
  return errors.new(errors.class_from_redis(0, message), "Redis: " .. message, fields)
end

-- Resolves a name on the thread pool (hiredis would block the loop in
-- getaddrinfo); IPv4 first, since servers often listen on 127.0.0.1 only.
local function resolve(host)
  if is_ip(host) then
    return host
  end
  local err, res = await(function(wake)
    local req, e = uv.getaddrinfo(host, nil, { socktype = "stream" }, wake)
    if not req then
      wake(e)
    end
  end)
  if err or not res or #res == 0 then
    return nil, ("cannot resolve %s: %s"):format(host, tostring(err or "no address"))
  end
  for _, a in ipairs(res) do
    if a.family == "inet" then
      return a.addr
    end
  end
  return res[1].addr
end

-- Waits for a callback-style call on `ud`. A deadline that expires
-- meanwhile closes the connection (a reply cannot be un-asked; the next
-- command reconnects) and re-raises.
local function wait_on(client, ud, start)
  local ok, a, b, c = pcall(await, start)
  if not ok then
    if client.ud == ud then
      client.ud = nil
    end
    ud:close()
    error(a, 0)
  end
  return a, b, c
end

-- One command on ud: reply | nil, err (raises only a deadline's error).
local function run(client, ud, args)
  local reply, message, err_type = wait_on(client, ud, function(wake)
    local ok, e, t = ud:command(args, wake)
    if not ok then
      wake(nil, e, t)
    end
  end)
  if message == nil then
    return reply
  end
  if err_type == 0 then
    return nil, reply_error(message, args[1])
  end
  -- The connection is gone: release it; the next command reconnects.
  if client.ud == ud then
    client.ud = nil
  end
  ud:close()
  client.last_error = message
  return nil, connection_error(message, err_type, { command = args[1] })
end

-- Connects, then AUTH and SELECT as the URL says. true | nil, err
local function connect_once(client)
  local cfg = client.cfg
  local where = ("%s:%d"):format(cfg.host, cfg.port)
  local ip, rerr = resolve(cfg.host)
  if not ip then
    return nil, connection_error(rerr, 0, { url = client.url })
  end
  local ud
  local ok, message, err_type = wait_on(client, { close = function()
    if ud then
      ud:close()
    end
  end }, function(wake)
    local e, t
    ud, e, t = core.redis_connect(ip, cfg.port, wake)
    if not ud then
      wake(nil, e, t)
    end
  end)
  if not ok then
    if ud then
      ud:close()
    end
    client.last_error = message
    return nil, connection_error(message or "failed", err_type, { url = client.url },
      "cannot connect to " .. where)
  end
  local setup = {}
  if cfg.password then
    setup[#setup + 1] = cfg.username and { "AUTH", cfg.username, cfg.password, n = 3 }
      or { "AUTH", cfg.password, n = 2 }
  end
  if cfg.db and cfg.db ~= 0 then
    setup[#setup + 1] = { "SELECT", cfg.db, n = 2 }
  end
  for _, args in ipairs(setup) do
    local _, err = run(client, ud, args)
    if err then
      ud:close()
      err.message = ("Redis: %s on %s failed: %s"):format(args[1], where, err.reply or err.message)
      return nil, err
    end
  end
  if client.closed then -- closed while this connected
    ud:close()
    return nil, connection_error("the client is closed", 0)
  end
  client.ud = ud
  return true
end

-- Connects, or waits for the connect another task has under way.
function Client:_connect()
  local waiters = self.connecting
  if waiters then
    return await(function(wake)
      waiters[#waiters + 1] = wake
    end)
  end
  waiters = {}
  self.connecting = waiters
  local ok, res, err = pcall(connect_once, self)
  self.connecting = nil
  for _, wake in ipairs(waiters) do
    if ok then
      wake(res, err)
    else -- this task's deadline cut it short
      wake(nil, connection_error("the connection attempt was abandoned", 0))
    end
  end
  if not ok then
    error(res, 0)
  end
  return res, err
end

-- The live connection, reconnecting if it was lost.
function Client:_ready()
  if self.closed then
    return nil, connection_error("the client is closed", 0)
  end
  local ud = self.ud
  if ud then
    local status, why = ud:status()
    if status == "connected" then
      return ud
    end
    -- Lost while idle (the server went away): release it.
    self.ud = nil
    ud:close()
    self.last_error = why or self.last_error
  end
  if not self.reconnect then
    return nil, connection_error("not connected (" .. (self.last_error or "connection lost") .. ")", 0)
  end
  local ok, err = self:_connect()
  if not ok then
    return nil, err
  end
  if self.closed or not self.ud then
    return nil, connection_error("the client is closed", 0)
  end
  return self.ud
end

local function check_args(args)
  local name = args[1]
  if type(name) ~= "string" or name == "" then
    return nil, errors.new("invalid_input", "Redis: a command name is needed")
  end
  if UNPAIRED[name:lower()] then
    return nil, errors.new("invalid_input",
      ("Redis: %s is not supported on this client (its replies do not pair with commands)"):format(name))
  end
  for i = 2, args.n do
    local t = type(args[i])
    if t ~= "string" and t ~= "number" then
      return nil, errors.new("invalid_input",
        ("Redis: %s: argument %d is a %s (expected a string or a number)"):format(name, i - 1, t))
    end
  end
  return true
end

-- client:command(name, args...) -> reply | nil, err. A nil reply (GET of a
-- missing key) is a plain nil without an error.
function Client:command(...)
  local args = { n = select("#", ...), ... }
  local ok, err = check_args(args)
  if not ok then
    return nil, err
  end
  local ud
  ud, err = self:_ready()
  if not ud then
    return nil, err
  end
  return run(self, ud, args)
end

-- client:pipeline{ {"GET", "a"}, {"PTTL", "a"} } -> replies, errs | nil, err
-- All sent at once, one round trip. replies[i] is each reply (nil for a
-- nil reply; replies.n is the count); errs is nil, or errs[i] is the error
-- of the commands that failed with an error reply.
function Client:pipeline(commands)
  local list = {}
  for i, c in ipairs(commands) do
    local args = { n = c.n or #c }
    for j = 1, args.n do
      args[j] = c[j]
    end
    local ok, err = check_args(args)
    if not ok then
      return nil, err
    end
    list[i] = args
  end
  local n = #list
  if n == 0 then
    return { n = 0 }
  end
  local ud, err = self:_ready()
  if not ud then
    return nil, err
  end
  local replies, messages, types = { n = n }, {}, {}
  wait_on(self, ud, function(wake)
    local left = n
    for i, args in ipairs(list) do
      local ok, e, t = ud:command(args, function(reply, message, err_type)
        replies[i], messages[i], types[i] = reply, message, err_type
        left = left - 1
        if left == 0 then
          wake()
        end
      end)
      if not ok then
        messages[i], types[i] = e, t
        left = left - 1
      end
    end
    if left == 0 then
      wake()
    end
  end)
  local errs
  for i = 1, n do
    if messages[i] ~= nil then
      if types[i] ~= 0 then
        if self.ud == ud then
          self.ud = nil
        end
        ud:close()
        self.last_error = messages[i]
        return nil, connection_error(messages[i], types[i], { command = list[i][1] })
      end
      errs = errs or {}
      errs[i] = reply_error(messages[i], list[i][1])
    end
  end
  return replies, errs
end

function Client:get(key)
  return self:command("GET", key)
end

-- client:set(key, value, ttl_seconds|nil) -> true | nil, err. A whole
-- number of seconds is sent as EX, a fraction as PX (milliseconds).
function Client:set(key, value, ttl)
  local reply, err
  if ttl == nil then
    reply, err = self:command("SET", key, value)
  elseif type(ttl) ~= "number" or not (ttl > 0) or ttl == math.huge then
    return nil, errors.new("invalid_input", ("Redis: SET: ttl must be seconds > 0, got %s"):format(tostring(ttl)))
  elseif ttl == math.floor(ttl) then
    reply, err = self:command("SET", key, value, "EX", ttl)
  else
    reply, err = self:command("SET", key, value, "PX", math.ceil(ttl * 1000))
  end
  if err then
    return nil, err
  end
  return reply == "OK"
end

-- client:del(key, ...) -> number of keys removed | nil, err
function Client:del(...)
  return self:command("DEL", ...)
end

function Client:ping()
  return self:command("PING")
end

-- Closes the connection: commands of other tasks still waiting on it fail
-- with kind "connection". The client does not reconnect after this.
function Client:close()
  self.closed = true
  local ud = self.ud
  self.ud = nil
  if ud then
    ud:close()
  end
end

-- "connected", "connecting", "closed" (also: lost, to be reconnected).
function Client:status()
  if self.connecting then
    return "connecting"
  end
  return self.ud and (self.ud:status()) or "closed"
end

-- redis.connect(url [, opts]) -> client | nil, err   (inside a task)
-- opts.reconnect = false: a lost connection stays lost.
function _M.connect(url, opts)
  local cfg, message = _M.parse_url(url)
  if not cfg then
    return nil, errors.new("invalid_input", "Redis: " .. message, { url = url })
  end
  local client = setmetatable({ url = url, cfg = cfg, reconnect = not (opts and opts.reconnect == false) },
    Client)
  local ok, err = client:_connect()
  if not ok then
    return nil, err
  end
  return client
end

_M.Client = Client
return _M
