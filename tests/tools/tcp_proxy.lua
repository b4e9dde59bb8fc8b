-- A TCP proxy for fault tests, run as a separate process:
--   mnemo-run tests/tools/tcp_proxy.lua UPSTREAM_HOST UPSTREAM_PORT
-- It listens on a free loopback port, forwards every connection to the
-- upstream, and prints "listening PORT CONTROL_PORT" on stdout. Control is
-- a line protocol on CONTROL_PORT (one command per line, answered "ok ..."):
--   latency MS   delay every chunk, both directions, by MS milliseconds
--                (order kept; 0 = none)
--   reset        close every proxied connection abruptly: SO_LINGER 0, so
--                both peers get a TCP RST, not a FIN
--   refuse on    stop listening (new connections get ECONNREFUSED) and
--                reset the open ones; `refuse off` listens again (same port)
--   stats        "ok accepted=N open=N resets=N"
-- tests/chaos/chaos.lua has a client (proxy.start, p:command).
local uv = require "luv"

local up_host, up_port = arg[1] or "127.0.0.1", tonumber(arg[2])
assert(up_port, "usage: tcp_proxy.lua UPSTREAM_HOST UPSTREAM_PORT")

-- A delayed chunk written to a client that has closed meanwhile would
-- raise SIGPIPE and end the proxy silently (mnemo-run ignores it only once
-- its Redis or HTTP code runs): watched, the write fails with EPIPE instead.
local sigpipe = uv.new_signal()
sigpipe:start("sigpipe", function() end)
sigpipe:unref()

local latency = 0 -- ms
local conns = {} -- set of { client =, upstream = }
local accepted, resets, open = 0, 0, 0
local listener, port

local function close_pair(c, abrupt)
  if c.closed then
    return
  end
  c.closed = true
  conns[c] = nil
  open = open - 1
  for _, h in ipairs { c.client, c.upstream } do
    if not h:is_closing() then
      if abrupt then
        h:close_reset()
      else
        h:close()
      end
    end
  end
end

-- Forwards data read from `from` to `to`, after the configured latency.
local function pipe(c, from, to)
  from:read_start(function(err, data)
    if c.closed then
      return
    end
    if err or not data then
      -- An orderly end (or an error) on one side ends both after what is
      -- in flight has been delivered.
      local delay = latency
      local function finish()
        close_pair(c, err ~= nil)
      end
      if delay > 0 then
        local t = uv.new_timer()
        t:start(delay, 0, function()
          t:close()
          finish()
        end)
      else
        finish()
      end
      return
    end
    local function send()
      if not c.closed and not to:is_closing() then
        to:write(data)
      end
    end
    if latency > 0 then
      local t = uv.new_timer()
      t:start(latency, 0, function()
        t:close()
        send()
      end)
    else
      send()
    end
  end)
end

local function on_connection(server_err)
  if server_err or not listener then
    return
  end
  local client = uv.new_tcp()
  if not listener:accept(client) then
    client:close()
    return
  end
  accepted = accepted + 1
  open = open + 1
  local upstream = uv.new_tcp()
  local c = { client = client, upstream = upstream }
  conns[c] = true
  upstream:connect(up_host, up_port, function(err)
    if c.closed then
      return
    end
    if err then
      close_pair(c, true)
      return
    end
    pipe(c, client, upstream)
    pipe(c, upstream, client)
  end)
end

local function listen()
  listener = uv.new_tcp()
  assert(listener:bind("127.0.0.1", port or 0))
  assert(listener:listen(128, on_connection))
  port = listener:getsockname().port
end

local function reset_all()
  local n = 0
  for c in pairs(conns) do
    close_pair(c, true)
    n = n + 1
  end
  resets = resets + n
  return n
end

local function command(line)
  local cmd, a = line:match("^(%S+)%s*(%S*)")
  if cmd == "latency" and tonumber(a) then
    latency = tonumber(a)
    return "ok latency=" .. latency
  elseif cmd == "reset" then
    return "ok reset=" .. reset_all()
  elseif cmd == "refuse" and a == "on" then
    if listener then
      listener:close()
      listener = nil
    end
    return "ok refused, reset=" .. reset_all()
  elseif cmd == "refuse" and a == "off" then
    if not listener then
      listen()
    end
    return "ok listening " .. port
  elseif cmd == "stats" then
    return ("ok accepted=%d open=%d resets=%d latency=%d"):format(accepted, open, resets, latency)
  end
  return "error unknown command: " .. tostring(line)
end

listen()
local control = uv.new_tcp()
assert(control:bind("127.0.0.1", 0))
assert(control:listen(16, function()
  local s = uv.new_tcp()
  control:accept(s)
  local buf = ""
  s:read_start(function(err, data)
    if err or not data then
      if not s:is_closing() then
        s:close()
      end
      return
    end
    buf = buf .. data
    while true do
      local line, rest = buf:match("^([^\n]*)\n(.*)$")
      if not line then
        break
      end
      buf = rest
      s:write(command(line:gsub("\r$", "")) .. "\n")
    end
  end)
end))
print(("listening %d %d"):format(port, control:getsockname().port))
io.stdout:flush()
