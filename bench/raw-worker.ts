/**
 * One thread of the sweep's "raw batched, parallel" row (bench/sweep.ts): its own onnxruntime
 * session per member with one intra-op thread, as each redserve worker runs them, running batches
 * of `batch` images back to back (members in turn) from `startAt` for `durationS` seconds, after a
 * warm-up. Several of these side by side are what the machine can compute with no HTTP at all.
 * Protocol: the thread posts 'ready' once its sessions exist; the parent answers with the common
 * `startAt` (so that slow session creation on a busy machine never eats into the measured window);
 * the thread warms up until then and posts its RawWorkerResult at the end.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { threadCpuNs } from './cpu.js';
import { openRawMembers } from './raw.js';

export interface RawWorkerData {
  readonly modelDir: string;
  readonly batch: number;
  readonly durationS: number;
}

/** The parent's answer to 'ready': performance.timeOrigin + performance.now() at which every thread starts measuring. */
export interface RawWorkerStart { readonly startAt: number }

export interface RawWorkerResult {
  readonly images: number;
  /** When this thread's first and last measured runs started and ended (absolute ms). */
  readonly startedAt: number;
  readonly endedAt: number;
  /** Milliseconds of each measured batch run. */
  readonly latencies: number[];
  /** This thread's CPU time over its measured runs, ns (onnxruntime runs on it: one intra-op thread). */
  readonly cpuNs: number;
}

const { modelDir, batch, durationS } = workerData as RawWorkerData;
const raw = await openRawMembers(modelDir, 1);
const { sessions } = raw;
const data = raw.batch(batch);
const started = new Promise<RawWorkerStart>((resolve) => parentPort!.once('message', resolve));
parentPort!.postMessage('ready');
const { startAt } = await started;
const now = () => performance.timeOrigin + performance.now();
let member = 0;
const runOne = () => sessions[member++ % sessions.length].run(data, batch);
while (now() < startAt) runOne(); // warm-up until the common start
const latencies: number[] = [];
let images = 0;
const startedAt = now();
const cpu0 = threadCpuNs();
for (const end = startAt + durationS * 1000; now() < end;) {
  const t0 = performance.now();
  runOne();
  latencies.push(performance.now() - t0);
  images += batch;
}
const endedAt = now();
const cpuNs = threadCpuNs() - cpu0;
await raw.release();
parentPort!.postMessage({ images, latencies, startedAt, endedAt, cpuNs } satisfies RawWorkerResult);
