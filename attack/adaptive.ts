/**
 * An adaptive attacker against stateful detection, in the manner of Feng et al. (CCS 2023,
 * "Stateful defenses for machine learning models are not yet secure against black-box attacks"):
 * every query the attack wants answered is sent as a randomly transformed copy, so that two
 * consecutive queries no longer share their quantised pixel windows, and a query the service
 * refuses is resampled with a fresh, stronger transform (adaptive rejection sampling).
 *
 * Transforms, scaled by a strength s that grows on every refusal and decays on every answer:
 * - a shift of up to `shiftPx` pixels along each axis (the vacated border takes the nearest edge),
 * - a brightness factor in [1 - s * brightness, 1 + s * brightness],
 * - uniform noise in [-s * noise, s * noise] on every pixel,
 * then clipped to the pixel range. The answer to the transformed copy stands in for the answer to
 * the point the attack asked about: that is what the attack pays in accuracy for evading.
 *
 * Every refused request is a query: it is charged to the image's budget through `spend`. After
 * `maxResamples` refusals in a row the attack stops as if its budget were spent.
 */
import { StopAttack, type Classify } from './oracle.js';
import type { Rng } from './rng.js';

export interface TransformOptions {
  /** Largest shift in pixels along each axis (at strength 1; grows with it, rounded). */
  readonly shiftPx: number;
  /** Brightness factor half-width at strength 1 (0.05: +-5%). */
  readonly brightness: number;
  /** Noise half-width in pixel units at strength 1 (pixel range [lo, hi]). */
  readonly noise: number;
  /** Resamples of one refused query before the attack stops. */
  readonly maxResamples: number;
}

export const DEFAULT_TRANSFORM: TransformOptions = { shiftPx: 1, brightness: 0.05, noise: 0.03, maxResamples: 20 };

/** Strength limits and steps of the rejection-driven adaptation. */
const STRENGTH_MAX = 4;
const STRENGTH_UP = 1.5;
const STRENGTH_DOWN = 0.95;

/** A randomly transformed copy of x (CHW) at strength s. */
export function transformQuery(x: Float64Array, shape: readonly [number, number, number], lo: number, hi: number,
  s: number, rng: Rng, o: TransformOptions): Float64Array {
  const [c, h, w] = shape;
  const maxShift = Math.round(o.shiftPx * s);
  const dy = maxShift === 0 ? 0 : rng.int(2 * maxShift + 1) - maxShift;
  const dx = maxShift === 0 ? 0 : rng.int(2 * maxShift + 1) - maxShift;
  const gain = 1 + (2 * rng.uniform() - 1) * o.brightness * s;
  const out = new Float64Array(x.length);
  for (let ch = 0; ch < c; ch++) {
    for (let row = 0; row < h; row++) {
      const srcRow = Math.min(h - 1, Math.max(0, row - dy));
      for (let col = 0; col < w; col++) {
        const srcCol = Math.min(w - 1, Math.max(0, col - dx));
        const v = x[ch * h * w + srcRow * w + srcCol] * gain + (2 * rng.uniform() - 1) * o.noise * s;
        out[ch * h * w + row * w + col] = Math.min(hi, Math.max(lo, v));
      }
    }
  }
  return out;
}

/** What the service did with one request: answered it, or refused it as part of an attack. */
export type Answer = { readonly probs: Float64Array } | { readonly refused: true };

export interface AdaptiveStats {
  /** Requests sent, refused ones included. */
  sent: number;
  refused: number;
  /** Queries given up after maxResamples refusals in a row. */
  gaveUp: number;
}

/**
 * The Classify an attack's Oracle calls: transforms, sends, resamples refused copies. `spend` is
 * called before every resample (the first attempt is already charged by the Oracle) and throws
 * when the budget is gone.
 */
export function adaptiveClassify(send: (x: Float64Array) => Promise<Answer>, shape: readonly [number, number, number],
  lo: number, hi: number, rng: Rng, o: TransformOptions, spend: () => void, stats: AdaptiveStats): Classify {
  let strength = 1;
  return async (x) => {
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) {
        if (attempt > o.maxResamples) {
          // The attack ends as if its budget were spent: it keeps its best point so far.
          stats.gaveUp++;
          throw new StopAttack('budget');
        }
        spend();
      }
      stats.sent++;
      const answer = await send(transformQuery(x, shape, lo, hi, strength, rng, o));
      if ('probs' in answer) {
        strength = Math.max(1, strength * STRENGTH_DOWN);
        return answer.probs;
      }
      stats.refused++;
      strength = Math.min(STRENGTH_MAX, strength * STRENGTH_UP);
    }
  };
}
