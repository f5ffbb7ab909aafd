/**
 * Lets a test make an inference worker die as a crash would, without a hook in the pool: importing
 * this module wraps node:worker_threads' Worker for the test process and records every thread
 * started with the worker data the pool gave it.
 */
import { createRequire, syncBuiltinESMExports } from 'node:module';
import type { Worker, WorkerOptions } from 'node:worker_threads';
import type { WorkerData } from '../../src/ensemble/worker.js';

interface Started {
  readonly data: WorkerData;
  exited: boolean;
}

const started: Started[] = [];
const threads = createRequire(import.meta.url)('node:worker_threads') as { Worker: typeof Worker };
const RealWorker = threads.Worker;
threads.Worker = class extends RealWorker {
  constructor(url: string | URL, options?: WorkerOptions) {
    super(url, options);
    const entry: Started = { data: options?.workerData as WorkerData, exited: false };
    started.push(entry);
    this.once('exit', () => { entry.exited = true; });
  }
};
// ES module imports of node:worker_threads (the pool's) see the wrapper from now on.
syncBuiltinESMExports();

/**
 * Make the newest live worker exit when its current run returns, without answering, through the
 * exit flag the pool shares with it: the way a worker that dies mid-job looks to the pool. (A
 * thread cannot be terminated inside onnxruntime's run without aborting the process.) Call it
 * while that worker is busy.
 */
export function crashBusyWorker(): void {
  const live = started.filter((s) => !s.exited && s.data?.exitFlag);
  const last = live[live.length - 1];
  if (!last) throw new Error('no live inference worker to crash');
  Atomics.store(last.data.exitFlag, 0, 1);
}
