-- Policy files: Lua files that return the configuration table, evaluated in
-- a sandbox, validated, applied as one generation, and reloaded when the
-- file changes (fs event + stat poll, debounced), on SIGHUP, or on demand.
-- A broken file is rejected with every problem listed; the policy in force
-- stays. Breakers keep their live state across every reload.
local uv = require "luv"
local sandbox = require "mnemo.sandbox"
local config = require "mnemo.config"
local guard = require "mnemo.guard"
local log = require "mnemo.log"
local core = require "mnemo_core"

local type, pairs, tostring, format = type, pairs, tostring, string.format

local _M = {}

local state = {
  path = nil,         -- the file in force (or last tried)
  generation = 0,     -- bumped by every successful load
  hash = nil,         -- of the file text in force
  loaded_at = nil,    -- os.time() of the generation in force
  last_error = nil,   -- text of the last rejected load, or nil
  reloads = 0,        -- successful loads
  errors = 0,         -- rejected loads
  watching = nil,     -- { fs_event, fs_poll, debounce, signal }
  options = {},
}

-- FNV-1a, 32 bit (in C): enough to tell two versions of a file apart.
local hash = core.hash

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, err
  end
  local text = f:read("*a")
  f:close()
  return text
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local MAX_INCLUDE_DEPTH = 4

-- A policy is plain data. A table with a metatable would run the policy's
-- code whenever the validator or the guard reads it (__index, __newindex,
-- __tostring...), outside the sandbox's instruction budget: refused.
-- Walks every table reachable through keys and values (raw, no recursion).
local function has_metatable(root)
  local stack, seen = { root }, { [root] = true }
  while #stack > 0 do
    local t = stack[#stack]
    stack[#stack] = nil
    if debug.getmetatable(t) ~= nil then
      return true
    end
    for k, v in next, t do
      if type(k) == "table" and not seen[k] then
        seen[k] = true
        stack[#stack + 1] = k
      end
      if type(v) == "table" and not seen[v] then
        seen[v] = true
        stack[#stack + 1] = v
      end
    end
  end
  return false
end

-- An error value as text, without calling the policy's code (tostring on a
-- table runs its __tostring).
local function describe(v)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" or t == "nil" then
    return tostring(v)
  end
  return ("(an error value of type %s)"):format(t)
end

-- Evaluates one file (and its includes) to a table. Returns the table, or
-- nil and a list of problems. `text`, if given, is the file's text (not
-- read from path; includes still are).
local function evaluate(path, depth, seen, text)
  if text == nil then
    local err
    text, err = read_file(path)
    if not text then
      return nil, { ("cannot read: %s"):format(err) }, nil
    end
  end
  local fn, cerr = sandbox.compile(text, "@" .. path)
  if not fn then
    return nil, { cerr }, text
  end
  local ok, result = sandbox.call(state.options.budget, fn)
  if not ok then
    return nil, { ("evaluation failed: %s"):format(describe(result)) }, text
  end
  if type(result) ~= "table" then
    return nil, { ("expected the file to return a table, got %s"):format(type(result)) }, text
  end
  if has_metatable(result) then
    return nil, { "a table in the policy has a metatable (setmetatable is not allowed in a policy)" }, text
  end
  local include = result.include
  if include ~= nil then
    if type(include) ~= "string" or include:find("/", 1, true) or include:find("..", 1, true) then
      return nil, { ("include: expected a file name in the same directory, got %s"):format(tostring(include)) }, text
    end
    local inc_path = dirname(path) .. "/" .. include
    if depth >= MAX_INCLUDE_DEPTH or seen[inc_path] then
      return nil, { ("include: %s would include itself or nest too deep"):format(include) }, text
    end
    seen[inc_path] = true
    local base, problems = evaluate(inc_path, depth + 1, seen)
    if not base then
      for i, p in ipairs(problems) do
        problems[i] = inc_path .. ": " .. p
      end
      return nil, problems, text
    end
    -- The including file wins, section by section, entry by entry.
    for section, entries in pairs(result) do
      if section ~= "include" then
        if type(entries) == "table" and type(base[section]) == "table" then
          for k, v in pairs(entries) do
            base[section][k] = v
          end
        else
          base[section] = entries
        end
      end
    end
    result = base
  end
  result.include = nil
  return result, nil, text
end

-- Loads and validates a file without applying it. Returns the table and
-- the file text, or nil and the problems as one text, each line
-- "path: problem".
local function check(path, source)
  local t, problems, text = evaluate(path, 0, { [path] = true }, source)
  if t then
    local ok, vproblems = config.validate(t)
    if not ok then
      problems = vproblems
      t = nil
    end
  end
  if not t then
    local lines = {}
    for i, p in ipairs(problems) do
      lines[i] = path .. ": " .. p
    end
    return nil, table.concat(lines, "\n")
  end
  return t, text
end

function _M.check(path)
  return check(path, nil)
end

-- The same for a policy given as text: `name` stands for its path (in
-- messages, and includes are looked up in its directory). Used by the
-- fuzzer (fuzz/fuzz_policy.c).
function _M.check_source(text, name)
  if type(text) ~= "string" then
    error("check_source: expected the policy text (a string)", 2)
  end
  return check(name or "=policy", text)
end

local function reject(path, err)
  state.errors = state.errors + 1
  state.last_error = err
  log.emit("error", "policy_rejected", { path = path, error = err, generation = state.generation })
  return nil, err
end

-- Loads a policy file and makes it the one in force. Returns the
-- generation, or nil and the problems (the old policy stays in force).
function _M.load(path, opts)
  opts = opts or {}
  state.options.budget = opts.budget or state.options.budget
  local t, text = _M.check(path)
  if not t then
    state.path = state.path or path
    return reject(path, text)
  end
  local ok, err = pcall(guard.configure, t)
  if not ok then
    return reject(path, path .. ": " .. tostring(err))
  end
  state.path = path
  state.generation = state.generation + 1
  state.hash = hash(text)
  state.loaded_at = os.time()
  state.last_error = nil
  state.reloads = state.reloads + 1
  state.policy = t
  log.emit("info", "policy_loaded", { path = path, generation = state.generation, hash = state.hash })
  if opts.watch then
    _M.watch()
  end
  return state.generation
end

-- Reloads the file in force (or last tried).
function _M.reload()
  if not state.path then
    return nil, "no policy file loaded"
  end
  return _M.load(state.path)
end

function _M.status()
  return {
    path = state.path,
    generation = state.generation,
    hash = state.hash,
    loaded_at = state.loaded_at,
    last_error = state.last_error,
    reloads = state.reloads,
    errors = state.errors,
    watching = state.watching ~= nil,
  }
end

-- The table in force (validated), for tools such as --explain.
function _M.current()
  return state.policy
end

-- Watches the file: fs events on its directory (editors replace files by
-- rename) plus a stat poll as a fallback, debounced so the several writes
-- of one save load once, after the last. SIGHUP reloads too. The watchers
-- never keep the process alive on their own.
function _M.watch(opts)
  if state.watching or not state.path then
    return
  end
  opts = opts or {}
  local debounce_ms = math.floor((opts.debounce or 0.02) * 1000)
  local poll_ms = math.floor((opts.poll or 1) * 1000)
  local name = state.path:match("([^/]+)$")
  local w = {}
  w.debounce = uv.new_timer()
  w.debounce:unref()
  local function changed()
    w.debounce:stop()
    w.debounce:start(debounce_ms, 0, function()
      local text = read_file(state.path)
      if text and hash(text) == state.hash then
        return -- touched, not changed
      end
      _M.reload()
    end)
  end
  w.fs_event = uv.new_fs_event()
  w.fs_event:start(dirname(state.path), {}, function(err, filename)
    if not err and (filename == nil or filename == name) then
      changed()
    end
  end)
  w.fs_event:unref()
  w.fs_poll = uv.new_fs_poll()
  w.fs_poll:start(state.path, poll_ms, function(err)
    if not err then
      changed()
    end
  end)
  w.fs_poll:unref()
  local ok_sig, sig = pcall(uv.new_signal)
  if ok_sig and sig then
    sig:start("sighup", function()
      _M.reload()
    end)
    sig:unref()
    w.signal = sig
  end
  state.watching = w
end

function _M.unwatch()
  local w = state.watching
  if not w then
    return
  end
  for _, h in pairs(w) do
    if not h:is_closing() then
      h:close()
    end
  end
  state.watching = nil
end

-- For tests: forget everything (not the breakers' live state).
function _M._reset()
  _M.unwatch()
  state.path, state.generation, state.hash, state.loaded_at = nil, 0, nil, nil
  state.last_error, state.reloads, state.errors, state.policy = nil, 0, 0, nil
end

return _M
