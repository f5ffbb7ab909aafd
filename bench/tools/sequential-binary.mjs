// One client sending sequential one-image v2 binary-tensor requests (3x32x32) for SECONDS, through
// the sweep's own closed-loop generator (bench/load.ts); prints {"n": requests, "bad": non-200
// answers}. Used by bench/tools/tier-up.sh.
//   npm run build && node bench/tools/sequential-binary.mjs PORT SECONDS MODEL
import { closedLoop, v2Binary } from '../../dist/bench/load.js';

const [port, seconds, model] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4]];
const body = v2Binary('input', [1, 3, 32, 32], Array.from({ length: 3072 }, (_, i) => (i % 9) / 9));
const m = await closedLoop(`http://127.0.0.1:${port}/v2/models/${model}/infer`, body, { c: 1, warmupS: 0, durationS: seconds });
console.log(JSON.stringify({ n: m.ok + m.rejected, bad: m.rejected }));
