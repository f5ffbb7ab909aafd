/** The top-k order of class probabilities (/classify's predictions, the v2 classification extension). */

/** Class indices of the k most probable classes, most probable first; ties go to the lower index. */
export function topClasses(probs: Float32Array, k: number): number[] {
  return Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b).slice(0, k);
}
