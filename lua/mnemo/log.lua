-- Structured logging: one JSON object per line on stderr.
local cjson = require "cjson.safe"

local _M = {}

local levels = { debug = 10, info = 20, warn = 30, error = 40, critical = 50 }
local threshold = levels[(os.getenv("MNEMO_LOG_LEVEL") or "info"):lower()] or 20
local sink = function(line)
  io.stderr:write(line, "\n")
end

-- log.emit("warn", "timeout", { operation = ..., ... })
function _M.emit(level, event, fields)
  if (levels[level] or 40) < threshold then
    return
  end
  local record = { ts = os.time(), level = level, event = event }
  if fields then
    for k, v in pairs(fields) do
      if record[k] == nil then
        local t = type(v)
        record[k] = (t == "table" or t == "number" or t == "string" or t == "boolean") and v
          or tostring(v)
      end
    end
  end
  local line = cjson.encode(record)
  if not line then
    line = cjson.encode({ ts = record.ts, level = level, event = event, note = "unencodable fields" })
  end
  sink(line)
end

-- Whether a line at this level would be written (to skip building fields).
function _M.enabled(level)
  return (levels[level] or 40) >= threshold
end

-- For tests: capture lines instead of writing them. Returns the old sink.
function _M.set_sink(fn)
  local old = sink
  sink = fn
  return old
end

function _M.set_level(name)
  threshold = assert(levels[name], "unknown log level")
end

return _M
