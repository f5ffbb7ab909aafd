/** The figures every bench program prints: one percentile, one number format. */

/** The q-quantile (0..1) of ascending `sorted`, nearest rank below; NaN for no values. */
export function percentile(sorted: readonly number[], q: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** A figure with `digits` decimals; '-' for a missing or undefined one (NaN). */
export function fmt(x: number | null | undefined, digits = 1): string {
  return x === null || x === undefined || Number.isNaN(x) ? '-' : x.toFixed(digits);
}
