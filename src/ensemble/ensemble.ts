/**
 * The Ensemble: what the HTTP layer talks to. It loads a package, starts the worker pool and turns
 * pre-processed images into class probabilities under the configured sampling mode:
 *
 *   random   each image is answered by one member drawn uniformly with node:crypto (RED);
 *   fixed:K  every image is answered by member K (evaluation, attacks on one member);
 *   mean     the softmax of every member, averaged (the classic ensemble; N times the work).
 *
 * Which member answered is never returned; it is logged at debug level only.
 */
import { randomInt } from 'node:crypto';
import type { Config, Sampling } from '../config.js';
import { ConfigError } from '../errors.js';
import { readPackage, type Manifest } from './manifest.js';
import { WorkerPool, type PoolLogger } from './pool.js';
import type { Provider } from './runtime.js';

export interface EnsembleLogger extends PoolLogger {
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export interface Ensemble {
  readonly manifest: Manifest;
  readonly provider: Provider;
  readonly sampling: Sampling;
  /** Number of floats in one pre-processed image (C*H*W). */
  readonly imageSize: number;
  /** Probabilities [n][classes] for n images laid out as NCHW float32 in `data`. */
  classify(data: Float32Array, n: number): Promise<Float32Array[]>;
  readonly pool: WorkerPool;
  close(): Promise<void>;
}

export function softmaxInto(logits: Float32Array, offset: number, classes: number, out: Float32Array): void {
  let max = -Infinity;
  for (let k = 0; k < classes; k++) max = Math.max(max, logits[offset + k]);
  let sum = 0;
  for (let k = 0; k < classes; k++) {
    out[k] = Math.exp(logits[offset + k] - max);
    sum += out[k];
  }
  for (let k = 0; k < classes; k++) out[k] /= sum;
}

/** Draw one member per image, uniformly, with a cryptographic RNG. */
export function drawMembers(n: number, members: number): number[] {
  return Array.from({ length: n }, () => randomInt(members));
}

export async function loadEnsemble(config: Config, log: EnsembleLogger): Promise<Ensemble> {
  const started = performance.now();
  const pkg = await readPackage(config.modelDir);
  const { manifest } = pkg;
  const nMembers = manifest.members.length;
  const { sampling } = config;
  if (sampling.mode === 'fixed' && sampling.member >= nMembers) {
    throw new ConfigError(`--sampling fixed:${sampling.member}: member index out of range [0, ${nMembers})`);
  }
  const [c, h, w] = manifest.input.shape;
  const imageSize = c * h * w;
  const classes = manifest.output.classes;
  const pool = new WorkerPool({
    memberBytes: pkg.memberBytes,
    spec: { inputName: manifest.input.name, outputName: manifest.output.name, shape: manifest.input.shape, classes },
    device: config.device,
    threads: config.threadsPerWorker,
    golden: { inputs: pkg.golden.map((g) => g.input), logits: pkg.golden.map((g) => g.logits) },
    atol: manifest.golden.atol,
  }, config.workers, config.maxQueue, log);
  const info = await pool.start();
  if (info.fallbackReason) {
    log.warn({ reason: info.fallbackReason }, 'CUDA execution provider unavailable; falling back to CPU');
  }
  log.info({
    model: manifest.name, members: nMembers, provider: info.provider, sampling: sampling.mode,
    workers: config.workers, maxGoldenError: info.maxGoldenError, loadMs: Math.round(performance.now() - started),
  }, 'model package loaded, members checked against golden logits and warm');

  async function runGroup(member: number, indices: readonly number[], data: Float32Array, out: Float32Array[]): Promise<void> {
    const batch = new Float32Array(indices.length * imageSize);
    indices.forEach((img, j) => batch.set(data.subarray(img * imageSize, (img + 1) * imageSize), j * imageSize));
    const [logits] = await pool.run([member], batch, indices.length);
    indices.forEach((img, j) => softmaxInto(logits, j * classes, classes, out[img]));
  }

  async function classify(data: Float32Array, n: number): Promise<Float32Array[]> {
    const out = Array.from({ length: n }, () => new Float32Array(classes));
    if (sampling.mode === 'mean') {
      const all = Array.from({ length: nMembers }, (_, m) => m);
      const logits = await pool.run(all, data, n);
      const p = new Float32Array(classes);
      for (let i = 0; i < n; i++) {
        for (const member of logits) {
          softmaxInto(member, i * classes, classes, p);
          for (let k = 0; k < classes; k++) out[i][k] += p[k] / nMembers;
        }
      }
      return out;
    }
    const draws = sampling.mode === 'fixed' ? new Array<number>(n).fill(sampling.member) : drawMembers(n, nMembers);
    log.debug({ draws }, 'members drawn');
    const groups = new Map<number, number[]>();
    draws.forEach((m, i) => groups.set(m, [...(groups.get(m) ?? []), i]));
    await Promise.all([...groups].map(([m, indices]) => runGroup(m, indices, data, out)));
    return out;
  }

  return {
    manifest, provider: info.provider, sampling, imageSize, classify, pool,
    close: () => pool.close(),
  };
}
