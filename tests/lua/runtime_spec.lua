-- The mnemo module under plain luajit: tasks, sleep, clocks, errors.
local mnemo = require "mnemo"
local uv = require "luv"
local h = require "helpers"

describe("mnemo.now", function()
  it("is monotonic seconds that advance across a sleep", function()
    local a = mnemo.now()
    local b = mnemo.run(function()
      mnemo.sleep(0.02)
      return mnemo.now()
    end)
    assert.is_number(a)
    assert.is_true(b - a >= 0.019, "slept " .. (b - a))
  end)
end)

describe("mnemo.sleep", function()
  it("suspends only the calling task: two sleeps overlap", function()
    local events = {}
    local start = mnemo.now()
    mnemo.run(function()
      local done = 0
      mnemo.spawn(function()
        for i = 1, 3 do
          mnemo.sleep(0.02)
          events[#events + 1] = "a" .. i
        end
        done = done + 1
      end)
      mnemo.spawn(function()
        for i = 1, 2 do
          mnemo.sleep(0.03)
          events[#events + 1] = "b" .. i
        end
        done = done + 1
      end)
      while done < 2 do
        mnemo.sleep(0.005)
      end
    end)
    local elapsed = mnemo.now() - start
    -- a at 20,40,60 ms and b at 30,60 ms: interleaved, not one after the other.
    assert.same({ "a1", "b1", "a2" }, { events[1], events[2], events[3] })
    assert.equal(5, #events)
    -- Concurrent: the order above already shows it; a sequential run would
    -- also take 120 ms or more (the margin allows a loaded machine).
    assert.is_true(elapsed >= 0.059 and elapsed < 0.25, "elapsed " .. elapsed)
  end)

  it("runs on the same loop as luv timers", function()
    local events = {}
    mnemo.run(function()
      local t = uv.new_timer()
      t:start(15, 0, function()
        events[#events + 1] = "luv"
        t:close()
      end)
      mnemo.sleep(0.005)
      events[#events + 1] = "mnemo1"
      mnemo.sleep(0.03)
      events[#events + 1] = "mnemo2"
    end)
    assert.same({ "mnemo1", "luv", "mnemo2" }, events)
  end)

  it("refuses to run outside a task, with a clear message", function()
    local ok, err = pcall(mnemo.sleep, 0.01)
    assert.is_false(ok)
    assert.matches("not inside a task", err)
  end)

  it("rejects negative, NaN, infinite and non-number durations", function()
    for _, bad in ipairs({ -1, 0 / 0, math.huge, "soon" }) do
      local ok, err = pcall(mnemo.run, mnemo.sleep, bad)
      assert.is_false(ok)
      assert.matches("bad argument #1", tostring(err))
    end
  end)

  it("sleep(0) yields and comes back on the next turn", function()
    local order = {}
    mnemo.run(function()
      local done = false
      mnemo.spawn(function()
        order[#order + 1] = "other"
        done = true
      end)
      mnemo.sleep(0)
      order[#order + 1] = "me"
      assert.is_true(done)
    end)
    assert.same({ "other", "me" }, order)
  end)
end)

describe("mnemo.run", function()
  it("passes arguments and returns every result", function()
    local a, b, c = mnemo.run(function(x, y)
      mnemo.sleep(0)
      return x + y, "two", nil
    end, 1, 2)
    assert.equal(3, a)
    assert.equal("two", b)
    assert.is_nil(c)
  end)

  it("raises the task's error value unchanged", function()
    local ok, err = pcall(mnemo.run, function()
      mnemo.sleep(0.001)
      error({ kind = "timeout", operation = "x" })
    end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
  end)

  it("raises an error of a luv callback with its traceback", function()
    local ok, err = pcall(mnemo.run, function()
      local t = uv.new_timer()
      t:start(1, 0, function()
        t:close()
        error("broken callback")
      end)
      mnemo.sleep(1)
    end)
    assert.is_false(ok)
    assert.matches("broken callback", err)
    assert.matches("stack traceback", err)
  end)

  it("raises an error of a spawned task with its traceback", function()
    local ok, err = pcall(mnemo.run, function()
      mnemo.spawn(function()
        mnemo.sleep(0.001)
        error("task failed")
      end)
      mnemo.sleep(1)
    end)
    assert.is_false(ok)
    assert.matches("task failed", err)
    assert.matches("stack traceback", err)
  end)

  it("reports a task that waits on nothing instead of hanging", function()
    local ok, err = pcall(mnemo.run, function()
      coroutine.yield()
    end)
    assert.is_false(ok)
    assert.matches("deadlock", err)
  end)

  it("is usable again after an error", function()
    pcall(mnemo.run, function()
      error("first")
    end)
    assert.equal("fine", mnemo.run(function()
      mnemo.sleep(0)
      return "fine"
    end))
  end)
end)

describe("virtual clock", function()
  before_each(h.virtual_clock_on)
  after_each(h.virtual_clock_off)

  it("holds time still until advanced, then fires timers in order", function()
    local fired = {}
    mnemo.run(function()
      local t0 = mnemo.now()
      for _, d in ipairs({ 30, 10, 20, 10 }) do
        mnemo.spawn(function()
          mnemo.sleep(d)
          fired[#fired + 1] = { d = d, at = mnemo.now() - t0 }
        end)
      end
      assert.equal(4, mnemo.clock.pending())
      assert.equal(0, mnemo.clock.advance(9.999))
      assert.equal(0, #fired)
      assert.equal(2, mnemo.clock.advance(0.001))
      assert.equal(2, mnemo.clock.advance(25))
    end)
    assert.same({ 10, 10, 20, 30 }, { fired[1].d, fired[2].d, fired[3].d, fired[4].d })
    -- Each wakes with the clock at its own due time.
    assert.near(20, fired[3].at, 1e-6)
    assert.near(30, fired[4].at, 1e-6)
  end)

  it("lets a task sleep for an hour in no real time", function()
    local real_start = uv.hrtime()
    local woke
    mnemo.run(function()
      mnemo.spawn(function()
        mnemo.sleep(3600)
        woke = true
      end)
      mnemo.clock.advance(3600)
    end)
    assert.is_true(woke)
    assert.is_true((uv.hrtime() - real_start) / 1e9 < 1)
  end)

  it("refuses advance when the clock is real", function()
    mnemo.clock.virtual(false)
    local ok, err = pcall(mnemo.clock.advance, 1)
    assert.is_false(ok)
    assert.matches("not virtual", err)
  end)
end)
