-- guard() overhead from Lua, with default logging on (level info, the
-- buffered sink, failure summaries), against a bare call and against the
-- Node.js peers (bench/peers/: opossum, cockatiel) measured in the same
-- command, for the same shapes: an operation with a per-attempt timeout,
-- a retry policy and a breaker;
--   success        the breaker closed, fn returns a value;
--   open           the breaker open, no fallback: mnemo.try returns nil,
--                  err (mnemo.guard raises; both are shown);
--   open+fallback  the breaker open, a fallback answers.
-- Bytes allocated per call are counted with the collector stopped.
-- Run: build/mnemo-run bench/guard_bench.lua [calls] [peer_calls]
--      (part of `make bench`; the peers are skipped when not installed)
local mnemo = require "mnemo"
local cjson = require "cjson.safe"

local N = tonumber(arg and arg[1]) or 400000
local PEER_N = tonumber(arg and arg[2]) or 20000
local ROUNDS = 5 -- the median of 5 rounds: this machine's timings are noisy

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

local function time(fn)
  local samples = {}
  fn(math.floor(N / 10)) -- warm up (the JIT, the tables the calls reuse)
  for r = 1, ROUNDS do
    collectgarbage()
    local t0 = mnemo.now()
    fn(N)
    samples[r] = (mnemo.now() - t0) / N * 1e9
  end
  table.sort(samples)
  return samples[(ROUNDS + 1) / 2]
end

-- Bytes allocated per call in steady state: the collector stopped, the
-- heap measured before and after.
local function bytes_per_call(fn)
  fn(1000)
  collectgarbage()
  collectgarbage("stop")
  local before = collectgarbage("count")
  fn(100000)
  local after = collectgarbage("count")
  collectgarbage("restart")
  return (after - before) * 1024 / 100000
end

local guard, try = mnemo.guard, mnemo.try

local shapes = {}
local function shape(name, label, fn)
  shapes[#shapes + 1] = { name = name, label = label, ns = time(fn), bytes = bytes_per_call(fn) }
end

shape("bare", "bare call", function(n)
  for _ = 1, n do
    work()
  end
end)
shape("success", "mnemo.guard, success", function(n)
  for _ = 1, n do
    guard("bench_get", work)
  end
end)
shape("success_try", "mnemo.try, success", function(n)
  for _ = 1, n do
    try("bench_get", work)
  end
end)

local b = mnemo.breaker.get("bench")
for _ = 1, 5 do
  pcall(b.call, b, function()
    error(mnemo.error("connection", "refused"))
  end)
end
assert(b:state() == "open")
local fallback = { fallback = function()
  return nil
end }
shape("open", "mnemo.try, open (nil, err)", function(n)
  for _ = 1, n do
    try("bench_get", work)
  end
end)
shape("open_raise", "mnemo.guard, open (raises; pcall)", function(n)
  for _ = 1, n do
    pcall(guard, "bench_get", work)
  end
end)
shape("open_fallback", "mnemo.guard, open + fallback", function(n)
  for _ = 1, n do
    guard("bench_get", work, fallback)
  end
end)
mnemo.log.flush()

-- The peers, in the same command.
local peers = {}
do
  local p = io.popen("bench/peers/run " .. PEER_N .. " 2>/dev/null")
  local out = p and p:read("*a")
  if p then
    p:close()
  end
  peers = (out and cjson.decode(out)) or {}
end

local by = {}
for _, s in ipairs(shapes) do
  by[s.name] = s
end
local bare = by.bare.ns

print(("guard from Lua, default logging on (median of %d rounds of %d calls)"):format(ROUNDS, N))
for _, s in ipairs(shapes) do
  print(("  %-36s %7.1f ns/call  %5.1f B/call"):format(s.label, s.ns, s.bytes))
end
print(("  success overhead over a bare call   %7.1f ns  (target: success <= 300 ns, 0 B)"):format(by.success.ns - bare))
print("  targets: open <= 1000 ns with and without a fallback, and <= 0.5x opossum")
local names = {}
for name in pairs(peers) do
  if type(peers[name]) == "table" then
    names[#names + 1] = name
  end
end
table.sort(names)
if #names == 0 then
  print("  peers: none installed (bench/peers/run printed nothing); no ratios")
end
for _, name in ipairs(names) do
  local p = peers[name]
  print(("  vs %s %s (node %s, %d calls a round): mnemo / peer"):format(name, tostring(p.version),
    tostring(peers.node), PEER_N))
  for _, pair in ipairs { { "success", "success" }, { "open", "open" }, { "open_fallback", "open_fallback" } } do
    local mine, theirs = by[pair[1]].ns, p[pair[2]]
    if theirs then
      print(("    %-14s mnemo %7.1f ns  %s %9.1f ns  ratio %.3f"):format(pair[1], mine, name, theirs, mine / theirs))
    end
  end
end
