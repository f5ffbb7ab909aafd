/**
 * HopSkipJump, Linf, untargeted (Chen, Jordan and Wainwright, IEEE S&P 2020): a decision-based
 * attack that sees only whether the top-1 answer is wrong. It keeps an adversarial point on the
 * decision boundary and walks it towards the clean image:
 *
 *   1. start from uniform noise that is already misclassified, and binary-search towards x0;
 *   2. at the boundary point, estimate the gradient direction of the decision from B random probes
 *      of size delta (Monte Carlo, with the mean vote subtracted as a baseline);
 *   3. step along sign(gradient) (the Linf steepest direction) by xi = dist / sqrt(t), halving xi
 *      until the point is adversarial again;
 *   4. binary-search back to the boundary, which shrinks the distance; repeat.
 *
 * The Linf variant is the one implemented: the binary search moves along Linf balls (clamping to
 * [x0 - r, x0 + r]), the update is the sign of the estimate, and distances are Linf. The attack
 * stops as soon as the boundary point is within eps (success) or the budget is spent; then the
 * closest boundary point seen is the one projected into the eps ball and verified. Parameters
 * follow the paper: theta = gamma / d^2, delta = d * theta * dist (0.1 of the range at t = 1),
 * B_t = B0 * sqrt(t) capped at 10 000.
 *
 * With eot = m > 1 every decision is the majority of m answers (for randomised targets).
 */
import { linfDistance, StopAttack, type Oracle } from './oracle.js';
import type { AttackResult } from './square.js';
import type { Rng } from './rng.js';

export type Decide = (x: Float64Array) => Promise<boolean>;

/** x clamped into the Linf ball of radius r around x0 (stays in the pixel range when both are in it). */
export function clampAround(x: ArrayLike<number>, x0: ArrayLike<number>, r: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = Math.min(Math.max(x[i], x0[i] - r), x0[i] + r);
  return out;
}

/**
 * Binary search on the Linf radius between x0 (assumed not adversarial) and an adversarial xAdv:
 * returns the adversarial side of the boundary, clampAround(xAdv, x0, radius), to `tolerance`.
 */
export async function boundarySearch(decide: Decide, x0: Float64Array, xAdv: Float64Array, tolerance: number):
Promise<{ x: Float64Array; radius: number }> {
  let low = 0;
  let high = linfDistance(xAdv, x0);
  while (high - low > tolerance) {
    const mid = (low + high) / 2;
    if (await decide(clampAround(xAdv, x0, mid))) high = mid;
    else low = mid;
  }
  return { x: clampAround(xAdv, x0, high), radius: high };
}

/**
 * Monte Carlo estimate of the direction in which the decision turns adversarial at boundary point
 * xb: mean over probes u (uniform in [-1, 1]^d, scaled to unit L2) of (phi(u) - mean phi) * u, where
 * phi = +1 for an adversarial answer and -1 otherwise. When every probe agrees the baseline would
 * cancel everything, so the plain mean of phi * u is used, as in the paper.
 */
export async function estimateGradient(decide: Decide, xb: Float64Array, delta: number, probes: number,
  rng: Rng, lo: number, hi: number): Promise<Float64Array> {
  const d = xb.length;
  const sumPhiU = new Float64Array(d);
  const sumU = new Float64Array(d);
  const u = new Float64Array(d);
  const probe = new Float64Array(d);
  let sumPhi = 0;
  for (let b = 0; b < probes; b++) {
    let norm = 0;
    for (let i = 0; i < d; i++) {
      u[i] = 2 * rng.uniform() - 1;
      norm += u[i] * u[i];
    }
    norm = Math.sqrt(norm) || 1;
    for (let i = 0; i < d; i++) {
      u[i] /= norm;
      probe[i] = Math.min(Math.max(xb[i] + delta * u[i], lo), hi);
    }
    const phi = (await decide(probe)) ? 1 : -1;
    sumPhi += phi;
    for (let i = 0; i < d; i++) {
      sumPhiU[i] += phi * u[i];
      sumU[i] += u[i];
    }
  }
  const meanPhi = sumPhi / probes;
  const baseline = Math.abs(meanPhi) === 1 ? 0 : meanPhi;
  const grad = new Float64Array(d);
  for (let i = 0; i < d; i++) grad[i] = (sumPhiU[i] - baseline * sumU[i]) / probes;
  return grad;
}

export interface HsjOptions {
  readonly eps: number;
  readonly lo: number;
  readonly hi: number;
  /** Answers per decision (majority vote); 1 for the plain attack. */
  readonly eot: number;
  readonly rng: Rng;
  /** B0: gradient probes at the first iteration (B_t = B0 * sqrt(t)). */
  readonly gradQueries: number;
  readonly maxGradQueries?: number;
  readonly gamma?: number;
  /** Uniform-noise draws tried for a misclassified starting point. */
  readonly initTries?: number;
  readonly maxStepHalvings?: number;
  /** Called after every iteration (diagnostics): iteration, boundary distance, whether a step was found. */
  readonly onIteration?: (t: number, dist: number, stepFound: boolean) => void;
}

export async function hopSkipJump(oracle: Oracle, x0: Float64Array, o: HsjOptions): Promise<AttackResult> {
  const d = x0.length;
  const theta = (o.gamma ?? 1) / (d * d);
  const decide: Decide = (x) => oracle.isAdversarial(x, o.eot);
  // The point handed to verification: the boundary point once it is within eps, else its projection.
  const finalPoint = (x: Float64Array | null) => (x ? clampAround(x, x0, o.eps) : Float64Array.from(x0));
  let best: Float64Array | null = null;
  let dist = Infinity;
  // The walk may step to a farther boundary point (noisy estimates); the closest one seen is kept.
  let closest: Float64Array | null = null;
  let closestDist = Infinity;
  const remember = () => {
    if (dist < closestDist) {
      closest = best;
      closestDist = dist;
    }
  };
  try {
    for (let k = 0; k < (o.initTries ?? 100) && !best; k++) {
      const noise = new Float64Array(d);
      for (let i = 0; i < d; i++) noise[i] = o.lo + (o.hi - o.lo) * o.rng.uniform();
      if (await decide(noise)) best = noise;
    }
    if (!best) return { x: finalPoint(null), stop: 'no-start', loss: Infinity };
    dist = linfDistance(best, x0);
    ({ x: best, radius: dist } = await boundarySearch(decide, x0, best, theta * dist));
    remember();

    for (let t = 1; dist > o.eps; t++) {
      const delta = t === 1 ? 0.1 * (o.hi - o.lo) : d * theta * dist;
      const probes = Math.min(Math.round(o.gradQueries * Math.sqrt(t)), o.maxGradQueries ?? 10000);
      const grad = await estimateGradient(decide, best, delta, probes, o.rng, o.lo, o.hi);
      const step = new Float64Array(d);
      let found = false;
      let xi = dist / Math.sqrt(t);
      for (let halving = 0; halving <= (o.maxStepHalvings ?? 10) && !found; halving++, xi /= 2) {
        for (let i = 0; i < d; i++) step[i] = Math.min(Math.max(best[i] + xi * Math.sign(grad[i]), o.lo), o.hi);
        found = await decide(step);
      }
      if (found) {
        const next = await boundarySearch(decide, x0, step, theta * linfDistance(step, x0));
        best = next.x;
        dist = next.radius;
        remember();
      } // else: no adversarial step along this estimate; the next iteration uses more probes
      o.onIteration?.(t, dist, found);
    }
  } catch (err) {
    if (err instanceof StopAttack) return { x: finalPoint(closest), stop: err.reason, loss: closestDist };
    throw err;
  }
  return { x: finalPoint(best), stop: 'success', loss: dist };
}
