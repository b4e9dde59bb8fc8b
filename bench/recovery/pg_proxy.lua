-- A PostgreSQL proxy that resets a fixed, seeded share of transactions, for
-- the recovery run (scripts/recovery-run):
--   mnemo-run bench/recovery/pg_proxy.lua UPSTREAM_PORT SEED RATE
-- It listens on a free loopback port, forwards every connection to
-- 127.0.0.1:UPSTREAM_PORT, and prints "listening PORT CONTROL_PORT".
--
-- It reads the frontend protocol (client -> server: the untyped startup
-- packets, then typed messages: one type byte, an int32 length) and watches
-- the simple-query messages "BEGIN", "COMMIT", "ROLLBACK" that mnemo.pg's
-- conn:transaction() sends. At each BEGIN it draws twice from a Park-Miller
-- generator seeded with SEED (two draws whatever the outcome, so the
-- sequence of decisions is the same from run to run): the transaction is
-- faulted when the first draw is below RATE, and the second picks where
-- (one third each):
--   begin      the BEGIN is not forwarded: the connection is reset
--   statement  the BEGIN is forwarded and answered; the next message (the
--              transaction's first statement) is not: the connection is
--              reset, the server rolls the open transaction back
--   commit     the COMMIT is forwarded; the server's answer is not: the
--              connection is reset once the server has answered, so the
--              transaction is committed and the client cannot know it
-- A reset closes both sockets with SO_LINGER 0 (each peer gets a TCP RST,
-- as tests/tools/tcp_proxy.lua's `reset` does). Nothing else is changed.
-- Control: a line protocol on CONTROL_PORT; "stats" answers
--   ok accepted=N transactions=N faulted=N at_begin=N at_statement=N
--      commit_lost=N resets=N
-- (faulted: transactions drawn for a fault; at_*: resets done at that
-- point; a faulted transaction that ended otherwise first, for example on
-- its own ROLLBACK, is faulted but not reset).
local uv = require "luv"

local up_port, seed, rate = tonumber(arg[1]), tonumber(arg[2] or "1"), tonumber(arg[3] or "0.05")
assert(up_port and seed and rate, "usage: pg_proxy.lua UPSTREAM_PORT SEED RATE")

local sigpipe = uv.new_signal()
sigpipe:start("sigpipe", function() end)
sigpipe:unref()

local M = 2147483647
local state = ((seed + 7919) % (M - 1)) + 1 -- not the embedder's sequence
local function draw()
  state = (state * 48271) % M
  return state / M
end
for _ = 1, 32 do -- a small seed's first draws are small
  draw()
end

local stats = { accepted = 0, transactions = 0, faulted = 0, at_begin = 0, at_statement = 0, commit_lost = 0,
  resets = 0 }

local SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102

local function be32(s, i)
  local a, b, c, d = s:byte(i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

local function close_pair(c, abrupt)
  if c.closed then
    return
  end
  c.closed = true
  if abrupt then
    stats.resets = stats.resets + 1
  end
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

-- What a complete simple query asks for, when it is one of the three.
local function verb(body)
  local text = body:gsub("%z$", ""):gsub("^%s+", ""):gsub("[%s;]+$", ""):upper()
  if text == "BEGIN" or text == "COMMIT" or text == "ROLLBACK" then
    return text
  end
end

-- A complete 'Q' message: returns true when the connection must be reset
-- instead of forwarding it.
local function on_query(c, body)
  local v = verb(body)
  if v == "BEGIN" then
    stats.transactions = stats.transactions + 1
    local faulted, where = draw() < rate, draw()
    c.armed = nil
    if faulted then
      stats.faulted = stats.faulted + 1
      if where < 1 / 3 then
        stats.at_begin = stats.at_begin + 1
        return true
      end
      c.armed = where < 2 / 3 and "statement" or "commit"
    end
  elseif v == "COMMIT" then
    if c.armed == "commit" then
      c.drop_reply = true
    end
    c.armed = nil
  elseif v == "ROLLBACK" then
    c.armed = nil
  end
  return false
end

-- Client -> server: parses message boundaries, forwards what is not held,
-- resets where the fault says.
local function from_client(c, data)
  local out, i, n = {}, 1, #data
  local function flush()
    if #out > 0 and not c.upstream:is_closing() then
      c.upstream:write(table.concat(out))
    end
    out = {}
  end
  while i <= n do
    if c.remaining > 0 then
      local take = math.min(c.remaining, n - i + 1)
      local piece = data:sub(i, i + take - 1)
      i = i + take
      c.remaining = c.remaining - take
      if c.collect then
        c.collect[#c.collect + 1] = piece
        if c.remaining == 0 then
          local body = table.concat(c.collect)
          c.collect = nil
          if on_query(c, body) then
            flush()
            return close_pair(c, true)
          end
          out[#out + 1] = c.collect_header .. body
        end
      else
        out[#out + 1] = piece
      end
    else
      local need = c.startup and 8 or 5
      local take = math.min(need - #c.header, n - i + 1)
      c.header = c.header .. data:sub(i, i + take - 1)
      i = i + take
      if #c.header == need then
        local header = c.header
        c.header = ""
        if c.startup then
          local len, code = be32(header, 1), be32(header, 5)
          if code ~= SSL_REQUEST and code ~= GSSENC_REQUEST and code ~= CANCEL_REQUEST then
            c.startup = false
          end
          out[#out + 1] = header
          c.remaining = math.max(0, len - 8)
        else
          if c.armed == "statement" then
            -- The transaction's first statement: never reaches the server.
            c.armed = nil
            stats.at_statement = stats.at_statement + 1
            flush()
            return close_pair(c, true)
          end
          local kind, len = header:sub(1, 1), be32(header, 2)
          c.remaining = math.max(0, len - 4)
          if kind == "Q" and c.remaining <= 64 then
            if c.remaining == 0 then
              out[#out + 1] = header
            else
              c.collect, c.collect_header = {}, header
            end
          else
            out[#out + 1] = header
          end
        end
      end
    end
  end
  flush()
end

local function on_connection(server_err, listener)
  if server_err then
    return
  end
  local client = uv.new_tcp()
  if not listener:accept(client) then
    client:close()
    return
  end
  stats.accepted = stats.accepted + 1
  local upstream = uv.new_tcp()
  local c = { client = client, upstream = upstream, startup = true, header = "", remaining = 0 }
  upstream:connect("127.0.0.1", up_port, function(err)
    if c.closed then
      return
    end
    if err then
      return close_pair(c, true)
    end
    client:read_start(function(rerr, data)
      if c.closed then
        return
      end
      if rerr or not data then
        return close_pair(c, rerr ~= nil)
      end
      from_client(c, data)
    end)
    upstream:read_start(function(rerr, data)
      if c.closed then
        return
      end
      if rerr or not data then
        return close_pair(c, rerr ~= nil)
      end
      if c.drop_reply then
        -- The server has answered the COMMIT: the client never hears it.
        stats.commit_lost = stats.commit_lost + 1
        return close_pair(c, true)
      end
      if not client:is_closing() then
        client:write(data)
      end
    end)
  end)
end

local listener = uv.new_tcp()
assert(listener:bind("127.0.0.1", 0))
assert(listener:listen(128, function(err)
  on_connection(err, listener)
end))

local function command(line)
  if line:match("^stats") then
    local keys = { "accepted", "transactions", "faulted", "at_begin", "at_statement", "commit_lost", "resets" }
    local parts = {}
    for _, k in ipairs(keys) do
      parts[#parts + 1] = k .. "=" .. stats[k]
    end
    return "ok " .. table.concat(parts, " ")
  end
  return "error unknown command: " .. tostring(line)
end

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
      s:write(command((line:gsub("\r$", ""))) .. "\n")
    end
  end)
end))
print(("listening %d %d"):format(listener:getsockname().port, control:getsockname().port))
io.stdout:flush()
