/**
 * The few statistics the benchmark reports: medians of runs and latency
 * percentiles.
 *
 * @module
 */

/**
 * The median of `values` (the mean of the middle two for an even count).
 * Throws on an empty list.
 *
 * @example Usage
 * ```ts
 * import { median } from "./stats.ts";
 * console.log(median([3, 1, 2])); // 2
 * ```
 */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError("Cannot take a median: no values");
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * The `p`-th percentile (0-100) of `values` by the nearest-rank method.
 * Throws on an empty list.
 *
 * @example Usage
 * ```ts
 * import { percentile } from "./stats.ts";
 * console.log(percentile([1, 2, 3, 4], 50)); // 2
 * ```
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) throw new RangeError("Cannot take a percentile: no values");
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}
