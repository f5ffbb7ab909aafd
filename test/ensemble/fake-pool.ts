/** A WorkerPool over the scripted worker (fake-worker.ts), and helpers to drive it. */
import type { InferenceObserver } from '../../src/ensemble/observer.js';
import { WorkerPool, type PoolOptions } from '../../src/ensemble/pool.js';
import type { WorkerInit } from '../../src/ensemble/worker.js';

export const SIZE = 4; // floats per image: shape [1, 2, 2]
export const CLASSES = 4;
export const MEMBERS = 3;
const init: WorkerInit = {
  members: Array.from({ length: MEMBERS }, () => ({ model: new Uint8Array(0) })),
  spec: { inputName: 'input', outputName: 'logits', shape: [1, 2, 2], classes: CLASSES },
  device: { kind: 'cpu' }, threads: 1, golden: { inputs: [], logits: [] }, atol: 0,
};
const quiet = { warn() {}, error() {} };

export interface Recorded {
  batches: { member: number; images: number; jobs: number }[];
  replaced: number;
  waits: number[];
}

export function recorder(): { observer: InferenceObserver; seen: Recorded } {
  const seen: Recorded = { batches: [], replaced: 0, waits: [] };
  return {
    seen,
    observer: {
      drawn() {},
      queueWait: (s) => seen.waits.push(s),
      batchRun: (r) => seen.batches.push({ member: r.member, images: r.images, jobs: r.jobs }),
      workerReplaced: () => { seen.replaced++; },
    },
  };
}

export async function fakePool(options: Partial<PoolOptions>, observer?: InferenceObserver): Promise<WorkerPool> {
  const pool = new WorkerPool(init, {
    size: 1, maxQueue: 100, jobTimeoutMs: 0, maxBatchImages: 1, queueDelayUs: 0, maxJobImages: 64,
    workerUrl: new URL('./fake-worker.js', import.meta.url), ...options,
  }, quiet, observer);
  await pool.start();
  return pool;
}

/** Run `member` on one job of n images; resolves with its logits (the pool's API takes a request's jobs together). */
export function runOne(pool: WorkerPool, member: number, data: Float32Array, n: number): Promise<Float32Array> {
  return pool.runAll([{ member, data, n }]).then(([logits]) => logits);
}

/** n images whose first element is `command` and second a tag. */
export function images(n: number, tag: number, command = 0): Float32Array {
  const data = new Float32Array(n * SIZE);
  for (let i = 0; i < n; i++) data[i * SIZE + 1] = tag + i;
  data[0] = command;
  return data;
}
