-- Transaction overhead: a file's store (a DELETE and one multi-row INSERT
-- of 20 chunk rows, the indexer's shape) through conn:transaction (BEGIN,
-- fn under pcall, COMMIT shielded from deadlines with its own limit)
-- against the same statements sent as plain BEGIN ... COMMIT. The
-- specification's target: the wrapper adds < 5 %.
-- Run: build/mnemo-run bench/tx_bench.lua [stores]   (part of `make bench`;
-- needs $MNEMO_PG_DSN, which scripts/run-benches provides)
local mnemo = require "mnemo"

local N = tonumber(arg and arg[1]) or 400
local ROUNDS = 5
local dsn = os.getenv("MNEMO_PG_DSN")
if not dsn then
  print("tx_bench: skipped (no MNEMO_PG_DSN)")
  return
end

mnemo.run(function()
  local conn = assert(mnemo.pg.connect(dsn))
  conn:exec("CREATE TEMP TABLE bench_chunks (file text, idx int, name text, source text)")
  local values, params = {}, {}
  for i = 1, 20 do
    values[#values + 1] = ("($1, %d, $%d, $%d)"):format(i, 2 * i, 2 * i + 1)
    params[2 * i - 1 + 1] = "function_" .. i
    params[2 * i + 1] = ("    return %d\n"):format(i):rep(10)
  end
  params[1] = "pkg/file.py"
  params.n = 41
  local insert = "INSERT INTO bench_chunks VALUES " .. table.concat(values, ", ")
  local function statements(c)
    c:exec("DELETE FROM bench_chunks WHERE file = $1", { "pkg/file.py" })
    c:exec(insert, params)
  end
  local function plain(n)
    for _ = 1, n do
      conn:exec("BEGIN")
      statements(conn)
      conn:exec("COMMIT")
    end
  end
  local function wrapped(n)
    for _ = 1, n do
      conn:transaction(statements)
    end
  end
  -- One round of n stores, the table vacuumed first: a DELETE leaves dead
  -- rows that nothing else vacuums in a temporary table, and whichever
  -- ran second would pay for the first's.
  local function round(fn, n)
    conn:exec("VACUUM bench_chunks")
    local t0 = mnemo.now()
    fn(n)
    return (mnemo.now() - t0) / n * 1e6
  end
  local function median(t)
    table.sort(t)
    return t[(#t + 1) / 2]
  end
  round(plain, math.floor(N / 10))
  round(wrapped, math.floor(N / 10))
  -- Alternated round by round, so both see the same server and load.
  local ps, ws = {}, {}
  for r = 1, ROUNDS do
    ps[r] = round(plain, N)
    ws[r] = round(wrapped, N)
  end
  local p, w = median(ps), median(ws)
  -- The wrapper's own cost, without the rows (steadier than the difference
  -- of two stores on a shared machine): an empty transaction both ways.
  local function empty_plain(n)
    for _ = 1, n do
      conn:exec("BEGIN")
      conn:exec("COMMIT")
    end
  end
  local function empty_wrapped(n)
    for _ = 1, n do
      conn:transaction(function() end)
    end
  end
  local eps, ews = {}, {}
  for r = 1, ROUNDS do
    eps[r] = round(empty_plain, N)
    ews[r] = round(empty_wrapped, N)
  end
  local ep, ew = median(eps), median(ews)
  conn:close()
  print(("transaction wrapper (median of %d alternated rounds of %d stores, 20 rows each)"):format(ROUNDS, N))
  print(("  BEGIN ... COMMIT sent plainly   %8.1f us/store"):format(p))
  print(("  conn:transaction(fn)            %8.1f us/store"):format(w))
  print(("  difference %+.1f %%  (noisy: two stores on a shared server)"):format((w - p) / p * 100))
  print(("  the wrapper alone: empty transaction %.1f us plain, %.1f us wrapped: %+.1f us, %+.1f %% of a store"
    .. "  (target < 5 %%)"):format(ep, ew, ew - ep, (ew - ep) / p * 100))
end)
