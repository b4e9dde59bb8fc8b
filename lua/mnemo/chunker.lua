-- Tree-sitter chunks of a source file, parsed on the uv thread pool while
-- the calling task waits (runtime/lua/lua_chunker.c, runtime/core/chunker.c).
--
--   chunker.chunk{ language = "python" | path = "x.py", source = text,
--                  max_chunk_lines = 200, max_chunk_bytes = 16384 }
--     -> { { kind, name, name_path, start_line, end_line, source,
--            refs = { { kind = "call" | "import", name = ... }, ... } }, ... }
--     | nil, err (err.kind "invalid_input" for bad arguments, an unknown
--       language or a source nested too deeply to parse safely)
--
-- The first chunk is the module chunk (kind "module", name_path
-- "<module>") when any non-blank line lies outside every definition.
-- Inside a deadline (mnemo.timeout, guard), an expiry raises the
-- TimeoutError at the wait, like any wait, and cancels the parse: the pool
-- thread is freed at tree-sitter's next check of the flag.
local core = require "mnemo_core"
local timeout = require "mnemo.timeout"
local errors = require "mnemo.errors"

local type, pcall, error, tostring, floor = type, pcall, error, tostring, math.floor

local _M = {}

_M.languages = { "c", "javascript", "lua", "python" }

local KNOWN = "c, javascript, lua, python"
local EXTENSIONS = ".py, .js, .mjs, .cjs, .jsx, .c, .h, .lua"

-- The language of a path, by its extension, or nil.
function _M.language_for(path)
  if type(path) ~= "string" then
    return nil
  end
  return core.chunk_language_for(path)
end

local function invalid(message, fields)
  return nil, errors.new("invalid_input", "chunker: " .. message, fields)
end

local function check_limit(value, name)
  if value == nil then
    return 0
  end
  if type(value) ~= "number" or value < 1 or value ~= floor(value) or value >= 2 ^ 31 then
    return nil, ("%s: expected a whole number >= 1, got %s"):format(name, tostring(value))
  end
  return value
end

local FAILURES = {
  cancelled = { "cancelled", "the parse was cancelled" },
  too_deep = { "invalid_input", "the source nests brackets too deeply to be parsed safely" },
  nomem = { "unknown", "out of memory" },
}

function _M.chunk(opts)
  if type(opts) ~= "table" then
    return invalid("expected a table { language = ..., source = ... }, got " .. type(opts))
  end
  local source = opts.source
  if type(source) ~= "string" then
    return invalid("source: expected a string, got " .. type(source))
  end
  local language = opts.language
  if language == nil then
    if opts.path == nil then
      return invalid("no language given (set language or path)")
    end
    language = _M.language_for(opts.path)
    if not language then
      return invalid(("no language known for path %q (known extensions: %s)"):format(tostring(opts.path),
        EXTENSIONS), { path = opts.path })
    end
  elseif type(language) ~= "string" or not core.chunk_language(language) then
    return invalid(("unknown language %q (known: %s)"):format(tostring(language), KNOWN),
      { language = language, path = opts.path })
  end
  local max_lines, lerr = check_limit(opts.max_chunk_lines, "max_chunk_lines")
  if not max_lines then
    return invalid(lerr)
  end
  local max_bytes, berr = check_limit(opts.max_chunk_bytes, "max_chunk_bytes")
  if not max_bytes then
    return invalid(berr)
  end
  if not core.in_task() then
    error("chunker.chunk: not inside a task (wrap the caller in mnemo.run or mnemo.spawn)", 2)
  end

  local handle, start_err
  local ok, chunks, status = pcall(timeout.await, function(wake)
    local h, err = core.chunk_start(language, source, max_lines, max_bytes, wake)
    if not h then
      start_err = err
      wake(nil, "start")
      return
    end
    handle = h
  end)
  if not ok then
    -- The deadline expired (or the wait was otherwise undone): stop the
    -- parse so its pool thread is free again, then let the error go on.
    if handle then
      handle:cancel()
    end
    error(chunks, 0)
  end
  if chunks then
    return chunks
  end
  if start_err then
    return nil, errors.new("unknown", "chunker: could not start: " .. tostring(start_err), { language = language })
  end
  local failure = FAILURES[status] or { "unknown", tostring(status) }
  return nil, errors.new(failure[1], "chunker: " .. failure[2], { language = language, path = opts.path })
end

return _M
