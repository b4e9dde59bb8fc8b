-- Evaluating untrusted Lua (policy files, decision hooks): a fresh
-- environment without os, io, require, load*, debug, string.dump or
-- getfenv/setfenv, and an instruction budget enforced by a count hook, so an
-- endless loop is stopped with an error instead of hanging the runtime.
local debug_sethook, debug_gethook = debug.sethook, debug.gethook
local setfenv, loadstring, pcall, error, type = setfenv, loadstring, pcall, error, type
local string_mt = getmetatable("")

local _M = {}

_M.DEFAULT_BUDGET = 1000000 -- instructions per evaluation or hook call

local function copy(t, except)
  local c = {}
  for k, v in pairs(t) do
    if not (except and except[k]) then
      c[k] = v
    end
  end
  return c
end

-- string without dump (which exposes bytecode) — also what strings' own
-- methods ("x"):rep(...) resolve to while sandboxed code runs.
local safe_string = copy(string, { dump = true })

-- string.rep is the one call that can allocate gigabytes in a single
-- instruction, before the instruction budget sees anything: capped. (A
-- string doubled by `..` in a loop can still grow fast; LuaJIT on x86-64
-- has no per-state allocator to bound memory itself.)
_M.MAX_REP_BYTES = 1024 * 1024
local string_rep = string.rep
function safe_string.rep(s, n, sep)
  local len, count = #tostring(s), tonumber(n) or 0
  local total = len * count + (sep ~= nil and #tostring(sep) * math.max(0, count - 1) or 0)
  if total > _M.MAX_REP_BYTES then
    error(("string.rep: %.0f bytes is over the sandbox's limit of %d"):format(total, _M.MAX_REP_BYTES), 2)
  end
  return string_rep(s, n, sep)
end

-- Libraries are shared read-only views, so making an environment is cheap
-- and one policy cannot poison math or table for the next.
local function read_only(t, name)
  return setmetatable({}, {
    __index = t,
    __newindex = function()
      error(name .. " is read-only in a policy", 2)
    end,
    __metatable = false,
  })
end
local ro_math, ro_string, ro_table = read_only(math, "math"), read_only(safe_string, "string"),
  read_only(table, "table")

local function environment()
  return {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, select = select, tonumber = tonumber, tostring = tostring,
    type = type, unpack = unpack, rawequal = rawequal, rawget = rawget,
    rawlen = rawlen, rawset = rawset, setmetatable = setmetatable,
    getmetatable = function(v)
      -- strings' metatable would hand out the real string library
      if type(v) == "string" then
        return nil
      end
      return getmetatable(v)
    end,
    math = ro_math, string = ro_string, table = ro_table,
  }
end
_M.environment = environment

local BUDGET_MARK = {}

-- Runs fn(...) with at most `budget` VM instructions (counted in steps of
-- 1,000) and strings' methods limited to the safe string table. Returns
-- pcall's results; an exhausted budget is the error "instruction budget of
-- N exceeded".
function _M.call(budget, fn, ...)
  budget = budget or _M.DEFAULT_BUDGET
  local step = 1000
  local used = 0
  local old_hook, old_mask, old_count = debug_gethook()
  local old_index = string_mt.__index
  debug_sethook(function()
    used = used + step
    if used > budget then
      error(BUDGET_MARK, 0)
    end
  end, "", step)
  string_mt.__index = safe_string
  local results = { pcall(fn, ...) }
  string_mt.__index = old_index
  debug_sethook(old_hook, old_mask, old_count)
  if not results[1] and results[2] == BUDGET_MARK then
    return false, ("instruction budget of %d exceeded"):format(budget)
  end
  return unpack(results, 1, table.maxn(results))
end

-- Compiles source as a chunk named chunkname in a fresh sandbox
-- environment. Returns the function, or nil and the compile error.
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
  setfenv(fn, environment())
  -- Count hooks only run in the interpreter: keep the JIT away from this
  -- chunk and every function defined in it (decision hooks), or a compiled
  -- endless loop would never see its budget.
  if jit then
    jit.off(fn, true)
  end
  return fn
end

return _M
