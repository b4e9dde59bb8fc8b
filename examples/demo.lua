-- The foundation demo (make run, until the indexing pipeline exists): two
-- tasks sleeping with mnemo.sleep and a luv timer, all on mnemo-run's one
-- loop. The timestamps show them interleave: nothing blocks anything else.
local mnemo = require "mnemo"
local uv = require "luv"

local start = mnemo.now()
local function say(who, what)
  print(string.format("%7.1f ms  %-8s %s", (mnemo.now() - start) * 1000, who, what))
end

local ticks = 0
local timer = uv.new_timer()
timer:start(25, 25, function()
  ticks = ticks + 1
  say("luv", "timer tick " .. ticks)
  if ticks == 4 then
    timer:close()
  end
end)

local function worker(name, period, rounds)
  return function()
    for i = 1, rounds do
      mnemo.sleep(period)
      say(name, string.format("woke %d/%d (slept %d ms)", i, rounds, period * 1000))
    end
  end
end

mnemo.spawn(worker("task A", 0.020, 5))
mnemo.spawn(worker("task B", 0.035, 3))
say("main", "started 2 tasks and a luv timer on one loop")
mnemo.sleep(0.12)
say("main", "done; mnemo-run exits when the loop has no work left")
