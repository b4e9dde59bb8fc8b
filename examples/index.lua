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

-- A database that cannot be reached (or a DSN libpq refuses) ends the run
-- with one line: the error, its password scrubbed by mnemo.pg. The connect
-- has a deadline ($MNEMO_PG_CONNECT_TIMEOUT seconds, default 10).
local conn, cerr = mnemo.pg.connect(os.getenv("MNEMO_PG_DSN"))
if not conn then
  io.stderr:write("index: ", (tostring(cerr):gsub("\n%s*", " ")), "\n")
  os.exit(1)
end
local applied = mnemo.pg.migrate(conn, mnemo.pg.MIGRATIONS)
-- pgvector mode when the server has the extension: its one-time set-up
-- (column, index) is done here rather than under the first search's deadline.
local vmode = assert(require("mnemo.vector").ensure(conn))
conn:close()
if #applied > 0 then
  print("schema: applied " .. table.concat(applied, ", "))
end
print("vector search: " .. vmode.label)

-- Errors go to error_logs; health, metrics and the dashboard are served
-- while the run lasts ($MNEMO_HTTP_ADDR, else a free loopback port).
mnemo.tracking.start {}
-- A breaker that was open when the last run stopped (less than its
-- recovery_timeout ago) is open again for the time it had left; every
-- transition is saved (circuit_breaker_state, lua/mnemo/breaker_store.lua).
mnemo.breaker_store.start {}
local server, serr = mnemo.http.serve { addr = os.getenv("MNEMO_HTTP_ADDR") or "127.0.0.1:0" }
if server then
  print(("serving %s/health  %s/metrics  %s/monitoring/errors"):format(server:url(), server:url(), server:url()))
else
  print("not serving HTTP: " .. tostring(serr))
end

-- L1 + Redis ($MNEMO_REDIS_URL) by default; Redis down means L1 only.
local report = mnemo.index { root = root, repository = repository, progress = true }
mnemo.indexer.print_report(report)

local hits = mnemo.search { query = "parse request", repository = repository, k = 3 }
print(("search \"parse request\" (%s):"):format(hits.mode))
for i, h in ipairs(hits) do
  print(("  %d. %s %s:%d-%d  score %.3f"):format(i, h.name_path, h.file_path, h.start_line, h.end_line, h.score))
end
mnemo.breaker_store.stop { flush = true }
mnemo.tracking.stop { flush = true }
if server then
  server:close()
end
