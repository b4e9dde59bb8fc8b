-- The stress run (scripts/run-stress): run by mnemo-run, with
-- MNEMO_PG_DSN (and MNEMO_REDIS_URL) set.
--   mnemo-run --policy P tests/chaos/stress.lua gen DIR N SEED   write the corpus
--   mnemo-run --policy P tests/chaos/stress.lua index DIR         index it, check, report
-- `index` migrates, indexes DIR (concurrency 4, files up to 8 MB so the
-- pathological ones reach the parser), checks that every file is accounted
-- for (indexed + unchanged + skipped + failed == total, with reasons), that
-- the database holds exactly the indexed files with no duplicate chunk,
-- prints "STRESS ..." lines and exits 1 on a mismatch.
package.path = "tests/tools/?.lua;" .. package.path
local mnemo = require "mnemo"
local mode, dir = arg[1], arg[2]

if mode == "gen" then
  local corpus = require "corpus"
  local made = corpus.generate(dir, tonumber(arg[3]), { seed = tonumber(arg[4] or "1"), pathological = tonumber(os.getenv("STRESS_PATHOLOGICAL") or "0.001") })
  print(("STRESS corpus %s: %d files, %d pathological (%s)"):format(dir, made.files, #made.pathological,
    table.concat(made.pathological, " ")))
  return
end
assert(mode == "index", "usage: stress.lua gen DIR N SEED | index DIR")

mnemo.log.set_level("error")
local dsn = os.getenv("MNEMO_PG_DSN")
local c = assert(mnemo.pg.connect(dsn))
mnemo.pg.migrate(c, mnemo.pg.MIGRATIONS)
c:close()

local t0 = mnemo.now()
local r = mnemo.index { root = dir, repository = "stress", concurrency = 4, max_file_bytes = 8 * 1024 * 1024,
  backfill = false, progress = true }
local wall = mnemo.now() - t0

local function vm(key)
  local f = io.open("/proc/self/status")
  local text = f:read("*a")
  f:close()
  return tonumber(text:match(key .. ":%s*(%d+)"))
end

local reasons = {}
for k, v in pairs(r.reasons) do
  reasons[#reasons + 1] = k .. "=" .. v
end
table.sort(reasons)
local accounted = r.files_indexed + r.files_unchanged + r.files_skipped + r.files_failed
c = assert(mnemo.pg.connect(dsn))
local db = c:exec([[SELECT count(DISTINCT file_path) AS files, count(*) AS chunks,
  (SELECT count(*) FROM (SELECT 1 FROM code_chunks WHERE repository = 'stress'
     GROUP BY file_path, chunk_index HAVING count(*) > 1) d) AS dups
  FROM code_chunks WHERE repository = 'stress']])[1]
c:close()
print(("STRESS files=%d indexed=%d unchanged=%d skipped=%d failed=%d accounted=%d reasons=%s"):format(r.files_total,
  r.files_indexed, r.files_unchanged, r.files_skipped, r.files_failed, accounted, table.concat(reasons, ",")))
print(("STRESS db files=%d chunks=%d duplicate_chunks=%d (report chunks=%d)"):format(db.files, db.chunks, db.dups,
  r.chunks))
print(("STRESS index wall=%.2fs files/s=%.0f VmHWM=%d kB VmRSS=%d kB"):format(wall, r.files_total / wall,
  vm("VmHWM"), vm("VmRSS")))
local ok = accounted == r.files_total and db.files == r.files_indexed + r.files_unchanged and db.dups == 0
  and db.chunks == r.chunks
print(ok and "STRESS ok" or "STRESS MISMATCH")
os.exit(ok and 0 or 1)
