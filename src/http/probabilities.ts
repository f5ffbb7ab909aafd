/**
 * What both APIs do with class probabilities before they leave the service: the finite check, and
 * the top-k order (/classify's predictions, the v2 classification extension).
 */

/**
 * The last check before probabilities leave the service. Inputs are range-checked, so members see
 * only values pre-processing could produce; should a member still return NaN or Infinity, the
 * request fails as a 500 (logged) rather than answering `null`, "NaN" or a serialiser's error.
 */
export function checkProbabilities(probs: Float32Array[]): Float32Array[] {
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i];
    for (let k = 0; k < p.length; k++) {
      if (!Number.isFinite(p[k])) throw new Error(`image ${i}: class ${k} has probability ${p[k]}; a member returned non-finite logits`);
    }
  }
  return probs;
}

/** Class indices of the k most probable classes, most probable first; ties go to the lower index. */
export function topClasses(probs: Float32Array, k: number): number[] {
  return Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b).slice(0, k);
}
