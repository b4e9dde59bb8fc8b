-- The indexing pipeline against raw tree-sitter parsing, on one generated
-- corpus: (a) read + mnemo.chunker.chunk of every file, (b)
-- mnemo.index of the same tree (walk, read, chunk, built-in hashing
-- embedder, one PostgreSQL transaction per file) into a fresh database;
-- files/s and MB/s of each and the ratio b/a (target >= 0.70).
-- Run: build/mnemo-run bench/pipeline_bench.lua [files] [--profile]
--      (part of `make bench`, which runs it under scripts/with-services)
-- PostgreSQL: $MNEMO_PG_DSN; when unset, the private server in .mnemo/pg
-- is used (started by scripts/pg-server, and stopped again if this bench
-- started it). A database bench_<pid> is created and dropped at the end.
-- --profile adds a breakdown of where (b) spends its time;
-- MNEMO_BENCH_KEEP=1 keeps the generated corpus (its path is printed).
local mnemo = require "mnemo"
local uv = require "luv"

local FILES, PROFILE = 2000, false
for _, a in ipairs(arg or {}) do
  if a == "--profile" then
    PROFILE = true
  elseif tonumber(a) then
    FILES = math.max(4, math.floor(tonumber(a)))
  end
end
local CONCURRENCY = 4 -- the indexer's default; (a) uses as many tasks
local ROUNDS_A, ROUNDS_B = 3, 2 -- the best round of each counts
local MB = 1e6

local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/bench/[^/]*$") or ".")
mnemo.log.set_level("critical")
if not mnemo.policy.status().path then
  assert(mnemo.policy.load(ROOT .. "/policies/default.lua"))
end

------------------------------------------------------------------------
-- A deterministic corpus: Python, JavaScript, C and Lua in turn, 1-8 KB
-- each, with imports of earlier modules of the same language, classes (or
-- structs) with methods, functions, and calls within and across files.
------------------------------------------------------------------------
local function rng(seed)
  local s = seed % 2147483646 + 1
  local r = {}
  function r.int(a, b)
    s = s * 16807 % 2147483647 -- Park-Miller: exact in doubles
    return a + s % (b - a + 1)
  end
  function r.pick(t)
    return t[r.int(1, #t)]
  end
  return r
end

local VERBS = { "parse", "load", "store", "build", "resolve", "compute", "validate", "render", "fetch", "merge",
  "split", "encode", "decode", "flush", "apply", "collect", "format", "scan", "index", "match" }
local NOUNS = { "request", "config", "token", "user", "record", "buffer", "header", "payload", "session", "cache",
  "query", "result", "entry", "node", "graph", "chunk", "path", "message", "event", "score" }
local LANGS = { "python", "javascript", "c", "lua" }
local EXT = { python = "py", javascript = "js", c = "c", lua = "lua" }
local PACKAGES = 40

local function camel(s)
  return (s:gsub("_(%l)", string.upper))
end
local function pascal(s)
  return (camel(s):gsub("^%l", string.upper))
end

-- Statement templates. $I indent, $C a callee, $N a number, $W and $V words.
local STMTS = {
  python = {
    "$Ivalue = $C(value, $N)",
    "$Iif value > $N:\n$I    value = $C(value, 1)\n$Ielse:\n$I    total += $N",
    "$Ifor item in range($N):\n$I    total += $C(item, value) if item % 3 else item",
    "$I# $W the $V before the $W step, then $C",
    "$Iresult = {\"$W\": value, \"$V\": total, \"count\": $N}\n$Itotal += len(result)",
    "$Iwhile value > $N:\n$I    value = value // 2\n$I    total += $C(value, total)",
    "$Itry:\n$I    total += $C(total, $N)\n$Iexcept ValueError as exc:\n"
      .. "$I    raise RuntimeError(\"$W failed\") from exc",
  },
  python_method = {
    "$Iself.items.append($C(value, $N))",
    "$Iif len(self.items) > self.limit:\n$I    self.items.pop(0)",
  },
  javascript = {
    "$Ivalue = $C(value, $N);",
    "$Iif (value > $N) {\n$I  value = $C(value, 1);\n$I} else {\n$I  total += $N;\n$I}",
    "$Ifor (let i = 0; i < $N; i++) {\n$I  total += i % 3 ? $C(i, value) : i;\n$I}",
    "$I// $W the $V before the $W step, then $C",
    "$Itotal += Object.keys({ $W: value, $V: total, count: $N }).length;",
    "$Iwhile (value > $N) {\n$I  value = Math.floor(value / 2);\n$I  total += $C(value, total);\n$I}",
    "$Itry {\n$I  total += $C(total, $N);\n$I} catch (err) {\n$I  throw new Error(`$W failed: ${err.message}`);\n$I}",
  },
  javascript_method = {
    "$Ithis.items.push($C(value, $N));",
    "$Iif (this.items.length > this.limit) {\n$I  this.items.shift();\n$I}",
  },
  c = {
    "$Ivalue = $C(value, $N);",
    "$Iif (value > $N) {\n$I  value = $C(value, 1);\n$I} else {\n$I  total += $N;\n$I}",
    "$Ifor (i = 0; i < $N; i++) {\n$I  total += (i % 3) ? $C(i, value) : i;\n$I}",
    "$I/* $W the $V before the $W step, then $C */",
    "$Iif (len > $N) {\n$I  memcpy(buf, \"$W\", 4);\n$I  total += (int)strlen(buf);\n$I}",
    "$Iwhile (value > $N) {\n$I  value /= 2;\n$I  total += $C(value, total);\n$I}",
    "$Iswitch (value % 4) {\n$Icase 0:\n$I  total += $C(total, $N);\n$I  break;\n$Icase 1:\n$I  total -= $N;\n" ..
      "$I  break;\n$Idefault:\n$I  break;\n$I}",
  },
  c_method = {
    "$Is->count += $C(value, s->limit);",
    "$Iif (s->count > s->limit) {\n$I  s->count = 0;\n$I}",
  },
  lua = {
    "$Ivalue = $C(value, $N)",
    "$Iif value > $N then\n$I  value = $C(value, 1)\n$Ielse\n$I  total = total + $N\n$Iend",
    "$Ifor i = 1, $N do\n$I  if i % 3 == 0 then\n$I    total = total + $C(i, value)\n$I  end\n$Iend",
    "$I-- $W the $V before the $W step, then $C",
    "$Ilocal result = { $W = value, $V = total, count = $N }\n$Itotal = total + result.count",
    "$Iwhile value > $N do\n$I  value = math.floor(value / 2)\n$I  total = total + $C(value, total)\n$Iend",
    "$Ilocal ok, err = pcall($C, total, $N)\n$Iif not ok then\n$I  error(\"$W failed: \" .. tostring(err))\n$Iend",
  },
  lua_method = {
    "$Iself.items[#self.items + 1] = $C(value, $N)",
    "$Iif #self.items > self.limit then\n$I  table.remove(self.items, 1)\n$Iend",
  },
}

local function body(out, r, lang, callees, indent, method)
  local templates, extra = STMTS[lang], method and STMTS[lang .. "_method"]
  for _ = 1, r.int(3, 9) do
    local t = (extra and r.int(1, 4) == 1) and r.pick(extra) or r.pick(templates)
    out[#out + 1] = (t:gsub("%$(%u)", function(k)
      if k == "I" then
        return indent
      elseif k == "C" then
        return r.pick(callees)
      elseif k == "N" then
        return tostring(r.int(2, 250))
      elseif k == "W" then
        return r.pick(NOUNS)
      else
        return r.pick(VERBS)
      end
    end))
  end
end

local function export_names(k)
  local r = rng(k * 7919)
  local names, seen = {}, {}
  while #names < 3 do
    local n = r.pick(VERBS) .. "_" .. r.pick(NOUNS)
    if not seen[n] then
      seen[n] = true
      names[#names + 1] = n
    end
  end
  return names
end

local function module_of(k)
  return ("pkg%02d"):format((k - 1) % PACKAGES + 1), ("mod_%04d"):format(k)
end

-- The source text of file k (1-based).
local function generate(k)
  local lang = LANGS[(k - 1) % 4 + 1]
  local r = rng(k)
  local target = r.int(1024, 8 * 1024)
  local out = {}
  local used = {}
  local exports = export_names(k)
  for _, n in ipairs(exports) do
    used[n] = true
  end
  -- Imports: up to 3 earlier modules of the same language.
  local imports = {}
  for _ = 1, r.int(1, 3) do
    local j = k - 4 * r.int(1, 60)
    if j >= 1 then
      local pkg, mod = module_of(j)
      imports[#imports + 1] = { pkg = pkg, mod = mod, names = export_names(j) }
    end
  end
  local callees = {}
  local function own(name)
    if lang == "python" or lang == "c" then
      return name
    elseif lang == "javascript" then
      return camel(name)
    else
      return "M." .. name
    end
  end
  for _, n in ipairs(exports) do
    callees[#callees + 1] = own(n)
  end
  local ind = lang == "python" and "    " or "  "
  local word = r.pick(NOUNS)
  -- Header.
  if lang == "python" then
    out[#out + 1] = ('"""The %s %s layer: %s and %s."""'):format(word, r.pick(VERBS), r.pick(NOUNS), r.pick(NOUNS))
    out[#out + 1] = "import os\nimport json"
    for _, im in ipairs(imports) do
      out[#out + 1] = ("from %s.%s import %s"):format(im.pkg, im.mod, table.concat(im.names, ", "))
      for _, n in ipairs(im.names) do
        callees[#callees + 1] = n
      end
    end
    out[#out + 1] = ("\nLIMIT = %d\n"):format(r.int(16, 512))
  elseif lang == "javascript" then
    out[#out + 1] = ("// The %s %s layer: %s and %s."):format(word, r.pick(VERBS), r.pick(NOUNS), r.pick(NOUNS))
    out[#out + 1] = '"use strict";'
    for _, im in ipairs(imports) do
      local names = {}
      for i, n in ipairs(im.names) do
        names[i] = camel(n)
        callees[#callees + 1] = names[i]
      end
      out[#out + 1] = ('import { %s } from "../%s/%s.js";'):format(table.concat(names, ", "), im.pkg, im.mod)
    end
    out[#out + 1] = ("\nconst LIMIT = %d;\n"):format(r.int(16, 512))
  elseif lang == "c" then
    out[#out + 1] = ("/* The %s %s layer: %s and %s. */"):format(word, r.pick(VERBS), r.pick(NOUNS), r.pick(NOUNS))
    out[#out + 1] = "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>"
    for _, im in ipairs(imports) do
      out[#out + 1] = ('#include "%s/%s.h"'):format(im.pkg, im.mod)
      for _, n in ipairs(im.names) do
        callees[#callees + 1] = n
      end
    end
    out[#out + 1] = ("\n#define LIMIT %d\n"):format(r.int(16, 512))
    for _, n in ipairs(exports) do
      out[#out + 1] = ("int %s(int value, int n);"):format(n)
    end
    out[#out + 1] = ""
  else
    out[#out + 1] = ("-- The %s %s layer: %s and %s."):format(word, r.pick(VERBS), r.pick(NOUNS), r.pick(NOUNS))
    for _, im in ipairs(imports) do
      out[#out + 1] = ('local %s = require "%s.%s"'):format(im.mod, im.pkg, im.mod)
      for _, n in ipairs(im.names) do
        callees[#callees + 1] = im.mod .. "." .. n
      end
    end
    out[#out + 1] = ("\nlocal M = {}\nlocal LIMIT = %d\n"):format(r.int(16, 512))
  end
  local function fresh_name()
    while true do
      local n = r.pick(VERBS) .. "_" .. r.pick(NOUNS)
      if not used[n] then
        used[n] = true
        return n
      end
    end
  end
  local function func(name, exported)
    if lang == "python" then
      out[#out + 1] = ("\ndef %s(value, n=%d):"):format(name, r.int(1, 9))
      out[#out + 1] = ('    """%s the %s."""\n    total = 0'):format(name:gsub("_", " "), r.pick(NOUNS))
      body(out, r, lang, callees, ind)
      out[#out + 1] = "    return total + value\n"
    elseif lang == "javascript" then
      out[#out + 1] = ("%sfunction %s(value, n = %d) {\n  let total = 0;"):format(exported and "export " or "",
        camel(name), r.int(1, 9))
      body(out, r, lang, callees, ind)
      out[#out + 1] = "  return total + value;\n}\n"
    elseif lang == "c" then
      out[#out + 1] = ("%sint %s(int value, int n) {\n  int total = 0, i;\n  char buf[64];\n" ..
        "  size_t len = sizeof buf;"):format(exported and "" or "static ", name)
      body(out, r, lang, callees, ind)
      out[#out + 1] = "  (void)i;\n  (void)len;\n  return total + value + n;\n}\n"
    else
      out[#out + 1] = exported and ("function M.%s(value, n)"):format(name)
        or ("local function %s(value, n)"):format(name)
      out[#out + 1] = "  local total = 0"
      body(out, r, lang, callees, ind)
      out[#out + 1] = "  return total + value\nend\n"
    end
  end
  local function class()
    local cname = fresh_name()
    local methods = {}
    for i = 1, r.int(2, 5) do
      methods[i] = fresh_name()
    end
    local mcallees = {}
    for i, c in ipairs(callees) do
      mcallees[i] = c
    end
    if lang == "python" then
      for _, m in ipairs(methods) do
        mcallees[#mcallees + 1] = "self." .. m
      end
      out[#out + 1] = ('\nclass %s:\n    """Keeps %s %s."""\n\n    def __init__(self, limit=LIMIT):\n' ..
        "        self.limit = limit\n        self.items = []\n"):format(pascal(cname), r.pick(NOUNS), r.pick(NOUNS))
      for _, m in ipairs(methods) do
        out[#out + 1] = ("    def %s(self, value):\n        total = len(self.items)"):format(m)
        body(out, r, lang, mcallees, "        ", true)
        out[#out + 1] = "        return total + value\n"
      end
    elseif lang == "javascript" then
      for _, m in ipairs(methods) do
        mcallees[#mcallees + 1] = "this." .. camel(m)
      end
      out[#out + 1] = ("export class %s {\n  constructor(limit = LIMIT) {\n    this.limit = limit;\n" ..
        "    this.items = [];\n  }\n"):format(pascal(cname))
      for _, m in ipairs(methods) do
        out[#out + 1] = ("  %s(value) {\n    let total = this.items.length;"):format(camel(m))
        body(out, r, lang, mcallees, "    ", true)
        out[#out + 1] = "    return total + value;\n  }\n"
      end
      out[#out + 1] = "}\n"
    elseif lang == "c" then
      out[#out + 1] = ("struct %s_state {\n  int limit;\n  int count;\n  double items[16];\n};\n"):format(cname)
      for _, m in ipairs(methods) do
        out[#out + 1] = ("static int %s_%s(struct %s_state *s, int value) {\n  int total = s->count, i;\n" ..
          "  char buf[64];\n  size_t len = sizeof buf;"):format(cname, m, cname)
        body(out, r, lang, mcallees, "  ", true)
        out[#out + 1] = "  (void)i;\n  (void)len;\n  return total + value;\n}\n"
      end
    else
      local cl = pascal(cname)
      for _, m in ipairs(methods) do
        mcallees[#mcallees + 1] = "self:" .. m
      end
      out[#out + 1] = ("local %s = {}\n%s.__index = %s\n\nfunction %s.new(limit)\n" ..
        "  return setmetatable({ limit = limit or LIMIT, items = {} }, %s)\nend\n"):format(cl, cl, cl, cl, cl)
      for _, m in ipairs(methods) do
        out[#out + 1] = ("function %s:%s(value)\n  local total = #self.items"):format(cl, m)
        body(out, r, lang, mcallees, "  ", true)
        out[#out + 1] = "  return total + value\nend\n"
      end
      out[#out + 1] = ("M.%s = %s\n"):format(cl, cl)
    end
  end
  -- The exported functions last, helpers and classes (which the exported
  -- functions may not call, the helpers may call them) before, as many as
  -- fit in the target size.
  local function measure(buf)
    local n = 0
    for _, s in ipairs(buf) do
      n = n + #s + 1
    end
    return n
  end
  local file = out
  local tail = {}
  out = tail
  for _, n in ipairs(exports) do
    func(n, true)
  end
  local size = measure(file) + measure(tail)
  for _ = 1, 40 do
    local unit, name = {}, nil
    out = unit
    if r.int(1, 5) <= 2 then
      class()
    else
      name = fresh_name()
      func(name, false)
    end
    local usize = measure(unit)
    if size + usize > target then
      break
    end
    size = size + usize
    for _, s in ipairs(unit) do
      file[#file + 1] = s
    end
    if name then
      callees[#callees + 1] = lang == "javascript" and camel(name) or name
    end
  end
  out = file
  for _, s in ipairs(tail) do
    out[#out + 1] = s
  end
  if lang == "lua" then
    out[#out + 1] = "return M"
  elseif lang == "python" then
    out[#out + 1] = ('\nif __name__ == "__main__":\n    print(%s(%d))'):format(exports[1], r.int(1, 99))
  end
  return lang, table.concat(out, "\n") .. "\n"
end

local function make_corpus(n)
  local dir = os.tmpname()
  os.remove(dir)
  assert(uv.fs_mkdir(dir, 448))
  for p = 1, math.min(n, PACKAGES) do
    assert(uv.fs_mkdir(("%s/pkg%02d"):format(dir, p), 493))
  end
  local files, bytes, by_lang = {}, 0, {}
  for k = 1, n do
    local lang, text = generate(k)
    local pkg, mod = module_of(k)
    local path = ("%s/%s/%s.%s"):format(dir, pkg, mod, EXT[lang])
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    files[k] = { path = path, size = #text, language = lang }
    bytes = bytes + #text
    by_lang[lang] = (by_lang[lang] or 0) + 1
  end
  return dir, files, bytes, by_lang
end

------------------------------------------------------------------------
-- (a) read + chunk every file, CONCURRENCY tasks.
------------------------------------------------------------------------
local function read_file(path, size)
  local err, fd = mnemo.await(function(wake)
    uv.fs_open(path, "r", 420, wake)
  end)
  assert(not err and fd, err)
  local rerr, data = mnemo.await(function(wake)
    uv.fs_read(fd, size, 0, wake)
  end)
  mnemo.await(function(wake)
    uv.fs_close(fd, wake)
  end)
  assert(not rerr and data, rerr)
  return data
end

local function each_concurrently(items, tasks, fn)
  local next_i, finished = 1, 0
  for _ = 1, tasks do
    mnemo.spawn(function()
      while next_i <= #items do
        local item = items[next_i]
        next_i = next_i + 1
        fn(item)
      end
      finished = finished + 1
    end)
  end
  while finished < tasks do
    mnemo.sleep(0.001)
  end
end

local function raw_chunk(list)
  local chunks = 0
  local t0 = mnemo.now()
  each_concurrently(list, CONCURRENCY, function(f)
    local text = read_file(f.path, f.size)
    local c = assert(mnemo.chunker.chunk { language = f.language, source = text })
    chunks = chunks + #c
  end)
  return mnemo.now() - t0, chunks
end

------------------------------------------------------------------------
-- PostgreSQL: a fresh database per run of (b).
------------------------------------------------------------------------
local function with_database(dsn, name)
  if dsn:match("^postgres[%a]*://") then
    local head, query = dsn:match("^(postgres[%a]*://[^/?]*)/?[^?]*(.*)$")
    return head .. "/" .. name .. query
  end
  return dsn .. " dbname=" .. name
end

local started_server
local function server_dsn()
  local dsn = os.getenv("MNEMO_PG_DSN")
  if dsn and dsn ~= "" then
    return dsn
  end
  local dir = ROOT .. "/.mnemo/pg"
  local running = os.execute(("%s/scripts/pg-server status %s >/dev/null 2>&1"):format(ROOT, dir)) == 0
  local p = assert(io.popen(("%s/scripts/pg-server start %s 2>&1"):format(ROOT, dir)))
  local out = p:read("*a")
  p:close()
  dsn = out:match("(postgresql://%S+)%s*$")
  assert(dsn, "pipeline_bench: could not start PostgreSQL (scripts/pg-server): " .. out)
  if not running then
    started_server = dir
  end
  return dsn
end

local function stop_server()
  if started_server then
    os.execute(("%s/scripts/pg-server stop %s >/dev/null 2>&1"):format(ROOT, started_server))
  end
end

------------------------------------------------------------------------
-- --profile: where (b)'s time goes. Wraps the chunker, the embedder, the
-- file reads and every PostgreSQL statement, summing task-seconds.
------------------------------------------------------------------------
local prof = { t = {}, n = {} }
local function charge(key, dt)
  prof.t[key] = (prof.t[key] or 0) + dt
  prof.n[key] = (prof.n[key] or 0) + 1
end

local function timed(key, fn)
  return function(...)
    local t0 = mnemo.now()
    local r = { pcall(fn, ...) }
    charge(key, mnemo.now() - t0)
    if not r[1] then
      error(r[2], 0)
    end
    return unpack(r, 2, table.maxn(r))
  end
end

local unwrap = {}
local function install_profile(opts)
  local chunker = mnemo.chunker
  opts.chunker = { language_for = chunker.language_for, chunk = timed("chunk (parse, pool)", chunker.chunk),
    languages = chunker.languages }
  opts.embedder = timed("embed (hashing)", mnemo.embed.hashing(opts.dims or mnemo.indexer.DEFAULTS.dims))
  local Conn = mnemo.pg.Conn
  local query, label = Conn.query, {}
  Conn.query = function(self, sql, params)
    local verb = label[sql]
    if not verb then
      -- The statement's verb and the tables it writes (or what it selects).
      verb = sql:match("^%s*(%u+)") or "?"
      local tables = {}
      for _, pattern in ipairs { "INSERT INTO%s+([%w_]+)", "DELETE FROM%s+([%w_]+)" } do
        for t in sql:gmatch(pattern) do
          tables[#tables + 1] = t
        end
        if #tables > 0 then
          verb = pattern:match("^%u+") .. " " .. table.concat(tables, "+")
          break
        end
      end
      if verb == "SELECT" then
        verb = "SELECT " .. (sql:match("^%s*SELECT%s+([%w_]+)") or "?")
      end
      label[sql] = verb
    end
    local t0 = mnemo.now()
    local rows, err = query(self, sql, params)
    charge("sql " .. verb, mnemo.now() - t0)
    return rows, err
  end
  local fs = {}
  for _, name in ipairs { "fs_open", "fs_read", "fs_close" } do
    local orig = uv[name]
    fs[name] = orig
    uv[name] = function(...)
      local args = { n = select("#", ...), ... }
      local cb = args[args.n]
      if type(cb) == "function" then
        local t0 = mnemo.now()
        args[args.n] = function(...)
          charge("read (open/read/close)", mnemo.now() - t0)
          return cb(...)
        end
      end
      return orig(unpack(args, 1, args.n))
    end
  end
  unwrap[#unwrap + 1] = function()
    Conn.query = query
    for name, orig in pairs(fs) do
      uv[name] = orig
    end
  end
end

local function cpu_seconds()
  local r = uv.getrusage()
  return r.utime.sec + r.utime.usec / 1e6 + r.stime.sec + r.stime.usec / 1e6
end

-- CPU seconds of a PostgreSQL server: the postmaster, its live children
-- and its reaped children (the backends of closed connections).
local function proc_stat(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "rb")
  if not f then
    return nil
  end
  local line = f:read("*l")
  f:close()
  local v = {}
  for x in line:match("%)%s+(.*)$"):gmatch("%S+") do
    v[#v + 1] = x
  end
  return tonumber(v[2]), (v[12] + v[13]) / 100, (v[14] + v[15]) / 100 -- ppid, own, reaped children
end

-- CPU seconds of the loop thread alone (the main thread: Lua, libpq,
-- JSON, embedding; the parses run on the pool threads).
local function loop_cpu_seconds()
  local _, own = proc_stat("self/task/" .. uv.os_getpid())
  return own or 0
end

local function server_cpu(postmaster)
  if not postmaster then
    return nil
  end
  local _, own, reaped = proc_stat(postmaster)
  if not own then
    return nil
  end
  local total = own + reaped
  local req = uv.fs_scandir("/proc")
  while req do
    local name = uv.fs_scandir_next(req)
    if not name then
      break
    end
    if name:match("^%d+$") then
      local ppid, cown, creaped = proc_stat(name)
      if ppid == postmaster then
        total = total + cown + creaped
      end
    end
  end
  return total
end

local function postmaster_pid(conn)
  local rows = conn:query("SHOW data_directory")
  local f = rows and rows[1] and io.open(rows[1].data_directory .. "/postmaster.pid", "rb")
  if not f then
    return nil
  end
  local pid = tonumber(f:read("*l"))
  f:close()
  return pid
end

local function machine_busy()
  local f = io.open("/proc/stat", "rb")
  if not f then
    return nil
  end
  local line = f:read("*l")
  f:close()
  local v = {}
  for x in line:gmatch("%d+") do
    v[#v + 1] = tonumber(x)
  end
  local total = 0
  for _, x in ipairs(v) do
    total = total + x
  end
  local idle = v[4] + (v[5] or 0)
  return (total - idle) / 100, total / 100 -- USER_HZ is 100 on Linux
end

------------------------------------------------------------------------
-- The run.
------------------------------------------------------------------------
local t_start = mnemo.now()
local dir, files, bytes, by_lang = make_corpus(FILES)
local t_gen = mnemo.now() - t_start
local load = uv.loadavg()

-- One run of (b) into a fresh database, dropped afterwards. Returns its
-- seconds, report, row counts and CPU figures.
local function index_once(admin, sdsn, postmaster, profile)
  local db = "bench_" .. uv.os_getpid()
  admin:exec("DROP DATABASE IF EXISTS " .. db .. " WITH (FORCE)")
  admin:exec("CREATE DATABASE " .. db)
  local res = {}
  local ok, err = pcall(function()
    local dsn = with_database(sdsn, db)
    local conn = assert(mnemo.pg.connect(dsn))
    mnemo.pg.migrate(conn, mnemo.pg.MIGRATIONS)
    local opts = { root = dir, repository = "bench", dsn = dsn, concurrency = CONCURRENCY,
      cache = mnemo.cache.cascade { l1 = mnemo.cache.new { max_bytes = 16 * 1024 * 1024 } } }
    if profile then
      -- Round trip of one trivial statement, and the walk alone.
      local t0 = mnemo.now()
      for _ = 1, 500 do
        conn:exec("SELECT 1")
      end
      res.rtt = (mnemo.now() - t0) / 500
      t0 = mnemo.now()
      mnemo.indexer.walk(dir)
      res.walk = mnemo.now() - t0
      install_profile(opts)
    end
    local cpu0, loop0, pg0, busy0, all0 = cpu_seconds(), loop_cpu_seconds(), server_cpu(postmaster), machine_busy()
    local t0 = mnemo.now()
    res.report = mnemo.index(opts)
    res.seconds = mnemo.now() - t0
    res.cpu, res.loop = cpu_seconds() - cpu0, loop_cpu_seconds() - loop0
    for _, u in ipairs(unwrap) do
      u()
    end
    if pg0 then
      mnemo.sleep(0.2) -- the backends of the closed connections exit and are reaped
      res.pg_cpu = server_cpu(postmaster) - pg0
    end
    local busy1, all1 = machine_busy()
    if busy1 then
      res.busy, res.all = busy1 - busy0, all1 - all0
    end
    res.rows = {}
    for _, t in ipairs { "code_chunks", "graph_nodes", "graph_edges" } do
      res.rows[t] = tonumber(conn:exec("SELECT count(*) AS n FROM " .. t)[1].n)
    end
    conn:close()
  end)
  admin:query("DROP DATABASE IF EXISTS " .. db .. " WITH (FORCE)")
  if not ok then
    error(err, 0)
  end
  return res
end

local function list(samples)
  local out = {}
  for i, s in ipairs(samples) do
    out[i] = ("%.2f"):format(s)
  end
  return table.concat(out, " ")
end

local ok, err = pcall(function()
  local sdsn = server_dsn()
  local admin = assert(mnemo.pg.connect(sdsn))
  local postmaster = postmaster_pid(admin)
  -- Rounds of (a) and (b) alternate, so that a slow spell of this shared
  -- machine hits both; the best round of each counts (noise only ever slows
  -- a round down). The first (a) also warms the page cache.
  local a_runs, a_chunks, a_cpu, a_loop = {}, 0, math.huge, 0
  local b_runs, best = {}, nil
  local rounds_b = PROFILE and 1 or ROUNDS_B
  for r = 1, math.max(ROUNDS_A, rounds_b) do
    if r <= ROUNDS_A then
      local cpu0, loop0 = cpu_seconds(), loop_cpu_seconds()
      a_runs[r], a_chunks = raw_chunk(files)
      if cpu_seconds() - cpu0 < a_cpu then
        a_cpu, a_loop = cpu_seconds() - cpu0, loop_cpu_seconds() - loop0
      end
    end
    if r <= rounds_b then
      local res = index_once(admin, sdsn, postmaster, PROFILE)
      b_runs[r] = res.seconds
      if not best or res.seconds < best.seconds then
        best = res
      end
    end
  end
  admin:close()
  local a = math.min(unpack(a_runs))
  local b, report = best.seconds, best.report

  local n = #files
  local mb = bytes / MB
  local langs = {}
  for _, l in ipairs(LANGS) do
    langs[#langs + 1] = ("%d %s"):format(by_lang[l] or 0, l)
  end
  print(("pipeline (%d files, %.2f MB: %s; %d tasks; %d cores, load average %.1f at the start)"):format(n, mb,
    table.concat(langs, ", "), CONCURRENCY, #uv.cpu_info(), load))
  print(("  (a) read + tree-sitter chunk    %7.1f files/s %6.2f MB/s  (best of %s s; %d chunks)")
    :format(n / a, mb / a, list(a_runs), a_chunks))
  print(("      CPU: mnemo-run %.2f ms/file (loop thread %.2f)"):format(a_cpu / n * 1e3, a_loop / n * 1e3))
  print(("  (b) mnemo.index, hashing + pg   %7.1f files/s %6.2f MB/s  (best of %s s; %d indexed, %d failed, "
    .. "%d skipped)")
    :format(report.files_indexed / b, mb / b, list(b_runs), report.files_indexed, report.files_failed,
      report.files_skipped))
  print(("      CPU: mnemo-run %.2f ms/file (loop thread %.2f), PostgreSQL server %s ms/file; machine busy %.0f %%")
    :format(best.cpu / n * 1e3, best.loop / n * 1e3,
      best.pg_cpu and ("%.2f"):format(best.pg_cpu / n * 1e3) or "?", best.busy and best.busy / best.all * 100 or 0))
  if best.pg_cpu then
    print(("      (b) costs %.1fx the CPU of (a) per file: where both are CPU-bound, b/a <= %.2f; its loop thread"
      .. " alone caps it at %.0f files/s on any number of cores")
      :format((best.cpu + best.pg_cpu) / a_cpu, a_cpu / (best.cpu + best.pg_cpu), n / best.loop))
  end
  print(("      rows: %d code_chunks, %d graph_nodes, %d graph_edges"):format(best.rows.code_chunks,
    best.rows.graph_nodes, best.rows.graph_edges))
  if report.files_failed > 0 or report.files_indexed ~= n then
    local reasons = {}
    for k, v in pairs(report.reasons or {}) do
      reasons[#reasons + 1] = k .. "=" .. v
    end
    print("      WARNING: not every file was indexed: " .. table.concat(reasons, ", "))
  end
  if PROFILE then
    print(("  profile of (b): %d tasks x %.2f s = %.2f task-s; per file:"):format(CONCURRENCY, b, CONCURRENCY * b))
    print(("    walk alone (separately)                    %7.3f s in all"):format(best.walk))
    print(("    one SELECT 1 round trip                    %7.0f us"):format(best.rtt * 1e6))
    local keys, statements, sum = {}, 0, 0
    for k in pairs(prof.t) do
      keys[#keys + 1] = k
    end
    table.sort(keys, function(x, y)
      return prof.t[x] > prof.t[y]
    end)
    for _, k in ipairs(keys) do
      if k:match("^sql ") then
        statements = statements + prof.n[k]
      end
      sum = sum + prof.t[k]
      print(("    %-42s %7.0f us/file  %5.1f %%  (%.1f calls/file, %.0f us/call)"):format(k,
        prof.t[k] / n * 1e6, prof.t[k] / (CONCURRENCY * b) * 100, prof.n[k] / n, prof.t[k] / prof.n[k] * 1e6))
    end
    local rest = CONCURRENCY * b - sum
    print(("    %-42s %7.0f us/file  %5.1f %%"):format("rest (walk, Lua, guards, queueing)", rest / n * 1e6,
      rest / (CONCURRENCY * b) * 100))
    print(("    PostgreSQL statements: %.1f per file (%d in all)"):format(statements / n, statements))
  end
  print(("  ratio b/a = %.2f (target >= 0.70)"):format((report.files_indexed / b) / (n / a)))
end)

if os.getenv("MNEMO_BENCH_KEEP") then
  print("  corpus kept in " .. dir)
else
  os.execute("rm -rf '" .. dir .. "'")
end
stop_server()
if not ok then
  error(err, 0)
end
