-- mnemo-run tests/tools/index_swapped.lua ROOT REPOSITORY
-- Indexes ROOT (files a.py .. g.py, z.py) into $MNEMO_PG_DSN one file at a
-- time. Once a.py is done, the walk has listed every file as a regular file
-- and none of the others has been read yet: on_file then swaps b.py .. g.py
-- for what a hostile tree could hold by the time they are read. Prints the
-- report as one JSON line (plus `chardev`: whether mknod was allowed).
-- Used by tests/lua/indexer_files_spec.lua, in a process of its own so that
-- a read stuck on the FIFO fails the spec instead of hanging busted.
local mnemo = require "mnemo"
local uv = require "luv"
local cjson = require "cjson"

local root, repository = assert(arg[1], "ROOT"), assert(arg[2], "REPOSITORY")

local function sh(cmd)
  assert(os.execute(cmd) == 0, cmd)
end

local function at(name)
  return root .. "/" .. name
end

local chardev, socket
local function swap()
  -- b.py: a FIFO with no writer (a blocking open would never return).
  assert(os.remove(at("b.py")))
  sh("mkfifo '" .. at("b.py") .. "'")
  -- c.py: a symlink out of the tree.
  assert(os.remove(at("c.py")))
  sh("ln -s /etc/passwd '" .. at("c.py") .. "'")
  -- d.py: a directory.
  assert(os.remove(at("d.py")))
  sh("mkdir '" .. at("d.py") .. "'")
  -- e.py: grows by 256 KiB, past what the walk saw plus the bound.
  local f = assert(io.open(at("e.py"), "ab"))
  f:write(("# grown\n"):rep(32 * 1024))
  f:close()
  -- f.py: a character device (/dev/zero's numbers), where mknod is allowed.
  assert(os.remove(at("f.py")))
  chardev = os.execute("mknod '" .. at("f.py") .. "' c 1 5 2>/dev/null") == 0
  -- g.py: a socket, bound while the run lasts.
  assert(os.remove(at("g.py")))
  socket = uv.new_pipe(false)
  assert(socket:bind(at("g.py")))
end

local report = mnemo.index { root = root, repository = repository, concurrency = 1, backfill = false,
  on_file = function(rel)
    if rel == "a.py" then
      swap()
    end
  end }
if socket then
  socket:close()
end
report.chardev = chardev
io.stdout:write(cjson.encode(report), "\n")
