-- mnemo.guard(operation, fn, opts): retry( bulkhead( deadline_per_attempt(
-- breaker( fn ) ) ) ), all inside the caller's deadline, with a fallback.
-- Which timeout, retry policy, breaker and bulkhead apply comes from the
-- configuration (mnemo.configure, in the policy-file format).
local core = require "mnemo_core"
local errors = require "mnemo.errors"
local log = require "mnemo.log"
local log_summary = require "mnemo.log_summary"
local correlation = require "mnemo.correlation"
local overrides = require "mnemo.overrides"
local config = require "mnemo.config"
local breakers = require "mnemo.breaker"
local bulkheads = require "mnemo.bulkhead"
local timeout = require "mnemo.timeout"
local hooks = require "mnemo.hooks"
local degrade = require "mnemo.degrade"
-- Timeouts and failed calls are recorded as error events (the flusher,
-- mnemo.tracking, runs under the guard and so sits above it).
local error_events = require "mnemo.error_events"

local type, pcall, error, select, tostring, pairs = type, pcall, error, select, tostring, pairs
local remaining = core.remaining
local classify = errors.classify
local unpack = unpack

local _M = {}

local DEFAULT_TIMEOUT = 30
local EMPTY = {}

-- The policy's switches (config.SWITCHES), all on unless it turns one
-- off. They are compiled into each operation (no flag is tested per call):
-- timeouts off -> op.timeout false (attempt_begin arms no deadline) and no
-- op.deadline; retries off -> no op.retry; breakers off -> no op.breaker
-- (the breaker itself, and its state, stay as they are); error_tracking
-- off -> op.track false (no error event for the operation's failures).
local ALL_ON = {}
for _, name in ipairs(config.SWITCHES) do
  ALL_ON[name] = true
end

local function switches_of(c)
  local sw = {}
  for _, name in ipairs(config.SWITCHES) do
    sw[name] = not (c.switches and c.switches[name] == false)
  end
  return sw
end

-- The active configuration: compiled operations and their parts.
local active = {
  ops = {},
  timeouts = { default = DEFAULT_TIMEOUT },
  switches = ALL_ON,
}

-- Counters per operation, for metrics.
local stats = {}
local unknown_operations = {}

local function stats_for(operation)
  local s = stats[operation]
  if not s then
    -- recovered: successes after at least one failed attempt (a retry).
    s = { calls = 0, successes = 0, failures = 0, timeouts = 0, retries = 0, fast_fails = 0,
      bulkhead_rejections = 0, fallbacks = 0, budget_denials = 0, recovered = 0 }
    stats[operation] = s
    _M.rotate_window(s, core.now()) -- the window's origin
  end
  return s
end

-- The retry policy of an operation: the one it names; for operations.default
-- (the rule of every operation the policy does not name) that names none
-- but is declared idempotent, retry.default, else the built-in default.
-- Returns the C policy, its name (nil for the built-in) and its max.
local function retry_of(name, spec, parts)
  local rname = spec.retry
  if rname == nil and name == "default" and spec.idempotent == true then
    if parts.retries.default then
      rname = "default"
    else
      return parts.builtin.policy, nil, parts.builtin.max
    end
  end
  local policy = rname and parts.retries[rname]
  if not policy then
    return nil
  end
  return policy, rname, parts.retry_max[rname]
end

-- parts: what configure built: timeouts, retries (name -> C policy),
-- retry_max (name -> its max), switches, builtin (the default retry).
local function compile_op(name, spec, parts)
  local timeouts, sw = parts.timeouts, parts.switches
  local t = spec.timeout
  -- The named timeout the operation uses (per-repository and per-path
  -- overrides name it); none when it has a number of its own.
  local timeout_name = type(t) == "string" and t or (t == nil and "default" or nil)
  if type(t) == "string" then
    t = timeouts[t]
  end
  t = t or timeouts.default or DEFAULT_TIMEOUT
  local policy, rname, rmax = retry_of(name, spec, parts)
  local br = spec.breaker and breakers.get(spec.breaker) or nil
  local op = {
    name = name,
    -- false: no deadline for the attempt (attempt_begin takes a number)
    timeout = sw.timeouts and t,
    timeout_name = sw.timeouts and timeout_name or nil,
    deadline = sw.timeouts and spec.deadline or nil,
    retry = sw.retries and policy or nil,
    retry_name = rname,
    retry_max = rmax,
    retry_builtin = policy ~= nil and rname == nil,
    breaker = sw.breakers and br or nil,
    bulkhead = spec.bulkhead and bulkheads.get(spec.bulkhead) or nil,
    idempotent = spec.idempotent == true,
    fallback = spec.fallback,
    should_retry = spec.should_retry,
    next_delay = spec.next_delay,
    track = sw.error_tracking,
    -- what the policy says, switches aside (mnemo.explain)
    configured = { timeout = t, deadline = spec.deadline, breaker = br and br.name },
    stats = stats_for(name),
  }
  op.has_budget = op.retry ~= nil and op.retry:budget_stats() ~= nil
  -- class -> whether a first failure is retried, filled as classes come
  -- (one C call per class and operation, not 15 per operation per reload)
  op.retryable = {}
  return op
end

-- The built-in default retry policy (config.DEFAULT_RETRY), made once.
local builtin_retry
local function builtin()
  if not builtin_retry then
    builtin_retry = { policy = assert(core.retry_policy_new(config.DEFAULT_RETRY)), max = config.DEFAULT_RETRY.max }
  end
  return builtin_retry
end

-- mnemo.configure(tbl): validates everything first (all problems listed),
-- then applies it as one unit: nothing is half-applied. Breakers that
-- exist keep their live state (new thresholds apply to it).
function _M.configure(c)
  local ok, problems = config.validate(c)
  if not ok then
    error("invalid configuration:\n  " .. table.concat(problems, "\n  "), 2)
  end
  -- Build every part before touching the active configuration.
  local retries, retry_maxes = {}, {}
  for name, r in pairs(c.retry or EMPTY) do
    local policy, err = core.retry_policy_new(r)
    if not policy then
      error(("invalid configuration:\n  retry.%s: %s"):format(name, err), 2)
    end
    -- A retry budget's window survives a reload, like a breaker's.
    local old = active.retries and active.retries[name]
    if old then
      policy:carry_budget(old)
    end
    retries[name] = policy
    -- its cap, for next_delay hooks (the C policy keeps it to itself)
    retry_maxes[name] = type(r.max) == "number" and r.max or nil
  end
  for name, b in pairs(c.breakers or EMPTY) do
    local existing = breakers.get(name)
    if existing then
      breakers.reconfigure(name, b)
    else
      breakers.new(name, b)
    end
  end
  -- A breaker the previous configuration had and this one drops goes;
  -- every other keeps its live state.
  for name in pairs(active.source and active.source.breakers or EMPTY) do
    if not (c.breakers or EMPTY)[name] then
      breakers.remove(name)
    end
  end
  for name, b in pairs(c.bulkheads or EMPTY) do
    bulkheads.new(name, b)
  end
  local timeouts = {}
  for k, v in pairs(c.timeouts or EMPTY) do
    timeouts[k] = v
  end
  timeouts.default = timeouts.default or DEFAULT_TIMEOUT
  local sw = switches_of(c)
  local parts = { timeouts = timeouts, retries = retries, retry_max = retry_maxes, switches = sw,
    builtin = builtin() }
  local ops = {}
  for name, spec in pairs(c.operations or EMPTY) do
    ops[name] = compile_op(name, spec, parts)
  end
  degrade.configure(c.degrade)
  overrides.configure(c)
  log.configure(c.log)
  log_summary.configure(c.log)
  breakers.set_switches(sw)
  errors.recording = sw.error_tracking
  -- A switch turned off (or back on) is said once, where operators look.
  for _, name in ipairs(config.SWITCHES) do
    if sw[name] ~= active.switches[name] then
      log.emit(sw[name] and "info" or "warn", "switch_changed", { switch = name, enabled = sw[name] })
    end
  end
  active = { ops = ops, timeouts = timeouts, source = c, retries = retries, switches = sw }
end

-- The switches in force (a copy): { timeouts = true, retries = true, ... }.
function _M.switches()
  local out = {}
  for k, v in pairs(active.switches) do
    out[k] = v
  end
  return out
end

-- Whether one switch is on (tracking.record asks per event).
function _M.switched_on(name)
  return active.switches[name] ~= false
end

local function resolve(operation)
  local op = active.ops[operation]
  if op then
    return op
  end
  -- An unknown name runs under operations.default (or the default
  -- timeout alone, tried once: nothing says it is idempotent), and is
  -- counted.
  unknown_operations[operation] = (unknown_operations[operation] or 0) + 1
  local base = active.ops.default
  local t = active.timeouts[operation] or active.timeouts.default
  local sw = active.switches
  op = { name = operation, timeout = sw.timeouts and t, unknown = true, track = sw.error_tracking,
    configured = { timeout = t } }
  if base then
    for k, v in pairs(base) do
      op[k] = v
    end
    op.name, op.unknown = operation, true
  end
  op.stats = stats_for(operation)
  return op
end

-- One attempt: a bulkhead slot, then breaker admission and the
-- per-attempt deadline (one C call), the call, then scope and breaker
-- settled (one C call) and the slot given back: the documented order,
-- retry( bulkhead( deadline_per_attempt( breaker( call ) ) ) ), as
-- runtime/loop/guard.c composes it. Returns ok, results... or false, err. The success path allocates
-- nothing: the per-call context table is made only once an attempt fails.
local attempt_begin, attempt_end = core.attempt_begin, core.attempt_end
local IGNORED = breakers.IGNORED

-- Breakers held by an attempt in progress, per task: a guarded call made
-- inside another on the same breaker (db_connect inside db_write) passes
-- through it, and the outer call's outcome is what counts. Otherwise, while
-- the breaker is half-open, the outer call takes the only trial permit,
-- the inner one is refused, and the breaker never closes again.
local held = setmetatable({}, { __mode = "k" }) -- coroutine -> { [breaker ud] = true }
local running = coroutine.running

local function settle(op, s, attempt_no, opts, scope, ud, ok, ...)
  if ud then
    held[running() or held][ud] = nil
  end
  if op.bulkhead then
    op.bulkhead.ud:leave()
  end
  local err = ...
  local ignored = not ok and IGNORED[classify(err)]
  if ud and not ok then
    -- The cause, if this failure opens it (an ignored class can, when the
    -- attempt also overran its timeout).
    op.breaker.last_failure = err
  end
  local expired, elapsed, timeout = attempt_end(scope, ok, ignored, ud)
  if ud and op.breaker.trips.pending then
    -- the first trial after a trip (breaker.lua: false positives)
    op.breaker:trial_settled(ok and not expired, ignored and not expired)
  end
  if not expired then
    if ok then
      return true, ...
    end
    if ud and not ignored then
      degrade.record_error(op.breaker.name)
      op.breaker:note_failure(err)
    end
    return false, err
  end
  if ud then
    degrade.record_error(op.breaker.name)
  end
  s.timeouts = s.timeouts + 1
  _M.rotate_window(s, core.now())
  log_summary.note("timeout", op.name, "timeout")
  log.emit("warn", "timeout", { operation = op.name, timeout = timeout, elapsed = elapsed,
    attempt = attempt_no, context = opts and opts.context })
  if op.track then
    error_events.guard_timeout(op, timeout, attempt_no, opts)
  end
  if ok or (type(err) == "table" and err.kind == "timeout") then
    -- Our own deadline: report it as ours (a success that overran it
    -- without yielding is a timeout too).
    err = errors.timeout(op.name, timeout, elapsed)
  end
  if ud then
    op.breaker:note_failure(err)
  end
  return false, err
end

-- A bulkhead slot first: the wait is bounded by the bulkhead's max_wait
-- and the caller's deadline, not by the attempt timeout, and a call in the
-- queue holds no breaker permit (a half-open breaker's only trial would
-- otherwise wait with it). Returns true, or false and the error; the
-- caller's deadline running out in the queue is an error returned too, so
-- the call is counted and tracked like any other failure.
local function enter_bulkhead(op, s)
  local bh = op.bulkhead
  local ok, entered, err = pcall(bh.enter, bh, op.name)
  if ok and entered then
    return true
  end
  if ok then
    s.bulkhead_rejections = s.bulkhead_rejections + 1
    return false, err
  end
  return false, entered
end

local function attempt(op, s, attempt_no, opts, fn, ...)
  if op.bulkhead then
    local entered, err = enter_bulkhead(op, s)
    if not entered then
      return false, err
    end
  end
  local br = op.breaker
  local ud = br and br.ud
  local mine
  if ud then
    local co = running() or held -- the main thread has no coroutine
    mine = held[co]
    if not mine then
      mine = {}
      held[co] = mine
    end
    if mine[ud] then
      ud = nil -- nested in a call holding this breaker: pass through
    end
  end
  local seconds = op.timeout
  if opts then
    -- opts.timeouts: name -> seconds (mnemo.overrides.for_file)
    local own = opts.timeouts
    if own and op.timeout_name then
      seconds = own[op.timeout_name] or seconds
    end
  end
  local scope, retry_after = attempt_begin(seconds, op.name, ud)
  if not scope then
    if op.bulkhead then
      op.bulkhead.ud:leave()
    end
    s.fast_fails = s.fast_fails + 1
    return false, br:refused(retry_after, op.name)
  end
  if ud then
    mine[ud] = true
  end
  return settle(op, s, attempt_no, opts, scope, ud, pcall(fn, ...))
end

-- A next_delay hook's delay is kept within the retry policy's [0, max]
-- (below 0, NaN or infinite is refused by hooks.is_delay, and the built-in
-- delay stands) and, like every delay, within the deadline. The C policy
-- keeps its cap to itself: it is the one compiled into the operation from
-- the policy's table (a call in flight keeps the cap of the generation it
-- started with, as it keeps its policy), else the C default, which a
-- jitter-free backoff of many attempts reaches.
local default_retry_max
local function retry_max(op)
  if op.retry_max then
    return op.retry_max
  end
  if not default_retry_max then
    default_retry_max = core.retry_policy_new({ jitter = "none" }):delay(1e6)
  end
  return default_retry_max
end

-- Clamps are counted per operation and reason ("above_max": cut to the
-- policy's max; "past_deadline": no retry) and logged once per hook and
-- reason, so a hook that always overshoots does not flood the log.
_M.hook_clamps = {} -- operation -> { [reason] = count }
local clamp_logged = setmetatable({}, { __mode = "k" }) -- hook -> { [reason] = true }
local function hook_clamped(op, reason, value, bound)
  local counts = _M.hook_clamps[op.name]
  if not counts then
    counts = {}
    _M.hook_clamps[op.name] = counts
  end
  counts[reason] = (counts[reason] or 0) + 1
  local logged = clamp_logged[op.next_delay]
  if not logged then
    logged = {}
    clamp_logged[op.next_delay] = logged
  end
  if not logged[reason] then
    logged[reason] = true
    log.emit("warn", "hook_clamped", { hook = "next_delay", owner = op.name, reason = reason, value = value,
      bound = bound })
  end
end

-- Decides whether the failed attempt is followed by another; returns the
-- delay in seconds, or nil.
local function next_delay(ctx, err)
  local op = ctx.op
  local policy = op.retry
  if not policy or not op.idempotent then
    return nil
  end
  local class = classify(err)
  local retry = policy:should(class, ctx.attempt)
  if op.should_retry and ctx.attempt < policy:attempts() then
    -- The policy's hook decides; the built-in decision stands if it fails.
    local ok, decided = hooks.call("should_retry", op.name, op.should_retry, hooks.is_boolean, err, ctx.attempt)
    if ok then
      retry = decided
    end
  end
  if not retry then
    return nil
  end
  local left, expired = remaining()
  if expired then
    return nil
  end
  local delay = policy:delay(ctx.attempt, ctx.prev_delay)
  local hooked
  if op.next_delay then
    local ok, d = hooks.call("next_delay", op.name, op.next_delay, hooks.is_delay, ctx.attempt, err, delay)
    if ok then
      local max = retry_max(op)
      if d > max then
        hook_clamped(op, "above_max", d, max)
        d = max
      end
      delay, hooked = d, true
    end
  end
  ctx.prev_delay = delay
  -- A server's Retry-After (or Redis LOADING) is a real signal: it may
  -- stretch the delay past the policy's max, but not past the deadline
  -- (below).
  local retry_after = type(err) == "table" and tonumber(err.retry_after)
  if retry_after and retry_after > delay then
    delay = retry_after
  end
  -- Never sleep past the deadline: a retry that cannot start in time is
  -- not worth waiting for.
  if delay >= left then
    if hooked and ctx.prev_delay >= left then
      hook_clamped(op, "past_deadline", ctx.prev_delay, left)
    end
    return nil
  end
  if not policy:try_retry() then
    ctx.stats.budget_denials = ctx.stats.budget_denials + 1
    log.emit("warn", "retry_budget_exhausted", { operation = op.name, attempt = ctx.attempt })
    return nil
  end
  return delay
end

-- The context a fallback gets: one table per operation and attempt
-- count, reused (a fast-fail allocates nothing); the fields are set anew
-- at each call. A fallback that keeps it copies it.
local function fallback_context(op, attempts)
  local by_attempts = op.fallback_contexts
  if not by_attempts then
    by_attempts = {}
    op.fallback_contexts = by_attempts
  end
  local ctx = by_attempts[attempts]
  if not ctx then
    ctx = {}
    by_attempts[attempts] = ctx
  end
  ctx.operation, ctx.attempts = op.name, attempts
  return ctx
end

-- Failures travel back up as FAILED, err (never raised inside): mnemo.guard
-- raises err at its top, once, after the correlation id is released;
-- mnemo.try returns nil, err. So the success path needs no pcall of its
-- own, and a fast-fail unwinds nothing.
local FAILED = setmetatable({}, { __tostring = function()
  return "mnemo.guard: failed"
end })

-- A caller's fallback may raise: that error is the call's.
local function fallback_returned(ok, ...)
  if ok then
    return ...
  end
  return FAILED, (...)
end

-- The call failed for good (after `attempts`). One line for the first
-- failure of its operation and error kind in the summary interval, every
-- other one counted in mnemo.log_summary's line: during an outage that is
-- a handful of lines, not one per call.
local function fail(op, s, attempts, opts, err, class)
  s.failures = s.failures + 1
  class = class or classify(err)
  local fallback = opts and opts.fallback
  local answered = fallback or op.fallback
  if log_summary.note(answered and "fallback" or "failed", op.name, class) then
    if log.enabled("warn") then
      log.emit("warn", attempts > 1 and "retries_exhausted" or "call_failed", { operation = op.name,
        attempts = attempts, error = tostring(err), class = class, fallback = answered and true or nil,
        context = opts and opts.context })
    end
  end
  if fallback then
    s.fallbacks = s.fallbacks + 1
    if op.track then
      error_events.guard_failure(op, err, attempts, true, opts)
    end
    return fallback_returned(pcall(fallback, err, fallback_context(op, attempts)))
  end
  if op.fallback then
    -- A policy's fallback is a sandboxed hook: if it fails, the original
    -- error stands.
    local ok, value = hooks.call("fallback", op.name, op.fallback, nil, err, fallback_context(op, attempts))
    if ok then
      s.fallbacks = s.fallbacks + 1
      if op.track then
        error_events.guard_failure(op, err, attempts, true, opts)
      end
      return value
    end
  end
  if op.track then
    error_events.guard_failure(op, err, attempts, false, opts)
  end
  return FAILED, err
end

-- After a failed attempt: retries, in tail calls so results flow through
-- without tables.
local function retry_loop(ctx, ok, ...)
  if ok then
    ctx.stats.successes = ctx.stats.successes + 1
    ctx.stats.recovered = ctx.stats.recovered + 1
    return ...
  end
  local err = ...
  local delay = next_delay(ctx, err)
  if not delay then
    return fail(ctx.op, ctx.stats, ctx.attempt, ctx.opts, err)
  end
  ctx.stats.retries = ctx.stats.retries + 1
  local class = classify(err)
  log_summary.note("retry", ctx.op.name, class)
  log.emit("info", "retry", { operation = ctx.op.name, attempt = ctx.attempt, delay = delay,
    error = tostring(err), class = class })
  local slept, serr = core.sleep(delay)
  if not slept then
    return fail(ctx.op, ctx.stats, ctx.attempt, ctx.opts, serr)
  end
  ctx.attempt = ctx.attempt + 1
  local args = ctx.args
  return retry_loop(ctx, attempt(ctx.op, ctx.stats, ctx.attempt, ctx.opts, ctx.fn, unpack(args, 1, args.n)))
end

local NO_ARGS = { n = 0 }

-- Whether the policy would retry a first failure of this class, from a
-- table made at configuration (a C call per failure otherwise); classes
-- not in the list ask the policy.
local function retried_first(op, class)
  local known = op.retryable
  local r = known and known[class]
  if r == nil then
    r = op.retry:should(class, 1)
    if known then
      known[class] = r
    end
  end
  return r
end

-- args: nil when the operation is not retried, else its arguments (a
-- shared empty table when there are none, the common case: no allocation).
-- An error the policy never retries (a fast-fail, a bad request) goes
-- straight to fail: no retry context, no delay computed. A should_retry
-- hook decides for itself, so it always gets the context.
local function first(op, s, opts, fn, args, ok, ...)
  if ok then
    s.successes = s.successes + 1
    return ...
  end
  if not args then
    return fail(op, s, 1, opts, (...))
  end
  if not op.should_retry then
    local class = classify((...))
    if not retried_first(op, class) then
      return fail(op, s, 1, opts, (...), class)
    end
  end
  local ctx = { op = op, stats = s, attempt = 1, prev_delay = 0, opts = opts, fn = fn, args = args }
  return retry_loop(ctx, false, ...)
end

local function guarded(op, fn, opts, ...)
  local s = op.stats
  s.calls = s.calls + 1
  local args = nil
  if op.retry and op.idempotent then
    if op.has_budget then
      op.retry:on_request()
    end
    local n = select("#", ...)
    args = n == 0 and NO_ARGS or { n = n, ... }
  end
  return first(op, s, opts, fn, args, attempt(op, s, 1, opts, fn, ...))
end

local function check(operation, fn)
  local op = active.ops[operation]
  if not op then
    if type(operation) ~= "string" then
      error("guard: expected an operation name, got " .. tostring(operation), 3)
    end
    op = resolve(operation)
  end
  if type(fn) ~= "function" then
    error("guard: expected a function, got " .. tostring(fn), 3)
  end
  return op
end

-- An overall deadline for all attempts together: mnemo.timeout raises its
-- TimeoutError, which becomes FAILED, err like any failure.
local function deadline_returned(ok, ...)
  if ok then
    return ...
  end
  return FAILED, (...)
end

local function run(op, fn, opts, ...)
  if op.deadline then
    return deadline_returned(pcall(timeout.timeout, { seconds = op.deadline,
      operation = op.name .. " (all attempts)", context = opts and opts.context }, guarded, op, fn, opts, ...))
  end
  return guarded(op, fn, opts, ...)
end

-- A call made outside any correlation id gets its own for its duration
-- (mnemo.correlation: a number until read, so this costs no allocation).
local begin_id, finish_id = correlation.begin, correlation.finish

local function raised(token, first_value, ...)
  finish_id(token)
  if first_value == FAILED then
    error((...), 0)
  end
  return first_value, ...
end

local function returned(token, first_value, ...)
  finish_id(token)
  if first_value == FAILED then
    return nil, (...)
  end
  return first_value, ...
end

-- mnemo.guard(operation, fn [, opts], ...): opts.fallback(err, ctx),
-- opts.context (fields for log lines). Raises the final error when there
-- is no fallback.
-- (The common case inline: every Lua call on this path costs ~15 ns in
-- the interpreter, and the guard does not compile.)
function _M.guard(operation, fn, opts, ...)
  local op = active.ops[operation]
  if not op or type(fn) ~= "function" then
    op = check(operation, fn)
  end
  if op.deadline then
    return raised(begin_id(), run(op, fn, opts, ...))
  end
  return raised(begin_id(), guarded(op, fn, opts, ...))
end

-- mnemo.try(operation, fn [, opts], ...): the same guarded call, but a
-- failure is returned as nil, err (OpenResty style) instead of raised: no
-- error is raised and unwound on the fast-fail path. fn's own results on
-- success (a fn that can return nil tells the two apart by err).
function _M.try(operation, fn, opts, ...)
  local op = active.ops[operation]
  if not op or type(fn) ~= "function" then
    op = check(operation, fn)
  end
  if op.deadline then
    return returned(begin_id(), run(op, fn, opts, ...))
  end
  return returned(begin_id(), guarded(op, fn, opts, ...))
end

-- mnemo.retry(policy_table, fn, ...): fn(...) retried by a one-off policy.
function _M.retry(spec, fn, ...)
  local policy, err = core.retry_policy_new(spec)
  if not policy then
    error("retry: " .. err, 2)
  end
  -- The policy's switches apply here too: retries off, tried once;
  -- timeouts off, no attempt timeout.
  local sw = active.switches
  local op = { name = spec.operation or "retry", timeout = sw.timeouts and (spec.timeout or math.huge),
    retry = sw.retries and policy or nil, idempotent = true, has_budget = sw.retries and spec.budget ~= nil,
    retry_max = type(spec.max) == "number" and spec.max or nil, track = sw.error_tracking }
  op.stats = stats_for(op.name)
  return raised(nil, guarded(op, fn, nil, ...))
end

-- The timeout rate of an operation over about a minute, at no cost to a
-- call: up to WINDOW_SLOTS snapshots of its cumulative calls and timeouts,
-- at least WINDOW_STEP seconds apart, taken lazily (when its counters are
-- made, when a timeout is counted and when the stats are read). The rate
-- is the timeouts over the calls since the newest snapshot at least
-- WINDOW_SLOTS * WINDOW_STEP seconds old, else since the oldest kept (so
-- with reads every few seconds, over the last 54 to 66 s; with rarer
-- reads, since the last read before the minute).
_M.WINDOW_STEP, _M.WINDOW_SLOTS = 6, 10

function _M.rotate_window(s, now)
  local w = s.window
  if not w then
    w = { head = 0, n = 0, t = {}, calls = {}, timeouts = {} }
    s.window = w
  end
  local last = w.t[w.head]
  if last and now - last < _M.WINDOW_STEP then
    return w
  end
  local i = w.head % _M.WINDOW_SLOTS + 1
  w.head, w.t[i], w.calls[i], w.timeouts[i] = i, now, s.calls, s.timeouts
  if w.n < _M.WINDOW_SLOTS then
    w.n = w.n + 1
  end
  return w
end

-- Sets s.window_calls, s.window_timeouts and s.timeout_rate (0 without
-- calls) as of `now`.
local function window_rate(s, now)
  local w = s.window
  local base_calls, base_timeouts = 0, 0
  if w then
    local span = _M.WINDOW_STEP * _M.WINDOW_SLOTS
    local best
    for k = 0, w.n - 1 do -- newest first
      local i = (w.head - 1 - k) % _M.WINDOW_SLOTS + 1
      best = i
      if now - w.t[i] >= span then
        break
      end
    end
    if best then
      base_calls, base_timeouts = w.calls[best], w.timeouts[best]
    end
  end
  local calls, timeouts = s.calls - base_calls, s.timeouts - base_timeouts
  s.window_calls, s.window_timeouts = calls, timeouts
  s.timeout_rate = calls > 0 and timeouts / calls or 0
  -- the snapshot after the rate, so a read always looks back
  _M.rotate_window(s, now)
  return s.timeout_rate
end

-- operation -> { calls, timeouts, rate } over the window (the same
-- figures mnemo.stats() puts in each operation's counters).
function _M.rates()
  local now, out = core.now(), {}
  for name, s in pairs(stats) do
    window_rate(s, now)
    out[name] = { calls = s.window_calls, timeouts = s.window_timeouts, rate = s.timeout_rate }
  end
  return out
end

function _M.stats()
  local now = core.now()
  for _, s in pairs(stats) do
    window_rate(s, now)
  end
  return stats, unknown_operations
end

-- The settings of an operation (for --explain and tests): timeout,
-- deadline, retry and breaker as the policy sets them, and `switches`, the
-- switches in force, which say whether each is applied (timeouts = false:
-- timeout and deadline are not; retries = false: the retry policy is not;
-- breakers = false: the breaker is bypassed). `retry` is a name in the
-- policy's retry section, or "(built-in default)" for an operation the
-- policy does not name under an idempotent operations.default and no
-- retry.default, whose settings are `retry_policy` (defaults filled in);
-- `retried` is whether a failure may be tried again.
-- The settings of a retry policy, what it leaves out filled in.
local function retry_settings(op)
  local spec
  if op.retry_builtin then
    spec = config.DEFAULT_RETRY
  elseif op.retry_name then
    spec = (active.source and active.source.retry or EMPTY)[op.retry_name]
  end
  if type(spec) ~= "table" then
    return nil
  end
  local out = {}
  for k, v in pairs(config.RETRY_DEFAULTS) do
    out[k] = v
  end
  for k, v in pairs(spec) do
    out[k] = v
  end
  return out
end

-- explain(operation, { repository =, path = }): with a file, the timeout
-- the repository's and paths' overrides give it, and `rules`, the entries
-- that applied.
function _M.explain(operation, file)
  local op = active.ops[operation]
  local known = op ~= nil
  op = op or resolve(operation)
  local configured = op.configured or EMPTY
  local timeout_s, rules = configured.timeout, nil
  if type(file) == "table" then
    local own
    own, rules = overrides.for_file(file.repository, file.path)
    if own and op.timeout_name and own[op.timeout_name] then
      timeout_s = own[op.timeout_name]
    end
  end
  return {
    operation = operation,
    known = known,
    timeout = timeout_s,
    timeout_name = op.timeout_name,
    rules = rules,
    deadline = configured.deadline,
    retry = op.retry_builtin and "(built-in default)" or op.retry_name,
    retry_policy = retry_settings(op),
    retried = op.retry ~= nil and op.idempotent == true,
    breaker = configured.breaker,
    bulkhead = op.bulkhead and op.bulkhead.name,
    idempotent = op.idempotent or false,
    switches = _M.switches(),
  }
end

return _M
