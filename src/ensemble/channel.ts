/**
 * The job channel between the pool and one inference worker: a SharedArrayBuffer that holds one job
 * at a time (its images in, its logits out) and two counters the threads wait on.
 *
 * Message passing (postMessage) serialises every job and result, and wakes the other thread through
 * its event loop; for a one-image job on a small model that round trip cost more than the member run
 * itself. Here the pool copies a batch's images straight into shared memory, bumps `REQ` and wakes
 * the worker, which sleeps in Atomics.wait (it has nothing else to do between jobs). The worker
 * writes the logits, bumps `ACK` and wakes the pool, which waits with Atomics.waitAsync so its event
 * loop keeps serving.
 *
 * Layout (bytes): 0..31 Int32 control words, 32..39 Float64 compute seconds, then the input area
 * (maxImages * imageSize floats), the output area (maxImages * classes floats) and an error message
 * area (UTF-8). It is allocated once per worker: for 64 images of 28x28 about 200 KB, for 64 of
 * 3x224x224 about 38 MB, which bounds a worker's job memory whatever the load.
 */

const REQ = 0; // the pool's job counter: the worker runs a job when it changes
const ACK = 1; // the worker's answered-job counter: the pool reads the answer when it changes
const MEMBER = 2;
const IMAGES = 3;
const STATUS = 4; // 0: logits in the output area; 1: error message in the error area
const ERROR_LENGTH = 5;
const CONTROL_BYTES = 32;
const SECONDS_OFFSET = 32;
const DATA_OFFSET = 64;
const ERROR_BYTES = 2048;

export interface ChannelShape {
  /** Floats in one image (C*H*W). */
  readonly imageSize: number;
  readonly classes: number;
  /** The most images one job may carry. */
  readonly maxImages: number;
}

export type JobOutcome =
  | { readonly ok: true; readonly logits: Float32Array; readonly computeSeconds: number }
  | { readonly ok: false; readonly message: string };

interface Views {
  readonly control: Int32Array;
  readonly seconds: Float64Array;
  readonly input: Float32Array;
  readonly output: Float32Array;
  readonly error: Uint8Array;
}

type WaitAsync = (array: Int32Array, index: number, value: number) =>
  { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
// Atomics.waitAsync is in Node 20 (V8 11); TypeScript's ES2022 library does not declare it yet.
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

export function channelBytes(shape: ChannelShape): number {
  return DATA_OFFSET + shape.maxImages * (shape.imageSize + shape.classes) * 4 + ERROR_BYTES;
}

function views(buffer: SharedArrayBuffer, shape: ChannelShape): Views {
  const inputFloats = shape.maxImages * shape.imageSize;
  const outputFloats = shape.maxImages * shape.classes;
  return {
    control: new Int32Array(buffer, 0, CONTROL_BYTES / 4),
    seconds: new Float64Array(buffer, SECONDS_OFFSET, 1),
    input: new Float32Array(buffer, DATA_OFFSET, inputFloats),
    output: new Float32Array(buffer, DATA_OFFSET + inputFloats * 4, outputFloats),
    error: new Uint8Array(buffer, DATA_OFFSET + (inputFloats + outputFloats) * 4, ERROR_BYTES),
  };
}

/** The pool's end: one job at a time. */
export class PoolChannel {
  readonly buffer: SharedArrayBuffer;
  readonly shape: ChannelShape;
  private readonly v: Views;
  private jobs = 0;

  constructor(shape: ChannelShape) {
    this.shape = shape;
    this.buffer = new SharedArrayBuffer(channelBytes(shape));
    this.v = views(this.buffer, shape);
  }

  /**
   * Run `member` on the images of `parts` (laid end to end, n in all); resolves with a copy of the
   * logits [n, classes], or the worker's error message. Never resolves if the worker dies: the pool
   * learns that from the worker's exit event.
   */
  run(member: number, parts: readonly { readonly data: Float32Array; readonly n: number }[], n: number): Promise<JobOutcome> {
    const { imageSize, classes, maxImages } = this.shape;
    if (n > maxImages) throw new Error(`a job of ${n} images exceeds the worker channel's ${maxImages}`);
    let offset = 0;
    for (const part of parts) {
      this.v.input.set(part.data.subarray(0, part.n * imageSize), offset);
      offset += part.n * imageSize;
    }
    const { control } = this.v;
    control[MEMBER] = member;
    control[IMAGES] = n;
    const answered = this.jobs; // ACK holds this until the worker answers the new job
    this.jobs = (this.jobs + 1) | 0;
    Atomics.store(control, REQ, this.jobs);
    Atomics.notify(control, REQ);
    const read = (): JobOutcome => {
      if (Atomics.load(control, STATUS) === 0) {
        return { ok: true, logits: this.v.output.slice(0, n * classes), computeSeconds: this.v.seconds[0] };
      }
      const length = Math.min(control[ERROR_LENGTH], ERROR_BYTES);
      return { ok: false, message: Buffer.from(this.v.error.slice(0, length)).toString('utf8') };
    };
    const wait = waitAsync(control, ACK, answered);
    return wait.async ? wait.value.then(read) : Promise.resolve(read());
  }
}

/**
 * The worker's end: serve jobs forever. `run` computes a job's logits from its images (a private
 * copy, valid until `run` returns). `exitFlag` set to 1 makes the worker exit after the current run
 * without answering (WorkerPool.close stops a busy worker this way).
 */
export async function serveJobs(buffer: SharedArrayBuffer, shape: ChannelShape,
  run: (member: number, images: Float32Array, n: number) => Promise<Float32Array> | Float32Array,
  exitFlag?: Int32Array): Promise<never> {
  const v = views(buffer, shape);
  const { control } = v;
  // onnxruntime-node refuses tensors over shared memory, so each job's images are copied out of the
  // channel, into one private buffer reused for every job (the run has returned before the next).
  const own = new Float32Array(shape.maxImages * shape.imageSize);
  // Start from the last answered job, not the last posted one: the pool may post a job before this
  // loop starts (right after the worker reports ready), and that job must not be skipped.
  let seen = Atomics.load(control, ACK);
  for (;;) {
    Atomics.wait(control, REQ, seen);
    const request = Atomics.load(control, REQ);
    if (request === seen) continue;
    seen = request;
    const member = control[MEMBER];
    const n = control[IMAGES];
    const started = performance.now();
    try {
      const images = own.subarray(0, n * shape.imageSize);
      images.set(v.input.subarray(0, n * shape.imageSize));
      const logits = await run(member, images, n);
      v.seconds[0] = (performance.now() - started) / 1000;
      if (exitFlag && Atomics.load(exitFlag, 0) === 1) process.exit(1);
      v.output.set(logits.subarray(0, n * shape.classes));
      control[STATUS] = 0;
    } catch (err) {
      const bytes = Buffer.from(String((err as Error)?.message ?? err)).subarray(0, ERROR_BYTES);
      v.error.set(bytes);
      control[ERROR_LENGTH] = bytes.length;
      control[STATUS] = 1;
    }
    Atomics.store(control, ACK, seen);
    Atomics.notify(control, ACK);
  }
}
