-- check-layers.lua: the rules of runtime/'s layers that include paths alone
-- cannot enforce, as TAP (scripts/run-tests counts it). Run with luajit from
-- the repository root; $CC, $CORE_INC and $LOOP_INC come from the Makefile.
--
--   runtime/core  no Lua, no libuv, no client library: decisions take now_ns
--   runtime/loop  libuv, libpq, hiredis, http-parser; no Lua
--   runtime/lua   the mnemo_core module (bindings over core and loop)
--   runtime/host  mnemo-run
-- A layer includes headers of its own folder and of the layers below it,
-- never above; no two parts include each other, directly or around a
-- circle. <uv.h> and the client libraries live in /usr/include, where any
-- compiler finds them, so their absence from core/ is checked here; a Lua
-- header in core/ or loop/ fails the build itself (LuaJIT's headers are in
-- their own directory, not on those layers' include path), which is
-- checked too.
local LAYERS = { "core", "loop", "lua", "host" }
local RANK = { core = 1, loop = 2, lua = 3, host = 4 }
-- System headers a layer below `lua`/`loop` may not include.
local FORBIDDEN = {
  core = { "uv%.h", "lua%.h", "lauxlib%.h", "lualib%.h", "luajit%.h", "luv/", "libpq%-fe%.h", "hiredis/",
    "http_parser%.h" },
  loop = { "lua%.h", "lauxlib%.h", "lualib%.h", "luajit%.h", "luv/" },
  lua = {},
  host = {},
}

local n, failed = 0, 0
local function check(ok, what, detail)
  n = n + 1
  if ok then
    print(("ok %d - %s"):format(n, what))
  else
    failed = failed + 1
    print(("not ok %d - %s"):format(n, what))
    for line in tostring(detail or ""):gmatch("[^\n]+") do
      print("# " .. line)
    end
  end
end

local function lines_of(cmd)
  local out = {}
  local p = assert(io.popen(cmd))
  for l in p:lines() do
    out[#out + 1] = l
  end
  p:close()
  return out
end

-- Every file of a layer, with its includes.
local files, layer_of_header = {}, {}
for _, layer in ipairs(LAYERS) do
  for _, path in ipairs(lines_of("ls runtime/" .. layer .. "/*.[ch] 2>/dev/null")) do
    local f = { path = path, layer = layer, name = path:match("([^/]+)$"), local_inc = {}, sys_inc = {} }
    for l in io.lines(path) do
      local q = l:match('^%s*#%s*include%s+"([^"]+)"')
      local s = l:match("^%s*#%s*include%s+<([^>]+)>")
      if q then
        f.local_inc[#f.local_inc + 1] = q
      elseif s then
        f.sys_inc[#f.sys_inc + 1] = s
      end
    end
    files[#files + 1] = f
    if path:match("%.h$") then
      layer_of_header[f.name] = layer
    end
  end
end
check(#files > 0, "runtime/ has its layer folders", "no files under runtime/{core,loop,lua,host}")
local stray = lines_of("ls runtime/*.c runtime/*.h 2>/dev/null")
check(#stray == 0, "every C file of runtime/ is in a layer folder", table.concat(stray, "\n"))

-- Includes point down or sideways, never up; no forbidden system header.
for _, layer in ipairs(LAYERS) do
  local problems = {}
  for _, f in ipairs(files) do
    if f.layer == layer then
      for _, inc in ipairs(f.local_inc) do
        local at = layer_of_header[inc]
        if not at then
          problems[#problems + 1] = ("%s includes \"%s\", which is in no layer folder"):format(f.path, inc)
        elseif RANK[at] > RANK[layer] then
          problems[#problems + 1] = ("%s includes %s/%s, a layer above it"):format(f.path, at, inc)
        end
      end
      for _, inc in ipairs(f.sys_inc) do
        for _, pat in ipairs(FORBIDDEN[layer]) do
          if inc:find("^" .. pat) then
            problems[#problems + 1] = ("%s includes <%s>, which %s/ may not"):format(f.path, inc, layer)
          end
        end
      end
    end
  end
  check(#problems == 0, ("runtime/%s includes only its own layer and those below"):format(layer),
    table.concat(problems, "\n"))
end

-- No circle between parts (a part: x.c with x.h).
local edges = {}
for _, f in ipairs(files) do
  local part = f.name:gsub("%.[ch]$", "")
  edges[part] = edges[part] or {}
  for _, inc in ipairs(f.local_inc) do
    local to = inc:gsub("%.h$", "")
    if to ~= part then
      edges[part][to] = true
    end
  end
end
local state, stack, circle = {}, {}, nil
local function visit(p)
  if circle then
    return
  end
  state[p] = "open"
  stack[#stack + 1] = p
  for to in pairs(edges[p] or {}) do
    if state[to] == "open" then
      local from
      for i, s in ipairs(stack) do
        if s == to then
          from = i
        end
      end
      circle = table.concat(stack, " -> ", from) .. " -> " .. to
      return
    elseif state[to] == nil then
      visit(to)
    end
  end
  stack[#stack] = nil
  state[p] = "done"
end
local parts = {}
for p in pairs(edges) do
  parts[#parts + 1] = p
end
table.sort(parts)
for _, p in ipairs(parts) do
  if state[p] == nil then
    visit(p)
  end
end
check(circle == nil, "the include graph of runtime/ has no circle", circle)

-- The build itself refuses a Lua header below the Lua layer.
local cc = os.getenv("CC") or "cc"
for _, layer in ipairs { "core", "loop" } do
  local inc = os.getenv(layer:upper() .. "_INC")
  if inc then
    local ok = os.execute(("printf '#include <lua.h>\\n' | %s %s -x c -fsyntax-only - 2>/dev/null"):format(cc, inc))
    check(ok ~= 0 and ok ~= true, ("a Lua header in runtime/%s/ fails to compile with its flags"):format(layer),
      "`#include <lua.h>` compiled with " .. inc)
  end
end

print("1.." .. n)
os.exit(failed == 0 and 0 or 1)
