// cockatiel_bench.js — cockatiel's policies in the shapes of
// bench/guard_bench.lua: retry (3 attempts) around a circuit breaker
// (ConsecutiveBreaker(5), half-open after 30 s) around a cooperative
// timeout (1 s), around a function that answers synchronously; the order
// of mnemo's guard (retries outermost, a deadline per attempt). Measured:
// `success` (closed, the function succeeds), `open` (open, no fallback: the
// BrokenCircuitError is caught) and `open_fallback` (open, a fallback
// policy outermost returns a value). Each execute() is awaited before the
// next: its promise chain is cockatiel's real cost.
//
// maxAttempts counts retries: 2 retries = 3 attempts, mnemo's attempts = 3.
// The retry handles every error but BrokenCircuitError: mnemo does not retry
// a circuit_open fast-fail (its retry `on` list is connection and timeout),
// and with handleAll the open shape would sleep through the backoff.
import {
  BrokenCircuitError, CircuitState, ConsecutiveBreaker, ExponentialBackoff, TimeoutStrategy,
  circuitBreaker, fallback, handleAll, handleWhen, retry, timeout, wrap,
} from 'cockatiel';
import { FALLBACK, measure } from './timing.js';

let failing = false;
let sink = 0;
// The guarded function: answers synchronously, or throws while `failing`
// is set (to open the breaker).
function work() {
  if (failing) throw new Error('connection refused');
  return ++sink;
}

// One guarded operation with its own breaker; withFallback adds a fallback
// policy around the whole chain, as mnemo's fallback follows the retries.
function guarded(withFallback) {
  const breaker = circuitBreaker(handleAll, { halfOpenAfter: 30000, breaker: new ConsecutiveBreaker(5) });
  const policies = [
    retry(handleWhen(err => !(err instanceof BrokenCircuitError)),
      { maxAttempts: 2, backoff: new ExponentialBackoff({ initialDelay: 500, maxDelay: 5000 }) }),
    breaker,
    timeout(1000, TimeoutStrategy.Cooperative),
  ];
  if (withFallback) policies.unshift(fallback(handleAll, () => FALLBACK));
  return { breaker, policy: wrap(...policies) };
}

// A fresh operation per round, its breaker opened by 5 failures, so no
// round outlasts the 30 s before half-open.
function opened(withFallback) {
  return async () => {
    const { breaker, policy } = guarded(withFallback);
    failing = true;
    for (let i = 0; i < 5; i++) await breaker.execute(work).catch(() => {});
    failing = false;
    if (breaker.state !== CircuitState.Open) throw new Error('cockatiel: breaker not open after 5 failures');
    return () => policy.execute(work);
  };
}

export async function run(n) {
  const closed = guarded(false).policy;
  return {
    success: await measure(() => () => closed.execute(work), n, 'value'),
    open: await measure(opened(false), n, 'rejection'),
    open_fallback: await measure(opened(true), n, 'fallback'),
  };
}
