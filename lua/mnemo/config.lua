-- Validation of the resilience configuration (the policy-file format of
-- docs/POLICIES.md). Every problem is reported, each as
-- "path: expected ..., got ...", not just the first.
local errors = require "mnemo.errors"
local overrides = require "mnemo.overrides"

local type, pairs, ipairs, tostring, format, floor = type, pairs, ipairs, tostring, string.format, math.floor

local _M = {}

local function show(v)
  if type(v) == "string" then
    return format("%q", v)
  end
  return tostring(v)
end

-- path.key; path[key] for a key that is neither a string nor a number
-- (`[true] = ...` in a policy).
local function join(path, key)
  local kt = type(key)
  if kt == "string" or kt == "number" then
    return path .. "." .. key
  end
  return format("%s[%s]", path, show(key))
end

local Checker = {}
Checker.__index = Checker

function Checker:problem(path, expected, got)
  self.problems[#self.problems + 1] = format("%s: expected %s, got %s", path, expected, show(got))
end

function Checker:number(t, path, key, opts)
  local v = t[key]
  local p = join(path, key)
  if v == nil then
    if opts.required then
      self:problem(p, opts.what or "a number", nil)
    end
    return opts.default
  end
  local ok = type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
  if ok and opts.integer and v ~= floor(v) then
    ok = false
  end
  if ok and opts.min and v < opts.min then
    ok = false
  end
  if ok and opts.above and v <= opts.above then
    ok = false
  end
  if ok and opts.max and v > opts.max then
    ok = false
  end
  if not ok then
    self:problem(p, opts.what, v)
    return opts.default
  end
  return v
end

function Checker:keys(t, path, allowed)
  for k in pairs(t) do
    if not allowed[k] then
      self.problems[#self.problems + 1] = format("%s: unknown key %s", path, show(k))
    end
  end
end

-- Entries of timeouts, retry, breakers... are named by strings.
function Checker:name(section, name)
  if type(name) ~= "string" then
    self.problems[#self.problems + 1] = format("%s: expected a name (string) as key, got %s", section, show(name))
  end
end

function Checker:table(v, path)
  if type(v) ~= "table" then
    self:problem(path, "a table", v)
    return false
  end
  return true
end

local function set(list)
  local s = {}
  for _, k in ipairs(list) do
    if k == k then -- NaN cannot be a key (never = { 0/0 } is reported)
      s[k] = true
    end
  end
  return s
end

local RETRY_KEYS = set { "attempts", "base", "max", "multiplier", "jitter", "on", "never", "budget", "seed" }
local BREAKER_KEYS = set { "failure_threshold", "failure_rate", "window", "window_size", "minimum_calls",
  "slow_call", "recovery_timeout", "half_open_max_calls", "critical", "health_probe", "probe_interval",
  "probe_timeout", "on_transition" }
local BULKHEAD_KEYS = set { "max_concurrent", "max_queue", "max_wait" }
local OPERATION_KEYS = set { "timeout", "retry", "breaker", "bulkhead", "idempotent", "deadline", "fallback",
  "should_retry", "next_delay" }
local TOP_KEYS = set { "timeouts", "retry", "breakers", "bulkheads", "operations", "degrade", "alerts",
  "error_tracking", "include", "sandbox", "log", "switches", "repositories", "paths", "lsp" }
-- lsp = { [language] = { cmd = { "pylsp" }, ... } }: which server serves a
-- language, and its limits.
local LSP_LANGUAGES = set { "python", "javascript", "c", "lua" }
local LSP_KEYS = set { "cmd", "max_in_flight", "max_frame_mib", "init_timeout", "restarts_per_minute", "enabled" }
local LOG_KEYS = set { "level", "summary_interval", "rate_limit" }
local LOG_LEVELS = set { "debug", "info", "warn", "error", "critical" }
local SANDBOX_KEYS = set { "budget", "memory_mib", "hook_budget", "hook_memory_mib" }
local TRACKING_KEYS = set { "capacity", "max_bytes", "window", "batch", "interval", "max_backoff", "retention_days",
  "retention_interval", "service" }
local ALERT_KEYS = set { "interval", "window", "critical", "error", "warning", "webhook", "timeout_rate",
  "timeout_rate_min_calls", "breaker_false_positive_rate" }
local JITTERS = set { "none", "full", "equal", "decorrelated", "proportional" }

local DURATION = { what = "a number of seconds > 0", above = 0 }

-- The mechanisms a policy can switch off during an incident, without a
-- deploy: `switches = { breakers = false }`. A switch left out is on.
-- timeouts: no attempt timeout and no operation deadline (the guard's;
-- mnemo.timeout in code is not a policy timeout); retries: every guarded
-- call is tried once; breakers: every breaker is bypassed, its state kept
-- as it was; error_tracking: no error event is recorded.
_M.SWITCHES = { "timeouts", "retries", "breakers", "error_tracking" }
local SWITCH_SET = set(_M.SWITCHES)

-- What a retry policy leaves out (runtime/core/retry.c,
-- mnemo_retry_policy_default).
_M.RETRY_DEFAULTS = { attempts = 3, base = 0.5, max = 5, multiplier = 2, jitter = "full",
  on = { "connection", "timeout" }, never = { "invalid_input", "constraint", "auth", "not_found" } }

-- The retry policy of an operation the policy does not name, when
-- operations.default declares such operations idempotent and the policy
-- has no retry.default: 3 attempts, 1 s doubling to at most 30 s, on the
-- classes that say the dependency is in trouble for now (not that the
-- request is wrong). See docs/POLICIES.md, "Operations the policy does
-- not name".
_M.DEFAULT_RETRY = { attempts = 3, base = 1.0, max = 30, multiplier = 2, jitter = "full",
  on = { "connection", "timeout", "too_many_connections", "busy", "rate_limited", "http_5xx", "deadlock" },
  never = _M.RETRY_DEFAULTS.never }

function Checker:classes(list, path)
  if list == nil then
    return
  end
  if not self:table(list, path) then
    return
  end
  for i, c in ipairs(list) do
    if not errors.is_class(c) then
      self:problem(format("%s[%d]", path, i), "an error class (" .. table.concat(errors.CLASSES, ", ") .. ")", c)
    end
  end
end

function Checker:retry(r, path)
  if not self:table(r, path) then
    return
  end
  self:keys(r, path, RETRY_KEYS)
  self:number(r, path, "attempts", { what = "integer >= 1", integer = true, min = 1 })
  local base = self:number(r, path, "base", DURATION)
  local max = self:number(r, path, "max", DURATION)
  if base and max and max < base then
    self:problem(path .. ".max", format("a duration >= base (%g)", base), max)
  end
  self:number(r, path, "multiplier", { what = "a number >= 1", min = 1 })
  if r.jitter ~= nil and not JITTERS[r.jitter] then
    self:problem(path .. ".jitter", "none, full, equal, decorrelated or proportional", r.jitter)
  end
  self:classes(r.on, path .. ".on")
  self:classes(r.never, path .. ".never")
  if type(r.on) == "table" and type(r.never) == "table" then
    local never = set(r.never)
    for _, c in ipairs(r.on) do
      if never[c] then
        self.problems[#self.problems + 1] = format("%s.on: class %s is also in never", path, c)
      end
    end
  end
  if r.budget ~= nil and r.budget ~= false and self:table(r.budget, path .. ".budget") then
    self:keys(r.budget, path .. ".budget", set { "ratio", "min_retries", "window" })
    self:number(r.budget, path .. ".budget", "ratio", { what = "a number in [0, 10]", min = 0, max = 10 })
    self:number(r.budget, path .. ".budget", "min_retries", { what = "integer >= 0", integer = true, min = 0 })
    self:number(r.budget, path .. ".budget", "window", DURATION)
  end
end

function Checker:breaker(b, path)
  if not self:table(b, path) then
    return
  end
  self:keys(b, path, BREAKER_KEYS)
  local threshold = self:number(b, path, "failure_threshold", { what = "integer >= 0", integer = true, min = 0 })
  local rate = self:number(b, path, "failure_rate", { what = "a number in [0, 1]", min = 0, max = 1 })
  -- (the C breaker refuses it too, but only at configure: --check-policy
  -- said "ok" to a file load() then rejected)
  if threshold == 0 and (rate == nil or rate == 0) then
    self.problems[#self.problems + 1] = format("%s.failure_threshold: expected integer >= 1 when failure_rate is "
      .. "0 or absent (nothing could trip the breaker), got 0", path)
  end
  if b.window ~= nil and b.window ~= "count" and b.window ~= "time" then
    self:problem(path .. ".window", '"count" or "time"', b.window)
  end
  self:number(b, path, "window_size", { what = "integer in [1, 100000]", integer = true, min = 1, max = 100000 })
  self:number(b, path, "minimum_calls", { what = "integer >= 1", integer = true, min = 1 })
  self:number(b, path, "slow_call", { what = "a number of seconds >= 0", min = 0 })
  self:number(b, path, "recovery_timeout", DURATION)
  self:number(b, path, "half_open_max_calls", { what = "integer >= 1", integer = true, min = 1 })
  self:number(b, path, "probe_interval", DURATION)
  self:number(b, path, "probe_timeout", DURATION)
  for _, hook in ipairs({ "health_probe", "on_transition" }) do
    if b[hook] ~= nil and type(b[hook]) ~= "function" then
      self:problem(path .. "." .. hook, "a function", b[hook])
    end
  end
end

function Checker:bulkhead(b, path)
  if not self:table(b, path) then
    return
  end
  self:keys(b, path, BULKHEAD_KEYS)
  self:number(b, path, "max_concurrent", { what = "integer >= 1", integer = true, min = 1, required = true })
  self:number(b, path, "max_queue", { what = "integer >= 0", integer = true, min = 0 })
  self:number(b, path, "max_wait", { what = "a number of seconds >= 0", min = 0 })
end

-- error_tracking: the in-memory queue and the flusher (lua/mnemo/tracking.lua).
function Checker:error_tracking(t, path)
  if not self:table(t, path) then
    return
  end
  self:keys(t, path, TRACKING_KEYS)
  self:number(t, path, "capacity", { what = "integer in [1, 10000000]", integer = true, min = 1, max = 1e7 })
  self:number(t, path, "max_bytes", { what = "integer >= 65536", integer = true, min = 65536 })
  self:number(t, path, "window", { what = "a number of seconds in [0.001, 86400]", min = 0.001, max = 86400 })
  self:number(t, path, "batch", { what = "integer in [1, 10000]", integer = true, min = 1, max = 10000 })
  self:number(t, path, "interval", DURATION)
  self:number(t, path, "max_backoff", DURATION)
  self:number(t, path, "retention_days", { what = "a number of days > 0", above = 0 })
  self:number(t, path, "retention_interval", DURATION)
  local s = t.service
  if s ~= nil and (type(s) ~= "string" or #s == 0 or #s > 127) then
    self:problem(path .. ".service", "a name of 1 to 127 bytes", s)
  end
end

-- alerts: rules on the events of the last `window` seconds, per severity.
function Checker:alerts(a, path)
  if not self:table(a, path) then
    return
  end
  self:keys(a, path, ALERT_KEYS)
  self:number(a, path, "interval", DURATION)
  self:number(a, path, "window", DURATION)
  for _, key in ipairs({ "critical", "error", "warning" }) do
    if a[key] ~= false then
      self:number(a, path, key, { what = "integer >= 0 (alert above it) or false", integer = true, min = 0 })
    end
  end
  -- rate rules: a fraction in [0, 1] (alert above it) or false
  for _, key in ipairs({ "timeout_rate", "breaker_false_positive_rate" }) do
    if a[key] ~= false then
      self:number(a, path, key, { what = "a number in [0, 1] (alert above it) or false", min = 0, max = 1 })
    end
  end
  self:number(a, path, "timeout_rate_min_calls", { what = "integer >= 1", integer = true, min = 1 })
  local w = a.webhook
  if w ~= nil and (type(w) ~= "string" or not w:match("^http://[^/:]+")) then
    self:problem(path .. ".webhook", "an http:// URL", w)
  end
end

-- Returns true, or nil and the list of problems (strings).
function _M.validate(c)
  local ck = setmetatable({ problems = {} }, Checker)
  if not ck:table(c, "config") then
    return nil, ck.problems
  end
  ck:keys(c, "config", TOP_KEYS)
  -- A section that is not a table is a problem; below (names looked up in
  -- it) it counts as empty.
  local timeouts = c.timeouts or {}
  if ck:table(timeouts, "timeouts") then
    for name, v in pairs(timeouts) do
      ck:name("timeouts", name)
      ck:number(timeouts, "timeouts", name, DURATION)
    end
  else
    timeouts = {}
  end
  local retry = c.retry or {}
  if ck:table(retry, "retry") then
    for name, r in pairs(retry) do
      ck:name("retry", name)
      ck:retry(r, join("retry", name))
    end
  else
    retry = {}
  end
  local breakers = c.breakers or {}
  if ck:table(breakers, "breakers") then
    for name, b in pairs(breakers) do
      ck:name("breakers", name)
      ck:breaker(b, join("breakers", name))
    end
  else
    breakers = {}
  end
  local bulkheads = c.bulkheads or {}
  if ck:table(bulkheads, "bulkheads") then
    for name, b in pairs(bulkheads) do
      ck:name("bulkheads", name)
      ck:bulkhead(b, join("bulkheads", name))
    end
  else
    bulkheads = {}
  end
  local degrade = c.degrade or {}
  if ck:table(degrade, "degrade") then
    for name, d in pairs(degrade) do
      ck:name("degrade", name)
      local path = join("degrade", name)
      if type(d) ~= "string" and ck:table(d, path) then
        ck:keys(d, path, set { "breaker", "recover_after", "rungs" })
        if d.breaker ~= nil and (type(d.breaker) ~= "string" or breakers[d.breaker] == nil) then
          ck:problem(path .. ".breaker", "a name in breakers", d.breaker)
        end
        ck:number(d, path, "recover_after", { what = "a number of seconds >= 0", min = 0 })
        if ck:table(d.rungs, path .. ".rungs") then
          if #d.rungs == 0 then
            ck:problem(path .. ".rungs", "at least one rung", "an empty list")
          end
          for i, r in ipairs(d.rungs) do
            local rp = ("%s.rungs[%d]"):format(path, i)
            if ck:table(r, rp) then
              ck:keys(r, rp, set { "mode", "state", "errors", "window" })
              if type(r.mode) ~= "string" then
                ck:problem(rp .. ".mode", "a mode name (string)", r.mode)
              end
              if r.state ~= nil and r.state ~= "open" and r.state ~= "half_open" then
                ck:problem(rp .. ".state", '"open" or "half_open"', r.state)
              end
              ck:number(r, rp, "errors", { what = "integer >= 1", integer = true, min = 1 })
              ck:number(r, rp, "window", DURATION)
              if r.state == nil and r.errors == nil then
                ck:problem(rp, "a condition (state or errors)", "none")
              end
            end
          end
        end
      end
    end
  end
  if c.alerts ~= nil then
    ck:alerts(c.alerts, "alerts")
  end
  if c.error_tracking ~= nil then
    ck:error_tracking(c.error_tracking, "error_tracking")
  end
  if c.sandbox ~= nil and ck:table(c.sandbox, "sandbox") then
    -- Hard ceilings: the section is written by the same hand as the code
    -- it limits.
    ck:keys(c.sandbox, "sandbox", SANDBOX_KEYS)
    ck:number(c.sandbox, "sandbox", "budget", { what = "integer in [1000, 100000000]", integer = true,
      min = 1000, max = 1e8 })
    ck:number(c.sandbox, "sandbox", "hook_budget", { what = "integer in [100, 10000000]", integer = true,
      min = 100, max = 1e7 })
    for _, key in ipairs { "memory_mib", "hook_memory_mib" } do
      ck:number(c.sandbox, "sandbox", key, { what = "integer in [1, 1024]", integer = true, min = 1, max = 1024 })
    end
  end
  do
    -- Per-repository and per-path timeouts name the timeouts section's.
    local known = { default = true }
    if type(c.timeouts) == "table" then
      for k in pairs(c.timeouts) do
        known[k] = true
      end
    end
    overrides.check(ck, c, known)
  end
  if c.lsp ~= nil and ck:table(c.lsp, "lsp") then
    for lang, l in pairs(c.lsp) do
      local path = join("lsp", lang)
      if type(lang) ~= "string" or not LSP_LANGUAGES[lang] then
        ck.problems[#ck.problems + 1] = format("%s: expected a language (c, javascript, lua, python), got %s", path,
          show(lang))
      elseif ck:table(l, path) then
        ck:keys(l, path, LSP_KEYS)
        -- A program and its arguments, run without a shell.
        local cmd = l.cmd
        local ok = type(cmd) == "table" and #cmd >= 1 and #cmd <= 64
        if ok then
          for i = 1, #cmd do
            local a = cmd[i]
            if type(a) ~= "string" or #a == 0 or #a > 4096 or a:find("%z") then
              ok = false
            end
          end
          for k in pairs(cmd) do
            if type(k) ~= "number" or k < 1 or k > #cmd or k % 1 ~= 0 then
              ok = false
            end
          end
        end
        if not ok then
          ck:problem(path .. ".cmd", "a list of 1 to 64 non-empty strings (the program, then its arguments)", cmd)
        end
        ck:number(l, path, "max_in_flight", { what = "integer in [1, 256]", integer = true, min = 1, max = 256 })
        ck:number(l, path, "max_frame_mib", { what = "integer in [1, 256]", integer = true, min = 1, max = 256 })
        ck:number(l, path, "init_timeout", DURATION)
        ck:number(l, path, "restarts_per_minute", { what = "integer in [0, 60]", integer = true, min = 0, max = 60 })
        if l.enabled ~= nil and type(l.enabled) ~= "boolean" then
          ck:problem(path .. ".enabled", "true or false", l.enabled)
        end
      end
    end
  end
  if c.log ~= nil and ck:table(c.log, "log") then
    ck:keys(c.log, "log", LOG_KEYS)
    if c.log.level ~= nil and not LOG_LEVELS[c.log.level] then
      ck:problem("log.level", "one of debug, info, warn, error, critical", c.log.level)
    end
    ck:number(c.log, "log", "summary_interval", { what = "seconds in (0, 3600]", above = 0, max = 3600 })
    ck:number(c.log, "log", "rate_limit", { what = "integer lines per second per event in [0, 1000000] (0: no limit)",
      integer = true, min = 0, max = 1e6 })
  end
  if c.switches ~= nil and ck:table(c.switches, "switches") then
    for k, v in pairs(c.switches) do
      if not SWITCH_SET[k] then
        ck.problems[#ck.problems + 1] = format("%s: unknown switch (expected one of %s)", join("switches", k),
          table.concat(_M.SWITCHES, ", "))
      elseif type(v) ~= "boolean" then
        ck:problem(join("switches", k), "true or false", v)
      end
    end
  end
  local ops = c.operations or {}
  if ck:table(ops, "operations") then
    for name, op in pairs(ops) do
      ck:name("operations", name)
      local path = join("operations", name)
      if ck:table(op, path) then
        ck:keys(op, path, OPERATION_KEYS)
        if op.idempotent ~= nil and type(op.idempotent) ~= "boolean" then
          ck:problem(path .. ".idempotent", "true or false", op.idempotent)
        end
        local t = op.timeout
        if type(t) == "string" then
          if timeouts[t] == nil then
            ck:problem(path .. ".timeout", "a name in timeouts", t)
          end
        elseif t ~= nil then
          ck:number(op, path, "timeout", DURATION)
        end
        ck:number(op, path, "deadline", DURATION)
        for _, ref in ipairs({ { "retry", retry }, { "breaker", breakers }, { "bulkhead", bulkheads } }) do
          local key, pool = ref[1], ref[2]
          if op[key] ~= nil and (type(op[key]) ~= "string" or pool[op[key]] == nil) then
            ck:problem(path .. "." .. key, format("a name in %s", key == "retry" and "retry" or key .. "s"), op[key])
          end
        end
        if op.retry ~= nil and not op.idempotent then
          local r = retry[op.retry]
          -- attempts of a wrong type is reported above; take the default
          local attempts = type(r) == "table" and r.attempts
          if type(attempts) ~= "number" then
            attempts = 3
          end
          if type(r) == "table" and attempts > 1 then
            ck.problems[#ck.problems + 1] = format(
              "%s.retry: refusing to retry an operation not marked idempotent (add idempotent = true)", path)
          end
        end
        for _, hook in ipairs({ "fallback", "should_retry", "next_delay" }) do
          if op[hook] ~= nil and type(op[hook]) ~= "function" then
            ck:problem(path .. "." .. hook, "a function", op[hook])
          end
        end
      end
    end
  end
  if #ck.problems > 0 then
    table.sort(ck.problems)
    return nil, ck.problems
  end
  return true
end

return _M
