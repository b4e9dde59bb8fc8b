-- Chaos 5: `kill -9` of mnemo-run at a random point (the delay comes from
-- a seed, printed; MNEMO_CHAOS_SEED replays one), then a second run.
-- Nothing is left half-done: 0 duplicate chunks, 0 files with two versions
-- or a partial set (checked against a reference indexing of the same
-- tree), and the second run finishes the work.
local mnemo = require "mnemo"
local h = require "helpers"
local chaos = require "chaos"

local NFILES = 1000

local function parse(out)
  local t = {}
  for k, v in out:gmatch("(%w+)=(%d+)") do
    t[k] = tonumber(v)
  end
  return t
end

describe("chaos: kill -9 of mnemo-run", function()
  local dsn, root

  setup(function()
    dsn = h.pg_migrated_database()
    root = chaos.corpus.tmpdir()
    chaos.corpus.generate(root, NFILES, { seed = 55 })
    chaos.policy()
    chaos.index_reference(dsn, root, NFILES)
  end)
  teardown(function()
    os.execute("rm -rf " .. root)
    mnemo.policy._reset()
  end)

  it("leaves no duplicate or partial file, and the next run finishes the work", function()
    local seed = tonumber(os.getenv("MNEMO_CHAOS_SEED") or "") or os.time()
    math.randomseed(seed)
    local delay = 0.3 + math.random() * 2.2 -- the run takes ~4 s here
    io.stderr:write(("# kill9: seed %d, SIGKILL after %.3f s\n"):format(seed, delay))
    local env = { "MNEMO_PG_DSN=" .. dsn, "PATH=" .. os.getenv("PATH") }
    local args = { h.MNEMO_RUN, "--policy", "tests/fixtures/policies/fast.lua", "tests/chaos/index_child.lua", root,
      "kill9", "4" }
    local first = mnemo.run(h.spawn, args, { env = env, signal = "sigkill", signal_after = delay, timeout = 60 })
    local stored = chaos.integrity(dsn, "kill9")
    local killed = first.signal == 9
    assert.equal(0, stored.dups)
    assert.equal(0, stored.mixed)
    assert.equal(0, stored.gaps)
    local p1 = chaos.partial_against(dsn, "kill9", "ref")
    assert.equal(0, p1.partial)

    local t1 = mnemo.now()
    local second = mnemo.run(h.spawn, args, { env = env, timeout = 120 })
    local recover = mnemo.now() - t1
    assert.equal(0, second.code, second.stderr)
    local c = parse(second.stdout)
    assert.equal(0, c.failed, second.stdout)
    assert.equal(NFILES, c.indexed + c.unchanged, second.stdout)
    assert.equal(stored.files, c.unchanged, "what the killed run committed is unchanged")
    local final = chaos.integrity(dsn, "kill9")
    local p2 = chaos.partial_against(dsn, "kill9", "ref")
    assert.equal(NFILES, final.files)
    assert.equal(0, final.dups)
    assert.equal(0, final.mixed)
    assert.equal(0, final.gaps)
    assert.equal(0, p2.partial)
    assert.equal(0, p2.missing)
    chaos.figure("kill9", "seed=%d delay=%.3fs killed=%s (exit code %s signal %s); committed before the kill=%d files; "
      .. "after: dups=%d mixed=%d gaps=%d partial=%d; second run %.2fs: indexed=%d unchanged=%d failed=%d; "
      .. "final files=%d chunks=%d missing=%d", seed, delay, tostring(killed), tostring(first.code),
      tostring(first.signal), stored.files, stored.dups, stored.mixed, stored.gaps, p1.partial, recover, c.indexed,
      c.unchanged, c.failed, final.files, final.chunks, p2.missing)
  end)
end)
