-- The step-bounded pattern functions (runtime/lua/lua_pattern.c) against
-- LuaJIT's own string.find/match/gmatch/gsub: a seeded differential test
-- over random small patterns and subjects (results and error-ness must
-- agree; messages compared without location and function name), explicit
-- cases, and the step budget.
local core = require "mnemo_core"

local P = {
  find = core.pattern_find,
  match = core.pattern_match,
  gmatch = core.pattern_gmatch,
  gsub = core.pattern_gsub,
}

-- "file:12: bad argument #3 to 'pattern_find' (...)" -> "bad argument #3 to
-- '?' (...)": location and function name differ between the two sides.
local function normalize(err)
  err = tostring(err):gsub("^[^\n]-:%d+: ", "")
  return (err:gsub("to '[^']*'", "to '?'"))
end

-- { ok = bool, n = count, ... } of pcall(f, ...), error normalized.
local function pack(...)
  return select("#", ...), { ... }
end

local function outcome(f, ...)
  local n, packed = pack(pcall(f, ...))
  local r = { n = n - 1, ok = packed[1] }
  for i = 2, n do
    r[i - 1] = packed[i]
  end
  if not r.ok then
    r[1] = normalize(r[1])
  end
  return r
end

-- The values gmatch yields, as one outcome (at most `limit` rounds).
local function gmatch_outcome(gmatch, s, p)
  local r = { n = 0 }
  local ok, err = pcall(function()
    local it = gmatch(s, p)
    for _ = 1, 200 do
      local v = { it() }
      if v[1] == nil then
        return
      end
      r.n = r.n + 1
      r[r.n] = table.concat(
        (function()
          local t = {}
          for i = 1, #v do
            t[i] = type(v[i]) .. ":" .. tostring(v[i])
          end
          return t
        end)(),
        "\1"
      )
    end
  end)
  r.ok = ok
  if not ok then
    r.n = r.n + 1
    r[r.n] = "error: " .. normalize(err)
  end
  return r
end

local function show(v)
  if type(v) == "string" then
    return ("%q"):format(v)
  end
  return tostring(v)
end

local function describe_outcome(r)
  local t = {}
  for i = 1, r.n do
    t[i] = show(r[i])
  end
  return (r.ok and "ok " or "error ") .. table.concat(t, ", ")
end

local function same(a, b)
  if a.ok ~= b.ok or a.n ~= b.n then
    return false
  end
  for i = 1, a.n do
    if a[i] ~= b[i] or type(a[i]) ~= type(b[i]) then
      return false
    end
  end
  return true
end

-- Random input, from a seeded generator (LuaJIT's math.random is
-- deterministic for a given seed).
local random = math.random

local function pick(list)
  return list[random(#list)]
end

local SUBJECT_BYTES = {
  "a", "a", "a", "b", "b", "c", "A", "B", "0", "1", "9", " ", "\t", "\n",
  "(", ")", "[", "]", ".", "%", "-", "_", ",", "=", "^", "$", "\0", "\128",
  "\200", "\255", "x", "f", "Z",
}

-- Half of the bytes from the pattern itself, half of the time: matches
-- are then about as common as failures.
local function random_subject(pattern)
  local t, from_pattern = {}, #pattern > 0 and random(2) == 1
  for i = 1, random(0, 40) do
    if from_pattern and random(2) == 1 then
      local at = random(#pattern)
      t[i] = pattern:sub(at, at)
    else
      t[i] = pick(SUBJECT_BYTES)
    end
  end
  return table.concat(t)
end

-- Pattern pieces: well-formed items, quantifiers, captures, and the bits
-- that make patterns malformed.
local ITEMS = {
  "a", "b", "c", "A", "0", " ", ".", "%a", "%d", "%s", "%w", "%x", "%p",
  "%c", "%u", "%l", "%g", "%z", "%A", "%D", "%S", "%W", "%P", "%.", "%%",
  "%(", "[ab]", "[^a]", "[a-c]", "[%d_]", "[]]", "[^]a]", "[a-]", "[%a-z]",
  "[\128-\255]", "%b()", "%bab", "%f[%w]", "%f[^a]", "%f[%z]", "\128", "\255",
  "$", "^", "\0", "-", "]",
}
local QUANTIFIERS = { "*", "+", "-", "?" }
local ODD = {
  "(", ")", "()", "%1", "%2", "%0", "%", "[", "[a", "[%", "%b", "%ba", "%f",
  "%fa", "(a", "a)", "%9",
}

local function random_pattern()
  local t, quantified = {}, 0
  if random(6) == 1 then
    t[1] = "^"
  end
  for _ = 1, random(0, random(6)) do -- short ones more often
    local r = random(20)
    if r <= 12 then
      t[#t + 1] = pick(ITEMS)
      -- At most three quantifiers: LuaJIT's own matcher must finish.
      if quantified < 3 and random(3) == 1 then
        t[#t + 1] = pick(QUANTIFIERS)
        quantified = quantified + 1
      end
    elseif r <= 17 then
      local inner = pick(ITEMS)
      if quantified < 3 and random(2) == 1 then
        inner = inner .. pick(QUANTIFIERS)
        quantified = quantified + 1
      end
      t[#t + 1] = "(" .. inner .. ")"
      if random(3) == 1 then
        t[#t + 1] = "%1"
      end
    else
      t[#t + 1] = pick(ODD)
    end
  end
  if random(8) == 1 then
    t[#t + 1] = "$"
  end
  return table.concat(t)
end

local INITS = { nil, 1, 2, 0, -1, -3, 5, 40, 41, 100, -100, 2.5, "2" }
local REPLACEMENTS = {
  "x", "", "%0", "%1", "<%1>", "%2", "%%", "%", "%a", "[%0|%1]", 7,
  { a = "A", b = false, ab = 1, ["("] = true, [1] = "one", [2] = {} },
  { aa = "<aa>", a = "", ["0"] = "zero" },
}
local LIMITS = { nil, nil, 0, 1, 2, -1, 1.5, "1" }

local function random_init()
  return INITS[random(#INITS + 1)] -- nil sometimes
end

-- Runs one comparison; returns nil or a description of the difference.
local function compare(name, mine, theirs, ...)
  if not same(mine, theirs) then
    local args = { ... }
    for i = 1, select("#", ...) do
      args[i] = show(args[i])
    end
    return ("%s(%s): mine %s, LuaJIT %s"):format(
      name,
      table.concat(args, ", "),
      describe_outcome(mine),
      describe_outcome(theirs)
    )
  end
end

local CASES = 25000

describe("pattern functions, differential against LuaJIT's string library", function()
  it(("agree on %d random patterns and subjects (find, match, gmatch, gsub)"):format(CASES), function()
    math.randomseed(20240601)
    local failures, compared = {}, 0
    local function note(diff)
      compared = compared + 1
      if diff and #failures < 20 then
        failures[#failures + 1] = diff
      end
    end
    for _ = 1, CASES do
      local p = random_pattern()
      local s = random_subject(p)
      local init, plain = random_init(), random(4) == 1 or nil
      note(compare("find", outcome(P.find, s, p, init, plain), outcome(string.find, s, p, init, plain), s, p, init, plain))
      note(compare("match", outcome(P.match, s, p, init), outcome(string.match, s, p, init), s, p, init))
      note(compare("gmatch", gmatch_outcome(P.gmatch, s, p), gmatch_outcome(string.gmatch, s, p), s, p))
      local repl, limit = pick(REPLACEMENTS), LIMITS[random(#LIMITS + 1)]
      note(compare("gsub", outcome(P.gsub, s, p, repl, limit), outcome(string.gsub, s, p, repl, limit), s, p, repl, limit))
    end
    assert.equal(CASES * 4, compared)
    assert.same({}, failures)
  end)

  it("agree on every class and byte", function()
    local classes = "acdglpsuwxzACDGLPSUWXZehijkmnoqrtvyBEFHIJKMNOQRTVY.%[]^$"
    for b = 0, 255 do
      local s = string.char(b)
      for i = 1, #classes do
        local p = "%" .. classes:sub(i, i)
        assert.same({ string.find(s, p) }, { P.find(s, p) }, ("byte %d, %q"):format(b, p))
        p = "[" .. p .. "]"
        assert.same({ string.find(s, p) }, { P.find(s, p) }, ("byte %d, %q"):format(b, p))
      end
      assert.same({ string.find(s, "[\100-\200]") }, { P.find(s, "[\100-\200]") }, b)
      assert.same({ string.find(s, "%f[%w]") }, { P.find(s, "%f[%w]") }, b)
    end
  end)

  it("agree on argument handling", function()
    local calls = {
      { "find", "abcabc", "b", 3 },
      { "find", "abcabc", "b", -2 },
      { "find", "abc", "", 10 },
      { "find", "abc", "", -10 },
      { "find", "abc", "b", "2" },
      { "find", "abc", "b", 2.7 },
      { "find", "abc", "b", 2 ^ 31 },
      { "find", "abc", "b", -2 ^ 40 },
      { "find", "abc", "b", 0 / 0 },
      { "find", "a.c", ".", 1, true },
      { "find", "a.c", ".", 1, 1 },
      { "find", "a.c", ".", nil, false },
      { "find", "a)b", ")" }, -- no special character: plain
      { "find", "a\0b", "\0b" },
      { "find", "a\0b", "a\0." }, -- the pattern stops at its NUL
      { "find", "a\0b", "[\0]" },
      { "find", 12345, 34 },
      { "find", "abc", "b", true },
      { "find", "abc" },
      { "find" },
      { "match", "abc", "()", 10 },
      { "match", "key = value", "(%w+)%s*=%s*(%w+)" },
      { "match", "abc", "(b", 1 },
      { "match", "abc", {} },
      { "gsub", "abc", "b", "x", 2 ^ 32 + 1 },
      { "gsub", "abc", "b", "x", 1.9 },
      { "gsub", "abc", "b", "x", "1" },
      { "gsub", "abc", "b", "x", "z" },
      { "gsub", "abc", "b", true },
      { "gsub", "abc", "b" },
      { "gsub", "abc", "", "-" },
      { "gsub", "abc", "^", "-" },
      { "gsub", "abc", "x*", "-", 2 },
      { "gsub", "hello world", "o", 0 },
      { "gsub", "abc", "%w", "%%%0" },
      { "gsub", "abc", "%w", "%x" },
      { "gsub", "ab", "a", "%" },
      { "gsub", "abc", "(b", "x" },
      { "gsub", "abc", "(b", "%1" },
      { "gsub", "abc", "()b", { [2] = "X" } },
      { "gsub", "abc", "(b)", { b = {} } },
      { "gsub", "abc", "(b)", { b = true } },
      { "gsub", "abc", "b", "%1" },
      { "gsub", "abc", "b", "%2" },
      { "gsub", "abc", "^a", "" },
      { "gsub", "aaa", "^a", "" },
      { "gsub", 1234, 2, 9 },
    }
    for _, c in ipairs(calls) do
      local name = c[1]
      local n = 1
      for i = 2, 6 do
        if c[i] ~= nil then
          n = i
        end
      end
      local mine = outcome(P[name], unpack(c, 2, n))
      local theirs = outcome(string[name], unpack(c, 2, n))
      assert.is_nil(compare(name, mine, theirs, unpack(c, 2, n)))
    end
  end)

  it("agree on gmatch's iteration, empty matches and literal '^'", function()
    for _, c in ipairs {
      { "a,b,,c", "[^,]*" },
      { "abc", "" },
      { "abc", "a*" },
      { "^a^a", "^a" },
      { "one two  three", "%a+" },
      { "k1=v1, k2=v2", "(%w+)=(%w+)" },
      { "abc", "()" },
      { "abc", "(" },
    } do
      assert.same(gmatch_outcome(string.gmatch, c[1], c[2]), gmatch_outcome(P.gmatch, c[1], c[2]))
    end
  end)

  it("agree on the recursion limit (pattern too complex) and the capture limit", function()
    for n = 195, 202 do
      local s, p = ("a"):rep(n), ("a?"):rep(n)
      assert.same(outcome(string.find, s, p), outcome(P.find, s, p), n)
    end
    local s, p = ("a"):rep(300), ("a*"):rep(300)
    assert.same(outcome(string.find, s, p), outcome(P.find, s, p))
    assert.same(outcome(string.find, "x", ("("):rep(33) .. "x" .. (")"):rep(33)), outcome(P.find, "x", ("("):rep(33) .. "x" .. (")"):rep(33)))
    assert.same(outcome(string.find, "x", ("("):rep(32) .. "x" .. (")"):rep(32)), outcome(P.find, "x", ("("):rep(32) .. "x" .. (")"):rep(32)))
  end)
end)

describe("pattern functions, policy restrictions", function()
  it("refuse a function as gsub's replacement", function()
    local ok, err = pcall(P.gsub, "abc", "b", function()
      return "x"
    end)
    assert.is_false(ok)
    assert.matches("gsub: a function as replacement is not allowed in a policy (use a string or a table)", err, 1, true)
  end)

  it("read a table replacement raw (no __index)", function()
    local called = false
    local t = setmetatable({ a = "A" }, {
      __index = function()
        called = true
        return "meta"
      end,
    })
    assert.same({ "Ab", 2 }, { P.gsub("ab", "%w", t) })
    assert.is_false(called)
  end)
end)

describe("pattern functions, step budget", function()
  it("is unlimited outside a sandbox run: a search of millions of steps finishes, as LuaJIT's", function()
    -- ~2.5 million backtracking steps, no match.
    local s, p = ("a"):rep(24), ("a*"):rep(6) .. "b"
    assert.same({ string.find(s, p) }, { P.find(s, p) })
    assert.same({ string.gsub(s, p, "x") }, { P.gsub(s, p, "x") })
  end)

  describe("inside a sandbox run", function()
    local sandbox = require "mnemo.sandbox"

    local function run(budget, source)
      local fn = assert(sandbox.compile(source, "=policy"))
      return sandbox.call(budget, fn)
    end

    it("ends the exponential pattern with the budget error, quickly", function()
      local t0 = os.clock()
      local ok, err = run(sandbox.DEFAULT_BUDGET, [[
        return ("a"):rep(30000):find(("a*"):rep(12) .. "b")
      ]])
      local seconds = os.clock() - t0
      assert.is_false(ok)
      assert.equal(("instruction budget of %d exceeded"):format(sandbox.DEFAULT_BUDGET), err)
      assert.is_true(seconds < 2, seconds)
    end)

    it("ends it in gmatch and gsub too, and under pcall in a loop", function()
      for _, source in ipairs {
        [[for _ in ("a"):rep(30000):gmatch(("a*"):rep(12) .. "b") do end]],
        [[return ("a"):rep(30000):gsub(("a*"):rep(12) .. "b", "x")]],
        [[while true do pcall(string.match, ("a"):rep(3000), ("a*"):rep(12) .. "b") end]],
        [[while true do pcall(string.find, ("a"):rep(3000), "a%") end]],
      } do
        local ok, err = run(100000, source)
        assert.is_false(ok, source)
        assert.equal("instruction budget of 100000 exceeded", err, source)
      end
    end)

    it("charges cheap calls little: a thousand small matches fit in 100000 instructions", function()
      local ok, n = run(100000, [[
        local n = 0
        for i = 1, 1000 do
          if ("key_" .. i .. " = value"):match("^([%w_]+)%s*=%s*(%w+)$") then n = n + 1 end
        end
        return n
      ]])
      assert.is_true(ok, n)
      assert.equal(1000, n)
    end)

    it("refuses gsub's function replacement", function()
      local ok, err = run(1000, [[return ("x"):gsub("x", function() return "y" end)]])
      assert.is_false(ok)
      assert.matches("a function as replacement is not allowed", err, 1, true)
    end)
  end)
end)
