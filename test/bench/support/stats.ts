// Small statistics for benchmarks: medians over rounds, percentiles over samples.

export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Nearest-rank percentile (p in 0..100) of samples sorted ascending. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function sortedCopy(xs: readonly number[]): Float64Array {
  return Float64Array.from(xs).sort();
}

export function max(xs: readonly number[]): number {
  return xs.reduce((a, b) => (Number.isFinite(b) && b > a ? b : a), -Infinity);
}
