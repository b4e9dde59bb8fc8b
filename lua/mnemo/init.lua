-- mnemo: the Lua face of the runtime. The native half is mnemo_core (linked
-- into mnemo-run, or build/mnemo_core.so under plain luajit); this file adds
-- what is easier to say in Lua.
local uv = require "luv" -- first, so the native half shares luv's loop
local core = require "mnemo_core"
local closing = require "mnemo.closing"
local log = require "mnemo.log"
local timeout = require "mnemo.timeout"
local errors = require "mnemo.errors"
local guard = require "mnemo.guard"
local indexer = require "mnemo.indexer"
local query = require "mnemo.query"

local select, pack, unpack = select, table.pack, unpack

if not pack then
  pack = function(...)
    return { n = select("#", ...), ... }
  end
end

local _M = {
  version = core.version,
  now = core.now,
  sleep = timeout.sleep,
  timeout = timeout.timeout,
  shield = timeout.shield,
  await = timeout.await,
  remaining = timeout.remaining,
  errors = errors,
  tracking = require "mnemo.tracking",
  error = errors.new,
  log = require "mnemo.log",
  guard = guard.guard,
  try = guard.try,
  log_summary = require "mnemo.log_summary",
  retry = guard.retry,
  configure = guard.configure,
  explain = guard.explain,
  stats = guard.stats,
  breaker = require "mnemo.breaker",
  breaker_store = require "mnemo.breaker_store",
  bulkhead = require "mnemo.bulkhead",
  policy = require "mnemo.policy",
  degrade = require "mnemo.degrade",
  pg = require "mnemo.pg",
  redis = require "mnemo.redis",
  http = require "mnemo.http",
  monitor = require "mnemo.monitor",
  cache = require "mnemo.cache",
  chunker = require "mnemo.chunker",
  embed = require "mnemo.embed",
  indexer = indexer,
  index = indexer.index,
  search = query.search,
  chunks = query.chunks,
  graph = { neighbors = query.neighbors },
  spawn = require("mnemo.correlation").spawn, -- the child inherits the correlation id
  correlation = require "mnemo.correlation",
  clock = core.clock,
  hosted = core.hosted,
  uv = uv,
}

-- Runs fn(...) as a task and returns what it returns. From plain luajit
-- (busted specs, tools) it drives the loop until the task is done. The
-- task's own error is raised as the original value (so `err.kind` survives
-- a pcall); an uncaught error of another task or of a luv callback started
-- meanwhile is raised as text with its traceback. Inside a task (under
-- mnemo-run) it simply calls fn.
function _M.run(fn, ...)
  if core.in_task() then
    return fn(...)
  end
  local results
  core.spawn(function(...)
    results = pack(pcall(fn, ...))
  end, ...)
  core.run_until(function()
    return results ~= nil
  end)
  -- The close callbacks of handles the task closed last must run now (luv
  -- calls into Lua from them: left for lua_close, they crashed it).
  closing.drain()
  log.flush()
  if not results[1] then
    error(results[2], 0)
  end
  return unpack(results, 2, results.n)
end

return _M
