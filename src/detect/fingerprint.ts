/**
 * Probabilistic content fingerprints of pre-processed input tensors, after Blacklight (Li et al.,
 * USENIX Security 2022): two queries of a query attack differ in few pixels, so after coarse
 * quantisation most of their pixel windows are identical, while two different images share few.
 *
 * 1. Undo the manifest's normalisation and quantise every element to a bucket of `quantStep`
 *    8-bit levels (0-255 scale): small perturbations mostly stay in their bucket.
 * 2. Slide a window of `window` elements over the flattened CHW tensor (stride 1) and hash each
 *    window's buckets. Flattening makes a window's hash independent of where the window sits, so a
 *    shifted image keeps most of its hashes.
 * 3. Keep the `hashes` largest distinct hash values: a sample of windows that is the same for two
 *    inputs that share most windows (min-hash style), whatever else differs.
 *
 * Windows whose buckets are all equal (flat background) are skipped: every image has them, so they
 * say nothing about whether two queries are related.
 *
 * Hashes are keyed (a polynomial rolling hash with a secret odd base, finished by a keyed integer
 * mixer; the key is drawn at start-up), so a client cannot compute which windows are kept and perturb
 * exactly those. It is not a cryptographic MAC: a per-window SHA-256 as in Blacklight would cost
 * more than the member run it guards (about 700 windows per 28x28 image).
 */
import type { DetectSettings } from '../config.js';
import type { InputSpec } from '../ensemble/manifest.js';

/** The fingerprint's parameters (flags --detect-quant-step, --detect-window, --detect-hashes). */
export type FingerprintParams = Pick<DetectSettings, 'quantStep' | 'window' | 'hashes'>;

/** Secret hash key: 32-bit words; `base` is forced odd so the rolling hash is invertible mod 2^32. */
export interface FingerprintKey {
  readonly base: number;
  readonly mix: number;
  readonly digest: number;
}

/** How the service normalised the tensor (the manifest's input contract, per channel). */
export interface Normalisation {
  readonly channels: number;
  /** Elements per channel (H * W). */
  readonly plane: number;
  readonly scale: number;
  readonly mean: readonly number[];
  readonly std: readonly number[];
}

/** The normalisation the fingerprint undoes, from the model's input contract (its manifest). */
export function normalisationOf(input: InputSpec): Normalisation {
  const [channels, h, w] = input.shape;
  return { channels, plane: h * w, scale: input.scale, mean: input.mean, std: input.std };
}

export interface Fingerprint {
  /** The kept hashes, distinct, ascending (so that two fingerprints intersect by a merge). */
  readonly hashes: Uint32Array;
  /** A 53-bit digest of the exact tensor bytes: equal for a re-upload of the same image. */
  readonly digest: number;
}

function mix32(x: number): number {
  let z = x >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

const LEVEL_SLACK = 1e-3;

/** Size of the scratch buffers; fingerprints of larger tensors allocate their own. */
const SCRATCH_ELEMENTS = 4096;

export class Fingerprinter {
  private readonly buckets: Uint8Array;
  private readonly windowHashes: Uint32Array;
  private readonly candidates: Uint32Array;
  private readonly base: number;
  /** base^window mod 2^32: the weight of the element leaving the window, once the new one is in. */
  private readonly leavingWeight: number;
  private readonly maxBucket: number;

  constructor(readonly params: FingerprintParams, private readonly norm: Normalisation, private readonly key: FingerprintKey) {
    this.base = (key.base | 1) >>> 0;
    let w = 1;
    for (let i = 0; i < params.window; i++) w = Math.imul(w, this.base);
    this.leavingWeight = w;
    this.maxBucket = Math.floor(255 / params.quantStep);
    const elements = Math.max(SCRATCH_ELEMENTS, norm.channels * norm.plane);
    this.buckets = new Uint8Array(elements);
    this.windowHashes = new Uint32Array(elements);
    this.candidates = new Uint32Array(elements);
  }

  /** The fingerprint of one image's tensor (C * H * W floats, normalised as the manifest says). */
  compute(tensor: Float32Array): Fingerprint {
    const { channels, plane, scale, mean, std } = this.norm;
    const n = channels * plane;
    if (tensor.length !== n) throw new RangeError(`tensor: ${tensor.length} elements, expected ${n}`);
    const q = this.buckets;
    const step = this.params.quantStep;
    const maxBucket = this.maxBucket;
    for (let ch = 0; ch < channels; ch++) {
      // level = (t * std + mean) / scale, the 8-bit pixel value the tensor element stands for.
      const a = std[ch] / scale;
      const b = mean[ch] / scale;
      const end = (ch + 1) * plane;
      for (let i = ch * plane; i < end; i++) {
        // + LEVEL_SLACK: an integer level undone from float32 can land a hair below itself (50 ->
        // 49.99999) and would fall into the bucket below; real levels are integers.
        const bucket = Math.floor((tensor[i] * a + b + LEVEL_SLACK) / step);
        q[i] = bucket < 0 ? 0 : bucket > maxBucket ? maxBucket : bucket;
      }
    }

    const w = this.params.window;
    const hashes = this.windowHashes;
    const base = this.base;
    const leaving = this.leavingWeight;
    const key = this.key.mix;
    let count = 0;
    let h = 0;
    // Length of the run of equal buckets ending at i: the window ending at i is flat when it is >= w.
    let run = 0;
    let previous = -1;
    for (let i = 0; i < n; i++) {
      const v = q[i];
      // +1 so that a bucket of 0 still contributes to the hash.
      h = (Math.imul(h, base) + v + 1) | 0;
      if (i >= w) h = (h - Math.imul(q[i - w] + 1, leaving)) | 0;
      run = v === previous ? run + 1 : 1;
      previous = v;
      if (i >= w - 1 && run < w) hashes[count++] = mix32(h ^ key);
    }
    const kept = topDistinct(hashes.subarray(0, count), this.params.hashes, this.candidates);
    return { hashes: kept, digest: digestOf(tensor, this.key.digest) };
  }
}

/**
 * The k largest distinct values of `values` (reordered in place), ascending. The values are keyed
 * hashes, uniform over 32 bits, so the top k almost always lie above the quantile that leaves about
 * 3k of them: only those are sorted (into `scratch`); the full sort is the fallback when fewer than
 * k distinct values clear it.
 */
function topDistinct(values: Uint32Array, k: number, scratch: Uint32Array): Uint32Array {
  const n = values.length;
  if (n > 4 * k) {
    const cutoff = Math.floor(4294967296 * (1 - (3 * k) / n));
    let m = 0;
    for (let i = 0; i < n; i++) if (values[i] >= cutoff) scratch[m++] = values[i];
    const top = largestDistinct(scratch.subarray(0, m), k);
    if (top.length === k) return top;
  }
  return largestDistinct(values, k);
}

function largestDistinct(pool: Uint32Array, k: number): Uint32Array {
  pool.sort();
  const out = new Uint32Array(Math.min(k, pool.length));
  let m = 0;
  for (let i = pool.length - 1; i >= 0 && m < out.length; i--) {
    if (m === 0 || pool[i] !== out[m - 1]) out[m++] = pool[i];
  }
  return out.slice(0, m).reverse();
}

/** Two 32-bit lanes over the tensor's bytes, folded into a 53-bit integer (exact in a double). */
function digestOf(tensor: Float32Array, key: number): number {
  const words = new Uint32Array(tensor.buffer, tensor.byteOffset, tensor.length);
  let h1 = key >>> 0;
  let h2 = (key ^ 0x9e3779b9) >>> 0;
  for (let i = 0; i < words.length; i++) {
    h1 = mix32(h1 ^ words[i]);
    h2 = mix32((h2 + words[i]) ^ 0x27d4eb2d);
  }
  return (h1 >>> 0) * 2 ** 21 + (h2 >>> 11);
}
