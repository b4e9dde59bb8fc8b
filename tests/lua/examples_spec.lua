-- The example scripts as a user runs them (`make run` is examples/index.lua
-- on examples/sample-repo): a real mnemo-run process, a fresh database.
local h = require "helpers"

describe("examples", function()
  local env
  setup(function()
    env = { "MNEMO_PG_DSN=" .. h.pg_fresh_database(), "PATH=" .. os.getenv("PATH"),
      "MNEMO_REDIS_URL=" .. h.redis_url() }
  end)

  it("index.lua indexes the sample repository: progress on stderr, report and search on stdout", function()
    local r = h.mnemo_run({ "--policy", "policies/default.lua", "examples/index.lua", "examples/sample-repo" },
      { env = env, timeout = 60 })
    assert.equal(0, r.code, r.stderr)
    assert.matches("indexing sample%-repo: %d+/%d+ files", r.stderr)
    assert.matches("serving http://127%.0%.0%.1:%d+/health", r.stdout)
    assert.matches("repository sample%-repo: 12 files", r.stdout)
    assert.matches("indexed%s+8\n", r.stdout)
    assert.matches("binary%s+1\n", r.stdout)
    assert.matches("invalid_utf8%s+1\n", r.stdout)
    -- scripts/loop -> ..: not followed (a link inside the tree), and named.
    assert.matches("symlink%s+1\n%s+scripts/loop\n", r.stdout)
    assert.matches("embeddings pending%s+0\n", r.stdout)
    assert.matches("1%. parse_request app/util.py:%d+%-%d+", r.stdout)
    -- A second run finds every file unchanged and writes nothing.
    r = h.mnemo_run({ "--policy", "policies/default.lua", "examples/index.lua", "examples/sample-repo" },
      { env = env, timeout = 60 })
    assert.equal(0, r.code, r.stderr)
    assert.matches("unchanged%s+8\n", r.stdout)
    assert.matches("chunks stored%s+0\n", r.stdout)
  end)

  it("chunks.lua lists file<TAB>name_path<TAB>lines, and search.lua ranks by query", function()
    local r = h.mnemo_run({ "examples/chunks.lua", "sample-repo" }, { env = env })
    assert.equal(0, r.code, r.stderr)
    assert.matches("app/util.py\tparse_request\t%d+%-%d+\n", r.stdout)
    for line in r.stdout:gmatch("[^\n]+") do
      assert.matches("^[^\t]+\t[^\t]+\t%d+%-%d+$", line)
    end
    r = h.mnemo_run({ "examples/search.lua", "parse request", "sample-repo" }, { env = env })
    assert.equal(0, r.code, r.stderr)
    assert.matches("mode: ", r.stdout)
    assert.matches(" 1%. [%d.]+  parse_request  app/util.py", r.stdout)
  end)
end)
