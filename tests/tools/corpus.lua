-- A deterministic source tree for chaos and stress tests.
--   local corpus = require "corpus"   (tests/tools on package.path)
--   corpus.generate(root, n, { seed = 1, pathological = 0.001, patho_lines = 2000 })
--     -> { files = n, pathological = { rel paths }, normal = n - #pathological }
-- Files are Python, JavaScript, C and Lua in turn (each 20-60 lines: a class
-- or struct with methods and a few functions calling each other), spread
-- over 50 directories. A pathological file is a .py of patho_lines lines
-- of 1,000-deep parentheses: tree-sitter needs seconds for it, so it runs
-- into the parse_file deadline. Pathological files are placed at evenly
-- spaced indices (never the first), so a run meets them between normal files.
local _M = {}

local function rng(seed)
  local s = seed % 2147483646 + 1
  return function(a, b)
    s = s * 16807 % 2147483647 -- Park-Miller, exact in doubles
    return a + s % (b - a + 1)
  end
end

local TEMPLATES = {
  py = function(i, r)
    local out = { ("import os\n\n\nclass Store%d:\n    def __init__(self):\n        self.items = []\n"):format(i) }
    for m = 1, r(2, 5) do
      out[#out + 1] = ("\n    def op%d(self, key, value=%d):\n        self.items.append(key)\n"
        .. "        return os.path.join(\"data\", key) + str(value * %d)\n"):format(m, r(1, 99), m)
    end
    for f = 1, r(1, 4) do
      out[#out + 1] = ("\n\ndef helper_%d_%d(x):\n    total = 0\n    for k in range(%d):\n"
        .. "        total += k * x\n    return Store%d().op1(str(total))\n"):format(i, f, r(2, 50), i)
    end
    return table.concat(out)
  end,
  js = function(i, r)
    local out = { ("class Widget%d {\n  constructor() {\n    this.items = [];\n  }\n"):format(i) }
    for m = 1, r(2, 5) do
      out[#out + 1] = ("  render%d(value) {\n    this.items.push(value * %d);\n    return this.items.length;\n  }\n")
        :format(m, r(1, 99))
    end
    out[#out + 1] = "}\n"
    for f = 1, r(1, 4) do
      out[#out + 1] = ("\nfunction build%d_%d(x) {\n  const w = new Widget%d();\n  return w.render1(x + %d);\n}\n")
        :format(i, f, i, r(1, 9))
    end
    return table.concat(out)
  end,
  c = function(i, r)
    local out = { ("#include <string.h>\n\nstruct state%d {\n  int count;\n  int limit;\n};\n"):format(i) }
    for f = 1, r(2, 6) do
      out[#out + 1] = ("\nstatic int step%d_%d(struct state%d *s, int value) {\n  if (value > %d) {\n"
        .. "    s->count += value;\n  }\n  return s->count + (int)strlen(\"x\");\n}\n"):format(i, f, i, r(1, 99))
    end
    return table.concat(out)
  end,
  lua = function(i, r)
    local out = { ("local M%d = {}\n"):format(i) }
    for f = 1, r(2, 6) do
      out[#out + 1] = ("\nfunction M%d.fetch%d(value)\n  local total = 0\n  for k = 1, %d do\n"
        .. "    total = total + k * value\n  end\n  return total\nend\n"):format(i, f, r(2, 50))
    end
    out[#out + 1] = ("\nreturn M%d\n"):format(i)
    return table.concat(out)
  end,
}
local EXTS = { "py", "js", "c", "lua" }

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

function _M.pathological_text(lines)
  local line = "x = " .. ("("):rep(1000) .. "1" .. (")"):rep(1000) .. "\n"
  return line:rep(lines or 2000)
end

function _M.generate(root, n, opts)
  opts = opts or {}
  local r = rng(opts.seed or 1)
  local npatho = math.floor(n * (opts.pathological or 0) + 0.5)
  local patho_at = {}
  for k = 1, npatho do
    patho_at[math.floor(k * n / (npatho + 1)) + 1] = true
  end
  local dirs = math.max(1, math.min(50, math.floor(n / 20)))
  for d = 1, dirs do
    assert(os.execute(("mkdir -p '%s/pkg%02d'"):format(root, d)) == 0)
  end
  local result = { files = n, pathological = {}, normal = 0 }
  local patho_text
  for i = 1, n do
    local dir = ("pkg%02d"):format((i - 1) % dirs + 1)
    if patho_at[i] then
      patho_text = patho_text or _M.pathological_text(opts.patho_lines)
      local rel = ("%s/zz_deep%05d.py"):format(dir, i)
      write(root .. "/" .. rel, patho_text)
      result.pathological[#result.pathological + 1] = rel
    else
      local ext = EXTS[(i - 1) % #EXTS + 1]
      write(("%s/%s/m%05d.%s"):format(root, dir, i, ext), TEMPLATES[ext](i, r))
      result.normal = result.normal + 1
    end
  end
  return result
end

-- A fresh temporary directory.
function _M.tmpdir(prefix)
  local p = io.popen("mktemp -d /tmp/" .. (prefix or "mnemo-chaos") .. ".XXXXXX")
  local dir = p:read("*l")
  p:close()
  return dir
end

return _M
