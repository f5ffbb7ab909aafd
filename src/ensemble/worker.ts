/**
 * Inference worker thread. It creates one onnxruntime session per member, checks each against the
 * package's golden logits (which also warms it up), reports `ready`, then serves jobs from its
 * shared-memory channel (channel.ts): (member, n images) -> that member's logits [n, classes] (one
 * batch, possibly of several requests' images: see pool.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Device } from '../config.js';
import { serveJobs, type ChannelShape } from './channel.js';
import type { MemberSource } from './manifest.js';
import { createSession, type MemberSession, type Provider, type SessionSpec } from './runtime.js';

export interface WorkerInit {
  readonly members: readonly MemberSource[];
  readonly spec: SessionSpec;
  readonly device: Device;
  readonly threads: number;
  readonly golden: { readonly inputs: readonly (readonly number[])[]; readonly logits: readonly (readonly (readonly number[])[])[] };
  readonly atol: number;
}

/** What the pool adds to WorkerInit for each worker it starts. */
export interface WorkerData extends WorkerInit {
  /** The job channel's shared memory (channel.ts) and its layout. */
  readonly channel: SharedArrayBuffer;
  readonly channelShape: ChannelShape;
  /** 1 asks the worker to exit after its current run, unanswered (WorkerPool.close). */
  readonly exitFlag: Int32Array;
}

/** Start-up messages; jobs and their answers go through the channel. */
export type WorkerMessage =
  | { type: 'ready'; provider: Provider; fallbackReason?: string; maxGoldenError: number }
  | { type: 'failed'; message: string };

/** Run every member on the golden inputs; returns the largest abs logit error, or throws naming the member. */
async function checkGolden(sessions: readonly MemberSession[], init: WorkerInit): Promise<number> {
  const { inputs, logits } = init.golden;
  const size = init.spec.shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(inputs.length * size);
  inputs.forEach((x, i) => data.set(x, i * size));
  let worst = 0;
  for (const [m, session] of sessions.entries()) {
    const out = session.run(data.slice(), inputs.length);
    for (let i = 0; i < inputs.length; i++) {
      for (let k = 0; k < init.spec.classes; k++) {
        const err = Math.abs(out[i * init.spec.classes + k] - logits[i][m][k]);
        if (!(err <= init.atol)) {
          throw new Error(`member ${m}: logits on golden image ${i} differ from the package's golden values by `
            + `${err.toPrecision(3)} (allowed ${init.atol})`);
        }
        worst = Math.max(worst, err);
      }
    }
  }
  return worst;
}

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('worker.ts must run in a worker thread');
  const init = workerData as WorkerData;
  const sessions: MemberSession[] = [];
  let provider: Provider = 'cpu';
  let fallbackReason: string | undefined;
  try {
    for (const [m, source] of init.members.entries()) {
      const created = await createSession(source, init.spec, init.device, init.threads, `member ${m}`);
      sessions.push(created.session);
      provider = created.provider;
      fallbackReason ??= created.fallbackReason;
    }
    const maxGoldenError = await checkGolden(sessions, init);
    port.postMessage({ type: 'ready', provider, fallbackReason, maxGoldenError } satisfies WorkerMessage);
  } catch (err) {
    port.postMessage({ type: 'failed', message: (err as Error).message } satisfies WorkerMessage);
    return;
  }

  await serveJobs(init.channel, init.channelShape, (member, images, n) => sessions[member].run(images, n), init.exitFlag);
}

void main();
