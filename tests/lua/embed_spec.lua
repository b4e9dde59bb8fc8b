-- mnemo.embed.hashing on the uv thread pool (runtime/loop/embed_job.c):
-- the same literals as before the pool path existed, inline or not; a
-- deadline that cuts a huge batch at once, while the loop keeps running
-- timers and the pool thread stops working.
local mnemo = require "mnemo"
local core = require "mnemo_core"
local uv = require "luv"
local h = require "helpers"

-- 300 chunks of every shape: identifiers of all kinds, UTF-8, an invalid
-- byte, NULs, blanks, long tokens, no name_path, no source.
local function corpus(n)
  local words = { "parse", "HTTPRequest", "open_connection", "drawCircle", "x2y", "donn\195\169es", "{", "}",
    "(", ")", "return", "self.area", "42", "_", "\255", "getHTTPResponseCode2", ("a"):rep(70), "", "\t", "\0" }
  local out, seed = {}, 12345
  for i = 1, n do
    local parts = {}
    for j = 1, (i * 7) % 40 + 1 do
      seed = (seed * 16807) % 2147483647
      parts[j] = words[seed % #words + 1]
    end
    out[i] = { name_path = (i % 5 ~= 0) and ("fn" .. i) or nil,
      source = (i % 11 ~= 0) and table.concat(parts, (i % 3 == 0) and "\n" or " ") or nil }
  end
  return out
end

-- hash64 of the literals of corpus(300), joined by "\n", as embed.hashing
-- made them before it had a pool path (commit e4a4b1f, inline only).
local BEFORE = { [16] = "6db1daf79632514d", [384] = "cfd23252c6e3c02a", [4096] = "7c671e3cbdce4916" }

local function digest(literals)
  return core.hash64(table.concat(literals, "\n"))
end

-- A repeating 5 ms luv timer: how often it ran and the longest gap
-- between two runs (up to stop()). Made outside any mnemo.timeout: a
-- scope closes the luv handles opened inside it when it expires.
local function ticking()
  local st = { ticks = 0, gap = 0, last = uv.hrtime() }
  local t = uv.new_timer()
  t:start(5, 5, function()
    local now = uv.hrtime()
    st.gap = math.max(st.gap, (now - st.last) / 1e9)
    st.last = now
    st.ticks = st.ticks + 1
  end)
  function st.stop()
    st.gap = math.max(st.gap, (uv.hrtime() - st.last) / 1e9)
    t:close()
  end
  return st
end

-- A huge batch: 8 KiB chunks of code, as many as take about 0.8 s to embed
-- here (measured inline on a sample, so a faster machine gets more).
local huge
local function huge_batch()
  if huge then
    return huge
  end
  local line = "  local total = parseHttpRequest2(sock, size) + self.count_of(items[i])\n"
  local sources = {}
  for k = 1, 32 do
    sources[k] = line:rep(math.ceil(8192 / #line)):sub(1, 8180) .. k
  end
  local function chunks_of(n)
    local out = {}
    for i = 1, n do
      out[i] = { name_path = "mod.fn" .. i, source = sources[i % 32 + 1] }
    end
    return out
  end
  local inline = mnemo.embed.hashing(384, { inline_cost = math.huge })
  local sample = chunks_of(100)
  local t0 = mnemo.now()
  inline(sample)
  local per_chunk = (mnemo.now() - t0) / #sample
  local n = math.max(2000, math.min(20000, math.ceil(0.8 / per_chunk)))
  huge = { chunks = chunks_of(n), seconds = n * per_chunk }
  return huge
end

describe("mnemo.embed.hashing", function()
  it("makes the literals it made before, inline, on the pool, in slices and outside a task", function()
    local chunks = corpus(300)
    for dims, want in pairs(BEFORE) do
      assert.equal(want, digest(mnemo.embed.hashing(dims)(chunks)), "outside a task, " .. dims)
      mnemo.run(function()
        for _, opts in ipairs { {}, { inline_cost = math.huge }, { inline_cost = 0 },
          { inline_cost = 0, slice_cost = 1 }, { inline_cost = 0, slice_cost = 20000 } } do
          local lits = mnemo.embed.hashing(dims, opts)(chunks)
          assert.equal(300, #lits)
          assert.equal(want, digest(lits), ("dims %d, inline_cost %s, slice_cost %s"):format(dims,
            tostring(opts.inline_cost), tostring(opts.slice_cost)))
        end
      end)
    end
    -- one by one, against the inline binding
    mnemo.run(function()
      local lits = mnemo.embed.hashing(384, { inline_cost = 0 })(chunks)
      for i, c in ipairs(chunks) do
        assert.equal(core.embed_hashing((c.name_path or "") .. "\n" .. (c.source or ""), 384), lits[i])
      end
    end)
  end)

  it("returns an empty list for an empty batch and refuses bad dimensions, on the pool too", function()
    mnemo.run(function()
      assert.same({}, mnemo.embed.hashing(384, { inline_cost = 0 })({}))
      for _, opts in ipairs { { inline_cost = 0 }, { inline_cost = math.huge } } do
        local ok, err = pcall(mnemo.embed.hashing(8, opts), { { source = "x" } })
        assert.is_false(ok)
        assert.matches("dims out of range", tostring(err))
      end
    end)
  end)

  it("the huge batch without a deadline: the same literals as inline, and the loop ran all along", function()
    local batch = huge_batch()
    local st, elapsed, pooled, inline
    mnemo.run(function()
      st = ticking()
      local t0 = mnemo.now()
      pooled = mnemo.embed.hashing(384)(batch.chunks)
      elapsed = mnemo.now() - t0
      st.stop()
      inline = mnemo.embed.hashing(384, { inline_cost = math.huge })(batch.chunks)
    end)
    assert.equal(#batch.chunks, #pooled)
    assert.equal(digest(inline), digest(pooled))
    -- Inline, the timer could not have run until the end: one gap of the
    -- whole batch (about 0.8 s). On the pool it keeps near its 5 ms
    -- period: the loop thread spends some 7% of the inline time (texts,
    -- copies, literals); the rest of a gap is the scheduler of a loaded
    -- machine (8 ms on average and 46 ms at most here, at load 4 on 2
    -- cores), hence the margins.
    local msg = ("%d chunks in %.2f s, %d ticks, longest gap %.3f s"):format(#batch.chunks, elapsed, st.ticks,
      st.gap)
    assert.is_true(elapsed > 0.3, msg)
    assert.is_true(st.gap < 0.2, msg)
    assert.is_true(st.ticks >= elapsed / 0.005 / 10, msg)
  end)

  it("a huge batch under a short mnemo.timeout ends with a timeout in about the timeout", function()
    local batch = huge_batch()
    local lines, restore = h.capture_log()
    local st, ok, err, elapsed, ticks_then, cpu_after
    mnemo.run(function()
      st = ticking()
      local t0 = mnemo.now()
      ok, err = pcall(mnemo.timeout, 0.1, mnemo.embed.hashing(384), batch.chunks)
      elapsed = mnemo.now() - t0
      ticks_then = st.ticks
      -- The worker stopped before its next vector: the process spends
      -- (almost) no CPU time any more (it would be 0.3 s otherwise).
      local c0 = os.clock()
      mnemo.sleep(0.3)
      cpu_after = os.clock() - c0
      st.stop()
    end)
    restore()
    local msg = ("timed out after %.3f s (the batch takes about %.2f s), %d ticks, longest gap %.3f s, "
      .. "CPU after %.3f s"):format(elapsed, batch.seconds, ticks_then, st.gap, cpu_after)
    assert.is_false(ok)
    assert.equal("timeout", err.kind, msg)
    assert.equal(1, #h.events(lines, "timeout"))
    assert.is_true(elapsed >= 0.095 and elapsed < 0.1 + 0.25, msg)
    assert.is_true(ticks_then >= 3, msg) -- inline: none, the loop was held
    assert.is_true(st.gap < 0.15, msg)
    assert.is_true(cpu_after < 0.1, msg)
    -- and the pool works on
    mnemo.run(function()
      assert.equal(BEFORE[384], digest(mnemo.embed.hashing(384, { inline_cost = 0 })(corpus(300))))
    end)
  end)

  it("a batch whose deadline has already passed fails at once without embedding", function()
    local _, restore = h.capture_log()
    local ok, err, inner, elapsed
    mnemo.run(function()
      ok, err = pcall(mnemo.timeout, 0.05, function()
        local t = os.clock()
        while os.clock() - t < 0.08 do -- overrun without yielding
        end
        local t0 = mnemo.now()
        inner = { pcall(mnemo.embed.hashing(384, { inline_cost = 0 }), corpus(300)) }
        elapsed = mnemo.now() - t0
      end)
    end)
    restore()
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.is_false(inner[1])
    assert.equal("timeout", inner[2].kind)
    assert.is_true(elapsed < 0.05, "took " .. elapsed)
  end)
end)
