// timing.js — the peers' shared clock: ns per call, median of 5 rounds of
// n sequential calls, after one unmeasured warm-up round (JIT, inline
// caches). Each call is awaited before the next starts: a guard's cost in
// Node is its promise chain, and that is what mnemo's figures are compared
// with. With `node --expose-gc` a full GC runs before each round, as
// bench/guard_bench.lua runs collectgarbage(); between rounds the event loop
// gets one turn, so the peers' own timers (rolling-window buckets) can run.
const ROUNDS = 5;

// What a fallback returns, told apart from the guarded function's numbers.
export const FALLBACK = Symbol('fallback');

// Runs n calls; counts the rejections and the fallback values.
async function loop(call, n) {
  let rejected = 0;
  let fellBack = 0;
  for (let i = 0; i < n; i++) {
    try {
      if ((await call()) === FALLBACK) fellBack++;
    } catch {
      rejected++;
    }
  }
  return { rejected, fellBack };
}

const turn = () => new Promise(resolve => setImmediate(resolve));

// measure(prepare, n, expect): median ns per call. prepare() runs before
// each round, untimed, and returns the call to time (an open-breaker shape
// opens a fresh breaker there, so no round outlasts the 30 s recovery).
// expect is what every call must give — 'value', 'rejection' or
// 'fallback' — else the shape was not the one measured, and it throws.
export async function measure(prepare, n, expect) {
  const samples = [];
  for (let r = -1; r < ROUNDS; r++) { // round -1 is the warm-up
    const call = await prepare();
    await turn();
    if (globalThis.gc) globalThis.gc();
    const t0 = process.hrtime.bigint();
    const { rejected, fellBack } = await loop(call, n);
    const ns = Number(process.hrtime.bigint() - t0) / n;
    const got = rejected === n ? 'rejection' : fellBack === n ? 'fallback'
      : rejected + fellBack === 0 ? 'value' : `${rejected} rejections, ${fellBack} fallbacks`;
    if (got !== expect) throw new Error(`${n} calls expected to give ${expect}, got ${got}`);
    if (r >= 0) samples.push(ns);
  }
  samples.sort((a, b) => a - b);
  return Math.round(samples[ROUNDS >> 1] * 10) / 10;
}
