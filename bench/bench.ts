/**
 * `npm run bench [-- --suite all|latency|sweep]`: two suites, both by default. `npm run bench -- --quick`
 * is a smoke test instead: the sweep alone, every workload and server at one concurrency (16) for about
 * a second each, written to a temporary folder, never to reports/.
 *
 * sweep (bench/sweep.ts, `--workloads fmnist,resnet20,resnet18 --peers fastapi,mlserver --duration-s
 * --warmup-s --sweep-concurrency 1,4,16,64 --overload N --overload-factor F --out reports`): per
 * workload, throughput, p50/p90/p99 and CPU per image at each concurrency for raw onnxruntime, a bare
 * Fastify route, redserve random (batched, binary, unbatched), redserve mean, the FastAPI peer and
 * MLServer, written to reports/bench.md and bench.json with one plot per workload. Servers run side by
 * side and their points are interleaved; every point records the load average and any other busy
 * process over its window (bench/quiet.ts), and the sweep refuses to write reports/ when the machine
 * is not quiet at the start (load average above 1, or another process busy) unless --allow-load,
 * which marks the report NOT COMPARABLE at its top.
 *
 * latency (bench/latency.ts, `--model DIR --requests N --concurrency C --block B --workers W`):
 * sequential latency and throughput of /classify against a raw member run and a bare route.
 */
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runLatency } from './latency.js';
import { PEERS, runSweep, type Peer } from './sweep.js';
import { pickWorkloads, SetupError, WORKLOADS } from './workloads.js';
const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'models/fmnist-red' },
    // A PS-RED package to compare with --model: load time and /classify random latency.
    psred: { type: 'string', default: 'models/fmnist-psred' },
    requests: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '16' },
    // Consecutive sequential requests per row in each round of the second (warm) latency pass.
    block: { type: 'string', default: '20' },
    workers: { type: 'string', default: '2' },
    // No default: --quick refuses an explicit suite (it is the sweep's smoke test).
    suite: { type: 'string' },
    quick: { type: 'boolean', default: false },
    workloads: { type: 'string', default: WORKLOADS.map((w) => w.name).join(',') },
    peers: { type: 'string', default: PEERS.join(',') },
    'duration-s': { type: 'string' },
    'warmup-s': { type: 'string' },
    'sweep-concurrency': { type: 'string' },
    overload: { type: 'string', default: '256' },
    'overload-max-queue': { type: 'string', default: '16' },
    'overload-factor': { type: 'string', default: '4' },
    out: { type: 'string' },
    'allow-load': { type: 'boolean', default: false },
  },
});
/** A bad flag: one line naming it and the allowed values, exit 2 (no stack trace). */
function usageError(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}
if (values.quick && values.suite !== undefined) usageError('--quick runs the sweep\'s smoke test only; drop --suite');
const suite = values.quick ? 'sweep' : values.suite ?? 'all';
if (!['all', 'latency', 'sweep'].includes(suite)) usageError(`--suite: '${suite}' is not one of all, latency, sweep`);
const peers = values.peers === 'none' ? [] : values.peers!.split(',').map((p) => p.trim()) as Peer[];
for (const p of peers) if (!PEERS.includes(p)) usageError(`--peers: '${p}' is not one of ${PEERS.join(', ')}, none`);
let workloads: ReturnType<typeof pickWorkloads> = [];
try {
  workloads = pickWorkloads(values.workloads!);
} catch (err) {
  usageError((err as Error).message);
}
/** Sweep figures: the full sweep's, or the smoke test's (one concurrency, about a second a point). */
const sweepConcurrency = (values['sweep-concurrency'] ?? (values.quick ? '16' : '1,4,16,64')).split(',').map(Number);
if (sweepConcurrency.some((c) => !Number.isInteger(c) || c < 1)) usageError(`--sweep-concurrency: '${values['sweep-concurrency']}' is not a list of integers >= 1`);
const durationS = Number(values['duration-s'] ?? (values.quick ? '1' : '5'));
const warmupS = Number(values['warmup-s'] ?? (values.quick ? '0.5' : '1'));
if (!(durationS > 0) || !(warmupS >= 0)) usageError('--duration-s must be > 0 and --warmup-s >= 0');
const workers = Number(values.workers);
const block = Number(values.block);
if (!Number.isInteger(block) || block < 1) usageError(`--block: '${values.block}' is not an integer >= 1`);

if (suite !== 'sweep') {
  await runLatency({
    modelDir: path.resolve(values.model!), psredDir: path.resolve(values.psred!),
    requests: Number(values.requests), concurrency: Number(values.concurrency), block, workers,
  });
}
if (suite !== 'latency') {
  const outDir = values.out ? path.resolve(values.out) : values.quick ? await mkdtemp(path.join(os.tmpdir(), 'redserve-bench-quick-')) : path.resolve('reports');
  // A smoke test's figures (a second a point) must never replace the measured ones.
  if (values.quick && outDir === path.resolve('reports')) usageError('--quick never writes to reports/: pass another --out, or none (a temporary folder)');
  try {
    await runSweep({
      workloads,
      concurrency: sweepConcurrency,
      durationS,
      warmupS,
      workers,
      peers,
      overloadConcurrency: Number(values.overload),
      overloadMaxQueue: Number(values['overload-max-queue']),
      overloadFactor: Number(values['overload-factor']),
      outDir,
      allowLoad: values['allow-load'] || values.quick,
      command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    });
  } catch (err) {
    // A missing package, peer or environment: its message says what and how; the stack adds nothing.
    if (!(err instanceof SetupError)) throw err;
    process.stderr.write(`bench: ${err.message}\n`);
    process.exit(1);
  }
}
