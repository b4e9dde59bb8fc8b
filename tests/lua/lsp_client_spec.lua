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
