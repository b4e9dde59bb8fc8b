-- The Lua modules' layering: the require graph of lua/mnemo/*.lua has no
-- cycle, no module hides a dependency in a function body, and each module
-- loads alone in a fresh luajit.
--
-- The graph is read from the files themselves (a small Lua tokenizer, so
-- comments and strings never count): a require at the top of a file and
-- one inside a function are both edges, since a require deferred into a
-- function only hides a cycle until that function runs. The one exception
-- is a true entry point, listed below with its reason.
local DIR = "lua/mnemo/"

-- from -> to -> why. A require inside a function that is not a module
-- dependency but the program being started; its edge is left out of the
-- cycle check.
local ENTRY_POINTS = {
  ["mnemo.http"] = {
    ["mnemo"] = "http.serve_main is mnemo-run --serve's entry point: it loads the program (mnemo, which "
      .. "itself requires mnemo.http) so the runtime's routes are registered before serving",
  },
}

local function module_names()
  local names = {}
  for name in io.popen("ls " .. DIR):lines() do
    local base = name:match("^(.+)%.lua$")
    if base then
      names[#names + 1] = base == "init" and "mnemo" or "mnemo." .. base
    end
  end
  table.sort(names)
  return names
end

local function file_of(module)
  return DIR .. (module == "mnemo" and "init" or module:sub(7)) .. ".lua"
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

-- Tokens { kind = "name" | "string" | "other", value, line } of a Lua
-- source; comments dropped.
local function tokenize(src)
  local tokens, i, line, n = {}, 1, 1, #src
  local function add(kind, value)
    tokens[#tokens + 1] = { kind = kind, value = value, line = line }
  end
  local function count_lines(s)
    local _, k = s:gsub("\n", "")
    line = line + k
  end
  -- A long bracket [==[ ... ]==] at position p: its text and the end.
  local function long_bracket(p)
    local eq = src:match("^%[(=*)%[", p)
    if not eq then
      return nil
    end
    local close = "]" .. eq .. "]"
    local s = p + #eq + 2
    local e = src:find(close, s, true)
    assert(e, "unfinished long bracket at line " .. line)
    return src:sub(s, e - 1), e + #close
  end
  while i <= n do
    local c = src:sub(i, i)
    if c == "\n" then
      line = line + 1
      i = i + 1
    elseif c:match("%s") then
      i = i + 1
    elseif src:sub(i, i + 1) == "--" then
      local text, after = long_bracket(i + 2)
      if text then
        count_lines(text)
        i = after
      else
        local e = src:find("\n", i, true) or n + 1
        i = e
      end
    elseif c == "[" and src:match("^%[=*%[", i) then
      local text, after = long_bracket(i)
      add("string", text)
      count_lines(text)
      i = after
    elseif c == '"' or c == "'" then
      local j, buf = i + 1, {}
      while true do
        local d = src:sub(j, j)
        assert(d ~= "" and d ~= "\n", "unfinished string at line " .. line)
        if d == "\\" then
          buf[#buf + 1] = src:sub(j, j + 1)
          if src:sub(j + 1, j + 1) == "\n" then
            line = line + 1
          end
          j = j + 2
        elseif d == c then
          break
        else
          buf[#buf + 1] = d
          j = j + 1
        end
      end
      add("string", table.concat(buf))
      i = j + 1
    elseif c:match("[%a_]") then
      local word = src:match("^[%w_]+", i)
      add("name", word)
      i = i + #word
    elseif c:match("%d") then
      i = i + #src:match("^[%w_%.]+", i)
    else
      add("other", c)
      i = i + 1
    end
  end
  return tokens
end

-- The requires of a source: { target, line, in_function }.
local OPENS = { ["function"] = true, ["do"] = true, ["if"] = true, ["repeat"] = true }
local CLOSES = { ["end"] = true, ["until"] = true }
local function requires_of(src, path)
  local tokens = tokenize(src)
  local out, stack, functions = {}, {}, 0
  for k, t in ipairs(tokens) do
    if t.kind == "name" then
      if OPENS[t.value] then
        stack[#stack + 1] = t.value
        if t.value == "function" then
          functions = functions + 1
        end
      elseif CLOSES[t.value] then
        local top = table.remove(stack)
        assert(top, ("%s:%d: unbalanced %s"):format(path, t.line, t.value))
        if top == "function" then
          functions = functions - 1
        end
      elseif t.value == "require" then
        local prev = tokens[k - 1]
        local nxt = tokens[k + 1]
        if nxt and nxt.kind == "other" and nxt.value == "(" then
          nxt = tokens[k + 2]
        end
        if not (prev and prev.kind == "other" and (prev.value == "." or prev.value == ":"))
          and nxt and nxt.kind == "string" then
          out[#out + 1] = { target = nxt.value, line = t.line, in_function = functions > 0 }
        end
      end
    end
  end
  assert(#stack == 0, path .. ": unbalanced blocks at the end of the file")
  return out
end

-- module -> list of { target, line, in_function } (mnemo modules only).
local function build_graph()
  local names = module_names()
  local known = {}
  for _, m in ipairs(names) do
    known[m] = true
  end
  local graph = {}
  for _, m in ipairs(names) do
    local edges = {}
    for _, r in ipairs(requires_of(read(file_of(m)), file_of(m))) do
      if known[r.target] then
        edges[#edges + 1] = r
      end
    end
    graph[m] = edges
  end
  return graph, names
end

-- Every cycle closed by a back edge of a depth-first walk (modules in
-- order, edges in file order), each as "a -> b -> a" with the lines.
local function find_cycles(graph, names, skip)
  local colour, path, cycles = {}, {}, {}
  local function visit(m)
    colour[m] = "grey"
    for _, e in ipairs(graph[m]) do
      if not (skip[m] and skip[m][e.target]) then
        path[#path + 1] = { from = m, edge = e }
        if colour[e.target] == "grey" then
          local start
          for i = #path, 1, -1 do
            if path[i].from == e.target then
              start = i
              break
            end
          end
          local parts = { e.target }
          for i = start, #path do
            local p = path[i]
            parts[#parts + 1] = ("-> %s (%s:%d%s)"):format(p.edge.target, file_of(p.from), p.edge.line,
              p.edge.in_function and ", inside a function" or "")
          end
          cycles[#cycles + 1] = table.concat(parts, " ")
        elseif not colour[e.target] then
          visit(e.target)
        end
        path[#path] = nil
      end
    end
    colour[m] = "black"
  end
  for _, m in ipairs(names) do
    if not colour[m] then
      visit(m)
    end
  end
  return cycles
end

describe("lua/mnemo modules", function()
  local graph, names = build_graph()

  it("are found, and their requires read", function()
    assert.is_true(#names >= 20, "modules found in " .. DIR)
    local guard_deps = {}
    for _, e in ipairs(graph["mnemo.guard"]) do
      guard_deps[e.target] = true
    end
    assert.is_true(guard_deps["mnemo.breaker"], "mnemo.guard requires mnemo.breaker")
  end)

  it("require one another without a cycle (deferred requires count too)", function()
    local cycles = find_cycles(graph, names, ENTRY_POINTS)
    if #cycles > 0 then
      print("\nrequire cycles:\n  " .. table.concat(cycles, "\n  "))
    end
    assert.same({}, cycles)
  end)

  it("keep their requires at the top, but for the listed entry points", function()
    local hidden = {}
    for _, m in ipairs(names) do
      for _, e in ipairs(graph[m]) do
        if e.in_function and not (ENTRY_POINTS[m] and ENTRY_POINTS[m][e.target]) then
          hidden[#hidden + 1] = ("%s:%d requires %s inside a function"):format(file_of(m), e.line, e.target)
        end
      end
    end
    assert.same({}, hidden)
  end)

  it("list only entry points that exist, inside a function", function()
    for from, tos in pairs(ENTRY_POINTS) do
      for to in pairs(tos) do
        local found
        for _, e in ipairs(graph[from] or {}) do
          if e.target == to then
            found = e
          end
        end
        assert.truthy(found, ("entry point %s -> %s: no such require"):format(from, to))
        assert.is_true(found.in_function, ("entry point %s -> %s: at the top of the file"):format(from, to))
      end
    end
  end)

  it("each load alone in a fresh luajit", function()
    -- All children started first, then read: they run side by side.
    local children = {}
    for _, m in ipairs(names) do
      local code = ('local m = require %q; assert(type(m) == "table", "returned " .. type(m))'):format(m)
      local cmd = ("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' luajit -e '%s' 2>&1;"
        .. " echo \"exit $?\""):format(code)
      children[#children + 1] = { module = m, pipe = assert(io.popen(cmd)) }
    end
    local failed = {}
    for _, c in ipairs(children) do
      local out = c.pipe:read("*a")
      c.pipe:close()
      local status = out:match("exit (%d+)%s*$")
      if status ~= "0" then
        failed[#failed + 1] = c.module .. ": " .. out
      end
    end
    assert.same({}, failed)
  end)
end)
