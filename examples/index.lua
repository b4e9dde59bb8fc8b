-- mnemo-run examples/index.lua [PATH [REPOSITORY]]
-- Indexes a source tree into PostgreSQL ($MNEMO_PG_DSN) with Redis
-- ($MNEMO_REDIS_URL, optional) in front, then prints the report and a
-- sample search. `make run` runs it on examples/sample-repo.
local mnemo = require "mnemo"

local root = arg[1] or "examples/sample-repo"
local repository = arg[2] or root:match("([^/]+)/*$")
if not mnemo.policy.status().path then
  assert(mnemo.policy.load("policies/default.lua"))
end
mnemo.log.set_level(os.getenv("MNEMO_LOG_LEVEL") or "error")

local conn = assert(mnemo.pg.connect(os.getenv("MNEMO_PG_DSN")))
local applied = mnemo.pg.migrate(conn, mnemo.pg.MIGRATIONS)
conn:close()
if #applied > 0 then
  print("schema: applied " .. table.concat(applied, ", "))
end

local l1 = mnemo.cache.new { max_bytes = 32 * 1024 * 1024 }
local redis
local url = os.getenv("MNEMO_REDIS_URL")
if url and url ~= "" then
  local err
  redis, err = mnemo.redis.connect(url)
  if not redis then
    print("redis unavailable (" .. tostring(err) .. "): L1 cache only")
  end
end
local cache = mnemo.cache.cascade { l1 = l1, redis = redis }

local report = mnemo.index { root = root, repository = repository, cache = cache, progress = true }
mnemo.indexer.print_report(report)

local hits = mnemo.search { query = "parse request", repository = repository, k = 3 }
print(("search \"parse request\" (%s):"):format(hits.mode))
for i, h in ipairs(hits) do
  print(("  %d. %s %s:%d-%d  score %.3f"):format(i, h.name_path, h.file_path, h.start_line, h.end_line, h.score))
end
if redis then
  redis:close()
end
