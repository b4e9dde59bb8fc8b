-- Hostile policy files and hooks (tests/fixtures/hostile/). Every rejected
-- file is tried three ways — loaded in process, through `mnemo-run
-- --check-policy`, and as a hot reload of a watched file under `--serve` —
-- and each time: it ends within 2 s, the message names the limit or the
-- problem (the file's `-- expect:` lines, Lua patterns, any one may match),
-- the host is alive, the policy in force is still the one before and
-- behaves as before (a guarded call timed before and after, through a
-- should_retry hook that a poisoned math.min would change), and memory
-- stays within the sandbox's limit plus slack. Hook cases (hooks/) are
-- accepted policies whose decision hook is the hostile part: the call ends
-- in time, the hook failure is logged with the limit, the built-in decision
-- stands.
local mnemo = require "mnemo"
local h = require "helpers"
local uv = require "luv"

local DIR = "tests/fixtures/hostile/"
local SECONDS = 2
local MIB = 1024 * 1024
local LIMIT = 64 * MIB -- the sandbox's default memory limit
local SLACK = 96 * MIB -- freed pages not yet given back, buffers, the heap's own growth

local GOOD = [[
return {
  timeouts = { probe = 0.05 },
  retry = { quick = { attempts = 3, base = 0.01, max = 0.02, jitter = "none", on = { "timeout" } } },
  operations = {
    hostile_probe = { timeout = "probe", retry = "quick", idempotent = true,
      should_retry = function(err, attempt)
        return math.min(attempt, 5) < 3 and string.format("%d", attempt) ~= "" and ("x"):rep(2) == "xx"
      end },
  },
}
]]

local function expects_of(text)
  local list = {}
  for e in text:gmatch("%-%- expect: ([^\n]*)") do
    list[#list + 1] = e
  end
  return list
end

local function matches_any(text, patterns)
  for _, p in ipairs(patterns) do
    if tostring(text):find(p) then
      return true
    end
  end
  return false
end

-- The corpus: files in DIR with an `-- expect:` line, plus cases made here
-- (a FIFO, a device behind a symlink, a file over the size limit, a
-- directory), made where they are placed.
local function cases()
  local list = {}
  for name in io.popen("ls " .. DIR):lines() do
    if name:match("%.lua$") then
      local text = io.open(DIR .. name):read("*a")
      local expects = expects_of(text)
      if #expects > 0 then
        list[#list + 1] = { name = name, text = text, expects = expects }
      end
    end
  end
  list[#list + 1] = { name = "fifo.lua", make = "mkfifo", expects = { "not a regular file %(a fifo%)" } }
  list[#list + 1] = { name = "dev_zero.lua", make = "ln -s /dev/zero", expects = { "not a regular file %(a char%)" } }
  list[#list + 1] = { name = "directory.lua", make = "mkdir", expects = { "not a regular file %(a directory%)" } }
  list[#list + 1] = { name = "huge.lua", text = ("-- padding\n"):rep(200000) .. "return {}\n",
    expects = { "bytes, over the limit of 1048576" } }
  assert(#list >= 30, "the corpus has " .. #list .. " cases")
  return list
end

-- Puts case c at path (replacing what is there, as an editor's rename does).
local function place(c, path)
  local tmp = path .. ".new"
  os.remove(tmp)
  if c.make then
    assert(os.execute(c.make .. " " .. tmp) == 0, c.make)
  else
    h.write_file(tmp, c.text)
  end
  -- a directory cannot replace a file by rename, nor a file a directory
  if not os.rename(tmp, path) then
    os.execute("rm -rf " .. path)
    assert(os.rename(tmp, path))
  end
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(uv.fs_mkdir(d, 448))
  -- include_spin.lua includes its neighbour.
  h.write_file(d .. "/include_spin_base.lua", io.open(DIR .. "include_spin_base.lua"):read("*a"))
  return d
end

local function status_kb(pid, field)
  local f = io.open("/proc/" .. pid .. "/status")
  local kb = tonumber(f:read("*a"):match(field .. ":%s*(%d+)"))
  f:close()
  return kb
end

-- Resets the process's peak RSS (VmHWM) to its current RSS.
local function reset_peak(pid)
  local f = io.open("/proc/" .. pid .. "/clear_refs", "w")
  f:write("5")
  f:close()
end

-- The good policy's behaviour: 3 attempts of 0.05 s, 0.01 + 0.02 s apart.
local function probe()
  local n, t0 = 0, mnemo.now()
  pcall(mnemo.guard, "hostile_probe", function()
    n = n + 1
    mnemo.sleep(1)
  end)
  return n, mnemo.now() - t0
end

local function assert_same_behaviour(before_n, after_n, after_s, name)
  assert.equal(before_n, after_n, name .. ": attempts changed")
  assert.equal(3, after_n, name)
  assert.is_true(after_s >= 0.15 and after_s < 1.0, ("%s: the guarded call took %.3f s"):format(name, after_s))
end

describe("hostile policy files, loaded in process", function()
  local dir, good
  setup(function()
    dir = tmpdir()
    good = h.write_file(dir .. "/good.lua", GOOD)
  end)
  teardown(function()
    os.execute("rm -rf " .. dir)
    mnemo.policy._reset()
  end)

  for _, c in ipairs(cases()) do
    it(c.name, function()
      mnemo.run(function()
        local lines, restore = h.capture_log()
        mnemo.policy._reset()
        assert.equal(1, mnemo.policy.load(good))
        local n0 = probe()
        local path = dir .. "/" .. c.name
        place(c, path)
        collectgarbage()
        reset_peak("self")
        local rss0 = status_kb("self", "VmRSS")
        local t0 = uv.hrtime()
        local gen, err = mnemo.policy.load(path)
        local seconds = (uv.hrtime() - t0) / 1e9
        assert.is_nil(gen, c.name .. " was accepted")
        assert.is_true(seconds < SECONDS, ("%s: %.2f s"):format(c.name, seconds))
        assert.is_true(matches_any(err, c.expects), c.name .. ": " .. tostring(err))
        local peak = status_kb("self", "VmHWM")
        assert.is_true((peak - rss0) * 1024 < LIMIT + SLACK,
          ("%s: RSS grew by %d MiB"):format(c.name, math.floor((peak - rss0) / 1024)))
        local st = mnemo.policy.status()
        assert.equal(good, st.path)
        assert.equal(1, st.generation)
        local n, s = probe()
        assert_same_behaviour(n0, n, s, c.name)
        restore()
        assert.equal(1, #h.events(lines, "policy_rejected"))
        os.execute("rm -rf " .. path)
      end)
    end)
  end
end)

describe("hostile policy files, through mnemo-run --check-policy", function()
  local dir = tmpdir()
  teardown(function()
    os.execute("rm -rf " .. dir)
  end)
  for _, c in ipairs(cases()) do
    it(c.name, function()
      local path = dir .. "/" .. c.name
      place(c, path)
      local t0 = uv.hrtime()
      local r = h.mnemo_run({ "--check-policy", path }, { env = h.child_env() })
      local seconds = (uv.hrtime() - t0) / 1e9
      assert.equal(1, r.code, c.name .. ": " .. r.stdout .. r.stderr)
      assert.is_true(matches_any(r.stderr, c.expects), c.name .. ": " .. r.stderr)
      -- process start and module loading come on top of the evaluation
      assert.is_true(seconds < SECONDS + 2, ("%s: %.2f s"):format(c.name, seconds))
      os.execute("rm -rf " .. path)
    end)
  end
end)

describe("hostile policy files, hot-reloaded under mnemo-run --serve", function()
  it("rejects every one in time; /health answers; the policy in force behaves as before", function()
    local dir = tmpdir()
    local path = h.write_file(dir .. "/policy.lua", GOOD)
    local script = h.write_file(dir .. "/serve.lua", [[
      local mnemo = require "mnemo"
      mnemo.http.route("GET /probe", function()
        local n, t0 = 0, mnemo.now()
        pcall(mnemo.guard, "hostile_probe", function() n = n + 1 mnemo.sleep(1) end)
        local st = mnemo.policy.status()
        return { attempts = n, seconds = mnemo.now() - t0, generation = st.generation, errors = st.errors }
      end)
    ]])
    mnemo.run(function()
      local p = h.start_serving({ "--serve", "127.0.0.1:0", "--policy", path, script }, h.child_env())
      assert(p.url, "no URL on stderr: " .. table.concat(p.err))
      local pid = uv.process_get_pid(p.handle)
      local ok, err = pcall(function()
        local first = h.curl(p.url .. "/probe").json
        assert.equal(1, first.generation)
        local errors = first.errors
        for _, c in ipairs(cases()) do
          reset_peak(pid)
          local rss0 = status_kb(pid, "VmRSS")
          local t0 = mnemo.now()
          place(c, path)
          local now
          repeat
            mnemo.sleep(0.02)
            now = h.curl(p.url .. "/probe").json
          until now.errors > errors or mnemo.now() - t0 > SECONDS + 1.5
          -- the file watcher's own latency (fs events; a 1 s stat poll
          -- behind them) comes on top of the evaluation
          assert.is_true(now.errors == errors + 1,
            ("%s: %d rejections in %.1f s, expected 1"):format(c.name, now.errors - errors, mnemo.now() - t0))
          errors = now.errors
          assert.equal(1, now.generation, c.name .. " was accepted")
          assert_same_behaviour(3, now.attempts, now.seconds, c.name)
          local health = h.curl(p.url .. "/health")
          assert.is_truthy(health.json, c.name .. ": /health did not answer")
          assert.equal(1, health.json.policy.generation)
          local peak = status_kb(pid, "VmHWM")
          assert.is_true((peak - rss0) * 1024 < LIMIT + SLACK,
            ("%s: the server's RSS grew by %d MiB"):format(c.name, math.floor((peak - rss0) / 1024)))
          -- the next case replaces this file by rename, as an editor does
        end
      end)
      local done = p.stop()
      assert(ok, err)
      assert.equal(143, done.code, done.stderr)
    end)
    os.execute("rm -rf " .. dir)
  end)
end)

-- Hook cases: a trigger that makes the hook run.
local function trigger(hook)
  local t0 = uv.hrtime()
  local ok, err = pcall(mnemo.guard, "hostile_op", function()
    error(mnemo.error("connection", "refused"))
  end)
  if hook == "health_probe" then
    mnemo.sleep(0.3) -- the breaker is open; its probe runs every 0.05 s
  end
  return ok, err, (uv.hrtime() - t0) / 1e9
end

describe("hostile decision hooks", function()
  for name in io.popen("ls " .. DIR .. "hooks"):lines() do
    local path = DIR .. "hooks/" .. name
    local text = io.open(path):read("*a")
    local hook = text:match("^%-%- hook: (%S+)")
    it(name, function()
      mnemo.run(function()
        mnemo.policy._reset()
        local b = mnemo.breaker.get("hostile")
        if b then
          b:reset()
        end
        local lines, restore = h.capture_log()
        assert.equal(1, mnemo.policy.load(path))
        local ticks, timer = 0, uv.new_timer()
        timer:start(10, 10, function()
          ticks = ticks + 1
        end)
        local ok, err, seconds = trigger(hook)
        restore()
        timer:close()
        mnemo.sleep(0.001) -- the close callback runs (luv crashes at exit on a handle it still holds)
        mnemo.breaker.get("hostile"):reset()
        assert.is_false(ok)
        assert.equal("connection", err.kind, "the original error stands")
        assert.equal("refused", tostring(err))
        assert.is_true(seconds < SECONDS, ("%.2f s"):format(seconds))
        assert.is_true(ticks > 0 or seconds < 0.02, "the loop kept running")
        local failures = {}
        for _, rec in ipairs(h.events(lines, "hook_failed")) do
          if rec.hook == hook then
            failures[#failures + 1] = rec
          end
        end
        assert.is_true(#failures >= 1, "no hook_failed line for " .. hook)
        assert.is_true(matches_any(failures[1].error, expects_of(text)), failures[1].error)
        -- strings' methods and the libraries are the host's again
        assert.equal("xx", ("x"):rep(2))
        assert.equal("1", string.format("%d", 1))
        assert.equal(1, math.min(1, 2))
      end)
      mnemo.policy._reset()
    end)
  end
end)
