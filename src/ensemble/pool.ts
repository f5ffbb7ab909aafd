/**
 * A fixed pool of inference worker threads with a bounded FIFO queue.
 *
 * A job goes to an idle worker at once, or waits in the queue; past `maxQueue` waiting jobs,
 * `run` rejects immediately with 503 + Retry-After, so memory stays bounded under any load.
 * A worker that dies fails its job with 503 (never hangs) and is replaced.
 */
import { Worker } from 'node:worker_threads';
import { HttpError, overloaded } from '../errors.js';
import { NO_OBSERVER, type InferenceObserver } from './observer.js';
import type { Provider } from './runtime.js';
import type { RunJob, WorkerInit, WorkerMessage } from './worker.js';

const WORKER_URL = new URL('./worker.js', import.meta.url);

interface Job {
  readonly members: readonly number[];
  readonly data: Float32Array;
  readonly n: number;
  /** performance.now() when it entered the pool. */
  readonly enqueuedAt: number;
  resolve(logits: Float32Array[]): void;
  reject(err: Error): void;
}

interface Slot {
  worker: Worker;
  job: (Job & { id: number; startedAt: number }) | null;
}

export interface PoolInfo {
  readonly provider: Provider;
  readonly fallbackReason?: string;
  readonly maxGoldenError: number;
}

export interface PoolLogger {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closing = false;
  private readonly init: WorkerInit;
  private readonly size: number;
  private readonly maxQueue: number;
  private readonly log: PoolLogger;
  private readonly observer: InferenceObserver;

  constructor(init: WorkerInit, size: number, maxQueue: number, log: PoolLogger, observer: InferenceObserver = NO_OBSERVER) {
    this.init = init;
    this.size = size;
    this.maxQueue = maxQueue;
    this.log = log;
    this.observer = observer;
  }

  /** Start every worker; resolves once all are ready (sessions created, golden values checked). */
  async start(): Promise<PoolInfo> {
    const infos = await Promise.all(Array.from({ length: this.size }, () => this.spawn()));
    return infos[0];
  }

  get queued(): number {
    return this.queue.length;
  }

  get busy(): number {
    return this.slots.filter((s) => s.job !== null).length;
  }

  get workers(): number {
    return this.slots.length;
  }

  /** Run the listed members on n images (NCHW float32); resolves with one logits array per member. */
  run(members: readonly number[], data: Float32Array, n: number): Promise<Float32Array[]> {
    if (this.closing) return Promise.reject(new HttpError(503, 'shutting_down', 'the server is shutting down'));
    return new Promise((resolve, reject) => {
      const job: Job = { members, data, n, enqueuedAt: performance.now(), resolve, reject };
      const idle = this.slots.find((s) => s.job === null);
      if (idle) {
        this.dispatch(idle, job);
      } else if (this.queue.length >= this.maxQueue) {
        reject(overloaded(`inference queue is full (${this.maxQueue} jobs waiting); retry shortly`, 1));
      } else {
        this.queue.push(job);
      }
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const job of this.queue.splice(0)) job.reject(new HttpError(503, 'shutting_down', 'the server is shutting down'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
    this.slots.length = 0;
  }

  /** For tests: terminate one worker as if it had crashed. */
  async killOne(): Promise<void> {
    await this.slots[0]?.worker.terminate();
  }

  private dispatch(slot: Slot, job: Job): void {
    const id = this.nextId++;
    const startedAt = performance.now();
    this.observer.queueWait((startedAt - job.enqueuedAt) / 1000);
    slot.job = { ...job, id, startedAt };
    const message: RunJob = { type: 'run', id, members: job.members, data: job.data, n: job.n };
    slot.worker.postMessage(message);
  }

  private next(slot: Slot): void {
    slot.job = null;
    const job = this.queue.shift();
    if (job) this.dispatch(slot, job);
  }

  private spawn(): Promise<PoolInfo> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(WORKER_URL, { workerData: this.init });
      const slot: Slot = { worker, job: null };
      let ready = false;
      worker.on('message', (msg: WorkerMessage) => {
        if (msg.type === 'ready') {
          ready = true;
          this.slots.push(slot);
          resolve({ provider: msg.provider, fallbackReason: msg.fallbackReason, maxGoldenError: msg.maxGoldenError });
          this.next(slot);
        } else if (msg.type === 'failed') {
          void worker.terminate();
          reject(new Error(msg.message));
        } else if (slot.job && slot.job.id === msg.id) {
          const job = slot.job;
          if (msg.type === 'result') {
            const busySeconds = (performance.now() - job.startedAt) / 1000;
            for (const member of job.members) {
              this.observer.batchRun({ member, images: job.n, jobs: 1, computeSeconds: msg.computeSeconds / job.members.length, busySeconds: busySeconds / job.members.length });
            }
            job.resolve(msg.logits);
          } else {
            job.reject(new Error(msg.message));
          }
          this.next(slot);
        }
      });
      worker.on('error', (err) => {
        if (!ready) reject(err);
        else this.log.error({ err }, 'inference worker crashed');
      });
      worker.on('exit', (code) => {
        if (!ready) {
          reject(new Error(`inference worker exited during start-up (code ${code})`));
          return;
        }
        const index = this.slots.indexOf(slot);
        if (index >= 0) this.slots.splice(index, 1);
        slot.job?.reject(new HttpError(503, 'worker_failed', 'the inference worker handling this request failed; retry'));
        slot.job = null;
        if (this.closing) return;
        this.log.warn({ code }, 'inference worker exited; starting a replacement');
        this.observer.workerReplaced();
        this.spawn().catch((err: Error) => this.log.error({ err }, 'replacement worker failed to start'));
      });
    });
  }
}
