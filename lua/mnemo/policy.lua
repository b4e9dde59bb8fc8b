-- Policy files: Lua files that return the configuration table, evaluated in
-- a sandbox, validated, applied as one generation, and reloaded when the
-- file changes (fs event + stat poll, debounced), on SIGHUP, or on demand.
-- A broken file is rejected with every problem listed; the policy in force
-- stays. Breakers keep their live state across every reload.
local uv = require "luv"
local sandbox = require "mnemo.sandbox"
local hooks = require "mnemo.hooks"
local timeout = require "mnemo.timeout"
local config = require "mnemo.config"
local guard = require "mnemo.guard"
local closing = require "mnemo.closing"
local log = require "mnemo.log"
local core = require "mnemo_core"

local type, pairs, tostring = type, pairs, tostring

local _M = {}

_M.MAX_FILE_BYTES = 1024 * 1024 -- a policy file (and each include)

local state = {
  path = nil,         -- the file in force (or last tried)
  generation = 0,     -- bumped by every successful load
  hash = nil,         -- of the file text in force
  loaded_at = nil,    -- os.time() of the generation in force
  last_error = nil,   -- text of the last rejected load, or nil
  reloads = 0,        -- successful loads
  errors = 0,         -- rejected loads
  watching = nil,     -- { fs_event, fs_poll, debounce, signal }
  -- Limits a file's evaluation runs under: the sandbox section of the
  -- policy in force (a new file's own section takes effect once it is
  -- accepted), or load()'s options, or the defaults.
  limits = { budget = sandbox.DEFAULT_BUDGET, memory = sandbox.DEFAULT_MEMORY },
}

local MIB = 1024 * 1024

-- The limits a validated policy's sandbox section sets: for evaluating
-- the next version of the file, and for every hook call of this one.
local function apply_sandbox_section(section)
  section = section or {}
  state.limits = {
    budget = section.budget or sandbox.DEFAULT_BUDGET,
    memory = section.memory_mib and section.memory_mib * MIB or sandbox.DEFAULT_MEMORY,
  }
  hooks.set_limits(section.hook_budget, section.hook_memory_mib and section.hook_memory_mib * MIB
    or state.limits.memory)
end

-- FNV-1a, 32 bit (in C): enough to tell two versions of a file apart.
local hash = core.hash

-- Reading a policy file is safe whatever the path names: opened without
-- blocking (a FIFO with no writer would wait for ever), only a regular file
-- (a symlink to /dev/zero would be read until memory runs out), at most
-- max_bytes. Inside a task the calls go to the uv thread pool and the loop
-- goes on meanwhile; outside one (a plain script, a test) they are made
-- directly, which is bounded for a regular file of limited size.
local O_NONBLOCK = core.open_flags.O_NONBLOCK

local function fs(fn, ...)
  if not core.in_task() then
    return fn(...)
  end
  local err, value = timeout.await_call(fn, ...)
  if err then
    return nil, err
  end
  return value
end

local function read_file(path, max_bytes)
  max_bytes = max_bytes or _M.MAX_FILE_BYTES
  local fd, err = fs(uv.fs_open, path, O_NONBLOCK, 0)
  if not fd then
    return nil, tostring(err)
  end
  local st, serr = fs(uv.fs_fstat, fd)
  local text, rerr
  if not st then
    rerr = tostring(serr)
  elseif st.type ~= "file" then
    rerr = ("not a regular file (a %s)"):format(tostring(st.type))
  elseif st.size > max_bytes then
    rerr = ("%d bytes, over the limit of %d"):format(st.size, max_bytes)
  else
    text, rerr = fs(uv.fs_read, fd, max_bytes + 1, 0)
    if text and #text > max_bytes then
      text, rerr = nil, ("grew past the limit of %d bytes while read"):format(max_bytes)
    end
  end
  fs(uv.fs_close, fd)
  if not text then
    return nil, rerr
  end
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

local describe = sandbox.describe

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
  local ok, result = sandbox.call(state.limits, fn)
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
  if opts.budget or opts.memory then
    state.limits = { budget = opts.budget or state.limits.budget, memory = opts.memory or state.limits.memory }
  end
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
  apply_sandbox_section(t.sandbox)
  log.emit("info", "policy_loaded", { path = path, generation = state.generation, hash = state.hash })
  if opts.watch then
    -- Watching another file: the watchers follow the file in force.
    if state.watching and state.watching.path ~= path then
      _M.unwatch()
    end
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

-- A reload started by the watchers runs as a task, so the file is read on
-- the uv thread pool; changes that arrive meanwhile are read once more
-- after it, never by two readers at once. A file touched but not changed
-- is not reloaded, unless `force` (SIGHUP: the operator asked).
local function reload_in_task(force)
  if state.reloading then
    state.reload_again = true
    state.reload_forced = state.reload_forced or force
    return
  end
  state.reload_forced = force
  state.reloading = true
  core.spawn(function()
    repeat
      state.reload_again = false
      local ok, err = pcall(function()
        local text, err = nil, nil
        if not state.reload_forced then
          text, err = read_file(state.path)
        end
        state.reload_forced = false
        -- A file gone is a save in progress (rm, then a new file) or an
        -- operator's slip, not a new policy: the one in force stays, one
        -- warning, and no rejection is counted. Its return is a change.
        if err and err:match("^ENOENT") then
          if not state.missing then
            state.missing = true
            log.emit("warn", "policy_file_missing", { path = state.path, generation = state.generation })
          end
          return
        end
        state.missing = false
        local h = text and hash(text) or err and "unreadable: " .. err
        -- The text in force, or the text rejected last (the stat poll sees
        -- the change the fs event already reported): nothing new to try.
        if h == nil or (h ~= state.hash and h ~= state.rejected_hash) then
          if not _M.reload() then
            state.rejected_hash = h
          end
        end
      end)
      if not ok then
        log.emit("error", "policy_reload_failed", { path = state.path, error = describe(err) })
      end
    until not state.reload_again
    state.reloading = false
  end)
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
      reload_in_task(false)
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
      reload_in_task(true)
    end)
    sig:unref()
    w.signal = sig
  end
  w.path = state.path
  state.watching = w
end

function _M.unwatch()
  local w = state.watching
  if not w then
    return
  end
  for key, h in pairs(w) do
    if key ~= "path" then
      closing.close(h)
    end
  end
  state.watching = nil
end

-- For tests: forget everything (not the breakers' live state).
function _M._reset()
  _M.unwatch()
  state.path, state.generation, state.hash, state.loaded_at = nil, 0, nil, nil
  state.last_error, state.reloads, state.errors, state.policy = nil, 0, 0, nil
  state.rejected_hash = nil
  apply_sandbox_section(nil)
end

return _M
