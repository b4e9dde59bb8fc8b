-- Error tracking: what one mnemo.errors.record costs on the caller's path
-- (against an empty function call taking the same table, in this process),
-- and how many events per second the flusher writes to PostgreSQL.
-- Run: build/mnemo-run bench/error_record_bench.lua   (part of `make bench`)
-- The PostgreSQL part needs MNEMO_PG_DSN (it creates and drops a scratch
-- database there); without it that part is skipped with a message.
local mnemo = require "mnemo"
local tracking = mnemo.tracking

local N = tonumber(arg and arg[1]) or 200000
local ROUNDS = 5 -- the median of 5 rounds: this machine's timings are noisy
mnemo.log.set_level("critical")

local record = mnemo.errors.record
-- The baseline: an empty function given the same table. (The JIT then
-- builds no table at all; record's outer table is not built either, its
-- fields go to C as arguments: only the context table is.)
local function empty(t)
  return true
end

local function time(fn)
  local samples = {}
  for r = 1, ROUNDS do
    tracking.reset()
    collectgarbage()
    local t0 = mnemo.now()
    fn()
    samples[r] = (mnemo.now() - t0) / N * 1e9
  end
  table.sort(samples)
  return samples[(ROUNDS + 1) / 2]
end

-- The common case: the same failure again and again (aggregated in memory).
local function same(call)
  return function()
    for i = 1, N do
      call { severity = "ERROR", category = "database", service = "indexer", operation = "db_write",
        error_type = "ConnectionError", message = "PostgreSQL: connection to server at 127.0.0.1 refused",
        context = { repository = "sample", file_path = "src/mod.py", attempt = 3 } }
    end
  end
end

-- A flood of distinct failures: every event a new entry (past the
-- capacity, each one also drops the oldest).
local messages = {}
for i = 1, N do
  messages[i] = "parse failed at line " .. i
end
local function distinct(call)
  return function()
    for i = 1, N do
      call { severity = "WARNING", category = "parse", service = "indexer", operation = "parse_file",
        error_type = "ParseError", message = messages[i], context = { repository = "sample", file_path = "src/mod.py" } }
    end
  end
end

local base_same = time(same(empty))
local rec_same = time(same(record))
local base_distinct = time(distinct(empty))
local rec_distinct = time(distinct(record))
local c = tracking.counters()

print(("mnemo.errors.record on the caller's path (median of %d rounds of %d calls)"):format(ROUNDS, N))
print(("  empty function, same table         %7.1f ns/op"):format(base_same))
print(("  record, identical events           %7.1f ns/op  overhead %.1f ns  ratio %.1fx  (target <= 1000 ns)")
  :format(rec_same, rec_same - base_same, rec_same / base_same))
print(("  empty function, distinct messages  %7.1f ns/op"):format(base_distinct))
print(("  record, distinct events            %7.1f ns/op  overhead %.1f ns  ratio %.1fx  (target <= 1000 ns)")
  :format(rec_distinct, rec_distinct - base_distinct, rec_distinct / base_distinct))
print(("  (last round: %d recorded, %d queued, %d dropped beyond capacity %d)"):format(c.recorded,
  c.queue_length, c.dropped, c.capacity))

local dsn = os.getenv("MNEMO_PG_DSN")
if not dsn or dsn == "" then
  print("flush to PostgreSQL: skipped (set MNEMO_PG_DSN, e.g. from scripts/pg-server start DIR)")
  return
end

-- A scratch database on that server, dropped at the end.
local name = ("mnemo_bench_%d"):format(require("luv").os_getpid())
local admin = assert(mnemo.pg.connect(dsn))
admin:exec("DROP DATABASE IF EXISTS " .. name)
admin:exec("CREATE DATABASE " .. name)
local bench_dsn = dsn:gsub("/[^/]*$", "/" .. name)
local conn = assert(mnemo.pg.connect(bench_dsn))
mnemo.pg.migrate(conn, mnemo.pg.MIGRATIONS)
conn:close()

mnemo.configure(assert(mnemo.policy.check("policies/default.lua")))

local runs = 0
local function flush_rate(label, events, distinct_n, batch)
  tracking.reset()
  tracking.configure { error_tracking = { capacity = distinct_n, batch = batch } }
  runs = runs + 1
  local service = "bench" .. runs -- rows of their own: inserts, not updates
  for i = 1, events do
    record { severity = "ERROR", category = "database", service = service, operation = "db_write",
      error_type = "ConnectionError", message = messages[(i - 1) % distinct_n + 1],
      context = { repository = "bench", attempt = i } }
  end
  local t0 = mnemo.now()
  local n = assert(tracking.flush { dsn = bench_dsn })
  local dt = mnemo.now() - t0
  assert(n == events, ("flushed %d of %d"):format(n, events))
  print(("  %-34s %8.0f events/s  %7.0f rows/s  (%d events, %d rows, batches of %d, %.3f s)")
    :format(label, events / dt, distinct_n / dt, events, distinct_n, batch, dt))
end

print("flush to PostgreSQL (one INSERT ... ON CONFLICT per batch)")
local ok, err = pcall(function()
  flush_rate("distinct events", 50000, 50000, 500)
  flush_rate("distinct events, batches of 2000", 50000, 50000, 2000)
  flush_rate("aggregated (100 per row)", 200000, 2000, 500)
end)
tracking.reset()
admin:exec("DROP DATABASE IF EXISTS " .. name)
admin:close()
if not ok then
  error(err, 0)
end
