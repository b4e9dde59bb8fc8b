-- Redis on the loop, against real servers: $MNEMO_REDIS_URL (scripts/run-tests
-- starts one), private ones started here for the tests that kill them, and
-- a fake server on a luv socket for replies a real one will not give on
-- demand (LOADING, max clients).
local mnemo = require "mnemo"
local h = require "helpers"
local uv = require "luv"
local redis = mnemo.redis

local private_server, redis_url = h.redis_private_server, h.redis_url

-- A fake server: answers every connection with `greeting` (if any) and
-- every command with `answer`. Returns its port and a close function.
local function fake_server(answer, greeting)
  local server = uv.new_tcp()
  assert(server:bind("127.0.0.1", 0))
  local clients = {}
  assert(server:listen(16, function()
    local c = uv.new_tcp()
    server:accept(c)
    clients[#clients + 1] = c
    if greeting then
      c:write(greeting)
    end
    c:read_start(function(err, data)
      if data and answer and not c:is_closing() then
        c:write(answer)
      elseif not data and not c:is_closing() then
        c:close()
      end
    end)
  end))
  return server:getsockname().port, function()
    for _, c in ipairs(clients) do
      if not c:is_closing() then
        c:close()
      end
    end
    server:close()
  end
end

local n = 0
local function key(name)
  n = n + 1
  return ("mnemo:test:%d:%s:%d"):format(uv.os_getpid(), name, n)
end

describe("mnemo.redis", function()
  local url, lines, restore
  setup(function()
    url = redis_url()
  end)
  before_each(function()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
  end)

  local function with_client(fn)
    return mnemo.run(function()
      local c = assert(redis.connect(url))
      local results = { pcall(fn, c) }
      c:close()
      if not results[1] then
        error(results[2], 0)
      end
      return unpack(results, 2, table.maxn(results))
    end)
  end

  it("sets, gets, deletes, expires", function()
    with_client(function(c)
      local k = key("basic")
      assert.equal("PONG", c:ping())
      assert.is_true(c:set(k, "value"))
      assert.equal("value", c:get(k))
      assert.equal(-1, c:command("TTL", k))
      assert.is_true(c:set(k, "v2", 10))
      assert.equal("v2", c:get(k))
      assert.equal(10, c:command("TTL", k))
      assert.is_true(c:set(k, "v3", 1.5)) -- PX 1500
      local pttl = c:command("PTTL", k)
      assert.is_true(pttl > 1000 and pttl <= 1500, pttl)
      assert.equal(1, c:del(k, key("absent")))
      local v, err = c:get(k)
      assert.is_nil(v)
      assert.is_nil(err) -- a miss is not an error
      assert.equal(0, c:del(k))
      -- Integers go out as integers, replies come back converted.
      assert.equal(3, c:command("INCRBY", k, 3))
      assert.equal("OK", c:command("SET", k, 12345678901))
      assert.equal("12345678901", c:get(k))
      c:del(k)
      local _, bad = c:set(k, "x", 0)
      assert.equal("invalid_input", bad.kind)
    end)
  end)

  it("is binary safe, and converts arrays with nils", function()
    with_client(function(c)
      local k = key("bin\0key\r\n")
      local value = "a\0b\r\n$3\r\nc" .. string.char(255, 0, 1)
      assert.is_true(c:set(k, value))
      assert.equal(value, c:get(k))
      assert.equal(#value, c:command("STRLEN", k))
      local got = c:command("MGET", k, key("missing"), k)
      assert.equal(3, #got)
      assert.equal(value, got[1])
      assert.equal(redis.null, got[2])
      assert.equal(value, got[3])
      local list = key("list")
      c:command("RPUSH", list, "x", "", "z")
      assert.same({ "x", "", "z" }, c:command("LRANGE", list, 0, -1))
      assert.same({}, c:command("LRANGE", key("nolist"), 0, -1))
      c:del(k, list)
    end)
  end)

  it("classifies error replies and keeps the connection usable", function()
    with_client(function(c)
      local k = key("wrongtype")
      c:command("RPUSH", k, "x")
      local v, err = c:get(k)
      assert.is_nil(v)
      assert.equal("invalid_input", err.kind)
      assert.equal("GET", err.command)
      assert.matches("^WRONGTYPE", err.reply)
      assert.matches("Redis: WRONGTYPE Operation against a key holding the wrong kind of value", tostring(err), 1, true)
      _, err = c:command("NOSUCHCOMMAND", "x")
      assert.equal("invalid_input", err.kind)
      assert.matches("unknown command", err.message)
      _, err = c:command("EVALSHA", string.rep("0", 40), 0)
      assert.equal("not_found", err.kind) -- NOSCRIPT
      -- Refused before anything is sent.
      _, err = c:command("SUBSCRIBE", "chan")
      assert.equal("invalid_input", err.kind)
      assert.matches("not supported", err.message)
      _, err = c:command("SET", k, {})
      assert.equal("invalid_input", err.kind)
      assert.equal("PONG", c:ping())
      c:del(k)
    end)
  end)

  it("pipelines commands of many tasks on one connection, and in one call", function()
    local k = key("counter")
    local total = with_client(function(c)
      local done = 0
      for _ = 1, 50 do
        mnemo.spawn(function()
          assert(c:command("INCR", k))
          done = done + 1
        end)
      end
      while done < 50 do
        mnemo.sleep(0.001)
      end
      local replies, errs = c:pipeline { { "GET", k }, { "LPUSH", k, "x" }, { "DEL", k }, { "GET", k } }
      assert.equal(4, replies.n)
      assert.equal("50", replies[1])
      assert.equal("invalid_input", errs[2].kind)
      assert.equal(1, replies[3])
      assert.is_nil(replies[4])
      return replies[1]
    end)
    assert.equal("50", total)
  end)

  it("says clearly what is wrong with a URL", function()
    local cases = {
      { nil, "no URL given" },
      { "", "no URL given" },
      { "http://127.0.0.1:6379", "the scheme must be redis://" },
      { "redis://", "no host" },
      { "redis://127.0.0.1:notaport", "the port must be a number" },
      { "redis://127.0.0.1:70000", "the port must be a number in 1..65535" },
      { "redis://127.0.0.1:6379/zero", "the path must be a database number" },
    }
    mnemo.run(function()
      for _, case in ipairs(cases) do
        local c, err = redis.connect(case[1])
        assert.is_nil(c)
        assert.equal("invalid_input", err.kind)
        assert.matches(case[2], tostring(err), 1, true)
      end
    end)
    assert.same({ host = "::1", port = 6380, db = 2, password = "p@ss", username = "me" },
      redis.parse_url("redis://me:p%40ss@[::1]:6380/2"))
    assert.same({ host = "cache", port = 6379, password = "secret" }, redis.parse_url("redis://:secret@cache"))
  end)

  it("fails fast on a refused port, and resolves names off the loop", function()
    local t0 = mnemo.now()
    mnemo.run(function()
      local c, err = redis.connect("redis://127.0.0.1:1")
      assert.is_nil(c)
      assert.equal("connection", err.kind)
      assert.matches("Redis: cannot connect to 127.0.0.1:1: Connection refused", tostring(err), 1, true)
      c, err = redis.connect("redis://localhost:1")
      assert.is_nil(c)
      assert.equal("connection", err.kind)
      c = assert(redis.connect((url:gsub("127%.0%.0%.1", "localhost"))))
      assert.equal("PONG", c:ping())
      c:close()
    end)
    assert.is_true(mnemo.now() - t0 < 2)
  end)

  it("selects the database of the URL", function()
    local k = key("db")
    with_client(function(c)
      c:del(k)
    end)
    mnemo.run(function()
      local c = assert(redis.connect(url .. "/3"))
      c:set(k, "in db 3")
      c:close()
    end)
    assert.is_nil((with_client(function(c)
      return c:get(k)
    end)))
    mnemo.run(function()
      local c = assert(redis.connect(url .. "/3"))
      assert.equal("in db 3", c:get(k))
      c:del(k)
      c:close()
      local bad, err = redis.connect(url .. "/100000")
      assert.is_nil(bad)
      assert.equal("invalid_input", err.kind)
      assert.matches("SELECT on .* failed: ERR DB index is out of range", err.message)
      bad, err = redis.connect((url:gsub("redis://", "redis://:wrong@")))
      assert.is_nil(bad)
      assert.equal("invalid_input", err.kind) -- AUTH without a password set
      assert.matches("AUTH", err.message)
    end)
  end)

  it("cancels a blocking command at the deadline, then reconnects", function()
    local t0 = mnemo.now()
    local ok, err, status, after = mnemo.run(function()
      local c = assert(redis.connect(url))
      local ok, err = pcall(mnemo.timeout, 0.2, function()
        return c:command("BLPOP", key("nothing"), 5)
      end)
      local status = c:status()
      local after = c:ping() -- a fresh connection
      c:close()
      return ok, err, status, after
    end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.equal("closed", status)
    assert.equal("PONG", after)
    assert.is_true(mnemo.now() - t0 < 1.5)
    assert.equal(1, #h.events(lines, "timeout"))
  end)

  it("reports LOADING as busy with retry_after, and a full server as too_many_connections", function()
    mnemo.run(function()
      local port, close = fake_server("-LOADING Redis is loading the dataset in memory\r\n")
      local c = assert(redis.connect("redis://127.0.0.1:" .. port))
      local v, err = c:get("x")
      assert.is_nil(v)
      assert.equal("busy", err.kind)
      assert.equal(1, err.retry_after)
      c:close()
      close()
      port, close = fake_server(nil, "-ERR max number of clients reached\r\n")
      -- Refused after the connect (as Redis does): on the connect or on
      -- the first command, depending on who is first.
      c, err = redis.connect("redis://127.0.0.1:" .. port)
      if c then
        v, err = c:get("x")
        c:close()
      end
      assert.is_nil(v)
      assert.equal("too_many_connections", err.kind)
      close()
    end)
  end)

  it("reports BUSY (a long script) as busy", function()
    local server = private_server()
    finally(server.stop)
    mnemo.run(function()
      local admin = assert(redis.connect(server.url))
      assert.equal("OK", admin:command("CONFIG", "SET", "busy-reply-threshold", 50))
      local stuck = assert(redis.connect(server.url))
      local box = h.start(function()
        return stuck:command("EVAL", "while true do end", 0)
      end)
      mnemo.sleep(0.2)
      local other = assert(redis.connect(server.url))
      local v, err = other:ping()
      assert.is_nil(v)
      assert.equal("busy", err.kind)
      assert.matches("^BUSY", err.reply)
      assert.equal("OK", other:command("SCRIPT", "KILL"))
      while not box.result do
        mnemo.sleep(0.01)
      end
      assert.is_true(box.result[1])
      assert.is_nil(box.result[2])
      assert.matches("killed", box.result[3].message)
      for _, c in ipairs({ admin, stuck, other }) do
        c:close()
      end
    end)
  end)

  it("fails pending and later commands quickly when the server is killed, and recovers after a restart", function()
    local server = private_server()
    finally(server.stop)
    local t_kill
    local res = mnemo.run(function()
      local c = assert(redis.connect(server.url))
      local k = key("kill")
      assert.is_true(c:set(k, "before"))
      -- Two commands in flight: a blocking one and one queued behind it.
      local blocked = h.start(function()
        return c:command("BLPOP", key("never"), 30)
      end)
      local queued = h.start(function()
        return c:get(k)
      end)
      mnemo.sleep(0.1)
      assert.is_nil(blocked.result)
      assert.equal(2, c.ud:pending())
      t_kill = mnemo.now()
      server.kill()
      while not (blocked.result and queued.result) do
        assert(mnemo.now() - t_kill < 2, "pending commands hang after the server died")
        mnemo.sleep(0.005)
      end
      local r = { blocked = blocked.result, queued = queued.result, took = mnemo.now() - t_kill }
      -- Later commands: the reconnect is refused, at once.
      local t0 = mnemo.now()
      r.later = { c:get(k) }
      r.later_took = mnemo.now() - t0
      r.status = c:status()
      -- The server comes back (same port): the client reconnects.
      server.start()
      r.again = c:set(k, "after")
      r.value = c:get(k)
      c:close()
      return r
    end)
    for _, name in ipairs({ "blocked", "queued" }) do
      local r = res[name]
      assert.is_true(r[1], name)
      assert.is_nil(r[2], name)
      assert.equal("connection", r[3].kind, name)
      assert.matches("Server closed the connection", r[3].message, 1, true)
    end
    assert.is_true(res.took < 1)
    assert.is_nil(res.later[1])
    assert.equal("connection", res.later[2].kind)
    assert.matches("Connection refused", res.later[2].message)
    assert.is_true(res.later_took < 0.5)
    assert.equal("closed", res.status)
    assert.is_true(res.again)
    assert.equal("after", res.value)
  end)

  it("does not reconnect when told not to, nor after close", function()
    local server = private_server()
    finally(server.stop)
    mnemo.run(function()
      local c = assert(redis.connect(server.url, { reconnect = false }))
      server.kill()
      mnemo.sleep(0.05)
      server.start()
      local v, err = c:ping()
      assert.is_nil(v)
      assert.equal("connection", err.kind)
      assert.matches("not connected", err.message)
      c:close()
      local d = assert(redis.connect(server.url))
      d:close()
      v, err = d:ping()
      assert.is_nil(v)
      assert.matches("the client is closed", err.message)
    end)
  end)

  it("lets luv walk the loop and the program end with a connection open", function()
    -- Under mnemo-run, where luv is mnemo's (under busted a later spec
    -- file gets a fresh luv module whose walk asserts on any mnemo handle).
    mnemo.run(function()
      local c = assert(redis.connect(url))
      assert.equal("PONG", c:ping())
      -- not closed: closed when collected
    end)
    collectgarbage()
    collectgarbage()
    local script = h.write_file(os.tmpname(), ([[
      local mnemo = require "mnemo"
      local c = assert(mnemo.redis.connect(%q))
      assert(c:set("mnemo:test:host", "x"))
      local handles = 0
      mnemo.uv.walk(function()
        handles = handles + 1
      end)
      print(c:get("mnemo:test:host"), handles)
      -- not closed: the idle connection must not keep the program alive
    ]]):format(url))
    local t0 = mnemo.now()
    local r = h.mnemo_run({ script })
    os.remove(script)
    assert.equal(0, r.code, r.stderr)
    assert.equal("x\t0\n", r.stdout) -- the poll handle is mnemo's, not luv's
    assert.is_true(mnemo.now() - t0 < 5) -- the idle connection did not keep it alive
  end)
  it("retries a guarded read into a success across a dropped connection (CLIENT KILL)", function()
    local op = "redis_get_retried_" .. math.random(1e6)
    mnemo.configure {
      retry = { cache = { attempts = 3, base = 0.01, max = 0.05, jitter = "none", on = { "connection" } } },
      operations = { [op] = { timeout = 3, retry = "cache", idempotent = true } },
    }
    local lines, restore = h.capture_log()
    local got = mnemo.run(function()
      local c = assert(redis.connect(redis_url()))
      local admin = assert(redis.connect(redis_url()))
      local k = key("dropped")
      assert.is_true(c:set(k, "kept"))
      local id = c:command("CLIENT", "ID")
      local attempts = 0
      local v = mnemo.guard(op, function()
        attempts = attempts + 1
        if attempts == 1 then
          -- The connection is dropped under a command in flight (an idle
          -- client would reconnect before anyone noticed).
          mnemo.spawn(function()
            mnemo.sleep(0.05)
            admin:command("CLIENT", "KILL", "ID", tostring(id))
          end)
          local _, err = c:command("BLPOP", key("never"), 1)
          error(err or "BLPOP returned before the kill", 0)
        end
        local value, err = c:get(k)
        if err then
          error(err, 0)
        end
        return value
      end)
      c:close()
      admin:close()
      return v
    end)
    restore()
    assert.equal("kept", got)
    local retries = h.events(lines, "retry")
    assert.is_true(#retries >= 1, "the dropped connection was not seen: the test proves nothing")
    assert.equal("connection", retries[1].class)
    assert.equal(#retries, mnemo.stats()[op].retries)
    assert.equal(1, mnemo.stats()[op].recovered)
  end)
end)
