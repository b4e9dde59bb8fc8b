-- The built-in embedder, inline (on the loop thread) against the uv thread
-- pool (runtime/loop/embed_job.c): embeddings per second for batches of
-- 1, 16 and 256 texts, the ratio pool/inline, the loop thread's CPU time
-- per batch and the longest the loop went without running a 1 ms timer;
-- then four tasks at once, and the crossover below which embed.hashing
-- stays inline (embed.INLINE_COST). The loop's and the process's CPU time
-- come from clock_gettime (CLOCK_THREAD_CPUTIME_ID) and os.clock.
-- Run: build/mnemo-run bench/embed_bench.lua [text_bytes]   (make bench)
local mnemo = require "mnemo"
local embed = require "mnemo.embed"
local uv = require "luv"
local ffi = require "ffi"

ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } mnemo_bench_timespec;
  int clock_gettime(int clock, mnemo_bench_timespec *ts);
]]
local CLOCK_THREAD_CPUTIME_ID = 3
local ts = ffi.new("mnemo_bench_timespec")
-- CPU seconds of the calling (the loop's) thread.
local function thread_cpu()
  ffi.C.clock_gettime(CLOCK_THREAD_CPUTIME_ID, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local TEXT_BYTES = tonumber(arg and arg[1]) or 1024 -- about a function's chunk
local DIMS = 384
local ROUNDS = 5 -- the median of 5: this machine's timings are noisy
local SECONDS = 0.25 -- per round and mode

local LINE = "  local result = parseHttpRequest(conn, buffer_size) + self.total_count\n"
local function chunks_of(n, bytes)
  local out = {}
  for i = 1, n do
    out[i] = { name_path = "Module.fn" .. i, source = (LINE):rep(math.ceil(bytes / #LINE)):sub(1, bytes - 12) .. i }
  end
  return out
end

local inline = embed.hashing(DIMS, { inline_cost = math.huge })
local pool = embed.hashing(DIMS, { inline_cost = 0 })
local auto = embed.hashing(DIMS)

-- Runs fn(chunks) in `tasks` tasks for about SECONDS; returns batches per
-- second, loop CPU seconds per batch and the longest gap between two runs
-- of a 1 ms timer.
local function round(fn, chunks, tasks)
  local batches, running, stop, finished = 0, tasks, false, nil
  local gap, last = 0, uv.hrtime()
  local timer = uv.new_timer()
  timer:start(1, 1, function()
    local now = uv.hrtime()
    gap = math.max(gap, (now - last) / 1e9)
    last = now
  end)
  collectgarbage()
  local t0, c0, p0 = mnemo.now(), thread_cpu(), os.clock()
  for _ = 1, tasks do
    mnemo.spawn(function()
      while not stop do
        fn(chunks)
        batches = batches + 1
        if mnemo.now() - t0 >= SECONDS then
          stop = true
        end
      end
      running = running - 1
      if running == 0 and finished then
        finished()
      end
    end)
  end
  if running > 0 then
    mnemo.await(function(wake)
      finished = wake
    end)
  end
  local wall, cpu, pcpu = mnemo.now() - t0, thread_cpu() - c0, os.clock() - p0
  -- Inline work never lets the timer run: the stall is then the whole
  -- round.
  gap = math.max(gap, (uv.hrtime() - last) / 1e9)
  timer:close()
  return batches / wall, cpu / batches, gap, pcpu / batches
end

-- Medians of each figure over ROUNDS rounds.
local function median(fn, chunks, tasks)
  local figures = { {}, {}, {}, {} }
  for r = 1, ROUNDS do
    local f = { round(fn, chunks, tasks) }
    for k = 1, 4 do
      figures[k][r] = f[k]
    end
  end
  local m = (ROUNDS + 1) / 2
  for k = 1, 4 do
    table.sort(figures[k])
    figures[k] = figures[k][m]
  end
  return unpack(figures)
end

mnemo.log.set_level("critical")
print(("embed.hashing, %d dims, texts of %d bytes (median of %d rounds of %.2f s)"):format(DIMS, TEXT_BYTES,
  ROUNDS, SECONDS))
print("  batch  tasks   inline emb/s     pool emb/s   ratio pool/inline   loop CPU/batch inline, pool"
  .. "   max loop stall inline, pool   default (mode) emb/s")
for _, case in ipairs { { 1, 1 }, { 16, 1 }, { 256, 1 }, { 16, 4 }, { 256, 4 } } do
  local n, tasks = case[1], case[2]
  local chunks = chunks_of(n, TEXT_BYTES)
  local ri, ci, gi = median(inline, chunks, tasks)
  local rp, cp, gp = median(pool, chunks, tasks)
  local ra = median(auto, chunks, tasks)
  local mode = n * (TEXT_BYTES + DIMS) >= embed.INLINE_COST and "pool" or "inline"
  print(("  %5d  %5d  %13.0f  %13.0f   %17.2f   %11.1f us, %8.1f us   %11.2f ms, %6.2f ms   %12.0f (%s)"):format(n,
    tasks, ri * n, rp * n, rp / ri, ci * 1e6, cp * 1e6, gi * 1e3, gp * 1e3, ra * n, mode))
end

-- The crossover: a file's batch (8 chunks) of growing chunks, one task.
-- The pool spends CPU of its own on every batch (the thread hand-off, the
-- copies, the result strings); it pays once the loop-thread time it saves
-- is larger than that, and the round trip is small beside the work.
print(("crossover, batches of 8 chunks (embed.INLINE_COST = %d: bytes of text + %d per vector)"):format(
  embed.INLINE_COST, DIMS))
print("   chunk bytes    cost   us/batch inline, pool   loop CPU us inline, pool   process CPU us inline, pool   default")
for _, bytes in ipairs { 64, 256, 512, 1024, 2048, 4096, 8192, 16384 } do
  local chunks = chunks_of(8, bytes)
  local ri, ci, _, pi = median(inline, chunks, 1)
  local rp, cp, _, pp = median(pool, chunks, 1)
  local cost = 8 * (bytes + DIMS) -- a text of chunks_of(n, bytes) is bytes long
  print(("  %12d  %6d  %11.1f, %9.1f  %13.1f, %9.1f  %16.1f, %9.1f   %s"):format(bytes, cost, 1e6 / ri, 1e6 / rp,
    ci * 1e6, cp * 1e6, pi * 1e6, pp * 1e6, cost >= embed.INLINE_COST and "pool" or "inline"))
end
local chunks = chunks_of(256, TEXT_BYTES)
assert(table.concat(auto(chunks)) == table.concat(inline(chunks)) and table.concat(pool(chunks)) ==
  table.concat(inline(chunks)), "pool and inline literals differ")
