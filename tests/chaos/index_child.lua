-- Run by the chaos specs as a separate process:
--   mnemo-run --policy P tests/chaos/index_child.lua ROOT REPOSITORY [CONCURRENCY]
-- with MNEMO_PG_DSN (and optionally MNEMO_REDIS_URL) set; indexes ROOT
-- and prints one line: indexed=N unchanged=N skipped=N failed=N total=N reasons=...
local mnemo = require "mnemo"
local root, repository, concurrency = arg[1], arg[2], tonumber(arg[3] or "4")
local r = mnemo.index { root = root, repository = repository, concurrency = concurrency, backfill = false }
local reasons = {}
for k, v in pairs(r.reasons) do
  reasons[#reasons + 1] = k .. ":" .. v
end
table.sort(reasons)
print(("indexed=%d unchanged=%d skipped=%d failed=%d total=%d reasons=%s"):format(r.files_indexed,
  r.files_unchanged, r.files_skipped, r.files_failed, r.files_total, table.concat(reasons, ",")))
