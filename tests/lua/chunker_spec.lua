-- mnemo.chunker through the Lua API: chunks of each language, errors, and
-- cancellation by deadlines that frees the thread pool.
local mnemo = require "mnemo"
local chunker = require "mnemo.chunker"
local h = require "helpers"

local FIXTURES = "tests/fixtures/chunker/"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local function by_path(chunks)
  local out = {}
  for _, c in ipairs(chunks) do
    out[c.name_path] = c
  end
  return out
end

local function refs_of(c)
  local out = {}
  for i, r in ipairs(c.refs) do
    out[i] = r.kind .. ":" .. r.name
  end
  return table.concat(out, " ")
end

-- "x = ((((...1...))))" lines: slow to parse (about a second per MB on
-- this machine), never erroneous, below the nesting limit.
local function pathological(lines, depth)
  local line = "x = " .. ("("):rep(depth) .. "1" .. (")"):rep(depth) .. "\n"
  return line:rep(lines)
end

describe("mnemo.chunker", function()
  it("maps paths to languages", function()
    assert.equal("python", chunker.language_for("a/b.py"))
    assert.equal("javascript", chunker.language_for("x.mjs"))
    assert.equal("javascript", chunker.language_for("x.jsx"))
    assert.equal("c", chunker.language_for("x.h"))
    assert.equal("lua", chunker.language_for("init.lua"))
    assert.is_nil(chunker.language_for("README.md"))
    assert.is_nil(chunker.language_for(nil))
  end)

  it("chunks a Python file: names, name paths, lines, source, refs", function()
    local chunks = mnemo.run(function()
      return assert(chunker.chunk { path = "pkg/sample.py", source = read(FIXTURES .. "sample.py") })
    end)
    assert.equal(7, #chunks)
    assert.equal("<module>", chunks[1].name_path)
    local c = by_path(chunks)
    assert.same({ "module", "<module>", 1, 34 },
      { c["<module>"].kind, c["<module>"].name, c["<module>"].start_line, c["<module>"].end_line })
    assert.same({ "function", "outer", 13, 19 },
      { c.outer.kind, c.outer.name, c.outer.start_line, c.outer.end_line })
    assert.same({ "function", "inner", 16, 17 },
      { c["outer.inner"].kind, c["outer.inner"].name, c["outer.inner"].start_line, c["outer.inner"].end_line })
    assert.same({ "class", 22, 31 }, { c.Shape.kind, c.Shape.start_line, c.Shape.end_line })
    assert.same({ "method", "area", 27, 28 },
      { c["Shape.area"].kind, c["Shape.area"].name, c["Shape.area"].start_line, c["Shape.area"].end_line })
    assert.equal("    def area(self):\n        return self.width() * compute(self)", c["Shape.area"].source)
    assert.equal("call:self.width call:compute", refs_of(c["Shape.area"]))
    assert.equal("import:os import:json import:sys import:collections.abc call:print call:outer",
      refs_of(c["<module>"]))
    assert.matches("^@cached\n", c.outer.source)
  end)

  it("chunks JavaScript, C and Lua", function()
    local js, cc, lua = mnemo.run(function()
      return assert(chunker.chunk { language = "javascript", source = read(FIXTURES .. "sample.js") }),
        assert(chunker.chunk { language = "c", source = read(FIXTURES .. "sample.c") }),
        assert(chunker.chunk { path = "sample.lua", source = read(FIXTURES .. "sample.lua") })
    end)
    js, cc, lua = by_path(js), by_path(cc), by_path(lua)
    assert.same({ "method", 22, 24 }, { js["Store.onChange"].kind, js["Store.onChange"].start_line,
      js["Store.onChange"].end_line })
    assert.same({ "function", 27, 27 }, { js.double.kind, js.double.start_line, js.double.end_line })
    assert.equal("import:fs/promises import:path call:load", refs_of(js["<module>"]))
    assert.same({ "struct", 11, 14 }, { cc.polygon_t.kind, cc.polygon_t.start_line, cc.polygon_t.end_line })
    assert.equal("call:printf call:find call:ops.run", refs_of(cc.main))
    assert.same({ "method", "close", 22, 25 }, { lua["M.close"].kind, lua["M.close"].name,
      lua["M.close"].start_line, lua["M.close"].end_line })
    assert.equal("import:cjson import:luv", refs_of(lua["<module>"]))
  end)

  it("splits oversized definitions", function()
    local lines = { "def big():" }
    for i = 1, 449 do
      lines[#lines + 1] = ("    v%d = f%d()"):format(i, i % 3)
    end
    local chunks = mnemo.run(function()
      return assert(chunker.chunk { language = "python", source = table.concat(lines, "\n") .. "\n",
        max_chunk_lines = 100 })
    end)
    assert.equal(5, #chunks)
    for i, c in ipairs(chunks) do
      assert.equal("big#" .. i, c.name_path)
      assert.equal("big", c.name)
      assert.equal((i - 1) * 100 + 1, c.start_line)
      assert.equal(math.min(i * 100, 450), c.end_line)
    end
  end)

  it("returns invalid_input for bad arguments and unknown languages", function()
    mnemo.run(function()
      local chunks, err = chunker.chunk { language = "cobol", source = "x" }
      assert.is_nil(chunks)
      assert.equal("invalid_input", err.kind)
      assert.matches('unknown language "cobol" %(known: c, javascript, lua, python%)', tostring(err))
      chunks, err = chunker.chunk { path = "notes.txt", source = "x" }
      assert.is_nil(chunks)
      assert.equal("invalid_input", err.kind)
      assert.matches('no language known for path "notes.txt"', tostring(err))
      chunks, err = chunker.chunk { language = "c" }
      assert.equal("invalid_input", err.kind)
      chunks, err = chunker.chunk { language = "c", source = "x", max_chunk_lines = 0 }
      assert.equal("invalid_input", err.kind)
      chunks, err = chunker.chunk "x.py"
      assert.equal("invalid_input", err.kind)
      -- nesting deep enough to break the tree-sitter library: refused
      chunks, err = chunker.chunk { language = "javascript", source = "f(" .. ("f(a, "):rep(20000) }
      assert.is_nil(chunks)
      assert.equal("invalid_input", err.kind)
      assert.matches("nests brackets too deeply", tostring(err))
    end)
    assert.has_error(function()
      chunker.chunk { language = "c", source = "int x;" }
    end, "chunker.chunk: not inside a task (wrap the caller in mnemo.run or mnemo.spawn)")
  end)

  it("fails at once, without a pool thread, when the deadline has passed", function()
    local _, restore = h.capture_log()
    local ok, err = mnemo.run(function()
      return pcall(mnemo.timeout, 0.05, function()
        local t = os.clock()
        while os.clock() - t < 0.08 do -- overrun without yielding
        end
        return chunker.chunk { language = "c", source = "int f(void) { return 0; }\n" }
      end)
    end)
    restore()
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
  end)

  it("a deadline cancels pathological parses and frees the pool threads", function()
    -- 4 MB: about 7 s to parse unbounded. Four of them fill the default
    -- pool (UV_THREADPOOL_SIZE=4); eight small jobs queued behind them
    -- must still finish right after the deadline.
    local source = pathological(2000, 1000)
    local lines, restore = h.capture_log()
    local started = mnemo.now()
    local slow, fast = {}, {}
    local timed_out_at, fast_done_at
    mnemo.run(function()
      for i = 1, 4 do
        slow[i] = h.start(mnemo.timeout, 0.2, chunker.chunk, { language = "python", source = source })
      end
      mnemo.sleep(0.01) -- let them take the pool
      for i = 1, 8 do
        fast[i] = h.start(chunker.chunk, { language = "lua", source = "local function f" .. i .. "() end\n" })
      end
      local deadline = mnemo.now() + 10
      local function all_done(boxes)
        for _, b in ipairs(boxes) do
          if not b.result then
            return false
          end
        end
        return true
      end
      while not all_done(slow) do
        assert(mnemo.now() < deadline, "pathological parses did not time out")
        mnemo.sleep(0.005)
      end
      timed_out_at = mnemo.now() - started
      while not all_done(fast) do
        assert(mnemo.now() < deadline, "small jobs starved: the pool threads were not freed")
        mnemo.sleep(0.005)
      end
      fast_done_at = mnemo.now() - started
    end)
    restore()
    assert.equal(4, #h.events(lines, "timeout"))
    for i = 1, 4 do
      assert.is_false(slow[i].result[1])
      assert.equal("timeout", slow[i].result[2].kind)
    end
    for i = 1, 8 do
      assert.is_true(fast[i].result[1])
      assert.equal("f" .. i, fast[i].result[2][1].name)
    end
    assert.is_true(timed_out_at < 1.0, "timed out after " .. timed_out_at)
    assert.is_true(fast_done_at < 1.5, "small jobs done after " .. fast_done_at)
  end)
end)
