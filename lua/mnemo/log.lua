-- Structured logging: one JSON object per line on stderr. String field
-- values that could hold a secret go through the error tracker's scrubber
-- (runtime/core/error_track.c: DSN passwords, tokens, key=value secrets, home
-- directories) before they are written.
local cjson = require "cjson.safe"
local scrub = require("mnemo_core").error_scrub

local find, type, pairs, tostring = string.find, type, pairs, tostring

local _M = {}

-- Every secret mnemo_scrub masks comes with an '=' or a ':' (URIs,
-- name=value, "Authorization: Bearer", "password: x") or the word
-- "Bearer": a value with none of them is written as it is, without a call.
local function clean(v)
  if find(v, "=", 1, true) or find(v, ":", 1, true) or find(v, "earer", 1, true) or find(v, "EARER", 1, true) then
    return scrub(v)
  end
  return v
end

-- A table value: its string values one level down (a copy, only when one
-- changes; the caller's table is left alone).
local function clean_table(t)
  local copy
  for k, v in pairs(t) do
    if type(v) == "string" then
      local c = clean(v)
      if c ~= v then
        if not copy then
          copy = {}
          for k2, v2 in pairs(t) do
            copy[k2] = v2
          end
        end
        copy[k] = c
      end
    end
  end
  return copy or t
end

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
        if t == "string" then
          v = clean(v)
        elseif t == "table" then
          v = clean_table(v)
        elseif t ~= "number" and t ~= "boolean" then
          v = clean(tostring(v))
        end
        record[k] = v
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
