-- The sandbox's own rules (lua/mnemo/sandbox.lua, runtime/lua/lua_sandbox.c):
-- what honest code can still do, what is restored after a run, nesting,
-- and the limits a policy's sandbox section sets. The hostile cases are in
-- hostile_spec.lua.
local mnemo = require "mnemo"
local core = require "mnemo_core"
local sandbox = require "mnemo.sandbox"
local h = require "helpers"

local function run(src, limits, ...)
  local fn = assert(sandbox.compile(src, "=test"))
  return sandbox.call(limits, fn, ...)
end

describe("the sandbox", function()
  it("lets honest code use pcall, patterns and the libraries", function()
    local ok, a, b, c = run([[
      local ok, err = pcall(error, "expected")
      local k, v = ("key=value"):match("(%w+)=(%w+)")
      local parts = {}
      for w in ("a,b,c"):gmatch("[^,]+") do parts[#parts + 1] = w end
      table.sort(parts, function(x, y) return x > y end)
      return ok == false and err == "expected", k .. v, table.concat(parts) .. math.max(1, 2)
    ]])
    assert.is_true(ok)
    assert.is_true(a)
    assert.equal("keyvalue", b)
    assert.equal("cba2", c)
  end)

  it("restores hook, string methods and memory limit after every kind of end", function()
    for _, src in ipairs { "return 1", "error('x')", "while true do end", "local s = 'x' for i = 1, 40 do s = s .. s end" } do
      run(src)
      assert.is_nil(debug.gethook(), src)
      assert.is_function(("x").dump, src) -- the host's string table again
      local _, limit = core.sandbox_memory()
      assert.is_nil(limit, src)
      assert.is_false(core.sandbox_exhausted(), src)
    end
  end)

  it("gives an inner run no more than what is left of the outer one", function()
    local inner = assert(sandbox.compile("while true do end", "=inner"))
    local outer = function()
      return sandbox.call(1e9, inner)
    end
    local ok, err = sandbox.call(5000, outer)
    assert.is_false(ok)
    assert.matches("instruction budget of %d+ exceeded", err)
  end)

  it("tells its own functions from the host's", function()
    assert.is_true(sandbox.is_sandboxed(assert(sandbox.compile("return 1", "=x"))))
    assert.is_false(sandbox.is_sandboxed(print))
    assert.is_false(sandbox.is_sandboxed(function() end))
  end)

  it("gives every evaluation its own libraries", function()
    assert.is_true((run("rawset(math, 'min', function() return 9 end) string.rep = nil return true")))
    local ok, v = run("return math.min(1, 2), ('x'):rep(2), string.rep")
    assert.is_true(ok)
    assert.equal(1, v)
  end)

  it("refuses a hook that yields (a trusted one: policy code cannot)", function()
    mnemo.run(function()
      local hooks = require "mnemo.hooks"
      local lines, restore = h.capture_log()
      local ok = hooks.call("should_retry", "op", function()
        mnemo.sleep(0.01)
        return true
      end, hooks.is_boolean)
      restore()
      assert.is_false(ok)
      assert.matches("cannot wait inside a sandboxed call", h.events(lines, "hook_failed")[1].error)
    end)
  end)
end)

describe("a policy's sandbox section", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  teardown(function()
    os.execute("rm -rf " .. dir)
    mnemo.policy._reset()
  end)

  it("sets the hook budget and the next evaluation's budget", function()
    mnemo.run(function()
      mnemo.policy._reset()
      local path = h.write_file(dir .. "/p.lua", [[
        return {
          sandbox = { budget = 2000, hook_budget = 500 },
          retry = { r = { attempts = 2, base = 0.001, max = 0.001, jitter = "none", on = { "connection" } } },
          operations = { sect_op = { retry = "r", idempotent = true,
            should_retry = function() for i = 1, 1000 do end return true end } },
        }
      ]])
      assert.equal(1, mnemo.policy.load(path))
      local lines, restore = h.capture_log()
      local calls = 0
      pcall(mnemo.guard, "sect_op", function()
        calls = calls + 1
        error(mnemo.error("connection", "refused"))
      end)
      restore()
      assert.equal(2, calls, "the built-in decision stands")
      assert.matches("instruction budget of 500 exceeded", h.events(lines, "hook_failed")[1].error)
      -- the next version of the file is evaluated under budget = 2000
      h.write_file(path, "for i = 1, 5000 do end return {}")
      local gen, err = mnemo.policy.load(path)
      assert.is_nil(gen)
      assert.matches("instruction budget of 2000 exceeded", err)
    end)
  end)
end)
