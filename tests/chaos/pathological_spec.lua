-- Chaos 4: a pathological file (2,000 lines of 1,000-deep parentheses in a
-- .py, ~4 MB that tree-sitter needs seconds for) among normal ones. The
-- run finishes, reports parse_timeout for it, and the parses after it go on.
local mnemo = require "mnemo"
local h = require "helpers"
local chaos = require "chaos"

local NFILES = 300

describe("chaos: a pathological file", function()
  local dsn, root, lines, restore, made

  setup(function()
    chaos.policy() -- tree_sitter_parse = 2 s
    dsn = h.pg_migrated_database()
    root = chaos.corpus.tmpdir()
    -- pathological = 1/NFILES: exactly one, placed mid-tree.
    made = chaos.corpus.generate(root, NFILES, { seed = 44, pathological = 1 / NFILES })
  end)
  teardown(function()
    os.execute("rm -rf " .. root)
    mnemo.policy._reset()
  end)
  before_each(function()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
  end)

  it("reports parse_timeout for it and indexes every other file", function()
    assert.equal(1, #made.pathological)
    -- One worker: the files after the pathological one can only be parsed
    -- once its parse was cut (and the pool thread freed).
    local order, at = {}, nil
    local t0 = mnemo.now()
    local r = mnemo.run(mnemo.index, {
      root = root, repository = "chaos_patho", dsn = dsn, concurrency = 1, backfill = false,
      max_file_bytes = 8 * 1024 * 1024, cache = mnemo.cache.cascade {},
      on_file = function(path, done)
        order[#order + 1] = path
        if path == made.pathological[1] then
          at = done
        end
      end,
    })
    local elapsed = mnemo.now() - t0
    assert.equal(NFILES - 1, r.files_indexed, chaos.reasons(r))
    assert.equal(1, r.files_failed)
    assert.equal(1, r.reasons.parse_timeout)
    local failed = h.events(lines, "file_failed")
    assert.equal(made.pathological[1], failed[1].file_path)
    -- Files finished after the pathological one: parsing went on.
    assert.is_true(at ~= nil and #order - at > 0)
    local s = chaos.integrity(dsn, "chaos_patho")
    assert.equal(NFILES - 1, s.files)
    assert.is_true(elapsed < 30, ("the run took %.1f s"):format(elapsed))
    local parse_timeouts = #chaos.events_where(lines, "timeout", "operation", "parse_file")
    chaos.figure("pathological", "files=%d (1 pathological, %s) indexed=%d failed=%d (%s) finished after it=%d "
      .. "parse_file timeout events=%d run=%.2fs", NFILES, made.pathological[1], r.files_indexed, r.files_failed,
      chaos.reasons(r), #order - at, parse_timeouts, elapsed)
  end)
end)
