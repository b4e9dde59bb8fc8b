-- Correlation ids: one per unit of work (an indexed file, an HTTP request,
-- a guarded call started outside both), held by the task that runs it and
-- inherited by the tasks it spawns, so that every log line, error event
-- and client call made for that work names the same id.
--
--   correlation.current()          -> the id of the running task, or nil
--   correlation.with(id, fn, ...)  -> fn(...) with `id` in force (restored
--                                     after, also when fn raises)
--   correlation.new()              -> a fresh id, "<8 hex>-<counter hex>"
--   correlation.named()            -> current(), but nil for a guard's id
--                                     nobody has read yet
--   correlation.begin() / finish(token)
--                                  the guard's own: an id for a call made
--                                  outside any; costs no allocation until
--                                  the id is read
--
-- Rules:
-- - The id belongs to the coroutine, not to a global: two tasks interleaving
--   on the loop never see each other's id (a global "current request" is
--   the classic bug of callback servers).
-- - The guard's per-call id is a number until something reads it (a log
--   line, an error event); reading turns it into the string once. So the
--   success path, which reads nothing, allocates nothing.
-- - Ids are unique across processes: the prefix is random per process (a
--   pid repeats across machines and restarts; workers share one database).
local core = require "mnemo_core"

local running, type, format = coroutine.running, type, string.format

local _M = {}

local MAIN = {} -- the main thread's key: coroutine.running() is nil there
local ids = setmetatable({}, { __mode = "k" }) -- coroutine -> id (string, or a number not yet formatted)

local function random_prefix()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(4)
  if f then
    f:close()
  end
  if not bytes or #bytes < 4 then
    return format("%08x", (os.time() * 2654435761 + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0)) % 2 ^ 32)
  end
  return format("%02x%02x%02x%02x", bytes:byte(1, 4))
end

local prefix = random_prefix()
local counter = 0

local function format_id(n)
  return format("%s-%x", prefix, n)
end

function _M.new()
  counter = counter + 1
  return format_id(counter)
end

function _M.current()
  local key = running() or MAIN
  local id = ids[key]
  if type(id) == "number" then
    id = format_id(id)
    ids[key] = id
  end
  return id
end

-- The id only if someone has seen it: one set by `with` (a request, a
-- file), or a guard's that was read (a log line, fn itself). A guard's
-- unread id is nil: nothing else carries it, so recording it (an error
-- event per fast-fail) would format a string per call that nobody can
-- search for.
function _M.named()
  local id = ids[running() or MAIN]
  if type(id) == "string" then
    return id
  end
  return nil
end

local function restore(key, previous, ok, ...)
  ids[key] = previous
  if not ok then
    error((...), 0)
  end
  return ...
end

function _M.with(id, fn, ...)
  if id ~= nil and type(id) ~= "string" then
    error("correlation.with: expected a string id, got " .. type(id), 2)
  end
  local key = running() or MAIN
  local previous = ids[key]
  ids[key] = id
  return restore(key, previous, pcall(fn, ...))
end

-- For the guard: returns a token when it set an id (the call runs outside
-- any), nil when one was already in force. finish(token) clears it.
function _M.begin()
  local key = running() or MAIN
  if ids[key] ~= nil then
    return nil
  end
  counter = counter + 1
  ids[key] = counter
  return key
end

function _M.finish(key)
  if key then
    ids[key] = nil
  end
end

-- A task spawned by a task with an id runs under the same id.
local spawn = core.spawn
function _M.spawn(fn, ...)
  local id = ids[running() or MAIN]
  if id == nil then
    return spawn(fn, ...)
  end
  if type(id) == "number" then
    id = _M.current()
  end
  return spawn(function(...)
    ids[running()] = id
    return fn(...)
  end, ...)
end

return _M
