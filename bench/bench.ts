/**
 * `npm run bench [-- --suite all|latency|sweep]`: two suites, both by default.
 *
 * sweep (bench/sweep.ts, `--duration-s --warmup-s --sweep-concurrency 1,4,16,64 --overload N
 * --overload-factor F --out reports`): throughput and p50/p90/p99 at each concurrency for raw batched onnxruntime,
 * redserve random with and without batching, redserve mean and a FastAPI/uvicorn peer, written to
 * reports/bench.md with a plot.
 *
 * latency (`--model DIR --requests N --concurrency C`): latency and throughput, measured side by
 * side in one run on this machine:
 *
 *   raw member   one member's onnxruntime session run in-process (batch 1), no HTTP
 *   bare route   a Fastify route that returns a constant, over HTTP on loopback
 *   random       POST /classify (one 28x28 PNG) with --sampling random: one member per request
 *   mean         POST /classify with --sampling mean: every member per request
 *   tensor       random, one image sent as a pre-processed JSON tensor (no decoding)
 *   batch64      the same two modes with 64 pre-processed images per request, sent as FP32 bytes
 *                over the Open Inference Protocol's binary extension (what Triton's clients send for
 *                throughput): no JSON to parse, so member runs, not transport, set the pace
 *
 * Prints p50/p99 latency of sequential requests, throughput at the given concurrency, and the
 * ratios the service is judged by. Timings are noisy on a shared machine: compare the ratios.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Fastify from 'fastify';
import { buildApp } from '../src/app.js';
import { testConfig, type Sampling } from '../src/config.js';
import { readPackage } from '../src/ensemble/manifest.js';
import { createSession } from '../src/ensemble/runtime.js';
import { runSweep } from './sweep.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'models/fmnist-red' },
    // A PS-RED package to compare with --model: load time and /classify random latency.
    psred: { type: 'string', default: 'models/fmnist-psred' },
    requests: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '16' },
    workers: { type: 'string', default: '2' },
    suite: { type: 'string', default: 'all' },
    'duration-s': { type: 'string', default: '5' },
    'warmup-s': { type: 'string', default: '1' },
    'sweep-concurrency': { type: 'string', default: '1,4,16,64' },
    overload: { type: 'string', default: '256' },
    'overload-max-queue': { type: 'string', default: '16' },
    'overload-factor': { type: 'string', default: '4' },
    out: { type: 'string', default: 'reports' },
  },
});
if (!['all', 'latency', 'sweep'].includes(values.suite!)) throw new Error(`--suite: '${values.suite}' is not one of all, latency, sweep`);
const modelDir = path.resolve(values.model!);
const N = Number(values.requests);
const C = Number(values.concurrency);
const WORKERS = Number(values.workers);

interface Figures { p50: number; p99: number; rps: number }

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Sequential latency over n calls (after a warm-up), then throughput at concurrency c. */
async function measure(call: () => Promise<void>, n: number, c: number): Promise<Figures> {
  for (let i = 0; i < Math.min(200, n); i++) await call();
  const lat: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await call();
    lat.push(performance.now() - t0);
  }
  lat.sort((a, b) => a - b);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, async () => {
    while (next++ < n) await call();
  }));
  const seconds = (performance.now() - t0) / 1000;
  return { p50: percentile(lat, 0.5), p99: percentile(lat, 0.99), rps: n / seconds };
}

async function post(url: string, body: Uint8Array, type: string, headers: Record<string, string> = {}): Promise<void> {
  const res = await fetch(url, { method: 'POST', body: body as unknown as BodyInit, headers: { 'content-type': type, ...headers } });
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status} ${await res.text()}`);
  await res.arrayBuffer();
}

/** An Open Inference Protocol request with its FP32 input and output as binary data. */
function v2BinaryBody(inputName: string, shape: number[], data: Float32Array): { body: Uint8Array; headerLength: number } {
  const header = Buffer.from(JSON.stringify({
    inputs: [{ name: inputName, shape, datatype: 'FP32', parameters: { binary_data_size: data.byteLength } }],
    outputs: [{ name: 'probabilities', parameters: { binary_data: true } }],
  }));
  return { body: Buffer.concat([header, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]), headerLength: header.length };
}

async function main(): Promise<void> {
  const pkg = await readPackage(modelDir);
  const { manifest } = pkg;
  const png = await readFile(path.join(modelDir, pkg.golden[0].file));
  const results: Record<string, Figures> = {};
  const [c, h, w] = manifest.input.shape;
  const tensor = Array.from({ length: c }, (_, ch) => Array.from({ length: h }, (_, y) =>
    pkg.golden[0].input.slice(ch * h * w + y * w, ch * h * w + (y + 1) * w)));
  const batch = new Float32Array(64 * c * h * w);
  for (let i = 0; i < 64; i++) batch.set(pkg.golden[0].input, i * c * h * w);
  const batchBody = v2BinaryBody(manifest.input.name, [64, c, h, w], batch);
  const oneTensorBody = new TextEncoder().encode(JSON.stringify({ tensors: [tensor] }));

  // 1. raw member: in-process onnxruntime, batch 1, the first member.
  const spec = { inputName: manifest.input.name, outputName: manifest.output.name, shape: manifest.input.shape, classes: manifest.output.classes };
  if (manifest.kind !== 'ensemble') throw new Error('the raw-member row needs an ensemble package');
  const { session } = await createSession(pkg.members[0], spec, { kind: 'cpu' }, 1, 'member 0');
  const x = Float32Array.from(pkg.golden[0].input);
  results['raw member'] = await measure(async () => { await session.run(x, 1); }, N, 1);
  await session.release();

  // 2. bare Fastify route over HTTP.
  const bare = Fastify({ logger: false });
  bare.post('/bare', async () => ({ ok: true }));
  bare.addContentTypeParser('image/png', { parseAs: 'buffer' }, (_r, b, done) => done(null, b));
  const bareUrl = await bare.listen({ port: 0, host: '127.0.0.1' });
  results['bare route'] = await measure(() => post(`${bareUrl}/bare`, png, 'image/png'), N, C);
  await bare.close();

  // 3-4. redserve /classify under random and mean sampling.
  const loadMs: Record<string, number> = {};
  for (const sampling of [{ mode: 'random' }, { mode: 'mean' }] as Sampling[]) {
    const loadStarted = performance.now();
    const app = buildApp(testConfig({ modelDir, sampling, workers: WORKERS, maxQueue: 100_000 }), { logger: false });
    await app.modelReady;
    loadMs[manifest.name] = performance.now() - loadStarted;
    const url = await app.server.listen({ port: 0, host: '127.0.0.1' });
    results[`classify ${sampling.mode}`] = await measure(() => post(`${url}/classify`, png, 'image/png'), N, C);
    if (sampling.mode === 'random') {
      // The same image already pre-processed (JSON tensor): the service's cost without decoding.
      results['tensor random'] = await measure(() => post(`${url}/classify`, oneTensorBody, 'application/json'), N, C);
    }
    // Compute-bound: 64 pre-processed images per request, so member runs outweigh HTTP and decoding.
    results[`batch64 ${sampling.mode}`] = await measure(() => post(`${url}/v2/models/${manifest.name}/infer`, batchBody.body,
      'application/octet-stream', { 'inference-header-content-length': String(batchBody.headerLength) }), Math.ceil(N / 16), C);
    await app.close();
  }

  // 5. the PS-RED package, when present: generation + materialisation time, and random latency.
  const psredDir = path.resolve(values.psred!);
  if (existsSync(psredDir)) {
    const psred = await readPackage(psredDir);
    const loadStarted = performance.now();
    const app = buildApp(testConfig({ modelDir: psredDir, workers: WORKERS, maxQueue: 100_000 }), { logger: false });
    await app.modelReady;
    loadMs[psred.manifest.name] = performance.now() - loadStarted;
    const url = await app.server.listen({ port: 0, host: '127.0.0.1' });
    const psredPng = await readFile(path.join(psredDir, psred.golden[0].file));
    results[`${psred.manifest.name} random`] = await measure(() => post(`${url}/classify`, psredPng, 'image/png'), N, C);
    await app.close();
  }

  const rows = Object.entries(results).map(([name, f]) =>
    `| ${name.padEnd(16)} | ${f.p50.toFixed(3).padStart(8)} | ${f.p99.toFixed(3).padStart(8)} | ${f.rps.toFixed(0).padStart(8)} | ${(f.rps * (name.startsWith('batch64') ? 64 : 1)).toFixed(0).padStart(8)} |`);
  const r = results;
  const latencyRatio = r['classify random'].p50 / (r['bare route'].p50 + r['raw member'].p50);
  const throughputRatio = r['classify random'].rps / r['classify mean'].rps;
  const batchRatio = r['batch64 random'].rps / r['batch64 mean'].rps;
  process.stdout.write([
    `model ${manifest.name} (${manifest.members.length} members), ${N} requests, concurrency ${C}, ${WORKERS} workers`,
    '',
    '| path             | p50 ms   | p99 ms   | req/s    | images/s |',
    '|------------------|----------|----------|----------|----------|',
    ...rows,
    '',
    `random p50 / (bare route p50 + raw member p50) = ${latencyRatio.toFixed(2)}  (target <= 1.2)`,
    `same, tensor input (no image decoding)         = ${(r['tensor random'].p50 / (r['bare route'].p50 + r['raw member'].p50)).toFixed(2)}`,
    `random throughput / mean throughput            = ${throughputRatio.toFixed(2)}  (target >= 3.5)`,
    `same, 64 images per v2 binary request          = ${batchRatio.toFixed(2)}`,
    ...Object.entries(loadMs).map(([name, ms]) => `load ${name} (read, generate, ${WORKERS} workers warm) = ${ms.toFixed(0)} ms`),
    ...Object.keys(results).filter((k) => k.endsWith(' random') && !['classify', 'batch64', 'tensor'].some((p) => k.startsWith(p))).map((k) =>
      `${k} p50 / classify random p50 = ${(results[k].p50 / results['classify random'].p50).toFixed(2)}  (target within 1.1)`),
    '',
  ].join('\n'));
}

if (values.suite !== 'sweep') await main();
if (values.suite !== 'latency') {
  await runSweep({
    modelDir,
    concurrency: values['sweep-concurrency']!.split(',').map(Number),
    durationS: Number(values['duration-s']),
    warmupS: Number(values['warmup-s']),
    workers: WORKERS,
    overloadConcurrency: Number(values.overload),
    overloadMaxQueue: Number(values['overload-max-queue']),
    overloadFactor: Number(values['overload-factor']),
    outDir: path.resolve(values.out!),
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
  });
}
