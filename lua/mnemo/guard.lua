-- mnemo.guard(operation, fn, opts): retry( bulkhead( deadline_per_attempt(
-- breaker( fn ) ) ) ), all inside the caller's deadline, with a fallback.
-- Which timeout, retry policy, breaker and bulkhead apply comes from the
-- configuration (mnemo.configure, in the policy-file format).
local core = require "mnemo_core"
local errors = require "mnemo.errors"
local log = require "mnemo.log"
local config = require "mnemo.config"
local breakers = require "mnemo.breaker"
local bulkheads = require "mnemo.bulkhead"

local type, pcall, error, select, tostring, pairs = type, pcall, error, select, tostring, pairs
local now, scope_enter, scope_leave, remaining = core.now, core.scope_enter, core.scope_leave, core.remaining
local classify = errors.classify
local unpack = unpack

local _M = {}

local DEFAULT_TIMEOUT = 30
local EMPTY = {}

-- The active configuration: compiled operations and their parts.
local active = {
  ops = {},
  timeouts = { default = DEFAULT_TIMEOUT },
  default_op = nil,
}

-- Counters per operation, for metrics.
local stats = {}
local unknown_operations = {}

local function stats_for(operation)
  local s = stats[operation]
  if not s then
    s = { calls = 0, successes = 0, failures = 0, timeouts = 0, retries = 0, fast_fails = 0,
      bulkhead_rejections = 0, fallbacks = 0, budget_denials = 0 }
    stats[operation] = s
  end
  return s
end

local function compile_op(name, spec, timeouts, retries)
  local t = spec.timeout
  if type(t) == "string" then
    t = timeouts[t]
  end
  local op = {
    name = name,
    timeout = t or timeouts.default or DEFAULT_TIMEOUT,
    deadline = spec.deadline,
    retry = spec.retry and retries[spec.retry] or nil,
    retry_name = spec.retry,
    breaker = spec.breaker and breakers.get(spec.breaker) or nil,
    bulkhead = spec.bulkhead and bulkheads.get(spec.bulkhead) or nil,
    idempotent = spec.idempotent == true,
    fallback = spec.fallback,
  }
  return op
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
  local retries = {}
  for name, r in pairs(c.retry or EMPTY) do
    local policy, err = core.retry_policy_new(r)
    if not policy then
      error(("invalid configuration:\n  retry.%s: %s"):format(name, err), 2)
    end
    retries[name] = policy
  end
  for name, b in pairs(c.breakers or EMPTY) do
    local existing = breakers.get(name)
    if existing then
      breakers.reconfigure(name, b)
    else
      breakers.new(name, b)
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
  local ops = {}
  for name, spec in pairs(c.operations or EMPTY) do
    ops[name] = compile_op(name, spec, timeouts, retries)
  end
  active = { ops = ops, timeouts = timeouts, source = c }
end

local function resolve(operation)
  local op = active.ops[operation]
  if op then
    return op
  end
  -- An unknown name runs under operations.default (or the default
  -- timeout alone), and is counted.
  unknown_operations[operation] = (unknown_operations[operation] or 0) + 1
  local base = active.ops.default
  op = { name = operation, timeout = active.timeouts[operation] or active.timeouts.default,
    unknown = true }
  if base then
    for k, v in pairs(base) do
      op[k] = v
    end
    op.name, op.unknown = operation, true
  end
  return op
end

-- One attempt: breaker admission, a bulkhead slot, the per-attempt
-- deadline. Returns ok, results... or false, err.
local function settle(ctx, scope, t0, ok, ...)
  local expired, elapsed, timeout = scope_leave(scope)
  local op = ctx.op
  if op.bulkhead then
    op.bulkhead.ud:leave()
  end
  local err = ...
  if expired and ok then
    -- Finished, but only after its deadline (CPU-bound, never yielded).
    ok, err = false, errors.timeout(op.name, timeout, elapsed)
  elseif not ok and expired and type(err) == "table" and err.kind == "timeout" then
    err = errors.timeout(op.name, timeout, elapsed)
  end
  local br = op.breaker
  if br then
    if ok then
      br.ud:success(now() - t0)
    elseif breakers.IGNORED[classify(err)] then
      br.ud:ignored()
    else
      br.ud:failure(now() - t0)
    end
  end
  if ok then
    return true, ...
  end
  if expired then
    ctx.stats.timeouts = ctx.stats.timeouts + 1
    log.emit("warn", "timeout", { operation = op.name, timeout = timeout, elapsed = elapsed,
      attempt = ctx.attempt, context = ctx.context })
  end
  return false, err
end

local function attempt(ctx, fn, ...)
  local op = ctx.op
  local br = op.breaker
  if br then
    local admitted, retry_after = br.ud:acquire()
    if not admitted then
      ctx.stats.fast_fails = ctx.stats.fast_fails + 1
      return false, errors.circuit_open(br.name, retry_after, op.name)
    end
  end
  if op.bulkhead then
    local entered, err = op.bulkhead:enter(op.name)
    if not entered then
      if br then
        br.ud:ignored()
      end
      ctx.stats.bulkhead_rejections = ctx.stats.bulkhead_rejections + 1
      return false, err
    end
  end
  local t0 = now()
  local scope = scope_enter(op.timeout, op.name)
  return settle(ctx, scope, t0, pcall(fn, ...))
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
  if not policy:should(class, ctx.attempt) then
    return nil
  end
  local left, expired = remaining()
  if expired then
    return nil
  end
  local delay = policy:delay(ctx.attempt, ctx.prev_delay)
  ctx.prev_delay = delay
  local retry_after = type(err) == "table" and tonumber(err.retry_after)
  if retry_after and retry_after > delay then
    delay = retry_after
  end
  -- Never sleep past the deadline: a retry that cannot start in time is
  -- not worth waiting for.
  if delay >= left then
    return nil
  end
  if not policy:try_retry() then
    ctx.stats.budget_denials = ctx.stats.budget_denials + 1
    log.emit("warn", "retry_budget_exhausted", { operation = op.name, attempt = ctx.attempt })
    return nil
  end
  return delay
end

local function fail(ctx, err, opts)
  local s = ctx.stats
  s.failures = s.failures + 1
  if ctx.attempt > 1 then
    log.emit("error", "retries_exhausted", { operation = ctx.op.name, attempts = ctx.attempt,
      error = tostring(err), class = classify(err) })
  end
  local fallback = opts and opts.fallback or ctx.op.fallback
  if fallback then
    s.fallbacks = s.fallbacks + 1
    log.emit("info", "fallback", { operation = ctx.op.name, error = tostring(err) })
    return fallback(err, { operation = ctx.op.name, attempts = ctx.attempt })
  end
  error(err, 0)
end

local function finish(ctx, opts, ok, ...)
  if ok then
    ctx.stats.successes = ctx.stats.successes + 1
    return ...
  end
  return fail(ctx, (...), opts)
end

-- The retry loop, in tail calls so results flow through without tables.
local function run(ctx, opts, args, ok, ...)
  if ok then
    return finish(ctx, opts, true, ...)
  end
  local err = ...
  local delay = next_delay(ctx, err)
  if not delay then
    return finish(ctx, opts, false, err)
  end
  ctx.stats.retries = ctx.stats.retries + 1
  log.emit("info", "retry", { operation = ctx.op.name, attempt = ctx.attempt, delay = delay,
    error = tostring(err), class = classify(err) })
  local slept, serr = core.sleep(delay)
  if not slept then
    return finish(ctx, opts, false, serr)
  end
  ctx.attempt = ctx.attempt + 1
  return run(ctx, opts, args, attempt(ctx, args.fn, unpack(args, 1, args.n)))
end

local function guarded(operation, fn, opts, ...)
  local op = resolve(operation)
  local s = stats_for(operation)
  s.calls = s.calls + 1
  local ctx = { op = op, stats = s, attempt = 1, prev_delay = 0, context = opts and opts.context }
  if op.retry and op.idempotent then
    op.retry:on_request()
    local args = { n = select("#", ...), fn = fn, ... }
    return run(ctx, opts, args, attempt(ctx, fn, ...))
  end
  return finish(ctx, opts, attempt(ctx, fn, ...))
end

local function leave_deadline(scope, operation, ok, ...)
  local expired, elapsed, timeout = scope_leave(scope)
  if expired then
    error(errors.timeout(operation, timeout, elapsed), 0)
  end
  if not ok then
    error((...), 0)
  end
  return ...
end

-- mnemo.guard(operation, fn [, opts], ...): opts.fallback(err, ctx),
-- opts.context (fields for log lines). Raises the final error when there
-- is no fallback.
function _M.guard(operation, fn, opts, ...)
  if type(operation) ~= "string" then
    error("guard: expected an operation name, got " .. tostring(operation), 2)
  end
  if type(fn) ~= "function" then
    error("guard: expected a function, got " .. tostring(fn), 2)
  end
  local op = active.ops[operation]
  if op and op.deadline then
    -- An overall deadline for all attempts together.
    local scope = scope_enter(op.deadline, operation .. " (all attempts)")
    return leave_deadline(scope, operation, pcall(guarded, operation, fn, opts, ...))
  end
  return guarded(operation, fn, opts, ...)
end

-- mnemo.retry(policy_table, fn, ...): fn(...) retried by a one-off policy.
function _M.retry(spec, fn, ...)
  local policy, err = core.retry_policy_new(spec)
  if not policy then
    error("retry: " .. err, 2)
  end
  local op = { name = spec.operation or "retry", timeout = spec.timeout or math.huge,
    retry = policy, idempotent = true }
  local ctx = { op = op, stats = stats_for(op.name), attempt = 1, prev_delay = 0 }
  ctx.stats.calls = ctx.stats.calls + 1
  policy:on_request()
  local args = { n = select("#", ...), fn = fn, ... }
  return run(ctx, nil, args, attempt(ctx, fn, ...))
end

function _M.stats()
  return stats, unknown_operations
end

-- The effective settings of an operation (for --explain and tests).
function _M.explain(operation)
  local op = active.ops[operation]
  local known = op ~= nil
  op = op or resolve(operation)
  return {
    operation = operation,
    known = known,
    timeout = op.timeout,
    deadline = op.deadline,
    retry = op.retry_name,
    breaker = op.breaker and op.breaker.name,
    bulkhead = op.bulkhead and op.bulkhead.name,
    idempotent = op.idempotent or false,
  }
end

return _M
