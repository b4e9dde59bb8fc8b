-- Chaos 6: two mnemo-run processes index the same repository at once
-- (tests/lua/concurrent_index_spec.lua at a larger scale: 2,000 files,
-- 4 workers each). The per-file advisory lock serialises their
-- transactions: one copy of every file, whole, and no failure reported.
local mnemo = require "mnemo"
local h = require "helpers"
local chaos = require "chaos"

local NFILES = 2000

describe("chaos: two indexers on one repository", function()
  local dsn, root

  setup(function()
    dsn = h.pg_migrated_database()
    root = chaos.corpus.tmpdir()
    chaos.corpus.generate(root, NFILES, { seed = 66 })
    chaos.policy()
    chaos.index_reference(dsn, root, NFILES)
  end)
  teardown(function()
    os.execute("rm -rf " .. root)
    mnemo.policy._reset()
  end)

  it("leave exactly one whole copy of every file", function()
    local env = { "MNEMO_PG_DSN=" .. dsn, "PATH=" .. os.getenv("PATH") }
    local args = { h.MNEMO_RUN, "--policy", "policies/default.lua", "tests/chaos/index_child.lua", root, "twice", "4" }
    local t0 = mnemo.now()
    local results = mnemo.run(function()
      local out, done = {}, 0
      for i = 1, 2 do
        mnemo.spawn(function()
          out[i] = h.spawn(args, { env = env, timeout = 180 })
          done = done + 1
        end)
      end
      while done < 2 do
        mnemo.sleep(0.01)
      end
      return out
    end)
    local elapsed = mnemo.now() - t0
    local total_indexed, lines = 0, {}
    for i = 1, 2 do
      assert.equal(0, results[i].code, results[i].stderr)
      local c = {}
      for k, v in results[i].stdout:gmatch("(%w+)=(%d+)") do
        c[k] = tonumber(v)
      end
      assert.equal(0, c.failed, results[i].stdout)
      assert.equal(NFILES, c.indexed + c.unchanged, results[i].stdout)
      total_indexed = total_indexed + c.indexed
      lines[i] = results[i].stdout:gsub("%s+$", "")
    end
    assert.is_true(total_indexed >= NFILES)
    local s = chaos.integrity(dsn, "twice")
    local p = chaos.partial_against(dsn, "twice", "ref")
    assert.equal(NFILES, s.files)
    assert.equal(0, s.dups)
    assert.equal(0, s.mixed)
    assert.equal(0, s.gaps)
    assert.equal(0, p.partial)
    assert.equal(0, p.missing)
    chaos.figure("two_runs", "files=%d; process 1: %s; process 2: %s; both done in %.2fs; stored files=%d chunks=%d "
      .. "dups=%d mixed=%d gaps=%d partial=%d missing=%d", NFILES, lines[1], lines[2], elapsed, s.files, s.chunks,
      s.dups, s.mixed, s.gaps, p.partial, p.missing)
  end)
end)
