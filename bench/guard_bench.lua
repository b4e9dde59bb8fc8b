-- guard() overhead from Lua: a bare call against mnemo.guard with a
-- per-attempt timeout, a retry policy and a breaker, on the success path;
-- the fast-fail path with the breaker open; and mnemo.timeout alone.
-- Run: build/mnemo-run bench/guard_bench.lua   (part of `make bench`)
local mnemo = require "mnemo"

local N = tonumber(arg and arg[1]) or 400000
local ROUNDS = 5 -- the median of 5 rounds: this machine's timings are noisy
mnemo.log.set_level("critical") -- measure the calls, not the logging

mnemo.configure {
  timeouts = { cache_operation = 1 },
  retry = { cache = { attempts = 3, base = 0.5, max = 5, jitter = "full", on = { "connection", "timeout" } } },
  breakers = { bench = { failure_threshold = 5, recovery_timeout = 30 } },
  operations = {
    bench_get = { timeout = "cache_operation", retry = "cache", breaker = "bench", idempotent = true },
  },
}

local sink = 0
local function work()
  sink = sink + 1
  return sink
end

local function time(label, fn)
  local samples = {}
  for r = 1, ROUNDS do
    collectgarbage()
    local t0 = mnemo.now()
    fn()
    samples[r] = (mnemo.now() - t0) / N * 1e9
  end
  table.sort(samples)
  return samples[(ROUNDS + 1) / 2]
end

local bare = time("bare", function()
  for _ = 1, N do
    work()
  end
end)
local guard = mnemo.guard
local guarded = time("guarded", function()
  for _ = 1, N do
    guard("bench_get", work)
  end
end)
local timeout = mnemo.timeout
local timed = time("timeout", function()
  for _ = 1, N do
    timeout(1, work)
  end
end)

local b = mnemo.breaker.get("bench")
for _ = 1, 5 do
  pcall(b.call, b, function()
    error(mnemo.error("connection"))
  end)
end
assert(b:state() == "open")
local fallback = { fallback = function()
  return nil
end }
local fastfail = time("fastfail", function()
  for _ = 1, N do
    guard("bench_get", work, fallback)
  end
end)

print(("guard from Lua (median of %d rounds of %d calls)"):format(ROUNDS, N))
print(("  bare call                          %7.1f ns/call"):format(bare))
print(("  mnemo.timeout(1, fn)               %7.1f ns/call  overhead %.1f ns"):format(timed, timed - bare))
print(("  mnemo.guard, success path          %7.1f ns/call  overhead %.1f ns  ratio %.1fx  (target overhead <= 500 ns)")
  :format(guarded, guarded - bare, guarded / bare))
print(("  mnemo.guard, breaker open+fallback %7.1f ns/call  (target <= 1000 ns)"):format(fastfail))
