/**
 * Square Attack, Linf, untargeted (Andriushchenko, Croce, Flammarion and Hein, ECCV 2020): a random
 * search that needs only the returned scores.
 *
 * - Start: vertical stripes, every column of every channel shifted by +eps or -eps.
 * - Each step: pick a square window whose side follows the p-schedule, give it a fresh +-eps per
 *   channel, and keep the candidate if it lowers the margin loss.
 * - Loss: margin on the returned probabilities, p[y] - max_{k != y} p[k]; below zero means the
 *   top-1 answer is wrong, which is when the attack stops.
 * - EOT (m > 1): every candidate is scored by the margin of the mean of m answers, so a randomised
 *   target is attacked through its expected output; each candidate then costs m queries.
 *
 * Everything happens in pixel space [lo, hi] (pixel * scale, before the model's mean/std): that is
 * where eps is defined and where the clipping to valid images belongs.
 */
import type { Oracle } from './oracle.js';
import { StopAttack } from './oracle.js';
import type { Rng } from './rng.js';

/** Iteration counts, out of 10 000, after which p halves (the paper's schedule for 10k iterations). */
const HALVING_POINTS_PER_10K = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000] as const;

/**
 * The fraction of pixels a window covers at `iteration` (0-based) of `iterations`: p_init halves at
 * fixed fractions of the run, so a smaller budget walks the same schedule faster.
 */
export function pSchedule(pInit: number, iteration: number, iterations: number): number {
  const k = Math.floor((iteration / iterations) * 10000);
  const halvings = HALVING_POINTS_PER_10K.filter((point) => k > point).length;
  return pInit / 2 ** halvings;
}

/** Side of the square window covering fraction p of an h x w plane: at least 1, below min(h, w). */
export function squareSide(p: number, h: number, w: number): number {
  const s = Math.round(Math.sqrt(p * h * w));
  return Math.max(1, Math.min(s, Math.min(h, w) - 1));
}

/** Margin loss: the true class's probability minus the best other class's; < 0 means misclassified. */
export function marginLoss(probs: ArrayLike<number>, label: number): number {
  let other = -Infinity;
  for (let k = 0; k < probs.length; k++) if (k !== label) other = Math.max(other, probs[k]);
  return probs[label] - other;
}

/** Project x onto the Linf ball of radius eps around x0, intersected with the pixel range [lo, hi]. */
export function projectLinf(x: ArrayLike<number>, x0: ArrayLike<number>, eps: number, lo: number, hi: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const low = Math.max(x0[i] - eps, lo);
    const high = Math.min(x0[i] + eps, hi);
    out[i] = Math.min(Math.max(x[i], low), high);
  }
  return out;
}

export interface SquareOptions {
  readonly shape: readonly [number, number, number];
  readonly eps: number;
  readonly lo: number;
  readonly hi: number;
  /** Queries per candidate (1: plain Square; m > 1: EOT over m answers). */
  readonly eot: number;
  readonly pInit: number;
  readonly rng: Rng;
}

export interface AttackResult {
  /** The attack's final image, inside the eps ball and pixel range; what verification queries. */
  readonly x: Float64Array;
  /** 'success': the attack's own criterion says adversarial; otherwise why it stopped. */
  readonly stop: 'success' | 'budget' | 'time' | 'no-start';
  /** The attack's own last loss (Square: margin of its best candidate; HopSkipJump: Linf distance). */
  readonly loss: number;
}

export async function squareAttack(oracle: Oracle, x0: Float64Array, label: number, o: SquareOptions): Promise<AttackResult> {
  const [c, h, w] = o.shape;
  const plane = h * w;
  const iterations = Math.max(1, Math.floor(oracle.remaining / o.eot));
  const clip = (v: number, i: number) => Math.min(Math.max(v, Math.max(x0[i] - o.eps, o.lo)), Math.min(x0[i] + o.eps, o.hi));

  let best = new Float64Array(x0.length);
  for (let ch = 0; ch < c; ch++) {
    for (let col = 0; col < w; col++) {
      const shift = o.rng.sign() * o.eps;
      for (let row = 0; row < h; row++) {
        const i = ch * plane + row * w + col;
        best[i] = clip(x0[i] + shift, i);
      }
    }
  }
  let bestLoss = Infinity;
  try {
    bestLoss = marginLoss(await oracle.meanProbs(best, o.eot), label);
    for (let it = 0; bestLoss >= 0; it++) {
      // A candidate scored on fewer than m answers would not be comparable: stop before it.
      if (oracle.remaining < o.eot) throw new StopAttack('budget');
      const s = squareSide(pSchedule(o.pInit, it, iterations), h, w);
      const top = o.rng.int(h - s + 1);
      const left = o.rng.int(w - s + 1);
      const candidate = Float64Array.from(best);
      // Redraw until the window actually changes: a repeat would spend a query on a known point.
      for (let attempt = 0; attempt < 100; attempt++) {
        let changed = 0;
        for (let ch = 0; ch < c; ch++) {
          const shift = o.rng.sign() * o.eps;
          for (let row = top; row < top + s; row++) {
            for (let col = left; col < left + s; col++) {
              const i = ch * plane + row * w + col;
              candidate[i] = clip(x0[i] + shift, i);
              changed += Math.abs(candidate[i] - best[i]);
            }
          }
        }
        if (changed > 1e-7) break;
      }
      const loss = marginLoss(await oracle.meanProbs(candidate, o.eot), label);
      if (loss < bestLoss) {
        best = candidate;
        bestLoss = loss;
      }
    }
  } catch (err) {
    if (err instanceof StopAttack) return { x: best, stop: err.reason, loss: bestLoss };
    throw err;
  }
  return { x: best, stop: 'success', loss: bestLoss };
}
