-- Two mnemo-run processes indexing the same repository at once: the
-- per-file advisory lock serialises their transactions, so no file ends
-- with duplicate or mixed chunks and no deadlock reaches the user.
local mnemo = require "mnemo"
local h = require "helpers"

describe("two indexers on one repository", function()
  it("leave exactly one copy of every file's chunks and report no failure", function()
    local dsn = h.pg_fresh_database()
    local root = os.tmpname()
    os.remove(root)
    assert(os.execute("mkdir -p '" .. root .. "'") == 0)
    for i = 1, 60 do
      h.write_file(("%s/f%02d.py"):format(root, i),
        ("def f%d(x):\n    return g(x) + %d\n\n\nclass C%d:\n    def m(self):\n        return f%d(1)\n"):format(i, i, i, i))
    end
    local script = h.tmpname(".lua")
    h.write_file(script, ([[
      local mnemo = require "mnemo"
      local c = assert(mnemo.pg.connect(os.getenv("MNEMO_PG_DSN")))
      mnemo.pg.migrate(c, mnemo.pg.MIGRATIONS)
      c:close()
      local r = mnemo.index { root = %q, repository = "twice", concurrency = 4, backfill = false }
      print(("indexed=%%d unchanged=%%d failed=%%d"):format(r.files_indexed, r.files_unchanged, r.files_failed))
    ]]):format(root))
    local env = { "MNEMO_PG_DSN=" .. dsn, "PATH=" .. os.getenv("PATH") }
    local results = mnemo.run(function()
      local out, done = {}, 0
      for i = 1, 2 do
        mnemo.spawn(function()
          out[i] = h.spawn({ h.MNEMO_RUN, "--policy", "policies/default.lua", script }, { env = env, timeout = 60 })
          done = done + 1
        end)
      end
      while done < 2 do
        mnemo.sleep(0.01)
      end
      return out
    end)
    local total_indexed = 0
    for i = 1, 2 do
      assert.equal(0, results[i].code, results[i].stderr)
      local indexed, unchanged, failed = results[i].stdout:match("indexed=(%d+) unchanged=(%d+) failed=(%d+)")
      assert.equal("0", failed, results[i].stdout .. results[i].stderr)
      assert.equal(60, tonumber(indexed) + tonumber(unchanged))
      total_indexed = total_indexed + tonumber(indexed)
    end
    assert.is_true(total_indexed >= 60)
    local rows = mnemo.run(function()
      local c = assert(mnemo.pg.connect(dsn))
      local r = c:exec([[SELECT
          (SELECT count(*) FROM (SELECT file_path, chunk_index FROM code_chunks GROUP BY 1, 2
            HAVING count(*) > 1) d) AS dups,
          (SELECT count(DISTINCT file_path) FROM code_chunks) AS files,
          (SELECT count(*) FROM (SELECT file_path FROM code_chunks GROUP BY 1
            HAVING count(DISTINCT indexed_at) > 1) m) AS mixed]])
      c:close()
      return r[1]
    end)
    assert.equal(0, rows.dups)
    assert.equal(60, rows.files)
    assert.equal(0, rows.mixed)
  end)
end)
