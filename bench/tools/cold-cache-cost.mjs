// Does a member run on another thread make the main thread's own work dearer? (issue 32: the event
// loop's CPU per request grew with the member's size.) The main thread does one fixed job, the
// request-side work of a 3x32x32 v2 JSON request (parse the body, copy it into a Float32Array,
// encode an answer), REPEAT times in each of four modes, interleaved ROUNDS times:
//   back to back   jobs one after another
//   idle gap       a GAP_MS sleep between jobs, nothing else running
//   busy gap, small   the gap spent waiting for a thread that streams over SMALL_MB of memory (ResNet-20's 8 members: ~9 MB)
//   busy gap, large   the same over LARGE_MB (one ResNet-18 member's weights: ~45 MB)
// and prints the main thread's time per job (wall time around the job alone: it never waits, and the
// streaming thread has the other core; /proc's per-thread counters are too coarse for a 0.1 ms job).
//   node bench/tools/cold-cache-cost.mjs [REPEAT=300] [ROUNDS=3] [GAP_MS=16]
import { Worker } from 'node:worker_threads';

const [REPEAT = 300, ROUNDS = 3, GAP_MS = 16] = process.argv.slice(2).map(Number);
const SMALL_MB = 9;
const LARGE_MB = 45;

const body = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data: Array.from({ length: 3072 }, (_, i) => ((i * 37) % 255) / 255) }] });
let sink = 0;
function job() {
  const parsed = JSON.parse(body);
  const x = Float32Array.from(parsed.inputs[0].data);
  const probs = Array.from({ length: 10 }, (_, k) => x[k * 300] / 10);
  sink += JSON.stringify({ model_name: 'm', outputs: [{ name: 'probabilities', shape: [1, 10], datatype: 'FP32', data: probs }] }).length;
}

// The streaming thread: told how many MB to read, reads them, answers (an Int32 flag pair in shared memory).
const control = new Int32Array(new SharedArrayBuffer(8));
const streamer = new Worker(`
  const { workerData } = require('node:worker_threads');
  const control = workerData.control;
  const memory = new Float64Array(${LARGE_MB} * 131072);
  memory.fill(1);
  let seen = 0, sum = 0;
  for (;;) {
    Atomics.wait(control, 0, seen);
    seen = Atomics.load(control, 0);
    const doubles = Atomics.load(control, 1) * 131072;
    const until = Date.now() + ${GAP_MS};
    do { for (let i = 0; i < doubles; i += 8) sum += memory[i]; } while (Date.now() < until);
    Atomics.store(control, 0, seen + 1);
    seen++;
    Atomics.notify(control, 0);
  }
`, { eval: true, workerData: { control } });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function busy(mb) {
  const at = Atomics.load(control, 0);
  Atomics.store(control, 1, mb);
  Atomics.store(control, 0, at + 1);
  Atomics.notify(control, 0);
  await Atomics.waitAsync(control, 0, at + 1).value;
}

async function mode(gap) {
  let spent = 0;
  for (let i = 0; i < REPEAT; i++) {
    if (gap) await gap();
    const t0 = performance.now();
    job();
    spent += performance.now() - t0;
  }
  return (spent / REPEAT) * 1000;
}

const modes = {
  'back to back': null,
  [`idle gap (${GAP_MS} ms)`]: () => sleep(GAP_MS),
  [`busy gap, ${SMALL_MB} MB streamed`]: () => busy(SMALL_MB),
  [`busy gap, ${LARGE_MB} MB streamed`]: () => busy(LARGE_MB),
};
for (let i = 0; i < 200; i++) job(); // optimised before anything is measured
const results = Object.fromEntries(Object.keys(modes).map((k) => [k, []]));
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, gap] of Object.entries(modes)) results[name].push(await mode(gap));
}
for (const [name, us] of Object.entries(results)) {
  console.log(`${name.padEnd(28)} time per job: ${us.map((u) => u.toFixed(0)).join(', ')} us`);
}
await streamer.terminate();
if (sink === 0) console.log('');
