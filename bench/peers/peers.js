// peers.js — mnemo's resilience-guard costs have Node.js peers: opossum and
// cockatiel. This measures each peer, installed in ./node_modules (pinned in
// package-lock.json), in the shapes of bench/guard_bench.lua — success,
// breaker open without fallback, breaker open with fallback — as ns per call
// (median of 5 rounds of N sequential awaited calls after a warm-up round;
// see timing.js and each <peer>_bench.js), so the Lua bench can print
// mnemo's figures as ratios against them, measured in the same command.
// Usage: node --expose-gc peers.js [N]   (N calls per round, default 200000)
// stdout: one JSON object,
//   {"opossum": {"version", "success", "open", "open_fallback"}, "cockatiel": {...}, "node": "vX.Y.Z"}
// A peer that is not installed or fails is left out, with one stderr line.
// Normally run through ./run, which also copes with node being absent.
import { readFileSync } from 'node:fs';

const PEERS = ['opossum', 'cockatiel'];
const n = Number(process.argv[2] ?? 200000);
if (!Number.isInteger(n) || n < 1) {
  console.error('usage: peers.js [calls per round]');
  process.exit(2);
}

function installedVersion(name) {
  const path = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(path, 'utf8')).version;
}

const out = {};
for (const name of PEERS) {
  let version;
  try {
    version = installedVersion(name);
  } catch {
    console.error(`peers: ${name} skipped (not installed in bench/peers/node_modules)`);
    continue;
  }
  try {
    const { run } = await import(`./${name}_bench.js`);
    out[name] = { version, ...(await run(n)) };
  } catch (err) {
    console.error(`peers: ${name} skipped (${err.message.split('\n')[0]})`);
  }
}
out.node = process.version;
process.stdout.write(JSON.stringify(out) + '\n');
