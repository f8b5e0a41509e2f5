// "Ignore outliers" autoscale: the price range of the visible bars without bad
// prints, by Tukey's far-out fences over all highs and lows (values beyond
// 3 interquartile ranges from the quartiles are left out). Without outliers
// this is exactly the full range, so the option never clips ordinary bars.

export interface PriceBounds {
  minValue: number;
  maxValue: number;
}

const FENCE = 3;

function quantile(sorted: readonly number[], q: number): number {
  const position = (sorted.length - 1) * q;
  const below = Math.floor(position);
  const above = Math.min(below + 1, sorted.length - 1);
  return sorted[below]! + (sorted[above]! - sorted[below]!) * (position - below);
}

export function robustBounds(bars: readonly { high: number; low: number }[]): PriceBounds | null {
  if (bars.length === 0) return null;
  const values = bars.flatMap((bar) => [bar.low, bar.high]).sort((a, b) => a - b);
  const q1 = quantile(values, 0.25);
  const q3 = quantile(values, 0.75);
  const spread = q3 - q1;
  const inside = values.filter((value) => value >= q1 - FENCE * spread && value <= q3 + FENCE * spread);
  return { minValue: inside[0]!, maxValue: inside.at(-1)! };
}
