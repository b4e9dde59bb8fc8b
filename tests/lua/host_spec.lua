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

-- --check-policy runs the check in a child process with limits
-- (runtime/host/check_child.c). The faults are made from outside, not by a
-- slow or greedy policy (the sandbox would, or should, stop that first):
-- a stand-in `mnemo.policy` module, found through MNEMO_LUA_DIR, plays a
-- check with a hole in it, and signals are sent to the child.
describe("mnemo-run --check-policy in a child process", function()
  local uv = require "luv"
  local mnemo = require "mnemo"
  local asan = h.MNEMO_RUN:find("asan", 1, true) ~= nil
  local dirs = {}

  -- The environment with `extra` set (a false value removes a variable).
  local function environ(extra)
    local env = {}
    for k, v in pairs(uv.os_environ()) do
      if extra[k] == nil then
        env[#env + 1] = k .. "=" .. v
      end
    end
    for k, v in pairs(extra) do
      if v then
        env[#env + 1] = k .. "=" .. v
      end
    end
    return env
  end

  -- A directory for MNEMO_LUA_DIR whose mnemo/policy.lua is `source`.
  local function fake_policy_module(source)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/mnemo") == 0)
    h.write_file(dir .. "/mnemo/policy.lua", source)
    dirs[#dirs + 1] = dir
    return dir
  end

  -- A check that says "ready" on stdout, then blocks reading stdin (which
  -- the test keeps open): it lives until something stops it.
  local BLOCKING = 'return { check = function() io.stdout:write("ready\\n") '
    .. 'io.stdout:flush() io.read("*l") end }'

  after_each(function()
    for _, d in ipairs(dirs) do
      os.execute("rm -rf " .. d)
    end
    dirs = {}
  end)

  local function alive(pid)
    local f = io.open("/proc/" .. pid .. "/stat")
    if not f then
      return false
    end
    local stat = f:read("*a")
    f:close()
    return stat:match("^%d+ %b() (%a)") ~= "Z" -- a zombie is gone but unreaped
  end

  local function wait_until(cond, seconds, what)
    local deadline = mnemo.now() + seconds
    while not cond() do
      assert(mnemo.now() < deadline, what)
      mnemo.sleep(0.01)
    end
  end

  -- Runs `mnemo-run --check-policy policies/default.lua` with the blocking
  -- check, waits until its child says "ready", then calls fault(parent pid,
  -- child pid). Returns the result (as h.spawn's), the child's pid and the
  -- seconds from the fault to the exit.
  local function with_blocked_child(extra_env, fault)
    return mnemo.run(function()
      extra_env.MNEMO_LUA_DIR = fake_policy_module(BLOCKING)
      local stdin, stdout, stderr = uv.new_pipe(false), uv.new_pipe(false), uv.new_pipe(false)
      local out, err, result = {}, {}, nil
      local handle, pid
      handle, pid = uv.spawn(h.MNEMO_RUN, {
        args = { "--check-policy", "policies/default.lua" },
        stdio = { stdin, stdout, stderr },
        env = environ(extra_env),
      }, function(code, signal)
        result = { code = code, signal = signal }
        handle:close()
      end)
      assert(handle, pid)
      for _, p in ipairs({ { stdout, out }, { stderr, err } }) do
        p[1]:read_start(function(e, data)
          assert(not e, e)
          if data then
            p[2][#p[2] + 1] = data
          else
            p[1]:close()
          end
        end)
      end
      wait_until(function()
        return table.concat(out):find("ready\n", 1, true) ~= nil
      end, 20, "the check never said ready: " .. table.concat(err))
      local pgrep = io.popen("pgrep -P " .. pid)
      local child = tonumber(pgrep:read("*l"))
      pgrep:close()
      assert(child, "no child process found")
      local t0 = mnemo.now()
      fault(pid, child)
      wait_until(function()
        return result and stdout:is_closing() and stderr:is_closing()
      end, 20, "mnemo-run did not finish")
      local elapsed = mnemo.now() - t0
      stdin:close()
      result.stdout, result.stderr = table.concat(out), table.concat(err)
      return result, child, elapsed
    end)
  end

  it("leaves the output of a good and a bad file as it was", function()
    local r = h.mnemo_run({ "--check-policy", "policies/default.lua" })
    assert.same({ 0, "policies/default.lua: ok\n", "" }, { r.code, r.stdout, r.stderr })
    local bad = h.write_file(h.tmpname(".lua"), "return { retry = { r = { attempts = 0, base = -1 } } }")
    -- os.exit(1) in the tool skips lua_close; LeakSanitizer then reports
    -- buffers only LuaJIT's mmap'd heap points at (not a leak of the check).
    r = h.mnemo_run({ "--check-policy", bad }, { env = environ({ ASAN_OPTIONS = "detect_leaks=0" }) })
    assert.equal(1, r.code)
    assert.equal("", r.stdout)
    assert.equal(bad .. ": retry.r.attempts: expected integer >= 1, got 0\n"
      .. bad .. ": retry.r.base: expected a number of seconds > 0, got -1\n", r.stderr)
    os.remove(bad)
  end)

  it("stops a check that never ends after MNEMO_CHECK_SECONDS, exit 1", function()
    local dir = fake_policy_module("return { check = function() while true do end end }")
    local t0 = uv.hrtime()
    local r = h.mnemo_run({ "--check-policy", "policies/default.lua" },
      { env = environ({ MNEMO_LUA_DIR = dir, MNEMO_CHECK_SECONDS = "0.5" }) })
    local elapsed = (uv.hrtime() - t0) / 1e9
    assert.equal(1, r.code)
    assert.equal("mnemo-run: policies/default.lua: policy check did not finish within 0.5 s (stopped)\n",
      r.stderr)
    assert.is_true(elapsed >= 0.5 and elapsed < 5, "took " .. elapsed .. " s")
  end)

  it("stops a child stopped by SIGSTOP after MNEMO_CHECK_SECONDS and leaves no child behind", function()
    local r, child, elapsed = with_blocked_child({ MNEMO_CHECK_SECONDS = "0.5" }, function(_, child)
      assert.equal(0, uv.kill(child, "sigstop"))
    end)
    assert.equal(1, r.code)
    assert.equal("ready\n", r.stdout)
    assert.equal("mnemo-run: policies/default.lua: policy check did not finish within 0.5 s (stopped)\n",
      r.stderr)
    assert.is_true(elapsed < 5, "took " .. elapsed .. " s")
    assert.is_false(alive(child), "the child outlived mnemo-run")
  end)

  it("reports a child that crashed (SIGSEGV), exit 1", function()
    -- ASan would catch the SIGSEGV, print its report and exit: let it die.
    local r, child = with_blocked_child({ ASAN_OPTIONS = "handle_segv=0:detect_leaks=0" }, function(_, child)
      assert.equal(0, uv.kill(child, "sigsegv"))
    end)
    assert.equal(1, r.code)
    assert.equal("mnemo-run: policies/default.lua: policy check crashed (signal 11, Segmentation fault)\n",
      r.stderr)
    assert.is_false(alive(child))
  end)

  it("says when the CPU backstop (RLIMIT_CPU, SIGXCPU) stopped the child", function()
    local r = with_blocked_child({ MNEMO_CHECK_SECONDS = "2.5" }, function(_, child)
      assert.equal(0, uv.kill(child, "sigxcpu"))
    end)
    assert.equal(1, r.code)
    assert.equal("mnemo-run: policies/default.lua: policy check used more than 4 s of CPU time (stopped)\n",
      r.stderr)
  end)

  for _, case in ipairs({ { signal = "sigterm", code = 143 }, { signal = "sigint", code = 130 } }) do
    it("stops the child when mnemo-run gets " .. case.signal:upper() .. ", exit " .. case.code, function()
      local r, child, elapsed = with_blocked_child({}, function(parent)
        assert.equal(0, uv.kill(parent, case.signal))
      end)
      assert.equal(case.code, r.code)
      assert.equal("", r.stderr)
      assert.is_true(elapsed < 5, "took " .. elapsed .. " s")
      assert.is_false(alive(child), "the child outlived mnemo-run")
    end)
  end

  it("takes the child with it when mnemo-run itself is SIGKILLed", function()
    local _, child = with_blocked_child({}, function(parent, kid)
      assert.equal(0, uv.kill(parent, "sigkill"))
      wait_until(function()
        return not alive(kid)
      end, 5, "the child outlived a SIGKILLed mnemo-run")
    end)
    assert.is_false(alive(child))
  end)

  it("gives the child its memory and CPU limits (no RLIMIT_AS under ASan)", function()
    local limits
    with_blocked_child({ MNEMO_CHECK_SECONDS = "3", MNEMO_CHECK_MEMORY = "512M" }, function(_, child)
      local f = assert(io.open("/proc/" .. child .. "/limits"))
      limits = f:read("*a")
      f:close()
      uv.kill(child, "sigkill")
    end)
    assert.matches("Max cpu time%s+4%s+5%s+seconds", limits)
    if asan then
      assert.matches("Max address space%s+unlimited%s+unlimited", limits)
    else
      assert.matches("Max address space%s+536870912%s+536870912%s+bytes", limits)
    end
  end)

  it("ends a check that runs out of memory with exit 1 and the error", function()
    if asan then
      pending("no RLIMIT_AS under AddressSanitizer")
      return
    end
    local dir = fake_policy_module([[return { check = function()
      local t = {}
      while true do t[#t + 1] = string.rep("x", 2^20) .. #t end
    end }]])
    local r = h.mnemo_run({ "--check-policy", "policies/default.lua" },
      { env = environ({ MNEMO_LUA_DIR = dir, MNEMO_CHECK_MEMORY = "256M" }) })
    assert.equal(1, r.code)
    assert.matches("^mnemo%-run: not enough memory\n", r.stderr)
  end)

  for _, case in ipairs({
    { "MNEMO_CHECK_SECONDS", "abc" }, { "MNEMO_CHECK_SECONDS", "0" }, { "MNEMO_CHECK_SECONDS", "-1" },
    { "MNEMO_CHECK_SECONDS", "inf" }, { "MNEMO_CHECK_SECONDS", "1s" },
    { "MNEMO_CHECK_MEMORY", "lots" }, { "MNEMO_CHECK_MEMORY", "1T" }, { "MNEMO_CHECK_MEMORY", "-1" },
    { "MNEMO_CHECK_MEMORY", "1M" }, { "MNEMO_CHECK_MEMORY", "99999999999999999999G" },
  }) do
    it("exits 2 on " .. case[1] .. "=" .. case[2] .. ", naming the variable", function()
      local r = h.mnemo_run({ "--check-policy", "policies/default.lua" },
        { env = environ({ [case[1]] = case[2] }) })
      assert.equal(2, r.code)
      assert.equal("", r.stdout)
      assert.matches("^mnemo%-run: " .. case[1] .. ": expected [^\n]+, got \"" .. case[2]:gsub("%p", "%%%0")
        .. "\"\n$", r.stderr)
    end)
  end

  it("takes a limit with a suffix, and an empty variable as unset", function()
    local r = h.mnemo_run({ "--check-policy", "policies/default.lua" },
      { env = environ({ MNEMO_CHECK_SECONDS = "", MNEMO_CHECK_MEMORY = "1g" }) })
    assert.equal(0, r.code, r.stderr)
    assert.equal("policies/default.lua: ok\n", r.stdout)
  end)
end)
