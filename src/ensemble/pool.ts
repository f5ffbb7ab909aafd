/**
 * A fixed pool of inference worker threads with a bounded queue, per-job deadlines and dynamic
 * batching.
 *
 * A job is one member run on n images. Waiting jobs are queued per member. When a worker is free it
 * takes the member whose oldest job is oldest and runs that member's waiting jobs as one batch of
 * at most `maxBatchImages` images (a larger job runs alone). With `queueDelayUs` > 0, a batch that
 * is not full and would take the last idle worker waits until its oldest job has waited that long,
 * so that concurrent requests that drew the same member can join it; a full batch goes at once.
 * Under load, jobs queue behind busy workers and batches form without any delay. Which member a
 * job runs is decided by its caller (each request's own draw); batching only groups jobs that
 * already drew the same member.
 *
 * Past `maxQueue` waiting jobs, a request is refused at once as `overloaded` (all its jobs or none
 * are queued), so memory stays bounded under any load. A job not finished `jobTimeoutMs` after it
 * arrived fails as `timeout` (and leaves the queue). A worker that dies fails its jobs as
 * `worker_failed`, never leaving them hanging, and is replaced. All three are UnavailableErrors
 * (the HTTP edge answers 503 with Retry-After).
 */
import { Worker } from 'node:worker_threads';
import { overloaded, UnavailableError } from '../errors.js';
import { PoolChannel, type ChannelShape, type JobOutcome } from './channel.js';
import { NO_OBSERVER, type InferenceObserver } from './observer.js';
import type { Provider } from './runtime.js';
import type { WorkerData, WorkerInit, WorkerMessage } from './worker.js';

const WORKER_URL = new URL('./worker.js', import.meta.url);

export interface PoolOptions {
  /** Worker threads. */
  readonly size: number;
  /** Jobs waiting (all members together) before new ones are refused as overloaded. */
  readonly maxQueue: number;
  /** A job not finished this long after it arrived fails as timeout; 0: no deadline. */
  readonly jobTimeoutMs: number;
  /** Images in one batched member run; 1 turns batching off. */
  readonly maxBatchImages: number;
  /** How long a batch that is not full may wait for more jobs of its member, in microseconds. */
  readonly queueDelayUs: number;
  /** The most images one job may carry (a request's images); default maxBatchImages. Sizes each
   * worker's shared-memory channel; a larger job is refused. */
  readonly maxJobImages?: number;
  /** The worker script (tests use a scripted one). */
  readonly workerUrl?: URL;
}

/** One member run that a request needs. */
export interface RunPart {
  readonly member: number;
  /** NCHW float32, n images */
  readonly data: Float32Array;
  readonly n: number;
}

/** When one request's member jobs ran (performance.now() ms): queued, first started, last answered. */
export interface RunTiming {
  enqueuedAt: number;
  startedAt: number;
  finishedAt: number;
}

interface Job {
  readonly member: number;
  readonly data: Float32Array;
  readonly n: number;
  /** performance.now() when it entered the pool, when a worker started it, when it was answered. */
  readonly enqueuedAt: number;
  startedAt: number;
  finishedAt: number;
  state: 'queued' | 'running' | 'done';
  timer: NodeJS.Timeout | null;
  resolve(logits: Float32Array): void;
  reject(err: Error): void;
}

interface Batch {
  readonly id: number;
  readonly member: number;
  readonly jobs: readonly Job[];
  readonly n: number;
  readonly startedAt: number;
}

interface Slot {
  readonly worker: Worker;
  readonly channel: PoolChannel;
  /** Set to 1 to make the worker exit after its current run, without answering (close()). */
  readonly exitFlag: Int32Array;
  batch: Batch | null;
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

const shuttingDown = () => new UnavailableError('shutting_down', 'the server is shutting down; retry on another instance');
const workerFailed = () => new UnavailableError('worker_failed', 'the inference worker handling this request failed; retry');
const timedOut = (ms: number) => new UnavailableError('timeout', `inference did not finish within ${ms} ms; retry shortly`);

export class WorkerPool {
  private readonly slots: Slot[] = [];
  /** Waiting jobs, one FIFO per member. */
  private readonly queues: Job[][];
  private readonly queuedImages: number[];
  private queuedJobs = 0;
  private nextId = 1;
  private closing = false;
  private wakeTimer: NodeJS.Timeout | null = null;
  private wakeImmediate: NodeJS.Immediate | null = null;
  private readonly init: WorkerInit;
  private readonly options: PoolOptions;
  private readonly classes: number;
  /** Images one job (and one batch) may carry at most: the channels' capacity. */
  private readonly maxJobImages: number;
  /** Every worker's channel layout. */
  private readonly channelShape: ChannelShape;
  private readonly log: PoolLogger;
  private readonly observer: InferenceObserver;

  constructor(init: WorkerInit, options: PoolOptions, log: PoolLogger, observer: InferenceObserver = NO_OBSERVER) {
    this.init = init;
    this.options = options;
    this.classes = init.spec.classes;
    this.maxJobImages = Math.max(options.maxBatchImages, options.maxJobImages ?? options.maxBatchImages, 1);
    this.channelShape = { imageSize: init.spec.shape.reduce((a, b) => a * b, 1), classes: this.classes, maxImages: this.maxJobImages };
    this.queues = init.members.map(() => []);
    this.queuedImages = init.members.map(() => 0);
    this.log = log;
    this.observer = observer;
  }

  /** Start every worker; resolves once all are ready (sessions created, golden values checked). */
  async start(): Promise<PoolInfo> {
    try {
      const infos = await Promise.all(Array.from({ length: this.options.size }, () => this.spawn()));
      return infos[0];
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  get queued(): number {
    return this.queuedJobs;
  }

  /** Would a request of `jobs` member jobs be refused now? (An empty queue admits any request.) */
  wouldRefuse(jobs: number): boolean {
    return this.queuedJobs > 0 && this.queuedJobs + jobs > this.options.maxQueue;
  }

  get busy(): number {
    return this.slots.filter((s) => s.batch !== null).length;
  }

  get workers(): number {
    return this.slots.length;
  }

  /**
   * Run several member jobs of one request; resolves with each job's logits, in order. Admission is
   * all or nothing: a request is never left half-queued (work for an answer nobody gets). An empty
   * queue admits any request, so a request with more jobs than maxQueue can still be served.
   * `timing`, when given, is filled with the request's queue wait and member runs (first start to
   * last end) once it resolves.
   */
  runAll(parts: readonly RunPart[], timing?: RunTiming): Promise<Float32Array[]> {
    if (this.closing) return Promise.reject(shuttingDown());
    const oversized = parts.find((p) => p.n > this.maxJobImages);
    if (oversized) return Promise.reject(new Error(`a job of ${oversized.n} images exceeds the pool's maxJobImages ${this.maxJobImages}`));
    if (this.wouldRefuse(parts.length)) {
      return Promise.reject(overloaded(`inference queue is full (${this.queuedJobs} of ${this.options.maxQueue} jobs waiting); retry shortly`));
    }
    const enqueuedAt = performance.now();
    const jobs: Job[] = [];
    const results = parts.map(({ member, data, n }) => new Promise<Float32Array>((resolve, reject) => {
      const job: Job = { member, data, n, enqueuedAt, startedAt: 0, finishedAt: 0, state: 'queued', timer: null, resolve, reject };
      jobs.push(job);
      if (this.options.jobTimeoutMs > 0) job.timer = setTimeout(() => this.expire(job), this.options.jobTimeoutMs);
      this.queues[member].push(job);
      this.queuedImages[member] += n;
      this.queuedJobs++;
    }));
    this.pump();
    const all = Promise.all(results);
    if (!timing) return all;
    return all.then((logits) => {
      timing.enqueuedAt = enqueuedAt;
      timing.startedAt = Math.min(...jobs.map((j) => j.startedAt));
      timing.finishedAt = Math.max(...jobs.map((j) => j.finishedAt));
      return logits;
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    this.clearWake();
    for (const queue of this.queues) {
      for (const job of queue.splice(0)) this.settle(job, shuttingDown());
    }
    this.queuedImages.fill(0);
    this.queuedJobs = 0;
    const slots = this.slots.splice(0);
    for (const slot of slots) for (const job of slot.batch?.jobs ?? []) this.settle(job, shuttingDown());
    // Terminating a thread inside onnxruntime's run aborts the whole process (a native exception
    // during teardown), and so does exiting the process while one is inside it: a busy worker is
    // told to exit as soon as its run returns, and close() resolves once it has. An idle one waits
    // in Atomics.wait, which terminate() interrupts safely.
    await Promise.all(slots.map((slot) => {
      if (slot.batch === null) return slot.worker.terminate();
      const exited = new Promise<void>((resolve) => { slot.worker.once('exit', () => resolve()); });
      Atomics.store(slot.exitFlag, 0, 1);
      return exited;
    }));
  }

  /** Settle a job once: with logits, or with an error. */
  private settle(job: Job, result: Float32Array | Error): void {
    if (job.state === 'done') return;
    job.state = 'done';
    job.finishedAt = performance.now();
    if (job.timer) clearTimeout(job.timer);
    if (result instanceof Error) job.reject(result);
    else job.resolve(result);
  }

  private expire(job: Job): void {
    if (job.state === 'queued') this.dequeue(job);
    // A running job's worker cannot be interrupted; its answer is dropped when it comes.
    this.settle(job, timedOut(this.options.jobTimeoutMs));
  }

  private dequeue(job: Job): void {
    const queue = this.queues[job.member];
    const at = queue.indexOf(job);
    if (at < 0) return;
    queue.splice(at, 1);
    this.queuedImages[job.member] -= job.n;
    this.queuedJobs--;
  }

  /**
   * The member to serve next, or null to wait. The oldest waiting job's member goes first once that
   * job has waited the queue delay (so no member starves); before that, a member with a full batch
   * goes at once; otherwise the batch waits for more jobs of its member.
   */
  private pick(delayApplies: boolean): number | null {
    let oldest = -1;
    let oldestFull = -1;
    for (let m = 0; m < this.queues.length; m++) {
      const head = this.queues[m][0];
      if (!head) continue;
      if (oldest < 0 || head.enqueuedAt < this.queues[oldest][0].enqueuedAt) oldest = m;
      if (this.queuedImages[m] >= this.options.maxBatchImages
        && (oldestFull < 0 || head.enqueuedAt < this.queues[oldestFull][0].enqueuedAt)) oldestFull = m;
    }
    if (oldest < 0) return null;
    const waitedUs = (performance.now() - this.queues[oldest][0].enqueuedAt) * 1000;
    if (!delayApplies || waitedUs >= this.options.queueDelayUs) return oldest;
    if (oldestFull >= 0) return oldestFull;
    this.wakeIn(this.options.queueDelayUs - waitedUs);
    return null;
  }

  /** Hand waiting jobs to idle workers, as batches of one member's jobs. */
  private pump(): void {
    if (this.closing) return;
    while (this.queuedJobs > 0) {
      const idle = this.slots.filter((s) => s.batch === null);
      if (idle.length === 0) return;
      // The delay is only worth paying for the last idle worker: while another one is free, a batch
      // that goes now delays nobody, and jobs that arrive meanwhile still find a worker.
      const member = this.pick(idle.length === 1 && this.options.maxBatchImages > 1);
      if (member === null) return;
      const queue = this.queues[member];
      const jobs: Job[] = [queue.shift()!];
      let n = jobs[0].n;
      while (queue.length > 0 && n + queue[0].n <= this.options.maxBatchImages) {
        n += queue[0].n;
        jobs.push(queue.shift()!);
      }
      this.queuedImages[member] -= n;
      this.queuedJobs -= jobs.length;
      this.dispatch(idle[0], member, jobs, n);
    }
  }

  /**
   * Call pump() again in `us` microseconds. Node's timers have millisecond resolution: shorter
   * waits use setImmediate, which runs after the pending I/O (arriving requests) of this turn.
   */
  private wakeIn(us: number): void {
    if (this.wakeTimer || this.wakeImmediate) return;
    const wake = () => {
      this.wakeTimer = null;
      this.wakeImmediate = null;
      this.pump();
    };
    if (us >= 1000) this.wakeTimer = setTimeout(wake, Math.floor(us / 1000));
    else this.wakeImmediate = setImmediate(wake);
  }

  private clearWake(): void {
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    if (this.wakeImmediate) clearImmediate(this.wakeImmediate);
    this.wakeTimer = null;
    this.wakeImmediate = null;
  }

  private dispatch(slot: Slot, member: number, jobs: Job[], n: number): void {
    const startedAt = performance.now();
    for (const job of jobs) {
      job.state = 'running';
      job.startedAt = startedAt;
      this.observer.queueWait((startedAt - job.enqueuedAt) / 1000);
    }
    const batch: Batch = { id: this.nextId++, member, jobs, n, startedAt };
    slot.batch = batch;
    // The channel copies the jobs' images into shared memory: callers keep their buffers (mean
    // sends one buffer to every member).
    void slot.channel.run(member, jobs, n).then((outcome) => this.finish(slot, batch.id, outcome));
  }

  private finish(slot: Slot, id: number, outcome: JobOutcome): void {
    const batch = slot.batch;
    if (!batch || batch.id !== id) return;
    slot.batch = null;
    if (outcome.ok) {
      this.observer.batchRun({
        member: batch.member, images: batch.n, jobs: batch.jobs.length,
        computeSeconds: outcome.computeSeconds, busySeconds: (performance.now() - batch.startedAt) / 1000,
      });
      let offset = 0;
      for (const job of batch.jobs) {
        this.settle(job, outcome.logits.subarray(offset * this.classes, (offset + job.n) * this.classes));
        offset += job.n;
      }
    } else {
      for (const job of batch.jobs) this.settle(job, new Error(outcome.message));
    }
    this.pump();
  }

  private spawn(): Promise<PoolInfo> {
    return new Promise((resolve, reject) => {
      const exitFlag = new Int32Array(new SharedArrayBuffer(4));
      const channel = new PoolChannel(this.channelShape);
      const workerData: WorkerData = { ...this.init, channel: channel.buffer, channelShape: this.channelShape, exitFlag };
      const worker = new Worker(this.options.workerUrl ?? WORKER_URL, { workerData });
      const slot: Slot = { worker, channel, exitFlag, batch: null };
      let ready = false;
      worker.on('message', (msg: WorkerMessage) => {
        if (msg.type === 'ready') {
          ready = true;
          if (this.closing) {
            void worker.terminate();
          } else {
            this.slots.push(slot);
            this.pump();
          }
          resolve({ provider: msg.provider, fallbackReason: msg.fallbackReason, maxGoldenError: msg.maxGoldenError });
        } else if (msg.type === 'failed') {
          void worker.terminate();
          reject(new Error(msg.message));
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
        for (const job of slot.batch?.jobs ?? []) this.settle(job, workerFailed());
        slot.batch = null;
        if (this.closing) return;
        this.log.warn({ code }, 'inference worker exited; starting a replacement');
        this.observer.workerReplaced();
        this.spawn().catch((err: Error) => this.log.error({ err }, 'replacement worker failed to start'));
      });
    });
  }
}
