/**
 * The latency suite of `npm run bench` (`--suite latency`; bench/bench.ts is its command line):
 * latency and throughput, measured side by side in one run on this machine:
 *
 *   raw member   one member's onnxruntime session run in-process (batch 1), no HTTP; its latency is
 *                taken interleaved with the other rows (as the service runs members) and also
 *                alone, back to back (warm caches, the best case); both ratios are printed
 *   bare route   a Fastify route that returns a constant (bench/bare-server.ts), over HTTP on loopback
 *   random       POST /classify (one 28x28 PNG) with --sampling random: one member per request
 *   mean         POST /classify with --sampling mean: every member per request
 *   tensor       random, one image sent as a pre-processed JSON tensor (no decoding)
 *   batch64      the same two modes with 64 pre-processed images per request, sent as FP32 bytes
 *                over the Open Inference Protocol's binary extension (what Triton's clients send for
 *                throughput): no JSON to parse, so member runs, not transport, set the pace
 *
 * Every server (bare route, redserve random, mean, PS-RED) runs as a child process with this process
 * as its only client (node:http, keep-alive), as in a deployment: a client in the server's own event
 * loop would charge its work to the server. Load times are measured in process, one package at a time.
 *
 * Prints p50/p99 latency of sequential requests, throughput at the given concurrency, and the
 * ratios the service is judged by. Sequential requests are interleaved in shuffled rounds, so drifts
 * in the machine's speed hit every row alike: once one request per row per round (every server sits
 * idle between its requests) and once in blocks of `--block` consecutive requests per row (a client
 * sending one request after another). Throughput is one row at a time.
 * Timings are noisy on a shared machine: compare the ratios.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { buildApp } from '../src/app.js';
import { embeddedConfig } from '../src/config.js';
import { readPackage } from '../src/ensemble/manifest.js';
import { createSession, sessionSpec } from '../src/ensemble/runtime.js';
import { v2Binary } from './load.js';
import { startBare, startRedserve, type Started } from './servers.js';
import { percentile } from './stats.js';

interface Figures { p50: number; p99: number; warmP50: number; rps: number }

/**
 * Sequential latency of every row, interleaved: each round makes `block` consecutive calls per row,
 * rows in a shuffled order (after warm-up rounds), so that the machine's speed, which drifts on a
 * shared host, weighs on every row alike and the ratios compare like with like. Consecutive calls
 * are what a server sees from a client sending one request after another; one call per row per
 * round left every server idle while the others were timed, and how cold its threads were then
 * depended on how many other rows there were. Returns p50 and p99 per row, in ms.
 */
async function interleavedLatency(calls: Record<string, () => Promise<void>>, n: number, block: number): Promise<Record<string, { p50: number; p99: number }>> {
  const lat: Record<string, number[]> = Object.fromEntries(Object.keys(calls).map((k) => [k, []]));
  const rounds = Math.ceil(n / block);
  const warmupRounds = Math.min(Math.ceil(200 / block), rounds);
  const rows = Object.entries(calls);
  for (let i = 0; i < warmupRounds + rounds; i++) {
    // A fresh order each round: a row that always followed the same one would inherit its cache state.
    for (let j = rows.length - 1; j > 0; j--) {
      const k = Math.floor(Math.random() * (j + 1)); // a benchmark's shuffle, not a security decision
      [rows[j], rows[k]] = [rows[k], rows[j]];
    }
    for (const [name, call] of rows) {
      for (let b = 0; b < block; b++) {
        const t0 = performance.now();
        await call();
        if (i >= warmupRounds) lat[name].push(performance.now() - t0);
      }
    }
  }
  return Object.fromEntries(Object.entries(lat).map(([name, a]) => {
    a.sort((x, y) => x - y);
    return [name, { p50: percentile(a, 0.5), p99: percentile(a, 0.99) }];
  }));
}

/** Throughput of n calls from c concurrent callers, per second. */
async function throughput(call: () => Promise<void>, n: number, c: number): Promise<number> {
  for (let i = 0; i < Math.min(200, n); i++) await call();
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, async () => {
    while (next++ < n) await call();
  }));
  return n / ((performance.now() - t0) / 1000);
}

/** POST `body` over a keep-alive connection of `agent`; throws unless the answer is 200. */
function post(agent: http.Agent, url: string, body: Uint8Array, headers: Record<string, string>): Promise<void> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: target.hostname, port: target.port, path: target.pathname + target.search, method: 'POST', agent,
      headers: { ...headers, 'content-length': body.length },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve()
        : reject(new Error(`${url}: HTTP ${res.statusCode} ${Buffer.concat(chunks).toString('utf8').slice(0, 300)}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Time from start to ready (/readyz 200) of a package, in process, and close it again. */
async function loadTimeMs(dir: string, workers: number): Promise<number> {
  const started = performance.now();
  const app = buildApp(embeddedConfig({ modelDir: dir, workers, metricsPort: null }), { logger: false });
  await app.modelReady;
  const ms = performance.now() - started;
  await app.close();
  return ms;
}

export interface LatencyOptions {
  readonly modelDir: string;
  /** A PS-RED package compared with modelDir (load time, /classify random latency); skipped when absent. */
  readonly psredDir: string;
  /** Requests per row. */
  readonly requests: number;
  /** Concurrent callers of the throughput rows. */
  readonly concurrency: number;
  /** Consecutive sequential requests per row in each round of the warm latency pass. */
  readonly block: number;
  readonly workers: number;
}

/** Run the latency suite and print its table and ratios. */
export async function runLatency(o: LatencyOptions): Promise<void> {
  const { modelDir, requests: N, concurrency: C, workers: WORKERS, block: BLOCK } = o;
  /** The 64-image rows' block: 1/16 as many requests as the others, in blocks 1/16 as long. */
  const BLOCK64 = Math.max(1, Math.ceil(BLOCK / 16));
  const pkg = await readPackage(modelDir);
  const { manifest } = pkg;
  const png = await readFile(path.join(modelDir, pkg.golden[0].file));
  const results: Record<string, Figures> = {};
  const [c, h, w] = manifest.input.shape;
  const tensor = Array.from({ length: c }, (_, ch) => Array.from({ length: h }, (_, y) =>
    pkg.golden[0].input.slice(ch * h * w + y * w, ch * h * w + (y + 1) * w)));
  const batch = new Float32Array(64 * c * h * w);
  for (let i = 0; i < 64; i++) batch.set(pkg.golden[0].input, i * c * h * w);
  const batchBody = v2Binary(manifest.input.name, [64, c, h, w], batch);
  const oneTensorBody = new TextEncoder().encode(JSON.stringify({ tensors: [tensor] }));

  // Load times first, each package alone in this process.
  const { psredDir } = o;
  const psred = existsSync(psredDir) ? await readPackage(psredDir) : null;
  const loadMs: Record<string, number> = { [manifest.name]: await loadTimeMs(modelDir, WORKERS) };
  if (psred) loadMs[psred.manifest.name] = await loadTimeMs(psredDir, WORKERS);

  // Every row's target is started first, so that the latency rounds can interleave them.
  // raw member: in-process onnxruntime, batch 1, the first member.
  if (manifest.kind !== 'ensemble') throw new Error('the raw-member row needs an ensemble package');
  const { session } = await createSession(pkg.members[0], sessionSpec(manifest), { kind: 'cpu' }, 1, 'member 0');
  const x = Float32Array.from(pkg.golden[0].input);
  // The servers run as child processes, as in a deployment: this process is only their client
  // (node:http on keep-alive connections), so its work does not share their event loops.
  const servers: Started[] = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: Math.max(C, 1) * 8 });
  try {
    const start = async (started: Promise<Started>) => { const s = await started; servers.push(s); return s.url; };
    const flags = ['--max-queue', '100000'];
    const bareUrl = await start(startBare());
    const randomUrl = await start(startRedserve(modelDir, WORKERS, flags));
    // Its own server: a server that also answered another row would get two requests a round and
    // stay warmer than the PS-RED server it is compared with (a plain package in that slot read 1.19).
    const tensorUrl = await start(startRedserve(modelDir, WORKERS, flags));
    const meanUrl = await start(startRedserve(modelDir, WORKERS, [...flags, '--sampling', 'mean']));
    const psredUrl = psred ? await start(startRedserve(psredDir, WORKERS, flags)) : null;
    const psredPng = psred ? await readFile(path.join(psredDir, psred.golden[0].file)) : null;

    const pngType = { 'content-type': 'image/png' };
    const batchCall = (url: string) => () => post(agent, `${url}/v2/models/${manifest.name}/infer`, batchBody.data, batchBody.headers);
    const rawCall = async () => { session.run(x, 1); };
    const calls: Record<string, { call: () => Promise<void>; requests: number; concurrency: number }> = {
      'raw member': { call: rawCall, requests: N, concurrency: 1 },
      'bare route': { call: () => post(agent, `${bareUrl}/bare`, png, pngType), requests: N, concurrency: C },
      'classify random': { call: () => post(agent, `${randomUrl}/classify`, png, pngType), requests: N, concurrency: C },
      // The same image already pre-processed (JSON tensor): the service's cost without decoding.
      'tensor random': { call: () => post(agent, `${tensorUrl}/classify`, oneTensorBody, { 'content-type': 'application/json' }), requests: N, concurrency: C },
      // Compute-bound: 64 pre-processed images per request, so member runs outweigh HTTP and decoding.
      'batch64 random': { call: batchCall(randomUrl), requests: Math.ceil(N / 4), concurrency: C },
      'classify mean': { call: () => post(agent, `${meanUrl}/classify`, png, pngType), requests: N, concurrency: C },
      'batch64 mean': { call: batchCall(meanUrl), requests: Math.ceil(N / 4), concurrency: C },
    };
    if (psred) calls[`${psred.manifest.name} random`] = { call: () => post(agent, `${psredUrl}/classify`, psredPng!, pngType), requests: N, concurrency: C };

    // The member run alone, back to back (warm caches: the best case, which the service never sees).
    const alone = await interleavedLatency({ raw: rawCall }, N, N);
    // Sequential latency, interleaved, twice: one request per row per round (each server idle, its
    // threads cold, between its requests: a sporadic client) and in blocks of BLOCK (a client
    // sending one request after another). The 64-image rows take fewer rounds of their own.
    const one = Object.fromEntries(Object.entries(calls).filter(([name]) => !name.startsWith('batch64')).map(([name, r]) => [name, r.call]));
    const sixtyFour = Object.fromEntries(Object.entries(calls).filter(([name]) => name.startsWith('batch64')).map(([name, r]) => [name, r.call]));
    const cold = { ...await interleavedLatency(one, N, 1), ...await interleavedLatency(sixtyFour, Math.ceil(N / 16), 1) };
    const warm = { ...await interleavedLatency(one, N, BLOCK), ...await interleavedLatency(sixtyFour, Math.ceil(N / 16), BLOCK64) };
    // Throughput at concurrency C cannot interleave: one row at a time.
    for (const [name, r] of Object.entries(calls)) {
      results[name] = { ...cold[name], warmP50: warm[name].p50, rps: await throughput(r.call, r.requests, r.concurrency) };
    }
    report(results, alone.raw.p50, loadMs, { name: manifest.name, members: manifest.members.length, ...o });
  } finally {
    agent.destroy();
    session.release();
    for (const s of servers) await s.stop();
  }
}

function report(results: Record<string, Figures>, aloneP50: number, loadMs: Record<string, number>,
  run: LatencyOptions & { name: string; members: number }): void {
  const { name, members, requests: N, concurrency: C, workers: WORKERS, block: BLOCK } = run;
  const BLOCK64 = Math.max(1, Math.ceil(BLOCK / 16));
  const rows = Object.entries(results).map(([row, f]) =>
    `| ${row.padEnd(16)} | ${f.p50.toFixed(3).padStart(8)} | ${f.p99.toFixed(3).padStart(8)} | ${f.warmP50.toFixed(3).padStart(8)} | ${f.rps.toFixed(0).padStart(8)} | ${(f.rps * (row.startsWith('batch64') ? 64 : 1)).toFixed(0).padStart(8)} |`);
  const r = results;
  const latencyRatio = r['classify random'].p50 / (r['bare route'].p50 + r['raw member'].p50);
  const warmRatio = r['classify random'].warmP50 / (r['bare route'].warmP50 + r['raw member'].warmP50);
  const aloneRatio = r['classify random'].p50 / (r['bare route'].p50 + aloneP50);
  const throughputRatio = r['classify random'].rps / r['classify mean'].rps;
  const batchRatio = r['batch64 random'].rps / r['batch64 mean'].rps;
  process.stdout.write([
    `model ${name} (${members} members), ${N} requests, concurrency ${C}, ${WORKERS} workers; servers in child processes; `
      + `warm blocks of ${BLOCK} consecutive requests (${BLOCK64} for the 64-image rows)`,
    '',
    `| path             | p50 ms   | p99 ms   | p50 ms, blocks of ${BLOCK} | req/s    | images/s |`,
    '|------------------|----------|----------|----------|----------|----------|',
    ...rows,
    '',
    `random p50 / (bare route p50 + raw member p50) = ${latencyRatio.toFixed(2)}  (target <= 1.2)`,
    `same, raw member measured alone (p50 ${aloneP50.toFixed(3)} ms) = ${aloneRatio.toFixed(2)}`,
    `same, every row in blocks of ${BLOCK} consecutive requests = ${warmRatio.toFixed(2)}`,
    `same, tensor input (no image decoding)         = ${(r['tensor random'].p50 / (r['bare route'].p50 + r['raw member'].p50)).toFixed(2)}`,
    `random throughput / mean throughput            = ${throughputRatio.toFixed(2)}  (target >= 3.5)`,
    `same, 64 images per v2 binary request          = ${batchRatio.toFixed(2)}`,
    `bare route throughput / random throughput      = ${(r['bare route'].rps / r['classify random'].rps).toFixed(2)}  (one-image requests: HTTP's share)`,
    ...Object.entries(loadMs).map(([pkgName, ms]) => `load ${pkgName} (read, generate, ${WORKERS} workers warm) = ${ms.toFixed(0)} ms`),
    ...Object.keys(results).filter((k) => k.endsWith(' random') && !['classify', 'batch64', 'tensor'].some((p) => k.startsWith(p))).map((k) =>
      `${k} p50 / classify random p50 = ${(results[k].p50 / results['classify random'].p50).toFixed(2)}  (target within 1.1)`),
    '',
  ].join('\n'));
}
