-- Evaluating untrusted Lua (policy files, decision hooks). What a sandboxed
-- function can do is exactly this (docs/POLICIES.md, "Sandbox"):
--   * its environment is its own: base functions, and copies of math,
--     string and table made for it alone — no os, io, require, load*,
--     debug, coroutine, string.dump, getfenv/setfenv, math.randomseed,
--     newproxy; nothing in it is shared with another policy or the host, so
--     `rawset(math, "min", f)` changes only the policy that did it;
--   * an instruction budget (C count hook, mnemo_core.sandbox_run) that
--     cannot be caught: once spent every further instruction raises again,
--     and the sandbox's pcall/xpcall re-raise it;
--   * a memory limit (the state's allocator refuses growth past it);
--   * pattern functions (find, match, gmatch, gsub) that charge their
--     steps to the budget (a C call the count hook cannot interrupt would
--     otherwise backtrack for ever), and gsub without a function
--     replacement (a callback from C into Lua recursing through gsub
--     overflows the C stack: a segmentation fault);
--   * no JIT for its code (count hooks fire only in the interpreter).
-- Values crossing the boundary are plain data: what a hook is given is a
-- copy (no metatables, no functions), what it returns is checked.
local core = require "mnemo_core"

local type, pairs, next, select, tostring, error, pcall, xpcall =
  type, pairs, next, select, tostring, error, pcall, xpcall
local loadstring, setfenv, getfenv, getmetatable = loadstring, setfenv, getfenv, getmetatable
local sandbox_run, exhausted = core.sandbox_run, core.sandbox_exhausted

local _M = {}

_M.DEFAULT_BUDGET = 1000000          -- instructions per evaluation
_M.DEFAULT_MEMORY = 64 * 1024 * 1024 -- bytes of heap growth per evaluation

local function copy(t, only)
  local c = {}
  for _, k in ipairs(only) do
    c[k] = t[k]
  end
  return c
end

-- The string table strings' methods resolve to while sandboxed code runs
-- (("x"):rep(3)): never handed to policy code itself, so it stays as it is.
local STRING_FUNCTIONS = { "byte", "char", "format", "len", "lower", "rep", "reverse", "sub", "upper" }
local safe_string = copy(string, STRING_FUNCTIONS)
safe_string.find = core.pattern_find
safe_string.match = core.pattern_match
safe_string.gmatch = core.pattern_gmatch
safe_string.gsub = core.pattern_gsub
local STRING_ALL = { "byte", "char", "format", "len", "lower", "rep", "reverse", "sub", "upper", "find",
  "match", "gmatch", "gsub" }

-- Library functions whose work grows with their data are C, where the
-- count hook never fires: in a loop, each call on a long string or a big
-- table would do megabytes of work for a few instructions. These charge it
-- (core.sandbox_charge: one instruction per 256 bytes, or per 16 elements):
-- the string makers their result, after the call (one call is the most
-- that runs uncharged, and the memory limit bounds it); table.concat its
-- result and elements; table.insert/remove the elements they shift and
-- tonumber the text it reads, before (a tail call: errors name the
-- function as before); table.maxn walks the table in Lua (counted);
-- table.sort without a comparator compares in C, charging each comparison
-- (core.sandbox_sort).
local charge = core.sandbox_charge
local lower, rep, reverse, sub, upper = string.lower, string.rep, string.reverse, string.sub, string.upper
safe_string.lower = function(...) local r = lower(...) charge(#r) return r end
safe_string.rep = function(...) local r = rep(...) charge(#r) return r end
safe_string.reverse = function(...) local r = reverse(...) charge(#r) return r end
safe_string.sub = function(...) local r = sub(...) charge(#r) return r end
safe_string.upper = function(...) local r = upper(...) charge(#r) return r end

-- table.foreach/foreachi call back into Lua from C for every element (the
-- C-stack path); sort is kept, its nesting bounded (below).
local TABLE_FUNCTIONS = { "concat", "insert", "maxn", "remove", "sort" }
local concat, insert, maxn, remove = table.concat, table.insert, table.maxn, table.remove
local charged_table = {
  concat = function(t, ...) local r = concat(t, ...) charge(#r + 16 * #t) return r end,
  insert = function(t, ...)
    if type(t) == "table" then
      charge(16 * #t)
    end
    return insert(t, ...)
  end,
  remove = function(t, ...)
    if type(t) == "table" then
      charge(16 * #t)
    end
    return remove(t, ...)
  end,
  maxn = function(t)
    if type(t) ~= "table" then
      return maxn(t) -- its error
    end
    local m = 0
    for k in next, t do
      if type(k) == "number" and k > m then
        m = k
      end
    end
    return m
  end,
}
local function safe_tonumber(...)
  local v = ...
  if type(v) == "string" then
    charge(#v)
  end
  return tonumber(...)
end
local MATH_FUNCTIONS = { "abs", "acos", "asin", "atan", "atan2", "ceil", "cos", "cosh", "deg", "exp", "floor",
  "fmod", "frexp", "huge", "ldexp", "log", "log10", "max", "min", "modf", "pi", "pow", "rad", "random", "sin",
  "sinh", "sqrt", "tan", "tanh" }

-- C functions that call back into Lua (string.format and tostring run
-- __tostring, table.sort its comparator) nest a C frame per level: a
-- __tostring that formats itself went 20,000 levels deep before LuaJIT's
-- Lua-stack limit stopped it (a second of unwinding, most of the C stack).
-- Their nesting is counted and bounded; the count is the run's (reset by
-- _M.call) and put back by the sandbox's pcall, which an error skips to.
_M.MAX_C_DEPTH = 100
local c_depth = 0
local string_format = string.format

local function leave_c(...)
  c_depth = c_depth - 1
  return ...
end

local function through_c(fn, name)
  return function(...)
    if c_depth >= _M.MAX_C_DEPTH then
      -- string.format itself: strings' methods are the wrapped ones here
      error(string_format("%s: calls nested more than %d deep through string.format, tostring and table.sort",
        name, _M.MAX_C_DEPTH), 2)
    end
    c_depth = c_depth + 1
    return leave_c(fn(...))
  end
end

local function charged_format(...)
  local r = string_format(...)
  charge(#r)
  return r
end
local safe_format, safe_tostring = through_c(charged_format, "format"), through_c(tostring, "tostring")
local safe_sort = through_c(core.sandbox_sort, "sort")
safe_string.format = safe_format

-- pcall and xpcall that cannot swallow an exhausted budget or memory
-- limit: the evaluation ends however the code nests its calls.
local function rethrow(depth, ok, ...)
  c_depth = depth
  if not ok and exhausted() then
    error((...), 0)
  end
  return ok, ...
end

local function safe_pcall(fn, ...)
  return rethrow(c_depth, pcall(fn, ...))
end

-- The handler is skipped once the run is exhausted: it is policy code,
-- and would only raise again.
local function safe_xpcall(fn, handler)
  return rethrow(c_depth, xpcall(fn, function(e)
    if exhausted() then
      return e
    end
    return handler(e)
  end))
end

-- Strings' metatable would hand out the string table strings resolve to.
local function safe_getmetatable(v)
  if type(v) == "string" then
    return nil
  end
  return getmetatable(v)
end

if jit then
  for _, fn in ipairs { rethrow, safe_pcall, safe_xpcall, leave_c, safe_format, safe_tostring, safe_sort,
    charged_format, safe_tonumber, safe_string.lower, safe_string.rep, safe_string.reverse, safe_string.sub,
    safe_string.upper, charged_table.concat, charged_table.insert, charged_table.remove, charged_table.maxn } do
    jit.off(fn)
  end
end

-- Environments made here, to tell sandboxed functions from host ones
-- (here, and in the count hook: it interrupts only sandboxed code).
local environments = setmetatable({}, { __mode = "k" })
local register = core.sandbox_register

-- A fresh environment: nothing in it is shared with any other.
function _M.environment()
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = safe_pcall, xpcall = safe_xpcall, select = select, tonumber = safe_tonumber,
    tostring = safe_tostring, type = type, unpack = unpack, rawequal = rawequal, rawget = rawget,
    rawset = rawset, setmetatable = setmetatable, getmetatable = safe_getmetatable,
    math = copy(math, MATH_FUNCTIONS), string = copy(safe_string, STRING_ALL),
    table = copy(charged_table, TABLE_FUNCTIONS),
  }
  env.table.sort = safe_sort
  environments[env] = true
  register(env)
  return env
end

-- True when fn was compiled by _M.compile (policy code, not the host's).
function _M.is_sandboxed(fn)
  return type(fn) == "function" and environments[getfenv(fn)] == true
end

local function limits_of(limits)
  if type(limits) == "number" then
    return limits, _M.DEFAULT_MEMORY
  end
  if type(limits) == "table" then
    return limits.budget or _M.DEFAULT_BUDGET, limits.memory or _M.DEFAULT_MEMORY
  end
  return _M.DEFAULT_BUDGET, _M.DEFAULT_MEMORY
end

-- Runs fn(...) sandboxed. `limits`: a budget (instructions), or { budget
-- =, memory = } (bytes), or nil for the defaults. Returns true and fn's
-- results, or false and the error: "instruction budget of N exceeded",
-- "memory limit of N MiB exceeded", or what fn raised (any value: describe
-- it with _M.describe, never tostring).
local function restore_depth(depth, ...)
  c_depth = depth
  return ...
end

function _M.call(limits, fn, ...)
  local budget, memory = limits_of(limits)
  local depth = c_depth
  c_depth = 0
  return restore_depth(depth, sandbox_run(budget, memory, safe_string, fn, ...))
end

-- Compiles source as a chunk named chunkname in a fresh environment.
-- Returns the function, or nil and the compile error.
function _M.compile(source, chunkname)
  if type(source) ~= "string" then
    return nil, "expected source text"
  end
  if source:byte(1) == 27 then
    return nil, "binary (precompiled) chunks are not accepted"
  end
  local fn, err = loadstring(source, chunkname)
  if not fn then
    return nil, err
  end
  setfenv(fn, _M.environment())
  -- Count hooks only run in the interpreter: keep the JIT away from this
  -- chunk and every function defined in it (decision hooks), or a compiled
  -- endless loop would never see its budget.
  if jit then
    jit.off(fn, true)
  end
  return fn
end

-- A value as text without running anything of the policy's (tostring on a
-- table runs its __tostring).
function _M.describe(v)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" or t == "nil" then
    return tostring(v)
  end
  return ("(a value of type %s)"):format(t)
end

local MAX_DEPTH, MAX_ENTRIES = 16, 100000
local NOT_DATA = { ["function"] = true, userdata = true, thread = true, cdata = true }

-- Checks that v is plain data: nil, booleans, numbers, strings, and tables
-- of those without metatables, at most MAX_DEPTH deep and MAX_ENTRIES
-- entries in all (raw reads only: nothing of v's code runs). Returns true,
-- or false and what is wrong.
function _M.plain(v)
  if NOT_DATA[type(v)] then
    return false, "a " .. type(v)
  end
  if type(v) ~= "table" then
    return true
  end
  local stack, depth, seen, entries = { v }, { 1 }, { [v] = true }, 0
  local function visit(item, d)
    local it = type(item)
    if NOT_DATA[it] then
      return "a " .. it
    end
    if it == "table" and not seen[item] then
      if d >= MAX_DEPTH then
        return ("tables nested more than %d deep"):format(MAX_DEPTH)
      end
      seen[item] = true
      stack[#stack + 1], depth[#depth + 1] = item, d + 1
    end
  end
  while #stack > 0 do
    local tbl, d = stack[#stack], depth[#depth]
    stack[#stack], depth[#depth] = nil, nil
    if debug.getmetatable(tbl) ~= nil then
      return false, "a table with a metatable"
    end
    for k, x in next, tbl do
      entries = entries + 1
      if entries > MAX_ENTRIES then
        return false, ("more than %d entries"):format(MAX_ENTRIES)
      end
      local why = visit(k, d) or visit(x, d)
      if why then
        return false, why
      end
    end
  end
  return true
end

-- A copy of a host value for a hook: tables become plain tables (raw
-- reads, no metatables, functions and userdata left out), at most 4 deep;
-- other values are given as they are when they are plain, else omitted.
local function copy_in(v, depth)
  local t = type(v)
  if t == "table" then
    if depth >= 4 then
      return nil
    end
    local c, n = {}, 0
    for k, x in next, v do
      n = n + 1
      if n > 256 then
        break
      end
      local kt = type(k)
      if kt == "string" or kt == "number" or kt == "boolean" then
        c[k] = copy_in(x, depth + 1)
      end
    end
    return c
  end
  if NOT_DATA[t] then
    return nil
  end
  return v
end

function _M.copy_in(v)
  return copy_in(v, 0)
end

return _M
