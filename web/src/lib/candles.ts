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
import { bucketEnd, bucketStart, type Interval } from "./intervals";

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
  /** End of the bar (exclusive), UTC seconds. */
  closeTime: number;
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
    trades: api.trades,
    vwap: api.vwap,
    closeTime: api.closeTime ? parseTime(api.closeTime) : parseTime(api.time) + 60,
    sma10: api.sma10 ?? null,
  };
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
 * The bars of one symbol at one interval and time zone, plus the parts of the
 * newest (open) bar: its 1-minute candles (for bars above a few hours, its
 * closed hours as 1h candles and the minutes of the current hour). A live event carries the full committed
 * 1-minute candle of its tick, so it *replaces* that minute's contribution to
 * the open bar; keeping the minutes makes folding idempotent (no double counting).
 */
export interface CandleBook {
  readonly interval: Interval;
  readonly zone: string;
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

function ascending(candles: readonly Candle[]): Candle[] {
  const byTime = new Map(candles.map((candle) => [candle.time, candle]));
  return [...byTime.values()].sort((a, b) => a.time - b.time);
}

/**
 * Builds a book from REST history (any order; the newest entry per time wins)
 * and the 1-minute candles from the start of the newest history bar onwards
 * (needed above 1m to know each minute's contribution to the open bar; for 1m
 * the newest bar is its own minute and `recentMinutes` may be empty).
 */
export function createBook(
  interval: Interval,
  zone: string,
  history: readonly Candle[],
  recentMinutes: readonly Candle[] = [],
): CandleBook {
  const candles = ascending(history);
  const last = candles.at(-1);
  let book: CandleBook = {
    interval,
    zone,
    candles,
    minutes: last && interval === "1m" ? new Map([[last.time, last]]) : new Map(),
  };
  for (const minute of ascending(recentMinutes)) {
    book = last && inBar(last, minute) && book.minutes.size === 0
      ? seedOpenBar(book, minute)
      : applyLive(book, minute).book;
  }
  return book;
}

/**
 * An older page of history merged in front of the book: only candles older than
 * the book's first one are taken (the book's own, possibly live-updated, bars win).
 */
export function mergeOlder(book: CandleBook, older: readonly Candle[]): CandleBook {
  const first = book.candles[0];
  const taken = ascending(older).filter((candle) => first === undefined || candle.time < first.time);
  if (taken.length === 0) return book;
  return { ...book, candles: [...taken, ...book.candles] };
}

function coarseCovers(part: Candle, minute: Candle): boolean {
  return part.closeTime - part.time > 60 && part.time !== minute.time && inBar(part, minute);
}

function inBar(bar: Candle, minute: Candle): boolean {
  return minute.time >= bar.time && minute.time < bar.closeTime;
}

/** The first known minute of the newest history bar replaces the REST aggregate of that bar. */
function seedOpenBar(book: CandleBook, minute: Candle): CandleBook {
  const minutes = new Map([[minute.time, minute]]);
  const last = book.candles.at(-1)!;
  const bar = fold(last.time, last.closeTime, minutes);
  return { ...book, minutes, candles: withLiveSma([...book.candles.slice(0, -1), bar]) };
}

/** Merges one committed 1-minute candle (from /realtime/ticks) into the book. */
export function applyLive(book: CandleBook, minute: Candle): LiveResult {
  const last = book.candles.at(-1);

  if (last && minute.time < last.time) return { book, change: "stale" };

  if (last && inBar(last, minute)) {
    // Without the open bar's minutes, replacing one could drop the others: refetch instead.
    if (book.minutes.size === 0) return { book, change: "stale" };
    // A late minute inside an hour-long part (seeded for long bars) is already counted there.
    if ([...book.minutes.values()].some((part) => coarseCovers(part, minute))) return { book, change: "stale" };
    const known = book.minutes.get(minute.time);
    // Trade counts of a minute only grow from one commit to the next.
    if (known && known.trades > minute.trades) return { book, change: "superseded" };
    const minutes = new Map(book.minutes).set(minute.time, minute);
    const candles = withLiveSma([...book.candles.slice(0, -1), fold(last.time, last.closeTime, minutes)]);
    return { book: { ...book, minutes, candles }, change: "update" };
  }

  const start = bucketStart(minute.time, book.interval, book.zone);
  const minutes = new Map([[minute.time, minute]]);
  const bar = fold(start, bucketEnd(start, book.interval, book.zone), minutes);
  const candles = withLiveSma([...book.candles, bar]);
  return { book: { ...book, minutes, candles }, change: "append" };
}

/** Aggregates the 1-minute candles of one bar (keys are minute starts). */
function fold(time: number, closeTime: number, minutes: ReadonlyMap<number, Candle>): Candle {
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
    closeTime,
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
