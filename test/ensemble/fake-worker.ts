/**
 * A scripted inference worker for pool tests: it speaks worker.ts's protocol without onnxruntime.
 * The first element of a job's data is a command: -1 exits the worker thread (a crash), t > 0
 * blocks it for t ms (as a long onnxruntime run would). Logits of image i: [member, the image's
 * second element (a tag), the batch's image count, 0, ...].
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { RunJob, WorkerInit, WorkerMessage } from '../../src/ensemble/worker.js';

const init = workerData as WorkerInit;
const size = init.spec.shape.reduce((a, b) => a * b, 1);
const classes = init.spec.classes;
const port = parentPort!;

port.postMessage({ type: 'ready', provider: 'cpu', maxGoldenError: 0 } satisfies WorkerMessage);
port.on('message', (job: RunJob) => {
  const started = performance.now();
  const command = job.data[0];
  if (command === -1) process.exit(7);
  if (command > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, command);
  const logits = new Float32Array(job.n * classes);
  for (let i = 0; i < job.n; i++) {
    logits[i * classes] = job.member;
    logits[i * classes + 1] = job.data[i * size + 1];
    logits[i * classes + 2] = job.n;
  }
  const computeSeconds = (performance.now() - started) / 1000;
  if (init.exitFlag && Atomics.load(init.exitFlag, 0) === 1) process.exit(1);
  port.postMessage({ type: 'result', id: job.id, logits, computeSeconds } satisfies WorkerMessage, [logits.buffer]);
});
