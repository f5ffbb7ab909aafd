/**
 * In-process onnxruntime for the sweep's raw rows (bench/sweep.ts): every member of an ensemble
 * package as a CPU session, run with no HTTP, JSON or queue in between, which is the machine's limit
 * that the servers are measured against.
 *
 *   raw batched            one session per member on `workers` intra-op threads, batches of
 *                          `concurrency` images, in this process's main thread
 *   raw batched, parallel  `workers` worker threads (bench/raw-worker.ts), each with its own sessions
 *                          on one intra-op thread, as redserve's workers run them
 */
import { Worker } from 'node:worker_threads';
import { readPackage } from '../src/ensemble/manifest.js';
import { createSession, sessionSpec, type MemberSession } from '../src/ensemble/runtime.js';
import { cpuDelta, sampleTree } from './cpu.js';
import { cpuFigures, type Measurement } from './load.js';
import type { RawWorkerData, RawWorkerResult, RawWorkerStart } from './raw-worker.js';
import { percentile } from './stats.js';

export interface RawMembers {
  readonly sessions: readonly MemberSession[];
  /** n copies of the package's first golden input, NCHW float32. */
  batch(n: number): Float32Array;
  release(): Promise<void>;
}

export async function openRawMembers(modelDir: string, threads: number): Promise<RawMembers> {
  const pkg = await readPackage(modelDir);
  if (pkg.manifest.kind !== 'ensemble') throw new Error('the raw rows need an ensemble package');
  const spec = sessionSpec(pkg.manifest);
  const sessions = (await Promise.all(pkg.members.map((m, i) => createSession(m, spec, { kind: 'cpu' }, threads, `member ${i}`))))
    .map((created) => created.session);
  const image = pkg.golden[0].input;
  return {
    sessions,
    batch(n: number) {
      const data = new Float32Array(n * image.length);
      for (let i = 0; i < n; i++) data.set(image, i * image.length);
      return data;
    },
    release: async () => { for (const s of sessions) s.release(); },
  };
}

/**
 * One session per member on `threads` intra-op threads, batches of c images, members in turn, for
 * warmup + duration. CPU: every thread of this process over the measured runs (the main thread runs
 * them; onnxruntime's pool threads help; nothing else runs meanwhile).
 */
export async function rawBatched(modelDir: string, threads: number, c: number, warmupS: number, durationS: number): Promise<Measurement> {
  const raw = await openRawMembers(modelDir, threads);
  const { sessions } = raw;
  const batch = raw.batch(c);
  const lat: number[] = [];
  let images = 0;
  const until = (ms: number) => performance.now() + ms;
  let member = 0;
  for (const end = until(warmupS * 1000); performance.now() < end;) sessions[member++ % sessions.length].run(batch, c);
  const before = sampleTree(process.pid);
  const t0 = performance.now();
  for (const end = until(durationS * 1000); performance.now() < end;) {
    const s = performance.now();
    sessions[member++ % sessions.length].run(batch, c);
    lat.push(performance.now() - s);
    images += c;
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuFigures(cpuDelta(before, sampleTree(process.pid)), images);
  await raw.release();
  lat.sort((a, b) => a - b);
  return { rps: images / seconds, p50: percentile(lat, 0.5), p90: percentile(lat, 0.9), p99: percentile(lat, 0.99), ok: images, rejected: 0, rejectedP99: null, cpu };
}

/** A worker's next message; rejects when it fails or exits first. */
function nextMessage<M>(worker: Worker): Promise<M> {
  return new Promise((resolve, reject) => {
    const done = () => { worker.off('message', onMessage); worker.off('error', onError); worker.off('exit', onExit); };
    const onMessage = (m: M) => { done(); resolve(m); };
    const onError = (err: Error) => { done(); reject(err); };
    const onExit = (code: number) => { done(); reject(new Error(`raw worker exited with code ${code} before answering`)); };
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}

/**
 * The machine's compute limit with no HTTP: `workers` threads side by side (as many as there are
 * images in flight, at most), each with its own sessions on one onnxruntime thread (how redserve's
 * workers run them), together keeping `c` images in flight in batches of ceil(c / threads). One
 * session on `workers` intra-op threads (rawBatched) can be far slower on a small model: on this
 * project's 2-core machine its pool stalls now and then (p90 several times its p50). CPU: each
 * thread's own time over its measured runs; the main thread only waits.
 */
export async function rawParallel(modelDir: string, workers: number, c: number, warmupS: number, durationS: number): Promise<Measurement> {
  const threads = Math.max(1, Math.min(workers, c));
  const batch = Math.ceil(c / threads);
  // Every thread creates its sessions first; the common start is set once all of them have.
  const pool = Array.from({ length: threads }, () => new Worker(new URL('./raw-worker.js', import.meta.url),
    { workerData: { modelDir, batch, durationS } satisfies RawWorkerData }));
  await Promise.all(pool.map((worker) => nextMessage<'ready'>(worker)));
  const startAt = performance.timeOrigin + performance.now() + Math.max(warmupS, 0.2) * 1000;
  const answers = Promise.all(pool.map((worker) => nextMessage<RawWorkerResult>(worker)));
  pool.forEach((worker) => worker.postMessage({ startAt } satisfies RawWorkerStart));
  const results = await answers;
  // Each thread measures from the end of its last warm-up run (up to one batch run past the common
  // start) to the end of its last run; the rates add up while the windows overlap. A thread that
  // started late (a long batch run, or no CPU at the start on a busy machine) overlaps less, and the
  // sum overstates the limit: warn past 10% of the window, refuse past half of it.
  const late = Math.max(...results.map((r) => r.startedAt)) - startAt;
  const lateText = `raw batched, parallel, concurrency ${c}: a thread started measuring ${late.toFixed(0)} ms late`;
  if (late > 500 * durationS) throw new Error(`${lateText}, over half the window; pass a longer --duration-s`);
  if (late > 100 * durationS) process.stderr.write(`warning: ${lateText}, over 10% of the window (the row overstates the limit a little)\n`);
  const lat = results.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const images = results.reduce((sum, r) => sum + r.images, 0);
  const rps = results.reduce((sum, r) => sum + r.images / ((r.endedAt - r.startedAt) / 1000), 0);
  const wallMs = Math.max(...results.map((r) => r.endedAt)) - Math.min(...results.map((r) => r.startedAt));
  const cpuNs = results.reduce((sum, r) => sum + r.cpuNs, 0);
  const cpu = cpuFigures({ wallMs, totalNs: cpuNs, mainThreadNs: 0, statNs: Number.NaN, byComm: { 'raw worker threads': cpuNs }, byProcess: { [process.pid]: cpuNs }, processes: 1 }, images);
  return { rps, p50: percentile(lat, 0.5), p90: percentile(lat, 0.9), p99: percentile(lat, 0.99), ok: images, rejected: 0, rejectedP99: null, cpu };
}
