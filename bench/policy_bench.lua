-- Policy reload: (1) time from writing a policy file to its new generation
-- being active, through the file watcher (target <= 50 ms); (2) guarded-call
-- throughput while the policy is reloaded 1,000 times, against the same
-- calls without reloads, in the same process (target >= 90 %).
-- Run: build/mnemo-run bench/policy_bench.lua   (part of `make bench`)
local mnemo = require "mnemo"
local uv = require "luv"

mnemo.log.set_level("critical")
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir) == 0)
local path = dir .. "/bench_policy.lua"

local function write(timeout)
  local f = assert(io.open(path .. ".tmp", "wb"))
  f:write(([[return {
    timeouts = { op = %g },
    retry = { r = { attempts = 3, base = 0.5, max = 5, on = { "connection" } } },
    breakers = { bench = { failure_threshold = 5, recovery_timeout = 30 } },
    operations = { bench_op = { timeout = "op", retry = "r", breaker = "bench", idempotent = true } },
  }]]):format(timeout))
  f:close()
  assert(os.rename(path .. ".tmp", path)) -- as editors save: write, then rename
end

write(1)
assert(mnemo.policy.load(path, { watch = true }))

-- (1) write -> active, through the watcher, 20 times.
local latencies = {}
for i = 1, 20 do
  local gen = mnemo.policy.status().generation
  local t0 = mnemo.now()
  write(1 + i)
  while mnemo.policy.status().generation == gen do
    mnemo.sleep(0.0005)
    assert(mnemo.now() - t0 < 5, "the watcher did not pick up the change")
  end
  latencies[i] = (mnemo.now() - t0) * 1000
end
table.sort(latencies)

-- (2) throughput with and without 1,000 reloads.
local N = 1000000
local RELOADS = 1000
local function work()
  return 1
end
local guard = mnemo.guard
local function calls_per_second(reload_every)
  collectgarbage()
  local t0 = mnemo.now()
  for i = 1, N do
    guard("bench_op", work)
    if reload_every and i % reload_every == 0 then
      assert(mnemo.policy.reload())
    end
  end
  return N / (mnemo.now() - t0)
end
-- Alternate rounds with and without reloads and compare medians: this
-- machine's speed drifts more between runs than reloads cost.
local without_runs, with_runs = {}, {}
for r = 1, 3 do
  without_runs[r] = calls_per_second(nil)
  with_runs[r] = calls_per_second(N / RELOADS)
end
table.sort(without_runs)
table.sort(with_runs)
local base, with = without_runs[2], with_runs[2]
-- The cost of one reload on its own (read, sandboxed evaluation,
-- validation, swap), over 1,000 reloads.
collectgarbage()
local t0 = mnemo.now()
for _ = 1, RELOADS do
  assert(mnemo.policy.reload())
end
local reload_us = (mnemo.now() - t0) / RELOADS * 1e6
mnemo.policy.unwatch()
os.remove(path)
os.remove(dir)

print("policy reload")
print(("  write -> new generation active (watcher, 20 saves): median %.1f ms, max %.1f ms  (target <= 50 ms)")
  :format(latencies[10], latencies[20]))
print(("  guarded calls/s (median of 3 alternating rounds of %d calls) without reloads %.0f, with %d reloads %.0f: ratio %.2f  (target >= 0.90)")
  :format(N, base, RELOADS, with, with / base))
print(("  one reload costs %.0f us: 1,000 reloads take %.0f ms of a loop that runs %.0f guarded calls in that time")
  :format(reload_us, reload_us, reload_us / 1e6 * base * 1000))
