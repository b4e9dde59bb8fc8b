-- mnemo.timeout / shield / await, on the virtual clock unless stated.
local mnemo = require "mnemo"
local uv = require "luv"

local h = require "helpers"
local start, capture_log = h.start, h.capture_log

describe("mnemo.timeout", function()
  before_each(h.virtual_clock_on)
  after_each(h.virtual_clock_off)

  it("returns the work's results when it finishes in time", function()
    local a, b = mnemo.run(function()
      local box = start(mnemo.timeout, 2, function()
        mnemo.sleep(1)
        return "done", 42
      end)
      mnemo.clock.advance(1)
      return box.result[2], box.result[3]
    end)
    assert.equal("done", a)
    assert.equal(42, b)
  end)

  it("raises a TimeoutError at the deadline and cancels the work", function()
    local lines, restore = capture_log()
    local after_sleep = false
    local box = mnemo.run(function()
      local box = start(mnemo.timeout, { seconds = 2, operation = "parse", context = { file_path = "a.py" } },
        function()
          mnemo.sleep(10)
          after_sleep = true
        end)
      mnemo.clock.advance(1.999)
      assert.is_nil(box.result)
      mnemo.clock.advance(0.001)
      assert.is_not_nil(box.result, "caller resumed exactly at the deadline")
      mnemo.clock.advance(20)
      return box
    end)
    restore()
    local ok, err = box.result[1], box.result[2]
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.equal("parse", err.operation)
    assert.equal(2, err.timeout)
    assert.near(2, err.elapsed, 1e-6)
    assert.matches("TimeoutError: parse exceeded its 2.000s deadline", tostring(err))
    assert.is_false(after_sleep, "the timed-out work must not go on")
    assert.equal(0, mnemo.clock.pending(), "the work's sleep timer was stopped")
    -- One structured JSON line with the operation and the context fields.
    local cjson = require "cjson"
    assert.equal(1, #lines)
    local rec = cjson.decode(lines[1])
    assert.equal("timeout", rec.event)
    assert.equal("parse", rec.operation)
    assert.equal("a.py", rec.file_path)
    assert.equal(2, rec.timeout)
  end)

  it("lets the work's own error handling run, then still times out", function()
    local cleaned = false
    local box = mnemo.run(function()
      local box = start(mnemo.timeout, 1, function()
        local ok = pcall(mnemo.sleep, 5)
        cleaned = not ok
        mnemo.sleep(5) -- waiting again inside an expired scope fails at once
        error("not reached")
      end)
      mnemo.clock.advance(1)
      return box
    end)
    assert.is_true(cleaned)
    assert.equal("timeout", box.result[2].kind)
  end)

  it("nests: an inner deadline never outlives the outer one", function()
    local box = mnemo.run(function()
      local box = start(mnemo.timeout, { seconds = 3, operation = "index_file" }, function()
        return mnemo.timeout({ seconds = 10, operation = "embed" }, function()
          mnemo.sleep(100)
        end)
      end)
      mnemo.clock.advance(3)
      return box
    end)
    local err = box.result[2]
    assert.equal("timeout", err.kind)
    -- Both expired at 3 s; the outer scope reports its own error.
    assert.equal("index_file", err.operation)
    assert.near(3, err.elapsed, 1e-6)
  end)

  it("splits a per-file budget across steps", function()
    local steps = {}
    local box = mnemo.run(function()
      local box = start(mnemo.timeout, { seconds = 30, operation = "index_file" }, function()
        mnemo.timeout(5, function()
          mnemo.sleep(4)
        end)
        steps[#steps + 1] = ("parse done, %.0f s left"):format(mnemo.remaining())
        local ok, err = pcall(mnemo.timeout, { seconds = 10, operation = "embed" }, function()
          mnemo.sleep(60)
        end)
        steps[#steps + 1] = err.operation .. " timed out"
        mnemo.sleep(1)
        return "stored"
      end)
      mnemo.clock.advance(4)
      mnemo.clock.advance(10)
      mnemo.clock.advance(1)
      return box
    end)
    assert.same({ "parse done, 26 s left", "embed timed out" }, steps)
    assert.equal("stored", box.result[2])
  end)

  it("times out CPU-bound work that finishes late without yielding", function()
    mnemo.clock.virtual(false)
    local ok, err = pcall(mnemo.timeout, 0.01, function()
      local t = mnemo.now()
      while mnemo.now() - t < 0.02 do
      end
    end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
  end)

  it("passes errors of the work through unchanged", function()
    local ok, err = pcall(mnemo.timeout, 1, function()
      error({ kind = "constraint" })
    end)
    assert.is_false(ok)
    assert.equal("constraint", err.kind)
  end)

  it("rejects zero, negative, NaN and infinite timeouts with a clear message", function()
    for _, bad in ipairs({ 0, -1, 0 / 0, math.huge, "1" }) do
      local ok, err = pcall(mnemo.timeout, bad, function() end)
      assert.is_false(ok)
      assert.matches("timeout: expected a number of seconds > 0", err)
    end
  end)

  it("closes luv handles the timed-out work opened", function()
    local handle
    mnemo.run(function()
      local box = start(mnemo.timeout, 1, function()
        handle = uv.new_timer()
        handle:start(100000, 0, function() end)
        mnemo.sleep(50)
      end)
      mnemo.clock.advance(1)
      assert.equal("timeout", box.result[2].kind)
    end)
    assert.is_true(handle:is_closing())
  end)
end)

describe("mnemo.shield", function()
  before_each(h.virtual_clock_on)
  after_each(h.virtual_clock_off)

  it("keeps a commit from being cancelled; the deadline applies after it", function()
    local committed = false
    local box = mnemo.run(function()
      local box = start(mnemo.timeout, 1, function()
        mnemo.shield(function()
          mnemo.sleep(3) -- the COMMIT, slower than the whole budget
          committed = true
        end)
        mnemo.sleep(0) -- back under the expired deadline
      end)
      mnemo.clock.advance(1)
      assert.is_nil(box.result)
      mnemo.clock.advance(2)
      return box
    end)
    assert.is_true(committed)
    assert.equal("timeout", box.result[2].kind)
  end)
end)

describe("mnemo.await", function()
  it("returns what a luv callback passes to wake", function()
    local stat = mnemo.run(function()
      return mnemo.await(function(wake)
        uv.fs_stat("Makefile", function(err, st)
          wake(err, st)
        end)
      end)
    end)
    assert.is_nil(stat)
  end)

  it("works when wake is called before the task parks", function()
    local a, b = mnemo.run(function()
      return mnemo.await(function(wake)
        wake("now", 1)
      end)
    end)
    assert.equal("now", a)
    assert.equal(1, b)
  end)

  it("is cancelled by a deadline (real timers)", function()
    local ok, err = pcall(mnemo.run, function()
      return mnemo.timeout(0.02, function()
        return mnemo.await(function() end) -- never woken
      end)
    end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
  end)
end)
