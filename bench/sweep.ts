/**
 * The concurrency sweep (`npm run bench -- --suite sweep`): closed-loop load at each concurrency
 * (default 1, 4, 16, 64), each client sending one-image Open Inference Protocol (v2) JSON requests
 * back to back over keep-alive connections, against, in one run on this machine:
 *
 *   raw batched        onnxruntime in this process, batches of `concurrency` images, one session
 *                      per member on as many intra-op threads as the servers have workers
 *   raw batched, parallel  as many threads as the servers have workers, each with its own sessions
 *                      on one intra-op thread (as redserve's workers run them), `concurrency`
 *                      images in flight between them: the machine's limit, with no HTTP, JSON or
 *                      queue (on a small model a single session's thread pool stalls; see rawParallel)
 *   bare Fastify route a Fastify server that answers every request with a constant (bench/bare-server.ts):
 *                      the ceiling of any Fastify service here with this load generator
 *   redserve random    dist/src/server.js, random sampling, dynamic batching on (the defaults)
 *   redserve random, binary  the same server, the tensor sent as raw FP32 bytes (the v2 binary
 *                      tensor extension, Triton's client default) instead of a JSON number array
 *   redserve unbatched the same with --max-batch-images 1
 *   redserve mean      mean sampling (every member per image), batching on
 *   fastapi peer       the same ONNX members in Python onnxruntime behind FastAPI/uvicorn, one
 *                      drawn member per image, no batching (bench/peer/app.py, started by
 *                      bench/peer/serve.py: uvicorn --workers N with TCP_NODELAY restored)
 *
 * plus an overload point (far more clients than the queue bound) for redserve and the peer.
 * Every server runs as a child process with the same worker count; the load generator is this
 * process. Results go to reports/bench.md and reports/bench.json, and a plot to reports/bench.png.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { readPackage } from '../src/ensemble/manifest.js';
import { openRawMembers } from './raw.js';
import type { RawWorkerData, RawWorkerResult } from './raw-worker.js';

export interface SweepOptions {
  readonly modelDir: string;
  readonly concurrency: readonly number[];
  readonly durationS: number;
  readonly warmupS: number;
  readonly workers: number;
  readonly overloadConcurrency: number;
  readonly overloadMaxQueue: number;
  /** Open-loop overload: arrivals per second as a multiple of the target's throughput at concurrency 16. */
  readonly overloadFactor: number;
  readonly outDir: string;
  readonly command: string;
}

interface Point {
  target: string;
  concurrency: number;
  /** Open-loop points only: offered requests per second, images per request, the target's closed-loop
   * capacity with that body, arrivals the generator itself dropped, and how late it sent (p99, ms). */
  offeredRate?: number;
  imagesPerRequest?: number;
  capacity?: number;
  dropped?: number;
  generatorLagP99?: number;
  /** Successful requests (= images) per second. */
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  ok: number;
  /** Answers other than 200 (shed: 503). */
  rejected: number;
  rejectedP99: number | null;
}

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const PYTHON = path.join(ROOT, '.venv', 'bin', 'python');

const RAW_PARALLEL = 'raw batched, parallel';
const BARE = 'bare Fastify route';

/** Images per request in the open-loop overload test. */
const OPEN_LOOP_IMAGES = 16;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function percentile(sorted: readonly number[], q: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Install the peer's pinned packages into .venv when they are missing. */
function ensurePeer(): void {
  if (!existsSync(PYTHON)) throw new Error('.venv is missing: run scripts/setup.sh first (the peer needs its onnxruntime)');
  try {
    execFileSync(PYTHON, ['-c', 'import fastapi, uvicorn, onnxruntime, numpy'], { stdio: 'ignore' });
  } catch {
    process.stderr.write('installing bench/requirements.txt into .venv for the FastAPI peer\n');
    execFileSync(PYTHON, ['-m', 'pip', 'install', '-q', '-r', path.join(ROOT, 'bench', 'requirements.txt')], { stdio: 'inherit' });
  }
}

async function freePort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

export interface Started { child: ChildProcess; url: string; stop(): Promise<void> }

async function startProcess(cmd: string, args: string[], env: NodeJS.ProcessEnv, readyUrl: string, url: string): Promise<Started> {
  const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr = (stderr + c.toString()).slice(-4000); });
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited ${child.exitCode}: ${stderr}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${cmd} not ready after 120 s: ${stderr}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      http.get(readyUrl, (res) => { res.resume(); resolve(res.statusCode === 200); }).on('error', () => resolve(false));
    });
    if (ok) break;
    await sleep(100);
  }
  return {
    child, url,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(30_000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

export async function startRedserve(modelDir: string, workers: number, flags: string[]): Promise<Started> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  return startProcess(process.execPath, [path.join(ROOT, 'dist', 'src', 'server.js'), '--model', modelDir, '--port', String(port),
    '--host', '127.0.0.1', '--workers', String(workers), '--metrics-port', 'off', '--log-level', 'warn', ...flags], {},
  `${url}/readyz`, url);
}

export async function startBare(): Promise<Started> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  return startProcess(process.execPath, [path.join(ROOT, 'dist', 'bench', 'bare-server.js'), '--port', String(port), '--host', '127.0.0.1'],
    {}, `${url}/readyz`, url);
}

async function startPeer(modelDir: string, workers: number): Promise<Started> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // serve.py = `uvicorn --workers N` with TCP_NODELAY on accepted sockets (see its docstring).
  return startProcess(PYTHON, [path.join(ROOT, 'bench', 'peer', 'serve.py'), '--host', '127.0.0.1',
    '--port', String(port), '--workers', String(workers)],
  { REDSERVE_PEER_MODEL: modelDir }, `${url}/v2/health/ready`, url);
}

/** A request body and the headers that describe it. */
export interface RequestBody { readonly data: Buffer; readonly headers: Readonly<Record<string, string>> }

/** An Open Inference Protocol request as JSON (`data` inline). */
function v2Json(name: string, shape: readonly number[], data: readonly number[]): RequestBody {
  return {
    data: Buffer.from(JSON.stringify({ inputs: [{ name, shape, datatype: 'FP32', data }] })),
    headers: { 'content-type': 'application/json' },
  };
}

/** The same request with the tensor as raw FP32 bytes after the JSON header (the binary tensor
 * extension, which Triton's Python client uses by default), asking for the output the same way. */
export function v2Binary(name: string, shape: readonly number[], data: ArrayLike<number>): RequestBody {
  const bytes = Buffer.from(Float32Array.from(data).buffer);
  const header = Buffer.from(JSON.stringify({
    inputs: [{ name, shape, datatype: 'FP32', parameters: { binary_data_size: bytes.length } }],
    outputs: [{ name: 'probabilities', parameters: { binary_data: true } }],
  }));
  return {
    data: Buffer.concat([header, bytes]),
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) },
  };
}

/** Closed-loop load: `c` clients, each sending `body` back to back, for warmup + duration. */
async function load(url: string, body: RequestBody, c: number, warmupS: number, durationS: number): Promise<Omit<Point, 'target' | 'concurrency'>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: c });
  const target = new URL(url);
  const okLat: number[] = [];
  const badLat: number[] = [];
  let measuring = false;
  let running = true;
  const one = () => new Promise<void>((resolve) => {
    const t0 = performance.now();
    const req = http.request({
      host: target.hostname, port: target.port, path: target.pathname, method: 'POST', agent,
      headers: { ...body.headers, 'content-length': body.data.length },
    }, (res) => {
      res.resume();
      res.on('end', () => {
        if (measuring) (res.statusCode === 200 ? okLat : badLat).push(performance.now() - t0);
        resolve();
      });
    });
    req.on('error', () => { if (measuring) badLat.push(performance.now() - t0); resolve(); });
    req.end(body.data);
  });
  const clients = Array.from({ length: c }, async () => { while (running) await one(); });
  await sleep(warmupS * 1000);
  measuring = true;
  const t0 = performance.now();
  await sleep(durationS * 1000);
  measuring = false;
  const seconds = (performance.now() - t0) / 1000;
  running = false;
  await Promise.all(clients);
  agent.destroy();
  okLat.sort((a, b) => a - b);
  badLat.sort((a, b) => a - b);
  return {
    rps: okLat.length / seconds, p50: percentile(okLat, 0.5), p90: percentile(okLat, 0.9), p99: percentile(okLat, 0.99),
    ok: okLat.length, rejected: badLat.length, rejectedP99: badLat.length ? percentile(badLat, 0.99) : null,
  };
}

/**
 * Open-loop load: requests arrive at `rate` per second whatever happens to earlier ones (each
 * latency counts from its scheduled arrival, so a server that falls behind cannot hide it), for
 * warmup + duration. Arrivals past `maxOutstanding` unanswered requests are counted as rejected at
 * the client (the generator's own bound; memory stays finite either way). Throughput is the
 * window's answered requests over the time from the window's start to the last of those answers.
 */
async function loadOpen(url: string, body: RequestBody, rate: number, warmupS: number, durationS: number,
  maxOutstanding = 4096): Promise<Omit<Point, 'target' | 'concurrency'> & { arrivals: number; dropped: number; generatorLagP99: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  const target = new URL(url);
  const okLat: number[] = [];
  const badLat: number[] = [];
  let outstanding = 0;
  let dropped = 0;
  let arrivals = 0;
  let lastAnswer = 0;
  const measureFrom = performance.now() + warmupS * 1000;
  const end = measureFrom + durationS * 1000;
  const lag: number[] = [];
  const send = (scheduled: number) => {
    const counted = scheduled >= measureFrom && scheduled < end;
    if (counted) {
      arrivals++;
      lag.push(performance.now() - scheduled);
    }
    if (outstanding >= maxOutstanding) {
      if (counted) dropped++;
      return;
    }
    outstanding++;
    const done = (ok: boolean) => {
      outstanding--;
      if (counted) {
        (ok ? okLat : badLat).push(performance.now() - scheduled);
        if (ok) lastAnswer = performance.now();
      }
    };
    const req = http.request({
      host: target.hostname, port: target.port, path: target.pathname, method: 'POST', agent,
      headers: { ...body.headers, 'content-length': body.data.length },
    }, (res) => {
      res.resume();
      res.on('end', () => done(res.statusCode === 200));
    });
    req.on('error', () => done(false));
    req.end(body.data);
  };
  const start = performance.now();
  let sent = 0;
  while (performance.now() < end) {
    const due = Math.floor(((performance.now() - start) / 1000) * rate);
    for (; sent < due; sent++) send(start + (sent / rate) * 1000);
    await sleep(1);
  }
  while (outstanding > 0) await sleep(10);
  agent.destroy();
  okLat.sort((a, b) => a - b);
  badLat.sort((a, b) => a - b);
  lag.sort((a, b) => a - b);
  // Answered per second over the time it took to answer them: a server that queues everything
  // answers the window's arrivals long after the window, and must not be credited with their rate.
  const answeringS = Math.max(durationS, (lastAnswer - measureFrom) / 1000);
  return {
    rps: okLat.length / answeringS, p50: percentile(okLat, 0.5), p90: percentile(okLat, 0.9), p99: percentile(okLat, 0.99),
    ok: okLat.length, rejected: badLat.length, rejectedP99: badLat.length ? percentile(badLat, 0.99) : null, arrivals, dropped,
    generatorLagP99: percentile(lag, 0.99),
  };
}

/** In-process onnxruntime on batches of c images for warmup + duration: the compute limit. */
async function rawBatched(modelDir: string, threads: number, c: number, warmupS: number, durationS: number): Promise<Omit<Point, 'target' | 'concurrency'>> {
  const raw = await openRawMembers(modelDir, threads);
  const { sessions } = raw;
  const batch = raw.batch(c);
  const lat: number[] = [];
  let images = 0;
  const until = (ms: number) => performance.now() + ms;
  let member = 0;
  for (const end = until(warmupS * 1000); performance.now() < end;) sessions[member++ % sessions.length].run(batch, c);
  const t0 = performance.now();
  for (const end = until(durationS * 1000); performance.now() < end;) {
    const s = performance.now();
    sessions[member++ % sessions.length].run(batch, c);
    lat.push(performance.now() - s);
    images += c;
  }
  const seconds = (performance.now() - t0) / 1000;
  await raw.release();
  lat.sort((a, b) => a - b);
  return { rps: images / seconds, p50: percentile(lat, 0.5), p90: percentile(lat, 0.9), p99: percentile(lat, 0.99), ok: images, rejected: 0, rejectedP99: null };
}

/**
 * The machine's compute limit with no HTTP: `workers` threads side by side (as many as there are
 * images in flight, at most), each with its own sessions on one onnxruntime thread (how redserve's
 * workers run them), together keeping `c` images in flight in batches of ceil(c / threads). One
 * session on `workers` intra-op threads (rawBatched) can be far slower on a small model: on this
 * project's 2-core machine its pool stalls now and then (p90 several times its p50).
 */
async function rawParallel(modelDir: string, workers: number, c: number, warmupS: number, durationS: number): Promise<Omit<Point, 'target' | 'concurrency'>> {
  const threads = Math.max(1, Math.min(workers, c));
  const batch = Math.ceil(c / threads);
  const startAt = performance.timeOrigin + performance.now() + Math.max(warmupS, 1) * 1000;
  const results = await Promise.all(Array.from({ length: threads }, () => new Promise<RawWorkerResult>((resolve, reject) => {
    const worker = new Worker(new URL('./raw-worker.js', import.meta.url), { workerData: { modelDir, batch, startAt, durationS } satisfies RawWorkerData });
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => { if (code !== 0) reject(new Error(`raw worker exited with code ${code}`)); });
  })));
  // A thread that was still creating its sessions at the common start would measure a shorter
  // window and understate the limit: refuse rather than report it.
  const late = Math.max(...results.map((r) => r.startedAt)) - startAt;
  if (late > 50) throw new Error(`raw batched, parallel: a thread started measuring ${late.toFixed(0)} ms late; pass a longer --warmup-s`);
  const lat = results.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const images = results.reduce((sum, r) => sum + r.images, 0);
  const seconds = (Math.max(...results.map((r) => r.endedAt)) - startAt) / 1000;
  return { rps: images / seconds, p50: percentile(lat, 0.5), p90: percentile(lat, 0.9), p99: percentile(lat, 0.99), ok: images, rejected: 0, rejectedP99: null };
}

function machine(): string[] {
  const cpus = os.cpus();
  const training = (() => {
    try {
      return execFileSync('ps', ['-eo', 'pid,stat,pcpu,args'], { encoding: 'utf8' }).split('\n')
        .filter((l) => l.includes('redtrain') && !l.includes(' ps ')).map((l) => l.trim().replace(/\s+/g, ' ').slice(0, 140));
    } catch { return []; }
  })();
  return [
    `- machine: ${cpus.length} x ${cpus[0]?.model ?? 'unknown CPU'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    training.length
      ? `- other load during the run: ${training.length} redtrain process(es) (PyTorch training) were running:\n${training.map((l) => `    - \`${l}\``).join('\n')}`
      : '- other load during the run: no redtrain process was running',
  ];
}

const fmt = (x: number | null, digits = 1) => (x === null || Number.isNaN(x) ? '-' : x.toFixed(digits));

function markdown(points: Point[], options: SweepOptions, env: string[], envEnd: string[], targets: string[]): string {
  const at = (target: string, c: number) => points.find((p) => p.target === target && p.concurrency === c);
  const ratio = (a?: Point, b?: Point) => (a && b && b.rps > 0 ? (a.rps / b.rps).toFixed(2) : '-');
  const c16 = options.concurrency.includes(16) ? 16 : options.concurrency[Math.floor(options.concurrency.length / 2)];
  const lines = [
    '# Benchmark: concurrency sweep',
    '',
    `Produced by \`${options.command}\` (bench/sweep.ts). One-image Open Inference Protocol JSON requests`,
    `(FP32 [1, ${'C, H, W'}]; the "binary" row sends the same tensor as FP32 bytes, the v2 binary tensor extension)`,
    `against ${path.relative(ROOT, options.modelDir) || options.modelDir}; closed-loop clients on keep-alive`,
    `connections; ${options.warmupS} s warm-up then ${options.durationS} s measured per point; ${options.workers} workers`,
    '(redserve worker threads, uvicorn worker processes, onnxruntime intra-op threads for the raw row), one',
    'onnxruntime thread each. The load generator runs in the benchmark process on the same machine.',
    '',
    ...env,
    ...envEnd,
    '',
    'Throughput is answered images per second (one image per request); latencies are of answered',
    'requests, in milliseconds (for the raw row: one batch run, which every image of the batch waits for).',
    '',
    '| target | concurrency | images/s | p50 ms | p90 ms | p99 ms | rejected |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...targets.flatMap((target) => points.filter((p) => p.target === target).map((p) =>
      `| ${p.target} | ${p.concurrency} | ${p.rps.toFixed(0)} | ${fmt(p.p50, 2)} | ${fmt(p.p90, 2)} | ${fmt(p.p99, 2)} | ${p.rejected} |`)),
    '',
    `## Ratios at concurrency ${c16}`,
    '',
    '| ratio | value | target |',
    '|---|---:|---|',
    `| redserve random (batched) / raw batched, parallel (the machine's limit) | ${ratio(at('redserve random', c16), at(RAW_PARALLEL, c16))} | >= 0.70 |`,
    `| same, binary tensor requests | ${ratio(at('redserve random, binary', c16), at(RAW_PARALLEL, c16))} | >= 0.70 |`,
    `| bare Fastify route (answers a constant) / raw batched, parallel | ${ratio(at(BARE, c16), at(RAW_PARALLEL, c16))} | |`,
    `| redserve random (batched) / bare Fastify route | ${ratio(at('redserve random', c16), at(BARE, c16))} | |`,
    `| redserve random (batched) / raw batched, one session on ${options.workers} threads | ${ratio(at('redserve random', c16), at('raw batched', c16))} | |`,
    `| same, binary tensor requests | ${ratio(at('redserve random, binary', c16), at('raw batched', c16))} | |`,
    `| redserve random (batched) / fastapi peer | ${ratio(at('redserve random', c16), at('fastapi peer', c16))} | >= 2 |`,
    `| redserve random batched / unbatched | ${ratio(at('redserve random', c16), at('redserve unbatched', c16))} | |`,
    `| redserve random / redserve mean | ${ratio(at('redserve random', c16), at('redserve mean', c16))} | |`,
    '',
    '## Overload',
    '',
    `${options.overloadConcurrency} closed-loop clients that resend at once after a 503 (they ignore Retry-After). redserve runs`,
    `with --max-queue ${options.overloadMaxQueue}: past that many requests in flight it answers 503 + Retry-After before reading the`,
    'body. The peer has no bound and queues every request.',
    '',
    '| target | clients | answered images/s | p50 ms | p99 ms | rejected (503) | p99 of a rejection, ms |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...points.filter((p) => p.target.endsWith('(overload)')).map((p) =>
      `| ${p.target} | ${p.concurrency} | ${p.rps.toFixed(0)} | ${fmt(p.p50, 2)} | ${fmt(p.p99, 2)} | ${p.rejected} | ${fmt(p.rejectedP99, 2)} |`),
    '',
    'Closed-loop clients cannot show a latency bound: by Little\'s law their latency is clients / throughput',
    'whatever the server does. The open-loop rows below offer a fixed arrival rate and time each request',
    'from its scheduled arrival. Each target is first measured closed-loop (16 clients) with the same',
    `${OPEN_LOOP_IMAGES}-image requests, then offered ${options.overloadFactor}x that rate. A server that sheds keeps the`,
    'latency of what it answers bounded; one that queues everything falls further behind every second.',
    '"answered images/s" counts the answers to the window\'s arrivals over the time from the window\'s start',
    'to the last of them (a server that answers late is not credited with the offered rate).',
    '"generator lag" is how late this process sent its requests (p99); when it is large the row measures',
    'the load generator, not the server.',
    '',
    '| target | images/request | closed-loop req/s (16 clients) | offered req/s | answered images/s | p50 ms | p99 ms | rejected (503 or error) | p99 of a rejection, ms | generator lag p99, ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...points.filter((p) => p.target.endsWith('(open-loop overload)')).map((p) =>
      `| ${p.target} | ${p.imagesPerRequest ?? 1} | ${fmt(p.capacity ?? null, 0)} | ${fmt(p.offeredRate ?? null, 0)} | ${p.rps.toFixed(0)} | ${fmt(p.p50, 2)} | ${fmt(p.p99, 2)} | ${p.rejected} | ${fmt(p.rejectedP99, 2)} | ${fmt(p.generatorLagP99 ?? null, 1)} |`),
    '',
    '![throughput and p99 latency against concurrency](bench.png)',
    '',
  ];
  return lines.join('\n');
}

export async function runSweep(options: SweepOptions): Promise<void> {
  ensurePeer();
  const pkg = await readPackage(options.modelDir);
  const { manifest } = pkg;
  const body = v2Json(manifest.input.name, [1, ...manifest.input.shape], pkg.golden[0].input);
  const binaryBody = v2Binary(manifest.input.name, [1, ...manifest.input.shape], pkg.golden[0].input);
  const inferPath = `/v2/models/${manifest.name}/infer`;
  const envStart = machine().map((l) => l.replace('- machine:', '- machine at the start:').replace('- other load during the run:', '- other load at the start:'));
  const points: Point[] = [];
  const log = (p: Point) => {
    points.push(p);
    process.stdout.write(`${p.target.padEnd(28)} c=${String(p.concurrency).padStart(3)}  ${p.rps.toFixed(0).padStart(6)} img/s  `
      + `p50 ${fmt(p.p50, 2).padStart(7)}  p90 ${fmt(p.p90, 2).padStart(7)}  p99 ${fmt(p.p99, 2).padStart(7)} ms  rejected ${p.rejected}\n`);
  };

  for (const c of options.concurrency) {
    log({ target: 'raw batched', concurrency: c, ...await rawBatched(options.modelDir, options.workers, c, options.warmupS, options.durationS) });
  }
  for (const c of options.concurrency) {
    log({ target: RAW_PARALLEL, concurrency: c, ...await rawParallel(options.modelDir, options.workers, c, options.warmupS, options.durationS) });
  }
  const servers: [string, () => Promise<Started>, RequestBody][] = [
    [BARE, () => startBare(), body],
    ['redserve random', () => startRedserve(options.modelDir, options.workers, []), body],
    ['redserve random, binary', () => startRedserve(options.modelDir, options.workers, []), binaryBody],
    ['redserve unbatched', () => startRedserve(options.modelDir, options.workers, ['--max-batch-images', '1']), body],
    ['redserve mean', () => startRedserve(options.modelDir, options.workers, ['--sampling', 'mean']), body],
    ['fastapi peer', () => startPeer(options.modelDir, options.workers), body],
  ];
  for (const [target, start, targetBody] of servers) {
    const server = await start();
    try {
      for (const c of options.concurrency) {
        log({ target, concurrency: c, ...await load(`${server.url}${inferPath}`, targetBody, c, options.warmupS, options.durationS) });
      }
    } finally {
      await server.stop();
    }
  }
  const overload: [string, () => Promise<Started>][] = [
    ['redserve random (overload)', () => startRedserve(options.modelDir, options.workers, ['--max-queue', String(options.overloadMaxQueue)])],
    ['fastapi peer (overload)', () => startPeer(options.modelDir, options.workers)],
  ];
  for (const [target, start] of overload) {
    const server = await start();
    try {
      log({ target, concurrency: options.overloadConcurrency,
        ...await load(`${server.url}${inferPath}`, body, options.overloadConcurrency, options.warmupS, options.durationS) });
    } finally {
      await server.stop();
    }
  }

  // Open loop at a multiple of each target's own capacity. Requests carry OPEN_LOOP_IMAGES images so
  // that the offered rate stays within what this one load-generating process can send on time.
  const heavy = v2Json(manifest.input.name, [OPEN_LOOP_IMAGES, ...manifest.input.shape],
    Array.from({ length: OPEN_LOOP_IMAGES }, () => pkg.golden[0].input).flat());
  const openLoop: [string, () => Promise<Started>][] = [
    ['redserve random (open-loop overload)', () => startRedserve(options.modelDir, options.workers, ['--max-queue', String(options.overloadMaxQueue)])],
    ['fastapi peer (open-loop overload)', () => startPeer(options.modelDir, options.workers)],
  ];
  for (const [target, start] of openLoop) {
    const server = await start();
    try {
      const url = `${server.url}${inferPath}`;
      const capacity = (await load(url, heavy, 16, options.warmupS, options.durationS)).rps;
      const rate = Math.max(1, Math.round(capacity * options.overloadFactor));
      const point = await loadOpen(url, heavy, rate, options.warmupS, options.durationS);
      log({ target, concurrency: 0, offeredRate: rate, imagesPerRequest: OPEN_LOOP_IMAGES, capacity, ...point,
        rps: point.rps * OPEN_LOOP_IMAGES });
    } finally {
      await server.stop();
    }
  }

  const envEnd = machine().filter((l) => l.startsWith('- machine')).map((l) => l.replace(/^- machine: .*load average/, '- load average at the end:'));
  await mkdir(options.outDir, { recursive: true });
  const targets = ['raw batched', RAW_PARALLEL, ...servers.map(([t]) => t)];
  await writeFile(path.join(options.outDir, 'bench.json'), `${JSON.stringify({ command: options.command, points }, null, 1)}\n`);
  await writeFile(path.join(options.outDir, 'bench.md'), markdown(points, options, envStart, envEnd, targets));
  try {
    execFileSync(PYTHON, [path.join(ROOT, 'bench', 'plot.py'), path.join(options.outDir, 'bench.json'), path.join(options.outDir, 'bench.png')], { stdio: 'inherit' });
  } catch (err) {
    process.stderr.write(`plot not written: ${(err as Error).message}\n`);
  }
  process.stdout.write(`wrote ${path.join(options.outDir, 'bench.md')}\n`);
}
