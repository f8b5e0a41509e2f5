/** Candle intervals the dashboard offers, with their length in seconds. */
export const INTERVALS = {
  "1m": 60,
  "5m": 5 * 60,
  "15m": 15 * 60,
  "1h": 60 * 60,
} as const;

export type Interval = keyof typeof INTERVALS;

export const INTERVAL_NAMES = Object.keys(INTERVALS) as Interval[];

export function isInterval(value: unknown): value is Interval {
  return typeof value === "string" && Object.hasOwn(INTERVALS, value);
}

export function intervalSeconds(interval: Interval): number {
  return INTERVALS[interval];
}
