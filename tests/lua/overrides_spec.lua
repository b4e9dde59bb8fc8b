-- Timeouts per repository and per path (policy sections `repositories` and
-- `paths`): matching, precedence, the guard applying them, explain naming
-- the rule, and hostile sections refused.
local mnemo = require "mnemo"
local overrides = require "mnemo.overrides"
local validate = require("mnemo.config").validate
local h = require "helpers"

local POLICY = {
  timeouts = { parse = 0.05, default = 5 },
  operations = { parse_file = { timeout = "parse" }, own_number = { timeout = 0.05 } },
  repositories = { big = { timeouts = { parse = 0.5 } } },
  paths = {
    { glob = "vendor/**", timeouts = { parse = 1 } },
    { glob = "**/*.min.js", repository = "web", timeouts = { parse = 2 } },
    { glob = "vendor/huge/**", timeouts = { parse = 3 } },
  },
}

describe("timeout overrides", function()
  local restore
  before_each(function()
    local _
    _, restore = h.capture_log()
    mnemo.configure(POLICY)
  end)
  after_each(function()
    mnemo.configure {}
    restore()
  end)

  it("matches globs by segment: * and ? within one, ** across any number", function()
    local m = overrides.match
    assert.is_true(m("vendor/**", "vendor/a/b.c"))
    assert.is_false(m("vendor/**", "src/vendor/a.c"))
    assert.is_true(m("**/*.min.js", "a/b/app.min.js"))
    assert.is_true(m("**/*.min.js", "app.min.js"))
    assert.is_false(m("**/*.min.js", "app.js"))
    assert.is_true(m("src/*.py", "src/a.py"))
    assert.is_false(m("src/*.py", "src/x/a.py"))
    assert.is_true(m("a/**/b", "a/b"))
    assert.is_true(m("a/**/b", "a/x/y/b"))
    assert.is_false(m("a?c", "a/c"))
  end)

  it("takes a pathological glob in bounded time", function()
    local t0 = os.clock()
    assert.is_false(overrides.match(("*a"):rep(120) .. "b", ("a"):rep(4000)))
    assert.is_false(overrides.match(("**/"):rep(60) .. "x", ("d/"):rep(500) .. "y"))
    assert.is_true(os.clock() - t0 < 1, ("%.2f s"):format(os.clock() - t0))
  end)

  it("applies the repository's, then every matching path rule in order", function()
    local t, rules = overrides.for_file("big", "src/a.py")
    assert.same({ parse = 0.5 }, t)
    assert.same({ "repositories.big" }, rules)
    t, rules = overrides.for_file("big", "vendor/huge/x.c")
    assert.same({ parse = 3 }, t)
    assert.same({ "repositories.big", "paths[1] vendor/**", "paths[3] vendor/huge/**" }, rules)
    t = overrides.for_file("other", "lib/app.min.js")
    assert.is_nil(t, "the .min.js rule is web's only")
    t = overrides.for_file("web", "lib/app.min.js")
    assert.same({ parse = 2 }, t)
  end)

  it("is what the guard uses for an operation on that named timeout, and explain names the rule", function()
    local slow = function()
      mnemo.sleep(0.2)
      return "parsed"
    end
    local own = overrides.for_file("any", "vendor/lib.c")
    local results = mnemo.run(function()
      local a = { mnemo.try("parse_file", slow) }
      local b = { mnemo.try("parse_file", slow, { timeouts = own }) }
      local c = { mnemo.try("own_number", slow, { timeouts = own }) }
      return { a = a, b = b, c = c }
    end)
    assert.equal("timeout", results.a[2].kind, "0.05 s without the override")
    assert.equal("parsed", results.b[1], "1 s under vendor/**")
    assert.equal("timeout", results.c[2].kind, "an operation with its own number is not renamed")
    local e = mnemo.explain("parse_file", { repository = "big", path = "vendor/x.c" })
    assert.equal(1, e.timeout)
    assert.equal("parse", e.timeout_name)
    assert.same({ "repositories.big", "paths[1] vendor/**" }, e.rules)
    assert.equal(0.05, mnemo.explain("parse_file").timeout)
  end)

  it("follows a reload: rules removed are gone", function()
    mnemo.configure { timeouts = { parse = 0.05 }, operations = { parse_file = { timeout = "parse" } } }
    assert.is_nil(overrides.for_file("big", "vendor/x.c"))
  end)

  it("refuses bad sections, naming the field", function()
    local bad = {
      { { repositories = { big = { timeouts = { parse = 0 } } }, timeouts = { parse = 1 } },
        "repositories.big.timeouts.parse: expected a number of seconds > 0, got 0" },
      { { repositories = { big = { timeouts = { nope = 1 } } } },
        'repositories.big.timeouts.nope: expected a name in timeouts, got "nope"' },
      { { repositories = { big = { timeout = 1 } } }, 'repositories.big: unknown key "timeout"' },
      { { paths = { { glob = "", timeouts = {} } } }, "paths%[1%].glob: expected a glob of 1 to 256 characters" },
      { { paths = { { glob = ("x"):rep(300), timeouts = {} } } }, "paths%[1%].glob: expected a glob" },
      { { paths = { { glob = "a/**" } } }, "paths%[1%].timeouts: expected a table of timeouts, got nil" },
      { { paths = { x = { glob = "a" } } }, "paths: expected a list of rules" },
      { { paths = { { glob = "a", timeouts = {}, repo = "x" } } }, 'paths%[1%]: unknown key "repo"' },
    }
    for _, c in ipairs(bad) do
      local ok, problems = validate(c[1])
      assert.is_nil(ok, c[2])
      assert.matches(c[2], table.concat(problems, "\n"))
    end
  end)
  it("reaches the indexer: a path rule gives its files the time the rest does not get", function()
    local dsn = h.pg_migrated_database()
    local root = os.tmpname()
    os.remove(root)
    assert(os.execute("mkdir -p '" .. root .. "/keep' '" .. root .. "/rest'") == 0)
    for i = 1, 3 do
      h.write_file(("%s/keep/k%d.py"):format(root, i), "def kept_" .. i .. "():\n    return 1\n")
      h.write_file(("%s/rest/r%d.py"):format(root, i), "def rest_" .. i .. "():\n    return 1\n")
    end
    -- index_file gets a microsecond: every file runs out, but keep/**.
    mnemo.configure {
      timeouts = { index_file = 0.000001, default = 10 },
      operations = { index_file = { timeout = "index_file" } },
      paths = { { glob = "keep/**", timeouts = { index_file = 30 } } },
    }
    local r = mnemo.run(mnemo.index, { root = root, repository = "overrides", dsn = dsn, backfill_wait = 0,
      db_outage_wait = 0 })
    os.execute("rm -rf '" .. root .. "'")
    assert.equal(3, r.files_indexed)
    assert.equal(3, r.files_failed)
    local stored = h.sql(dsn, [[SELECT DISTINCT file_path FROM code_chunks WHERE repository = 'overrides'
      ORDER BY file_path]])
    assert.same({ "keep/k1.py", "keep/k2.py", "keep/k3.py" }, { stored[1].file_path, stored[2].file_path,
      stored[3].file_path })
  end)
end)
