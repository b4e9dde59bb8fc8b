-- mnemo-run as a user runs it: a real child process, real exit codes.
local h = require "helpers"

local function script(text)
  return h.write_file(h.tmpname(".lua"), text)
end

describe("mnemo-run", function()
  it("prints its version", function()
    local r = h.mnemo_run({ "--version" })
    assert.equal(0, r.code)
    assert.matches("^mnemo%-run %d+%.%d+%.%d+\n$", r.stdout)
  end)

  it("runs a luv timer on its own loop without a second loop run by hand", function()
    local r = h.mnemo_run({ "-e",
      'local uv=require"luv"; local t=uv.new_timer(); '
        .. 't:start(10,0,function() print("tick") t:close() end)' })
    assert.equal(0, r.code)
    assert.equal("tick\n", r.stdout)
    assert.equal("", r.stderr)
  end)

  it("lets the script sleep as the main task and waits for spawned tasks", function()
    local r = h.mnemo_run({ "-e", [[
      local mnemo = require "mnemo"
      mnemo.spawn(function() mnemo.sleep(0.03) print("spawned") end)
      mnemo.sleep(0.01)
      print("main")
    ]] })
    assert.equal(0, r.code, r.stderr)
    assert.equal("main\nspawned\n", r.stdout)
  end)

  it("sets arg as luajit does and passes the arguments as ...", function()
    local path = script('print(arg[0], arg[1], arg[2], #arg, select("#", ...), ...)')
    local r = h.mnemo_run({ path, "one", "two" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(path .. "\tone\ttwo\t2\t2\tone\ttwo\n", r.stdout)
    os.remove(path)
  end)

  it("says which file it cannot open and exits 2", function()
    local r = h.mnemo_run({ "missing.lua" })
    assert.equal(2, r.code)
    assert.equal("mnemo-run: cannot open missing.lua: No such file or directory\n", r.stderr)
  end)

  it("exits 2 on an unknown option, with the usage", function()
    local r = h.mnemo_run({ "--frobnicate" })
    assert.equal(2, r.code)
    assert.matches("unknown option %-%-frobnicate", r.stderr)
    assert.matches("usage:", r.stderr)
  end)

  it("reports a syntax error with file and line and exits 1", function()
    local path = script("local x = 1\nlocal y = = 2\n")
    local r = h.mnemo_run({ path })
    assert.equal(1, r.code)
    assert.equal("mnemo-run: " .. path .. ":2: unexpected symbol near '='\n", r.stderr)
    os.remove(path)
  end)

  it("reports a runtime error with file:line and a traceback, exit 1", function()
    local path = script("local function f()\n  error('kaput')\nend\nf()\n")
    local r = h.mnemo_run({ path })
    assert.equal(1, r.code)
    assert.matches("^mnemo%-run: " .. path:gsub("%p", "%%%0") .. ":2: kaput\n", r.stderr)
    assert.matches("stack traceback:", r.stderr)
    assert.matches("in function 'f'", r.stderr)
    os.remove(path)
  end)

  it("reports an error inside a luv callback with its traceback, exit 1", function()
    local r = h.mnemo_run({ "-e", [[
      local uv = require "luv"
      local t = uv.new_timer()
      t:start(5, 0, function() error("callback broke") end)
    ]] })
    assert.equal(1, r.code)
    assert.matches("%(command line%):3: callback broke", r.stderr)
    assert.matches("stack traceback:", r.stderr)
  end)

  it("reports an error of a spawned task after a sleep, exit 1", function()
    local r = h.mnemo_run({ "-e", [[
      local mnemo = require "mnemo"
      mnemo.spawn(function() mnemo.sleep(0.01) error("late failure") end)
    ]] })
    assert.equal(1, r.code)
    assert.matches("late failure", r.stderr)
    assert.matches("stack traceback:", r.stderr)
  end)

  it("shows an error object through its __tostring", function()
    local r = h.mnemo_run({ "-e", [[
      error(setmetatable({ kind = "timeout" },
        { __tostring = function(e) return "TimeoutError: " .. e.kind end }))
    ]] })
    assert.equal(1, r.code)
    assert.matches("^mnemo%-run: TimeoutError: timeout\n", r.stderr)
  end)

  for _, case in ipairs({ { name = "SIGINT", signal = "sigint", code = 130 },
                          { name = "SIGTERM", signal = "sigterm", code = 143 } }) do
    it("stops cleanly on " .. case.name .. " with exit " .. case.code, function()
      local r = h.mnemo_run({ "-e", [[
        local uv = require "luv"
        local t = uv.new_timer()
        t:start(60000, 0, function() end)
        io.stdout:write("ready\n") io.stdout:flush()
        require("mnemo").sleep(60)
      ]] }, { signal = case.signal, signal_after = 0.3 })
      assert.is_nil(r.signal ~= 0 and r.signal or nil, "killed by signal " .. tostring(r.signal))
      assert.equal(case.code, r.code)
      assert.equal("ready\n", r.stdout)
      assert.equal("", r.stderr)
    end)
  end
end)
