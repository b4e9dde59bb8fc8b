-- Cases the rest of the suite let through: each fails with a realistic
-- one-line bug in the code it names (see the comment above each case) and
-- passes without it.
local mnemo = require "mnemo"
local uv = require "luv"
local h = require "helpers"
local events = h.events

local n = 0
local function uniq(prefix)
  n = n + 1
  return ("%s_planted_%d"):format(prefix, n)
end

-- Burns CPU for `seconds` of real time without yielding to the loop, so an
-- attempt's deadline timer cannot fire: only the check at the attempt's end
-- can see the overrun.
local function busy(seconds)
  local t0 = uv.hrtime()
  while (uv.hrtime() - t0) / 1e9 < seconds do
  end
end

describe("guard: an attempt that overran its timeout without yielding", function()
  local lines, restore
  before_each(function()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
  end)

  -- lua/mnemo/guard.lua, settle(): `if ok or (... err.kind == "timeout")`
  -- turns an overrun success into the guard's TimeoutError; returning the
  -- success there (`if ok then return true, ... end` first) passed the suite.
  it("is a timeout, not a success, even when fn returns", function()
    local op = uniq("overrun_success")
    mnemo.configure { operations = { [op] = { timeout = 0.02 } } }
    local calls = 0
    local v, err = mnemo.run(mnemo.try, op, function()
      calls = calls + 1
      busy(0.08)
      return "late value"
    end)
    assert.equal(1, calls)
    assert.is_nil(v, "the overrun success was returned")
    assert.is_table(err)
    assert.equal("timeout", err.kind)
    assert.equal(op, err.operation)
    local s = mnemo.stats()[op]
    assert.equal(1, s.timeouts)
    assert.equal(0, s.successes)
    assert.equal(1, s.failures)
    local t = events(lines, "timeout")
    assert.equal(1, #t)
    assert.equal(op, t[1].operation)
    assert.is_true(t[1].elapsed >= 0.02)
    -- Raised the same way through mnemo.guard.
    local ok, gerr = mnemo.run(pcall, mnemo.guard, op, function()
      busy(0.08)
      return "late again"
    end)
    assert.is_false(ok)
    assert.equal("timeout", gerr.kind)
    assert.equal(2, mnemo.stats()[op].timeouts)
  end)

  -- runtime/lua/lua_guard.c, l_attempt_end(): `else if (!ok && ignored &&
  -- !expired) mnemo_breaker_on_ignored(...)`. Without `&& !expired`, an
  -- attempt that overran and then raised a class the breaker ignores
  -- (not_found, cancelled, ...) was counted as ignored: a timeout that never
  -- counts against the dependency.
  for _, kind in ipairs { "not_found", "cancelled" } do
    it(("counts against the breaker when it then raises %s (failure_threshold = 1 opens it)"):format(kind),
      function()
        local op = uniq("overrun_" .. kind)
        mnemo.configure {
          breakers = { [op] = { failure_threshold = 1, recovery_timeout = 60 } },
          operations = { [op] = { timeout = 0.02, breaker = op } },
        }
        local b = mnemo.breaker.get(op)
        -- The control: the same error in time is ignored, the breaker stays closed.
        local ok, err = mnemo.run(pcall, mnemo.guard, op, function()
          error(mnemo.error(kind, "in time"))
        end)
        assert.is_false(ok)
        assert.equal(kind, err.kind)
        assert.equal("closed", b:state())
        assert.equal(1, b:metrics().ignored)
        -- Overrun, then the ignored class: the timeout counts.
        ok, err = mnemo.run(pcall, mnemo.guard, op, function()
          busy(0.08)
          error(mnemo.error(kind, "after the deadline"))
        end)
        assert.is_false(ok)
        assert.equal(1, mnemo.stats()[op].timeouts)
        assert.equal("open", b:state(), "an overrun attempt was counted as ignored")
        local m = b:metrics()
        assert.equal(1, m.ignored)
        assert.equal(1, m.failures)
        -- And the next call fails fast.
        local called = false
        ok, err = mnemo.run(pcall, mnemo.guard, op, function()
          called = true
        end)
        assert.is_false(ok)
        assert.is_false(called)
        assert.equal("circuit_open", err.kind)
      end)
  end
end)

-- lua/mnemo/guard.lua, compile_op(): `idempotent = spec.idempotent == true`.
-- `spec.idempotent ~= false` (idempotent unless declared otherwise) passed
-- the suite: nothing asserted the default.
describe("guard: idempotent is opt-in", function()
  local restore
  before_each(function()
    local _
    _, restore = h.capture_log()
    mnemo.clock.virtual(true)
  end)
  after_each(function()
    mnemo.clock.virtual(false)
    restore()
  end)

  it("explain() says false for an operation that does not declare it", function()
    local plain, declared, refused = uniq("plain"), uniq("declared"), uniq("refused")
    mnemo.configure {
      retry = { once = { attempts = 1 } },
      operations = {
        [plain] = { timeout = 1 },
        [declared] = { timeout = 1, idempotent = true },
        [refused] = { timeout = 1, idempotent = false, retry = "once" },
      },
    }
    assert.is_false(mnemo.explain(plain).idempotent)
    assert.is_true(mnemo.explain(declared).idempotent)
    assert.is_false(mnemo.explain(refused).idempotent)
    assert.equal("once", mnemo.explain(refused).retry)
  end)

  it("a non-idempotent operation runs once even when a retry policy reaches it", function()
    -- The validator refuses `retry` on an operation whose `idempotent` is
    -- not truthy, but does not check its type: `idempotent = "yes"` gets a
    -- three-attempt policy through. Whatever the validator does with it,
    -- the guard must not retry what is not `idempotent = true`.
    local op = uniq("insert")
    local ok, cerr = pcall(mnemo.configure, {
      retry = { r = { attempts = 3, base = 0.1, jitter = "none", on = { "connection" } } },
      operations = { [op] = { timeout = 1, retry = "r", idempotent = "yes" } },
    })
    if not ok then
      assert.matches("idempotent", tostring(cerr)) -- refused outright: fine too
      return
    end
    local calls = 0
    local box = mnemo.run(function()
      local box = h.start(mnemo.guard, op, function()
        calls = calls + 1
        error(mnemo.error("connection", "refused"))
      end)
      for _ = 1, 5 do
        mnemo.clock.advance(1)
      end
      return box
    end)
    assert.is_false(box.result[1])
    assert.equal("connection", box.result[2].kind)
    assert.equal(1, calls, "a non-idempotent operation was retried")
    assert.equal(0, mnemo.stats()[op].retries)
    assert.equal("r", mnemo.explain(op).retry)
    assert.is_false(mnemo.explain(op).idempotent)
  end)
end)

-- lua/mnemo/policy.lua, _M.load(): on a rejected file `state.path =
-- state.path or path`. `state.path = path` (the rejected file becomes the
-- one reload() re-reads) passed the suite.
describe("policy: a rejected load", function()
  local dir, lines, restore
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
    mnemo.policy._reset()
    lines, restore = h.capture_log()
  end)
  after_each(function()
    restore()
    mnemo.policy._reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function policy(timeout)
    return ("return { timeouts = { default = 30 }, operations = { planted_policy_op = { timeout = %s } } }\n")
      :format(timeout)
  end

  it("does not change which file is in force, and reload() re-reads that file", function()
    local a = h.write_file(dir .. "/a.lua", policy(2))
    local b = h.write_file(dir .. "/b.lua", "return { operations = { x = { timeout = -1 } }, surprise = true }\n")
    assert.equal(1, mnemo.policy.load(a))
    local hash_a = mnemo.policy.status().hash
    assert.equal(2, mnemo.explain("planted_policy_op").timeout)

    local gen, err = mnemo.policy.load(b)
    assert.is_nil(gen)
    assert.matches("b%.lua", err)
    local st = mnemo.policy.status()
    assert.equal(a, st.path)
    assert.equal(1, st.generation)
    assert.equal(hash_a, st.hash)
    assert.equal(1, st.errors)
    assert.is_string(st.last_error)
    assert.equal(2, mnemo.explain("planted_policy_op").timeout, "the policy in force stays")
    assert.equal(1, #events(lines, "policy_rejected"))

    -- reload() re-reads A (edited meanwhile), not the rejected B.
    h.write_file(a, policy(3))
    assert.equal(2, mnemo.policy.reload())
    st = mnemo.policy.status()
    assert.equal(a, st.path)
    assert.equal(2, st.generation)
    assert.is_nil(st.last_error)
    assert.are_not.equal(hash_a, st.hash)
    assert.equal(3, mnemo.explain("planted_policy_op").timeout)
    local loaded = events(lines, "policy_loaded")
    assert.equal(a, loaded[#loaded].path)
  end)

  it("with nothing in force, the rejected file is the one reload() tries", function()
    local b = h.write_file(dir .. "/b.lua", "return 42\n")
    assert.is_nil(mnemo.policy.load(b))
    assert.equal(b, mnemo.policy.status().path)
    assert.equal(0, mnemo.policy.status().generation)
    h.write_file(b, policy(4))
    assert.equal(1, mnemo.policy.reload())
    assert.equal(b, mnemo.policy.status().path)
    assert.equal(4, mnemo.explain("planted_policy_op").timeout)
  end)

  it("a file that validates but cannot be applied does not change the file in force either", function()
    local a = h.write_file(dir .. "/a.lua", policy(2))
    assert.equal(1, mnemo.policy.load(a))
    -- A valid-looking retry table the C policy refuses would do; the
    -- simplest is a breaker the C side rejects. Whatever it is, if the
    -- validator accepts it and configure raises, the path stays A.
    local c = h.write_file(dir .. "/c.lua", "return { breakers = { x = { failure_threshold = 0 } } }\n")
    assert.is_nil(mnemo.policy.load(c))
    assert.equal(a, mnemo.policy.status().path)
    assert.equal(2, mnemo.policy.reload())
    assert.equal(a, mnemo.policy.status().path)
  end)
end)

-- lua/mnemo/indexer.lua, index_one(): a file whose transaction fails is
-- rolled back and `run.cache:invalidate(key)`. The test in
-- tests/lua/indexer_spec.lua ("rolls a file back ...") starts with an empty
-- cache, so it passes with the invalidation deleted; here the key holds an
-- older hash of the file first.
describe("indexer: a rolled-back file", function()
  local dsn, root, restore
  setup(function()
    dsn = h.pg_migrated_database()
    mnemo.policy._reset()
    local _, quiet = h.capture_log()
    assert(mnemo.policy.load("policies/default.lua"))
    quiet()
    root = os.tmpname()
    os.remove(root)
    assert(os.execute("mkdir -p '" .. root .. "/pkg'") == 0)
  end)
  teardown(function()
    mnemo.policy._reset()
    os.execute("rm -rf '" .. root .. "'")
  end)
  before_each(function()
    local _
    _, restore = h.capture_log()
  end)
  after_each(function()
    restore()
  end)

  local function sql(q, params)
    return h.sql(dsn, q, params)
  end

  it("loses the older hash the cache held for it", function()
    local core = require "mnemo_core"
    local old = "def fine():\n    return 0\n"
    h.write_file(root .. "/pkg/good.py", "def good():\n    return 1\n")
    h.write_file(root .. "/pkg/poisoned.py", "def fine():\n    return 1\n\n\ndef poison():\n    return 2\n")
    sql([[CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger AS $$
      BEGIN
        IF NEW.name_path = 'poison' THEN
          RAISE EXCEPTION 'poisoned chunk' USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
      END $$ LANGUAGE plpgsql]])
    sql([[CREATE TRIGGER refuse_poison BEFORE INSERT ON code_chunks
      FOR EACH ROW EXECUTE FUNCTION refuse_poison()]])
    finally(function()
      sql("DROP TRIGGER IF EXISTS refuse_poison ON code_chunks")
    end)
    local instance = sql("SELECT id FROM mnemo_instance")[1].id
    local l1 = mnemo.cache.new { max_bytes = 1024 * 1024 }
    local cache = mnemo.cache.cascade { l1 = l1 }
    local key = mnemo.indexer.cache_key(instance, "planted", "pkg/poisoned.py")
    local old_hash = core.hash64(old)
    l1:set(key, old_hash, 3600)
    assert.equal(old_hash, l1:get(key), "seeded")
    local r = mnemo.run(mnemo.index, { root = root, repository = "planted", dsn = dsn, cache = cache,
      max_file_bytes = 1024 * 1024 })
    assert.equal(instance, r.database)
    assert.equal(1, r.files_failed)
    assert.equal(1, r.files_indexed)
    assert.equal(1, r.reasons.store_constraint)
    assert.equal(0, sql("SELECT count(*) AS n FROM code_chunks WHERE file_path = 'pkg/poisoned.py'")[1].n)
    assert.is_nil(l1:get(key), "the cache still holds a hash for a file that was rolled back")
    assert.is_not_nil(l1:get(mnemo.indexer.cache_key(instance, "planted", "pkg/good.py")))
  end)
end)
