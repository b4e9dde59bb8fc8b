// opossum_bench.js — opossum's CircuitBreaker in the shapes of
// bench/guard_bench.lua: a per-call timeout (1 s), a breaker that opens after
// 5 failures and recovers after 30 s, around a function that answers
// synchronously. Measured: `success` (closed, the function succeeds), `open`
// (open, no fallback: fire() rejects with EOPENBREAKER, caught) and
// `open_fallback` (open, a fallback returns a value). Each fire() is awaited
// before the next: a promise per call is opossum's real cost.
//
// Configured as opossum is usually configured. It has no count-based
// breaker: it opens when failures exceed errorThresholdPercentage of the
// calls in its rolling window (10 s) once volumeThreshold calls were made,
// so a fresh breaker with volumeThreshold 5 opens on its 5th consecutive
// failure, the closest to mnemo's failure_threshold = 5. opossum has no
// retry policy: it is measured without one (mnemo's and cockatiel's
// figures include a retry policy's cost on these paths; here it is absent).
import CircuitBreaker from 'opossum';
import { FALLBACK, measure } from './timing.js';

let failing = false;
let sink = 0;
// The guarded function: answers synchronously (fire() wraps the value in a
// promise), or throws while `failing` is set (to open the breaker).
function work() {
  if (failing) throw new Error('connection refused');
  return ++sink;
}

// opossum writes its defaults into the options object: a fresh one each.
const options = () => ({
  timeout: 1000, // a setTimeout per fire(), cleared when it settles
  resetTimeout: 30000,
  errorThresholdPercentage: 50, // the default
  volumeThreshold: 5,
});

const live = new Set();
function breaker(withFallback) {
  const b = new CircuitBreaker(work, options());
  if (withFallback) b.fallback(() => FALLBACK);
  live.add(b);
  return b;
}
// Its rolling-window interval and reset timer would keep node alive.
function shutdown(b) {
  b.shutdown();
  live.delete(b);
}

// A fresh breaker per round, opened by 5 failures (reopening one is not
// possible: its window still holds the last round's calls).
function opened(withFallback) {
  let b;
  return async () => {
    if (b) shutdown(b);
    b = breaker(withFallback);
    failing = true;
    for (let i = 0; i < 5; i++) await b.fire().catch(() => {});
    failing = false;
    if (!b.opened) throw new Error('opossum: breaker not open after 5 failures');
    return () => b.fire();
  };
}

export async function run(n) {
  try {
    const closed = breaker(false);
    return {
      success: await measure(() => () => closed.fire(), n, 'value'),
      open: await measure(opened(false), n, 'rejection'),
      open_fallback: await measure(opened(true), n, 'fallback'),
    };
  } finally {
    for (const b of live) shutdown(b);
  }
}
