-- Decision hooks from policy files: should_retry(err, attempt),
-- next_delay(attempt, err, proposed), on_transition(breaker, from, to),
-- fallback(err, ctx), health_probe(). Each call runs in the sandbox with
-- the policy's hook limits; what it is given is a plain copy (a hook that
-- rewrites an error's metatable rewrites nothing of the host's), what it
-- returns must be plain data. A hook that errors, runs out of budget or
-- memory, or returns nonsense is logged and counted, and the built-in
-- decision is used: a broken hook never breaks the call.
local sandbox = require "mnemo.sandbox"
local log = require "mnemo.log"
local errors = require "mnemo.errors"
local core = require "mnemo_core"

local type, select = type, select
local describe, copy_in, plain = sandbox.describe, sandbox.copy_in, sandbox.plain

local _M = {}

_M.BUDGET = 100000 -- instructions per hook call (the policy's sandbox.hook_budget)
_M.limits = { budget = _M.BUDGET, memory = sandbox.DEFAULT_MEMORY }
_M.failures = {}   -- hook name -> count of failed calls

-- The limits hook calls run with (a policy's sandbox section, once it is
-- in force).
function _M.set_limits(budget, memory)
  _M.limits = { budget = budget or _M.BUDGET, memory = memory or sandbox.DEFAULT_MEMORY }
end

local function failed(name, owner, why)
  _M.failures[name] = (_M.failures[name] or 0) + 1
  log.emit("error", "hook_failed", { hook = name, owner = owner, error = why })
end

-- Host values become plain copies; up to four arguments (every hook has
-- at most three).
local function copies(n, a, b, c, d)
  if n == 0 then
    return
  end
  return copy_in(errors.plain_copy(a)), copies(n - 1, b, c, d)
end

local function settle(name, owner, check, ok, value)
  if not ok then
    local why = describe(value)
    failed(name, owner, why ~= "" and why or "raised an empty string")
    return false
  end
  local is_plain, why = plain(value)
  if not is_plain then
    failed(name, owner, "returned " .. why .. " (hooks return plain data)")
    return false
  end
  if check and not check(value) then
    failed(name, owner, "returned " .. describe(value) .. " (" .. type(value) .. ")")
    return false
  end
  return true, value
end

-- What a policy's hooks keep between their calls (in upvalues, their
-- environment, tables they share) stays in the process: the memory limit
-- bounds the growth of one call, not what the calls leave behind, so hooks
-- keeping what they made, call after call, grew the process without end.
-- So each policy (its sandbox environment, which all its hooks share) has
-- an account: once its hooks' calls have grown the heap by HELD_CHECK bytes
-- (garbage included), what they reach is measured (raw reads: none of
-- their code runs), less what each reached at its first call (what the
-- file's evaluation made, bounded by its own limit); a call may grow the
-- heap by the limit less that, and once the hooks hold the whole limit, or
-- reach more than MAX_HELD_ENTRIES table entries and upvalues, they fail
-- at once without running.
local HELD_CHECK = 1024 * 1024
local MAX_HELD_ENTRIES = 100000
local MIB = 1024 * 1024
-- environment -> { hooks = (weak) list, known = (weak) set, base, held,
-- pending }; weak all through (a value must not hold its key: no ephemerons
-- in Lua 5.1), so a policy replaced goes with its account.
local accounts = setmetatable({}, { __mode = "k" })
local memory, is_sandboxed = core.sandbox_memory, sandbox.is_sandboxed
local getmetatable, getupvalue, getfenv = debug.getmetatable, debug.getupvalue, getfenv

-- Adds to `seen` what the functions in `roots` reach; returns the bytes
-- newly reached, estimated (strings' lengths + 24, 32 per table entry or
-- upvalue, 64 per table or function; only sandboxed functions are looked
-- into: the library functions in their environment are the host's), or
-- nil past MAX_HELD_ENTRIES.
local function reach(roots, seen)
  local stack, bytes, entries = {}, 0, 0
  local function visit(v)
    local t = type(v)
    if (t == "string" or t == "table" or t == "function") and not seen[v] then
      seen[v] = true
      if t == "string" then
        bytes = bytes + #v + 24
      else
        stack[#stack + 1] = v
      end
    end
  end
  for _, fn in pairs(roots) do
    visit(fn)
  end
  while #stack > 0 do
    local v = stack[#stack]
    stack[#stack] = nil
    bytes = bytes + 64
    if type(v) == "table" then
      visit(getmetatable(v))
      for k, x in next, v do
        entries = entries + 1
        visit(k)
        visit(x)
      end
    elseif is_sandboxed(v) then
      visit(getfenv(v))
      local i = 1
      while getupvalue(v, i) ~= nil do
        visit(select(2, getupvalue(v, i)))
        entries, i = entries + 1, i + 1
      end
    end
    if entries > MAX_HELD_ENTRIES then
      return nil
    end
  end
  return bytes + 32 * entries
end

local function account_of(hook)
  local env = getfenv(hook)
  local a = accounts[env]
  if not a then
    a = { hooks = setmetatable({}, { __mode = "v" }), known = setmetatable({}, { __mode = "k" }), n = 0,
      base = 0, held = 0, pending = 0 }
    accounts[env] = a
  end
  if not a.known[hook] then
    local seen = {}
    local more = reach(a.hooks, seen) and reach({ hook }, seen)
    a.known[hook], a.n = true, a.n + 1
    a.hooks[a.n] = hook
    a.base = more and a.base + more or a.base
    a.held = more and a.held or math.huge
  end
  return a
end

local function settle_account(a, before)
  a.pending = a.pending + math.max(0, memory() - before)
  if a.pending >= HELD_CHECK then
    local now = reach(a.hooks, {})
    a.pending, a.held = 0, now and math.max(0, now - a.base) or math.huge
  end
end

local function over_limit(limit, held)
  local what = limit % MIB == 0 and limit / MIB .. " MiB" or limit .. " bytes"
  if held == math.huge then
    return ("memory limit of %s exceeded (the policy's hooks reach more than %d table entries)"):format(what,
      MAX_HELD_ENTRIES)
  end
  return ("memory limit of %s exceeded (%.1f MiB of it held by the policy's hooks between their calls)"):format(
    what, held / MIB)
end

-- Calls hook(...) sandboxed. Returns ok, value: ok is false when the hook
-- failed (already logged and counted); `check` validates the value.
function _M.call(name, owner, hook, check, ...)
  local limits = _M.limits
  if not is_sandboxed(hook) then -- a trusted hook: the host's own
    return settle(name, owner, check, sandbox.call(limits, hook, copies(select("#", ...), ...)))
  end
  local a = account_of(hook)
  local held = a.held
  if held >= limits.memory then
    return settle(name, owner, check, false, over_limit(limits.memory, held))
  end
  local before = memory()
  local ok, value = sandbox.call(held > 0 and { budget = limits.budget, memory = limits.memory - held } or limits,
    hook, copies(select("#", ...), ...))
  settle_account(a, before)
  if not ok and held > 0 and type(value) == "string" and value:find("^memory limit of") then
    value = over_limit(limits.memory, held)
  end
  return settle(name, owner, check, ok, value)
end

function _M.is_boolean(v)
  return type(v) == "boolean"
end

function _M.is_delay(v)
  return type(v) == "number" and v >= 0 and v == v and v ~= math.huge
end

return _M
