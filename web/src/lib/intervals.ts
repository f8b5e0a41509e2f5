// Candle intervals as the API serves them (Binance's named set), and their
// buckets in a time zone — the same rules as services/marketdata/query/intervals.py:
// m/h buckets are fixed lengths counted from local midnight and cut there;
// d, w (from Monday) and M are local calendar periods, multiples counted from
// 1970-01-01, the Monday 1970-01-05 and January 1970. Times are UTC seconds.

import { localDate, localMidnight, type LocalDate } from "./zones";

/** Offered as buttons; the rest of the API's named intervals sit in a "more" menu. */
export const MAIN_INTERVALS = ["1m", "5m", "15m", "1h", "4h", "1d", "1w"] as const;
export const MORE_INTERVALS = ["3m", "30m", "2h", "6h", "8h", "12h", "3d", "1M"] as const;
export const INTERVAL_NAMES: readonly string[] = [
  "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
];
export const DEFAULT_INTERVAL = "1m";

export type Interval = string;
export type IntervalUnit = "m" | "h" | "d" | "w" | "M";

export interface ParsedInterval {
  n: number;
  unit: IntervalUnit;
}

const DAY = 86_400;
/** Largest n per unit, as the API accepts. */
const UNIT_LIMITS: Record<IntervalUnit, number> = { m: 720, h: 12, d: 31, w: 52, M: 12 };

export function parseInterval(text: string): ParsedInterval | null {
  const match = /^([1-9][0-9]{0,3})([mhdwM])$/.exec(text);
  if (!match) return null;
  const n = Number(match[1]);
  const unit = match[2] as IntervalUnit;
  if (n > UNIT_LIMITS[unit]) return null;
  const fixed = fixedSeconds({ n, unit });
  if (fixed !== null && DAY % fixed !== 0) return null;
  return { n, unit };
}

export function isInterval(value: unknown): value is Interval {
  return typeof value === "string" && parseInterval(value) !== null;
}

function fixedSeconds({ n, unit }: ParsedInterval): number | null {
  if (unit === "m") return n * 60;
  if (unit === "h") return n * 3600;
  return null;
}

/** Nominal length in seconds (a month counts 30 days): for staleness thresholds and countdown granularity. */
export function intervalSeconds(interval: Interval): number {
  const parsed = parseInterval(interval) ?? { n: 1, unit: "m" };
  return fixedSeconds(parsed) ?? parsed.n * { d: DAY, w: 7 * DAY, M: 30 * DAY, m: 60, h: 3600 }[parsed.unit];
}

const EPOCH_MONDAY_DAY = 4; // 1970-01-05 is day 4 after 1970-01-01

function dayNumber(date: LocalDate): number {
  return Date.UTC(date.year, date.month - 1, date.day) / 1000 / DAY;
}

function fromDayNumber(day: number): LocalDate {
  const d = new Date(day * DAY * 1000);
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() };
}

/** Start (UTC seconds) of the bucket holding `time`. */
export function bucketStart(time: number, interval: Interval, zone: string): number {
  const parsed = parseInterval(interval) ?? { n: 1, unit: "m" as const };
  const fixed = fixedSeconds(parsed);
  const date = localDate(time, zone);
  if (fixed !== null) {
    const midnight = localMidnight(date, zone);
    return midnight + Math.floor((time - midnight) / fixed) * fixed;
  }
  return localMidnight(calendarBucket(date, parsed, 0), zone);
}

/** End (exclusive, UTC seconds) of the bucket starting at `start`. */
export function bucketEnd(start: number, interval: Interval, zone: string): number {
  const parsed = parseInterval(interval) ?? { n: 1, unit: "m" as const };
  const fixed = fixedSeconds(parsed);
  const date = localDate(start, zone);
  if (fixed !== null) {
    const nextMidnight = localMidnight(fromDayNumber(dayNumber(date) + 1), zone);
    return Math.min(start + fixed, nextMidnight);
  }
  return localMidnight(calendarBucket(date, parsed, 1), zone);
}

/** The local date starting the calendar bucket of `date`, `ahead` buckets later. */
function calendarBucket(date: LocalDate, { n, unit }: ParsedInterval, ahead: number): LocalDate {
  if (unit === "M") {
    const months = (date.year - 1970) * 12 + date.month - 1;
    const bucket = (Math.floor(months / n) + ahead) * n;
    return { year: 1970 + Math.floor(bucket / 12), month: (bucket % 12) + 1, day: 1 };
  }
  const span = unit === "w" ? 7 * n : n;
  const origin = unit === "w" ? EPOCH_MONDAY_DAY : 0;
  const day = dayNumber(date);
  return fromDayNumber(origin + (Math.floor((day - origin) / span) + ahead) * span);
}
