/**
 * A scripted inference worker for pool tests: it speaks worker.ts's protocol (a ready message, then
 * jobs over the shared-memory channel) without onnxruntime. The first element of a job's data is a
 * command: -1 exits the worker thread (a crash), -2 fails the job with an error, t > 0 blocks the
 * worker for t ms (as a long onnxruntime run would). Logits of image i: [member, the image's second
 * element (a tag), the batch's image count, 0, ...].
 */
import { parentPort, workerData } from 'node:worker_threads';
import { serveJobs } from '../../src/ensemble/channel.js';
import type { WorkerData, WorkerMessage } from '../../src/ensemble/worker.js';

const init = workerData as WorkerData;
const { imageSize: size, classes } = init.channelShape;

parentPort!.postMessage({ type: 'ready', provider: 'cpu', maxGoldenError: 0 } satisfies WorkerMessage);
await serveJobs(init.channel, init.channelShape, (member, data, n) => {
  const command = data[0];
  if (command === -1) process.exit(7);
  if (command === -2) throw new Error('scripted failure');
  if (command > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, command);
  const logits = new Float32Array(n * classes);
  for (let i = 0; i < n; i++) {
    logits[i * classes] = member;
    logits[i * classes + 1] = data[i * size + 1];
    logits[i * classes + 2] = n;
  }
  return logits;
}, init.exitFlag);
