/** Toy classifiers with known answers, for attack tests that need no service. */
import type { Classify } from '../oracle.js';

/**
 * Two classes from a linear score s(x) = w.x + b: class 1 when s > 0, else class 0, with
 * probabilities softmax([0, s * sharpness]). For x0 of class 0, the smallest Linf perturbation
 * that crosses is -s(x0) / ||w||_1 when the pixel range does not bind.
 */
export function linear(w: Float64Array, b: number, sharpness = 10): Classify {
  return async (x) => {
    let s = b;
    for (let i = 0; i < x.length; i++) s += w[i] * x[i];
    const p1 = 1 / (1 + Math.exp(-s * sharpness));
    return Float64Array.from([1 - p1, p1]);
  };
}

export function linearScore(w: Float64Array, b: number, x: Float64Array): number {
  let s = b;
  for (let i = 0; i < x.length; i++) s += w[i] * x[i];
  return s;
}
