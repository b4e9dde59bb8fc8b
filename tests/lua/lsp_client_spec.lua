-- mnemo.lsp_frame: the LSP base protocol's incremental decoder.
local frame = require "mnemo.lsp_frame"

local function f(body)
  return "Content-Length: " .. #body .. "\r\n\r\n" .. body
end

describe("lsp_frame decoder", function()
  it("decodes a frame split at every byte boundary", function()
    local s = frame.encode({ jsonrpc = "2.0", id = 1, result = { x = "é" } }) .. f('{"id":2}')
    for cut = 0, #s do
      local d = frame.decoder.new()
      local a = assert(d:feed(s:sub(1, cut)))
      local b = assert(d:feed(s:sub(cut + 1)))
      local all = {}
      for _, m in ipairs(a) do all[#all + 1] = m end
      for _, m in ipairs(b) do all[#all + 1] = m end
      assert.equal(2, #all)
      assert.equal(1, all[1].id)
      assert.equal("é", all[1].result.x)
      assert.equal(2, all[2].id)
    end
    local d = frame.decoder.new()
    local n = 0
    for i = 1, #s do
      n = n + #assert(d:feed(s:sub(i, i)))
    end
    assert.equal(2, n)
  end)

  it("decodes several frames in one chunk, headers case-insensitive, others ignored", function()
    local d = frame.decoder.new()
    local s = f('{"id":1}') .. "content-LENGTH: 8\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{\"id\":2}"
      .. f('{"id":3}')
    local out = assert(d:feed(s))
    assert.same({ 1, 2, 3 }, { out[1].id, out[2].id, out[3].id })
  end)

  local function fails(chunks, pattern, opts)
    local d = frame.decoder.new(opts)
    local res, err
    for _, c in ipairs(chunks) do
      res, err = d:feed(c)
      if not res then break end
    end
    assert.is_nil(res)
    assert.matches(pattern, err)
    -- stays failed
    local r2, e2 = d:feed(f('{"id":1}'))
    assert.is_nil(r2)
    assert.equal(err, e2)
  end

  it("fails on a missing Content-Length", function()
    fails({ "Content-Type: x\r\n\r\n{}" }, "missing Content%-Length")
  end)
  it("fails on a negative or non-integer Content-Length", function()
    fails({ "Content-Length: -5\r\n\r\n" }, "invalid Content%-Length")
    fails({ "Content-Length: 1.5\r\n\r\n" }, "invalid Content%-Length")
  end)
  it("fails on a huge Content-Length without buffering it", function()
    fails({ "Content-Length: 99999999999\r\n\r\n" }, "over the %d+%-byte frame limit")
    fails({ "Content-Length: 101\r\n\r\n" }, "over the 100%-byte", { max_bytes = 100 })
  end)
  it("fails on an oversize header", function()
    fails({ string.rep("x", 5000), string.rep("y", 5000) }, "header longer than 8192 bytes")
    fails({ "X-Pad: " .. string.rep("p", 300) .. "\r\nContent-Length: 2\r\n\r\n{}" }, "header longer than 64",
      { max_header = 64 })
  end)
  it("fails on garbage and bad JSON", function()
    fails({ "hello world\r\n\r\n" }, "malformed header line")
    fails({ f("{not json") }, "malformed JSON body")
  end)
  it("encodes a frame", function()
    local s = frame.encode({ id = 1 })
    assert.equal('Content-Length: 8\r\n\r\n{"id":1}', s)
  end)
end)

local mnemo = require "mnemo"
local uv = require "luv"
local lsp = require "mnemo.lsp_client"
local h = require "helpers"

local FAKE = { "luajit", "tests/tools/fake_lsp.lua" }
local function fake(mode, a)
  local cmd = { FAKE[1], FAKE[2], mode }
  if a then cmd[4] = a end
  return cmd
end
local ROOT = uv.cwd()

-- Runs fn in a task; lets the loop release closed handles before the end.
local function run(fn)
  return mnemo.run(function()
    local r = { fn() }
    mnemo.sleep(0.01)
    return unpack(r)
  end)
end

describe("lsp_client against the fake server", function()
  it("initializes, answers the server's requests, lists symbols and hovers", function()
    run(function()
      local c = assert(lsp.start({ cmd = fake("ok"), root = ROOT, name = "fake" }))
      assert.same({ name = "fake-lsp", version = "0.1" }, c.serverInfo)
      local uri = "file://" .. ROOT .. "/a.py"
      assert(c:didOpen(uri, "python", "def greet(name):\n  pass\n"))
      local syms = assert(c:documentSymbol(uri))
      assert.equal("greet", syms[1].name)
      assert.equal("Point", syms[2].name)
      local hv = assert(c:hover(uri, 0, 5))
      assert.matches("say hello", hv.contents.value)
      -- the server's workspace/configuration request was answered
      local seen = assert(c:request("fake/seen", {}))
      assert.equal("cfg1", seen.client_answers[1].id)
      local _, nerr = c:request("no/such", {})
      assert.matches("no no/such", tostring(nerr))
      assert(c:didClose(uri))
      assert.is_true(c:close(2))
      assert.is_false(c:alive())
      assert.same({ code = 0, signal = 0 }, c.exited)
    end)
  end)

  it("keeps 50 requests in flight at once", function()
    run(function()
      local c = assert(lsp.start({ cmd = fake("batch", "50"), root = ROOT, name = "fake" }))
      local results, order = {}, {}
      local tasks = {}
      for i = 1, 50 do
        tasks[i] = mnemo.spawn(function()
          local r, e = c:documentSymbol("file:///x" .. i)
          results[i] = r and r[1].name or tostring(e)
          order[#order + 1] = i
        end)
      end
      local deadline = mnemo.now() + 10
      while #order < 50 and mnemo.now() < deadline do mnemo.sleep(0.01) end
      assert.equal(50, #order)
      for i = 1, 50 do assert.equal("greet", results[i]) end
      -- answered in reverse order: all 50 were pending together
      assert.equal(50, order[1])
      assert.equal(1, order[50])
      c:close(2)
    end)
  end)

  for _, case in ipairs({
    { "garbage", "framing error: malformed header line" },
    { "huge", "framing error: Content%-Length 99999999999 over" },
    { "badjson", "framing error: malformed JSON" },
    { "exit_on_init", "server exited %(code 3" },
  }) do
    it("fails clearly on a server in mode " .. case[1], function()
      run(function()
        local t0 = mnemo.now()
        local c, err = lsp.start({ cmd = fake(case[1]), root = ROOT, name = "fake-" .. case[1], init_timeout = 5 })
        assert.is_nil(c)
        assert.equal("connection", err.kind)
        assert.matches("lsp fake%-" .. case[1], err.message)
        assert.matches(case[2], err.message)
        assert.is_true(mnemo.now() - t0 < 3)
      end)
    end)
  end

  it("times out initialize on a truncated frame", function()
    local _, restore = h.capture_log()
    finally(restore)
    run(function()
      local c, err = lsp.start({ cmd = fake("truncated"), root = ROOT, name = "trunc", init_timeout = 0.5 })
      assert.is_nil(c)
      assert.equal("timeout", err.kind)
      assert.matches("lsp trunc initialize", tostring(err))
    end)
  end)

  it("answers a slow server and times out a stalled one", function()
    local _, restore = h.capture_log()
    finally(restore)
    run(function()
      local c = assert(lsp.start({ cmd = fake("slow", "0.2"), root = ROOT, name = "slow" }))
      local t0 = mnemo.now()
      assert.equal("greet", c:documentSymbol("file:///a")[1].name)
      assert.is_true(mnemo.now() - t0 >= 0.15)
      c:close(2)
      local s = assert(lsp.start({ cmd = fake("stall"), root = ROOT, name = "stall" }))
      local ok, e = pcall(mnemo.timeout, 0.3, function() return s:hover("file:///a", 0, 0) end)
      assert.is_false(ok)
      assert.equal("timeout", e.kind)
      assert.equal(0, s.in_flight)
      local t1 = mnemo.now()
      s:close(0.3) -- shutdown is not answered: killed
      assert.is_true(mnemo.now() - t1 < 2)
      assert.is_false(s:alive())
    end)
  end)

  it("fails every pending request at once when the server is killed", function()
    run(function()
      local c = assert(lsp.start({ cmd = fake("stall"), root = ROOT, name = "victim" }))
      local errs = {}
      for i = 1, 10 do
        mnemo.spawn(function()
          local r, e = c:hover("file:///a", i, 0)
          errs[#errs + 1] = e or r
        end)
      end
      mnemo.sleep(0.05)
      uv.process_kill(c.handle, "sigkill")
      local deadline = mnemo.now() + 3
      while #errs < 10 and mnemo.now() < deadline do mnemo.sleep(0.005) end
      assert.equal(10, #errs)
      for _, e in ipairs(errs) do
        assert.equal("connection", e.kind)
        assert.matches("lsp victim: server exited %(code 0, signal 9%)", e.message)
      end
      assert.is_false(c:alive())
      local r, e = c:documentSymbol("file:///a")
      assert.is_nil(r)
      assert.equal("connection", e.kind)
      c:close(1)
    end)
  end)

  it("survives a server that closes its stdin (EPIPE, not SIGPIPE)", function()
    local _, restore = h.capture_log()
    finally(restore)
    run(function()
      local c, err = lsp.start({ cmd = { "sh", "-c", "exec 0<&-; sleep 0.3" }, name = "closer", init_timeout = 2 })
      assert.is_nil(c)
      assert.equal("connection", err.kind)
      assert.matches("lsp closer", err.message)
    end)
  end)

  it("reports a missing binary as not_found", function()
    run(function()
      local c, err = lsp.start({ cmd = { "/nonexistent/mnemo-no-such-lsp" }, name = "ghost" })
      assert.is_nil(c)
      assert.equal("not_found", err.kind)
      assert.matches("mnemo%-no%-such%-lsp", err.message)
    end)
  end)

  it("against a real pylsp: symbols and hover docstring", function()
    local st = os.execute("command -v pylsp >/dev/null 2>&1")
    if not (st == 0 or st == true) then
      pending("pylsp not installed")
      return
    end
    run(function()
      local dir = os.tmpname()
      os.remove(dir)
      assert(uv.fs_mkdir(dir, 448))
      local text = 'def greet(name):\n    """Say hello to name."""\n    return "hi " + name\n'
      local path = dir .. "/m.py"
      local fh = assert(io.open(path, "w")); fh:write(text); fh:close()
      local c = assert(lsp.start({ cmd = { "pylsp" }, root = dir, name = "pylsp", init_timeout = 20 }))
      local uri = "file://" .. path
      c:didOpen(uri, "python", text)
      local syms = assert(mnemo.timeout(20, function() return c:documentSymbol(uri) end))
      local found = false
      for _, s in ipairs(syms) do if s.name == "greet" then found = true end end
      assert.is_true(found)
      local hv = assert(mnemo.timeout(20, function() return c:hover(uri, 0, 5) end))
      local contents = hv.contents
      local text = type(contents) == "table" and (contents.value or (contents[1] and (contents[1].value or contents[1])))
        or contents
      assert.matches("Say hello", tostring(text))
      c:close(3)
      os.remove(path); uv.fs_rmdir(dir)
    end)
  end)
end)
