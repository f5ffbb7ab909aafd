// Main-thread CPU of one main<->worker round trip: node bench/tools/handoff-cost.mjs sab|msg
// (sab: SharedArrayBuffer + Atomics.notify / waitAsync, as src/ensemble/channel.ts; msg: postMessage both ways)
import { Worker } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
const mode = process.argv[2]; const N = 20000;
const sab = new SharedArrayBuffer(64); const c = new Int32Array(sab);
const w = new Worker(`
const { workerData, parentPort } = require('node:worker_threads');
const c = new Int32Array(workerData.sab); let seen = 0;
if (workerData.mode === 'msg') { parentPort.on('message', () => { parentPort.postMessage(0); }); }
else for (;;) { Atomics.wait(c, 0, seen); seen = Atomics.load(c, 0); if (seen < 0) break; Atomics.add(c, 1, 1); Atomics.notify(c, 1); }
`, { eval: true, workerData: { sab, mode } });
const main = () => Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]);
let i = 0;
const one = () => new Promise((res) => {
  if (mode === 'msg') { w.once('message', res); w.postMessage(0); return; }
  const before = Atomics.load(c, 1); Atomics.store(c, 0, ++i); Atomics.notify(c, 0);
  const r = Atomics.waitAsync(c, 1, before); if (r.async) r.value.then(res); else res();
});
for (let k = 0; k < 2000; k++) await one();
const a = main(); const t = performance.now();
for (let k = 0; k < N; k++) await one();
console.log(mode, ((main() - a) / 1e3 / N).toFixed(1), 'us main CPU per round trip', ((performance.now() - t) * 1000 / N).toFixed(1), 'us wall');
process.exit(0);
