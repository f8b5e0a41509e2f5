// Pure candle logic: REST/SSE JSON → candles, candles → chart points, and the
// "book" that merges live 1-minute candles into the bars of the chosen interval.
// Nothing here touches the DOM, the network or the chart, so it is unit-tested.
//
// Times are UTC seconds throughout (what lightweight-charts takes); converting
// to the browser's zone is a display concern, done by the chart's formatters
// (see lib/format.ts).

import type {
  CandlestickData,
  HistogramData,
  LineData,
  UTCTimestamp,
  WhitespaceData,
} from "lightweight-charts";
import type { ApiCandle } from "./api-types";

const MINUTE = 60;
const SMA_LENGTH = 10;

export interface Candle {
  /** Start of the bar, UTC seconds. */
  time: number;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
  trades: number;
  vwap: number;
  /** Mean close of this bar and the 9 before it; null while fewer than 10 bars exist. */
  sma10: number | null;
}

/** RFC 3339 → UTC seconds. Throws on a malformed timestamp rather than plotting NaN. */
export function parseTime(rfc3339: string): number {
  const millis = Date.parse(rfc3339);
  if (Number.isNaN(millis)) throw new Error(`invalid timestamp ${JSON.stringify(rfc3339)}`);
  return Math.floor(millis / 1000);
}

export function parseCandle(api: ApiCandle): Candle {
  return {
    time: parseTime(api.time),
    open: api.open,
    high: api.high,
    low: api.low,
    close: api.close,
    volume: api.volume,
    trades: Number(api.trades),
    vwap: api.vwap,
    sma10: api.sma10 ?? null,
  };
}

export function bucketStart(time: number, intervalSeconds: number): number {
  return Math.floor(time / intervalSeconds) * intervalSeconds;
}

// ---------------------------------------------------------------- chart points

export interface DirectionColors {
  up: string;
  down: string;
}

const utc = (seconds: number) => seconds as UTCTimestamp;

export function isUp(candle: Candle): boolean {
  return candle.close >= candle.open;
}

export function toBar(candle: Candle): CandlestickData<UTCTimestamp> {
  const { open, high, low, close } = candle;
  return { time: utc(candle.time), open, high, low, close };
}

export function toVolumePoint(candle: Candle, colors: DirectionColors): HistogramData<UTCTimestamp> {
  return {
    time: utc(candle.time),
    value: candle.volume,
    color: isUp(candle) ? colors.up : colors.down,
  };
}

/**
 * A bar without an SMA10 becomes a whitespace point (time only): the line has a
 * gap there instead of dropping to zero.
 */
export function toSmaPoint(candle: Candle): LineData<UTCTimestamp> | WhitespaceData<UTCTimestamp> {
  return candle.sma10 === null
    ? { time: utc(candle.time) }
    : { time: utc(candle.time), value: candle.sma10 };
}

/**
 * The candles a chart that last drew `lastDrawnTime` still has to draw with
 * series.update(): the one it drew last (it may have changed) and every newer one.
 */
export function candlesSince(candles: readonly Candle[], lastDrawnTime: number): readonly Candle[] {
  let index = candles.length;
  while (index > 0 && candles[index - 1]!.time >= lastDrawnTime) index -= 1;
  return candles.slice(index);
}

/** The candle starting at `time` (binary search over ascending candles), or null. */
export function findCandle(candles: readonly Candle[], time: number): Candle | null {
  let low = 0;
  let high = candles.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const candle = candles[middle]!;
    if (candle.time === time) return candle;
    if (candle.time < time) low = middle + 1;
    else high = middle - 1;
  }
  return null;
}

// ---------------------------------------------------------------- live merging

/**
 * The bars of one symbol at one interval, plus the 1-minute candles of the
 * newest (open) bar. A live event carries the full committed 1-minute candle
 * of its tick, so it *replaces* that minute's contribution to the open bar;
 * keeping the minutes makes folding idempotent (no double counting).
 */
export interface CandleBook {
  readonly intervalSeconds: number;
  readonly candles: readonly Candle[];
  /** 1-minute candles of the newest bar, by minute start. */
  readonly minutes: ReadonlyMap<number, Candle>;
}

/**
 * - `update`: the newest bar changed; `append`: a newer bar was added;
 * - `superseded`: the book already holds a newer state of that minute (fewer trades);
 * - `stale`: only a history refetch can merge it (the minute belongs to an older, closed bar,
 *   or the open bar's minutes are unknown).
 */
export type LiveChange = "update" | "append" | "superseded" | "stale";

export interface LiveResult {
  book: CandleBook;
  change: LiveChange;
}

/**
 * Builds a book from REST history (any order; the newest entry per time wins)
 * and the 1-minute candles from the start of the newest history bar onwards
 * (needed above 1m to know each minute's contribution to the open bar; for 1m
 * the newest bar is its own minute and `recentMinutes` may be empty).
 */
export function createBook(
  intervalSeconds: number,
  history: readonly Candle[],
  recentMinutes: readonly Candle[] = [],
): CandleBook {
  const byTime = new Map(history.map((candle) => [candle.time, candle]));
  const candles = [...byTime.values()].sort((a, b) => a.time - b.time);
  const last = candles.at(-1);
  let book: CandleBook = {
    intervalSeconds,
    candles,
    minutes: last && intervalSeconds === MINUTE ? new Map([[last.time, last]]) : new Map(),
  };
  for (const minute of [...recentMinutes].sort((a, b) => a.time - b.time)) {
    book = last && bucketStart(minute.time, intervalSeconds) === last.time && book.minutes.size === 0
      ? seedOpenBar(book, minute)
      : applyLive(book, minute).book;
  }
  return book;
}

/** The first known minute of the newest history bar replaces the REST aggregate of that bar. */
function seedOpenBar(book: CandleBook, minute: Candle): CandleBook {
  const minutes = new Map([[minute.time, minute]]);
  const bar = fold(book.candles.at(-1)!.time, minutes);
  return { ...book, minutes, candles: withLiveSma([...book.candles.slice(0, -1), bar]) };
}

/** Merges one committed 1-minute candle (from /realtime/ticks) into the book. */
export function applyLive(book: CandleBook, minute: Candle): LiveResult {
  const bucket = bucketStart(minute.time, book.intervalSeconds);
  const last = book.candles.at(-1);

  if (last && bucket < last.time) return { book, change: "stale" };

  if (last && bucket === last.time) {
    // Without the open bar's minutes, replacing one could drop the others: refetch instead.
    if (book.minutes.size === 0) return { book, change: "stale" };
    const known = book.minutes.get(minute.time);
    // Trade counts of a minute only grow from one commit to the next.
    if (known && known.trades > minute.trades) return { book, change: "superseded" };
    const minutes = new Map(book.minutes).set(minute.time, minute);
    const candles = withLiveSma([...book.candles.slice(0, -1), fold(bucket, minutes)]);
    return { book: { ...book, minutes, candles }, change: "update" };
  }

  const minutes = new Map([[minute.time, minute]]);
  const candles = withLiveSma([...book.candles, fold(bucket, minutes)]);
  return { book: { ...book, minutes, candles }, change: "append" };
}

/** Aggregates the 1-minute candles of one bar (keys are minute starts). */
function fold(time: number, minutes: ReadonlyMap<number, Candle>): Candle {
  const ordered = [...minutes.values()].sort((a, b) => a.time - b.time);
  const first = ordered[0]!;
  const last = ordered.at(-1)!;
  let high = -Infinity;
  let low = Infinity;
  let volume = 0;
  let trades = 0;
  let notional = 0;
  for (const m of ordered) {
    high = Math.max(high, m.high);
    low = Math.min(low, m.low);
    volume += m.volume;
    trades += m.trades;
    notional += m.vwap * m.volume;
  }
  return {
    time,
    open: first.open,
    high,
    low,
    close: last.close,
    volume,
    trades,
    vwap: volume > 0 ? notional / volume : last.vwap,
    sma10: null,
  };
}

/**
 * Recomputes the SMA10 of the newest bar client-side (live events do not carry
 * it): the mean of the last 10 closes at this interval, as the server defines
 * it, and null while fewer than 10 bars are loaded. Older bars keep theirs.
 */
function withLiveSma(candles: Candle[]): Candle[] {
  const window = candles.slice(-SMA_LENGTH);
  const sma10 = window.length === SMA_LENGTH
    ? window.reduce((sum, c) => sum + c.close, 0) / SMA_LENGTH
    : null;
  candles[candles.length - 1] = { ...candles.at(-1)!, sma10 };
  return candles;
}

// ---------------------------------------------------------------- header

export interface Summary {
  /** Close of the newest bar. */
  last: number | null;
  /** Close of the last visible bar minus open of the first visible bar. */
  change: number | null;
  changePercent: number | null;
  /** VWAP and volume of the newest (current) bar. */
  vwap: number | null;
  volume: number | null;
}

/** Logical index range of the chart's visible bars (may reach past both ends). */
export interface VisibleRange {
  from: number;
  to: number;
}

export function summarize(candles: readonly Candle[], visible: VisibleRange | null): Summary {
  const current = candles.at(-1);
  if (!current) return { last: null, change: null, changePercent: null, vwap: null, volume: null };

  const clamp = (index: number) => Math.min(Math.max(index, 0), candles.length - 1);
  const firstIndex = clamp(visible ? Math.ceil(visible.from) : 0);
  const lastIndex = clamp(visible ? Math.floor(visible.to) : candles.length - 1);
  const first = candles[Math.min(firstIndex, lastIndex)]!;
  const change = candles[lastIndex]!.close - first.open;
  return {
    last: current.close,
    change,
    changePercent: first.open !== 0 ? (change / first.open) * 100 : null,
    vwap: current.vwap,
    volume: current.volume,
  };
}
