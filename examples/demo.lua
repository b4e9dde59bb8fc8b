-- The demo (make run, until the indexing pipeline exists): two
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
say("main", "tasks and timer done; now the resilience core")

-- The resilience core on the same loop: a flaky dependency behind
-- mnemo.guard, with a per-attempt timeout, retries and a circuit breaker.
mnemo.log.set_level("error") -- the demo prints its own lines
mnemo.configure {
  timeouts = { lookup = 0.05 },
  retry = { lookup = { attempts = 3, base = 0.01, max = 0.05, jitter = "full",
                       on = { "connection", "timeout" } } },
  breakers = { upstream = { failure_threshold = 3, recovery_timeout = 0.2 } },
  operations = { lookup = { timeout = "lookup", retry = "lookup", breaker = "upstream",
                            idempotent = true } },
}
local calls = 0
local function flaky_lookup(key)
  calls = calls + 1
  if calls % 3 == 1 then
    error(mnemo.error("connection", "connection refused"))
  elseif calls % 3 == 2 then
    mnemo.sleep(1) -- stalls: cancelled by the 50 ms attempt timeout
  end
  return "value-of-" .. key
end
start = mnemo.now()
local v = mnemo.guard("lookup", flaky_lookup, nil, "a")
say("guard", string.format("lookup(a) = %s after %d attempts (refused, timed out, ok)", v, calls))

local function down()
  error(mnemo.error("connection", "connection refused"))
end
for i = 1, 3 do
  local r = mnemo.guard("lookup", down, { fallback = function(err)
    return "fallback (" .. err.kind .. ")"
  end })
  say("guard", string.format("call %d while down: %s, breaker %s", i, r,
    mnemo.breaker.get("upstream"):state()))
end
mnemo.sleep(0.2)
say("guard", "breaker after its 200 ms recovery timeout: " .. mnemo.breaker.get("upstream"):state())
local ok = mnemo.guard("lookup", function() return "ok" end)
say("guard", "a successful probe -> " .. ok .. ", breaker " .. mnemo.breaker.get("upstream"):state())
local s = mnemo.stats().lookup
say("stats", string.format("lookup: calls=%d successes=%d failures=%d retries=%d timeouts=%d fast_fails=%d",
  s.calls, s.successes, s.failures, s.retries, s.timeouts, s.fast_fails))
