-- What the indexer takes from a hostile tree: real symlinks (out of the
-- root, into it, dangling, looping), a real FIFO, socket and character
-- device, a directory named like a source file, and files swapped for
-- those between the walk and the read. Against a real PostgreSQL.
local mnemo = require "mnemo"
local uv = require "luv"
local cjson = require "cjson"
local bit = require "bit"
local h = require "helpers"

local function sh(cmd)
  assert(os.execute(cmd) == 0, cmd)
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  sh("mkdir -p '" .. d .. "'")
  return d
end

local function link(target, path)
  sh(("ln -s '%s' '%s'"):format(target, path))
end

-- rel -> reason, from the report's list of skipped files.
local function skipped_by_file(r)
  local map = {}
  for _, s in ipairs(r.skipped) do
    assert.is_nil(map[s.file], "skipped twice: " .. s.file)
    map[s.file] = s.reason
  end
  return map
end

describe("mnemo.index on hostile files", function()
  local dsn, base, root, outside, mknod_ok
  setup(function()
    dsn = h.pg_migrated_database()
    mnemo.policy._reset()
    assert(mnemo.policy.load("policies/default.lua"))
    -- base/repo is the root; base/repo-evil is outside it although its
    -- path starts with the root's.
    base = tmpdir()
    root = base .. "/repo"
    outside = base .. "/repo-evil"
    sh(("mkdir -p '%s/pkg/dir.py' '%s/build/sub' '%s'"):format(root, root, outside))
    h.write_file(root .. "/pkg/ok.py", "def ok():\n    return 1\n")
    h.write_file(root .. "/pkg/dir.py/inner.py", "def inner():\n    return 2\n")
    h.write_file(root .. "/build/gen.py", "def generated():\n    return 3\n") -- an ignored directory
    h.write_file(outside .. "/secret.py", "SECRET = 'outside the root'\n")
    link("/etc/passwd", root .. "/pkg/passwd.py")
    link("/dev/zero", root .. "/pkg/zero.py")
    link("/etc", root .. "/pkg/etc")
    link("../../repo-evil/secret.py", root .. "/pkg/sneaky.py")
    link("../repo-evil", root .. "/evil")
    link("missing.py", root .. "/pkg/dangling.py")
    link("l2.py", root .. "/pkg/l1.py")
    link("l1.py", root .. "/pkg/l2.py")
    link("ok.py", root .. "/pkg/alias.py") -- inside: the same file twice
    link("..", root .. "/pkg/up") -- inside: a directory loop
    -- build/ is ignored: what it holds is reached only through links.
    link("../build", root .. "/pkg/bld")
    link("../build/gen.py", root .. "/pkg/gen.py") -- the same file, a second way
    link("../pkg", root .. "/build/back") -- back to a directory walked already
    link("..", root .. "/build/sub/loop") -- a loop made of links only
    sh("mkfifo '" .. root .. "/pkg/pipe.py'")
    mknod_ok = os.execute("mknod '" .. root .. "/pkg/null.py' c 1 3 2>/dev/null") == 0
  end)
  teardown(function()
    os.execute("rm -rf '" .. base .. "'")
  end)

  local function index(opts)
    opts.root = root
    opts.dsn = dsn
    opts.backfill = false
    return mnemo.run(function()
      -- A real socket file in the tree while the run lasts.
      local sock = uv.new_pipe(false)
      assert(sock:bind(root .. "/pkg/sock.py"))
      local t0 = mnemo.now()
      local ok, r = pcall(mnemo.index, opts)
      sock:close()
      assert(ok, r)
      r.elapsed = mnemo.now() - t0
      return r
    end)
  end

  local function sql(q, params)
    return h.sql(dsn, q, params)
  end

  local function stored_files(repository)
    local out = {}
    for _, row in ipairs(sql([[SELECT file_path, count(*) AS n FROM code_chunks WHERE repository = $1
        GROUP BY 1 ORDER BY 1]], { repository })) do
      out[#out + 1] = row.file_path
    end
    return out
  end

  local function no_foreign_content(repository)
    local row = sql([[SELECT count(*) AS n FROM code_chunks WHERE repository = $1
      AND (source LIKE '%root:x:0:0%' OR source LIKE '%outside the root%')]], { repository })[1]
    assert.equal(0, row.n, "content from outside the root was stored")
  end

  it("by default follows no symlink, and says for each why it was skipped", function()
    local r = index { repository = "hostile" }
    assert.is_true(r.elapsed < 5, "the run took " .. r.elapsed .. " s")
    assert.same({ "pkg/dir.py/inner.py", "pkg/ok.py" }, stored_files("hostile"))
    no_foreign_content("hostile")
    assert.equal(2, r.files_indexed)
    assert.equal(0, r.files_failed)
    local why = skipped_by_file(r)
    assert.equal("symlink_outside_root", why["pkg/passwd.py"])
    assert.equal("symlink_outside_root", why["pkg/zero.py"])
    assert.equal("symlink_outside_root", why["pkg/etc"])
    assert.equal("symlink_outside_root", why["pkg/sneaky.py"])
    assert.equal("symlink_outside_root", why["evil"])
    assert.equal("symlink_broken", why["pkg/dangling.py"])
    assert.equal("symlink_loop", why["pkg/l1.py"])
    assert.equal("symlink_loop", why["pkg/l2.py"])
    assert.equal("symlink", why["pkg/alias.py"])
    assert.equal("symlink", why["pkg/up"])
    assert.equal("symlink", why["pkg/gen.py"])
    assert.equal("symlink", why["pkg/bld"])
    assert.equal("not_regular_file", why["pkg/pipe.py"])
    assert.equal("not_regular_file", why["pkg/sock.py"])
    if mknod_ok then
      assert.equal("not_regular_file", why["pkg/null.py"])
    end
    assert.equal(5, r.reasons.symlink_outside_root)
    assert.equal(4, r.reasons.symlink)
    assert.equal(mknod_ok and 3 or 2, r.reasons.not_regular_file)
    assert.equal(r.files_total, r.files_indexed + r.files_skipped)
    -- The printed report names them.
    local lines = {}
    mnemo.indexer.print_report(r, { write = function(_, ...)
      for _, s in ipairs { ... } do
        lines[#lines + 1] = s
      end
    end })
    local text = table.concat(lines)
    assert.matches("symlink_outside_root%s+5\n%s+evil\n%s+pkg/etc\n%s+pkg/passwd.py\n%s+%(2 more%)\n", text)
    assert.matches("not_regular_file%s+%d\n%s+pkg/", text)
  end)

  it("with follow_symlinks, follows links inside the root only, each file once, loops ended", function()
    local r = index { repository = "hostile_follow", follow_symlinks = true }
    assert.is_true(r.elapsed < 5, "the run took " .. r.elapsed .. " s")
    -- build/ is ignored, but reached through pkg/bld (links are taken in
    -- the walk's order: pkg/bld before pkg/gen.py).
    assert.same({ "pkg/bld/gen.py", "pkg/dir.py/inner.py", "pkg/ok.py" }, stored_files("hostile_follow"))
    no_foreign_content("hostile_follow")
    assert.equal(0, r.files_failed)
    local why = skipped_by_file(r)
    assert.equal("symlink_outside_root", why["pkg/passwd.py"])
    assert.equal("symlink_outside_root", why["pkg/zero.py"])
    assert.equal("symlink_outside_root", why["pkg/etc"])
    assert.equal("symlink_outside_root", why["pkg/sneaky.py"])
    assert.equal("symlink_outside_root", why["evil"])
    assert.equal("symlink_broken", why["pkg/dangling.py"])
    assert.equal("symlink_loop", why["pkg/l1.py"])
    assert.equal("symlink_duplicate", why["pkg/alias.py"]) -- pkg/ok.py is indexed at its own path
    assert.equal("symlink_loop", why["pkg/up"])
    assert.equal("symlink_duplicate", why["pkg/gen.py"])
    assert.equal("symlink_duplicate", why["pkg/bld/back"])
    assert.equal("symlink_loop", why["pkg/bld/sub/loop"])
    assert.equal("not_regular_file", why["pkg/pipe.py"])
    assert.equal(r.files_total, r.files_indexed + r.files_skipped)
  end)

  it("reads a file the walk listed only if it is still a regular file, without blocking", function()
    -- The read itself, on what a path may have become since the walk.
    local fifo = root .. "/pkg/pipe.py"
    local results = mnemo.run(function()
      local out = {}
      local t0 = mnemo.now()
      for _, p in ipairs { fifo, root .. "/pkg/dir.py", root .. "/pkg/null.py", root .. "/pkg/alias.py",
        root .. "/pkg/missing.py" } do
        local text, why = mnemo.indexer.read_file({ path = p, size = 0 }, 1024 * 1024)
        out[#out + 1] = text or why
      end
      out.elapsed = mnemo.now() - t0
      return out
    end)
    assert.is_true(results.elapsed < 5)
    assert.equal("not_regular_file", results[1])
    assert.equal("not_regular_file", results[2])
    if mknod_ok then
      assert.equal("not_regular_file", results[3])
    end
    assert.equal("symlink", results[4]) -- O_NOFOLLOW
    assert.equal("unreadable", results[5])
    -- A file read with the size the walk saw: a little growth is read, a
    -- lot is refused rather than read to its end.
    local grow = h.write_file(root .. "/pkg/grow.txt", "0123456789")
    local small, big = mnemo.run(function()
      local f = { path = grow, size = 10 }
      local fh = assert(io.open(grow, "ab"))
      fh:write("abc")
      fh:close()
      local a = { mnemo.indexer.read_file(f, 1024 * 1024) }
      fh = assert(io.open(grow, "ab"))
      fh:write(("x"):rep(mnemo.indexer.GROWTH_BOUND))
      fh:close()
      local b = { mnemo.indexer.read_file(f, 1024 * 1024) }
      return a, b
    end)
    os.remove(grow)
    assert.same({ "0123456789abc" }, small)
    assert.same({ nil, "grew_during_read" }, big)
  end)

  it("ends promptly when files are swapped for a FIFO, a symlink, a directory, a device between walk and read",
    function()
      local swap_root = tmpdir()
      for _, name in ipairs { "a", "b", "c", "d", "e", "f", "g", "z" } do
        h.write_file(swap_root .. "/" .. name .. ".py", ("def %s_fn():\n    return 1\n"):format(name))
      end
      local env = { "MNEMO_PG_DSN=" .. dsn, "PATH=" .. os.getenv("PATH"), "MNEMO_REDIS_URL=" .. h.redis_url() }
      local ok, res = pcall(h.mnemo_run, { "--policy", "policies/default.lua", "tests/tools/index_swapped.lua",
        swap_root, "swapped" }, { env = env, timeout = 15 })
      -- Should a read be stuck on the FIFO, give it a writer so the child ends.
      local wfd = uv.fs_open(swap_root .. "/b.py", bit.bor(uv.constants.O_WRONLY, uv.constants.O_NONBLOCK), 0)
      if wfd then
        uv.fs_close(wfd)
      end
      assert(ok, res)
      assert.equal(0, res.code, res.stderr)
      local line = res.stdout:match("([^\n]+)\n?$")
      assert(line, "no report on stdout: " .. res.stdout .. res.stderr)
      local r = cjson.decode(line)
      os.execute("rm -rf '" .. swap_root .. "'")
      assert.is_true(r.seconds < 5, "the run took " .. r.seconds .. " s")
      local why = skipped_by_file(r)
      assert.equal("not_regular_file", why["b.py"]) -- the FIFO
      assert.equal("symlink", why["c.py"]) -- O_NOFOLLOW refused it
      assert.equal("not_regular_file", why["d.py"]) -- the directory
      assert.equal("grew_during_read", why["e.py"])
      assert.equal("not_regular_file", why["g.py"]) -- the socket
      local indexed = { "a.py", "z.py" }
      if r.chardev then
        assert.equal("not_regular_file", why["f.py"])
      else
        indexed = { "a.py", "f.py", "z.py" } -- no mknod here: f.py stayed a file
      end
      assert.equal(#indexed, r.files_indexed)
      assert.equal(0, r.files_failed)
      assert.equal(8, r.files_total)
      assert.same(indexed, stored_files("swapped"))
      no_foreign_content("swapped")
    end)
end)
