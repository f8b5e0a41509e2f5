import { describe, expect, it } from "vitest";
import type { ApiCandle } from "./api-types";
import { bucketStart } from "./intervals";
import {
  applyLive,
  type Candle,
  type CandleBook,
  candlesSince,
  createBook,
  findCandle,
  mergeOlder,
  parseCandle,
  parseTime,
  toBar,
  toSmaPoint,
  toVolumePoint,
} from "./candles";

const T0 = parseTime("2026-11-24T05:00:00Z");
const COLORS = { up: "green", down: "red" };

function apiCandle(overrides: Partial<ApiCandle> = {}): ApiCandle {
  return {
    symbol: "BTCUSDT",
    time: "2026-11-24T05:00:00Z",
    open: 43000.5,
    high: 43010,
    low: 42990.1,
    close: 43005,
    volume: 12.5,
    trades: 42,
    vwap: 43001.2,
    sma10: 43002.7,
    quoteVolume: 537516.25,
    takerBuyVolume: 5,
    takerBuyQuoteVolume: 215002.5,
    closeTime: "2026-11-24T05:01:00Z",
    closed: true,
    ...overrides,
  };
}

/** A 1-minute candle starting `minute` minutes after T0. */
function minute(minuteIndex: number, values: Partial<Candle> = {}): Candle {
  const time = values.time ?? T0 + minuteIndex * 60;
  return {
    time,
    closeTime: time + 60,
    open: 100,
    high: 100,
    low: 100,
    close: 100,
    volume: 1,
    trades: 1,
    vwap: 100,
    sma10: null,
    ...values,
  };
}

/** A history bar of `seconds` starting at `time`. */
function bar(time: number, seconds: number, values: Partial<Candle> = {}): Candle {
  return minute(0, { time, closeTime: time + seconds, ...values });
}

/** `count` consecutive bars of `seconds` each, closes 1, 2, 3, ... */
function bars(count: number, seconds: number, start = T0): Candle[] {
  return Array.from({ length: count }, (_, i) =>
    bar(start + i * seconds, seconds, { open: i + 1, high: i + 1, low: i + 1, close: i + 1 }),
  );
}

const book1m = (history: Candle[]) => createBook("1m", "UTC", history);

describe("REST candles → chart data", () => {
  it("parses the protobuf JSON candle (RFC 3339 time, int64 string)", () => {
    expect(parseCandle(apiCandle())).toEqual({
      time: T0,
      open: 43000.5,
      high: 43010,
      low: 42990.1,
      close: 43005,
      volume: 12.5,
      trades: 42,
      vwap: 43001.2,
      closeTime: T0 + 60,
      sma10: 43002.7,
    });
    expect(T0).toBe(Date.UTC(2026, 10, 24, 5) / 1000);
  });

  it("accepts fractional seconds and offsets, rejects garbage", () => {
    expect(parseTime("2026-11-24T05:00:00.999Z")).toBe(T0);
    expect(parseTime("2026-11-24T06:00:00+01:00")).toBe(T0);
    expect(() => parseTime("yesterday")).toThrow(/invalid timestamp/);
  });

  it("maps to candlestick bars in UTC seconds", () => {
    expect(toBar(parseCandle(apiCandle()))).toEqual({
      time: T0,
      open: 43000.5,
      high: 43010,
      low: 42990.1,
      close: 43005,
    });
  });

  it("colours volume by candle direction", () => {
    const up = parseCandle(apiCandle({ open: 1, close: 2 }));
    const down = parseCandle(apiCandle({ open: 2, close: 1 }));
    const flat = parseCandle(apiCandle({ open: 2, close: 2 }));
    expect(toVolumePoint(up, COLORS)).toEqual({ time: T0, value: 12.5, color: "green" });
    expect(toVolumePoint(down, COLORS).color).toBe("red");
    expect(toVolumePoint(flat, COLORS).color).toBe("green");
  });

  it("turns an absent SMA10 into a whitespace point, never a zero", () => {
    const { sma10: _, ...withoutSma } = apiCandle();
    const candle = parseCandle(withoutSma);
    expect(candle.sma10).toBeNull();
    expect(toSmaPoint(candle)).toEqual({ time: T0 });
    expect(toSmaPoint(parseCandle(apiCandle()))).toEqual({ time: T0, value: 43002.7 });
  });
});

describe("createBook", () => {
  it("sorts history and keeps one bar per time", () => {
    const a = minute(0);
    const b = minute(1);
    const bAgain = minute(1, { close: 101 });
    const book = book1m([b, a, bAgain]);
    expect(book.candles.map((c) => [c.time, c.close])).toEqual([
      [T0, 100],
      [T0 + 60, 101],
    ]);
    expect([...book.minutes.keys()]).toEqual([T0 + 60]);
  });

  it("rebuilds the open bar above 1m from its minutes", () => {
    const history = [bar(T0 - 300, 300), bar(T0, 300, { open: 1, close: 2, volume: 3, trades: 3 })];
    const book = createBook("5m", "UTC", history, [
      minute(0, { open: 1, high: 2, low: 1, close: 2, volume: 2, trades: 2 }),
      minute(1, { open: 2, high: 9, low: 2, close: 3, volume: 2, trades: 2 }),
    ]);
    expect(book.candles).toHaveLength(2);
    expect(book.candles[1]).toMatchObject({ time: T0, open: 1, high: 9, low: 1, close: 3, volume: 4, trades: 4 });
    expect([...book.minutes.keys()]).toEqual([T0, T0 + 60]);
  });

  it("appends a bar for minutes past the newest history bar", () => {
    const book = createBook("5m", "UTC", [bar(T0, 300)], [minute(0), minute(5, { close: 7 })]);
    expect(book.candles.map((c) => c.time)).toEqual([T0, T0 + 300]);
    expect(book.candles[1]!.close).toBe(7);
  });
});

describe("applyLive at 1m", () => {
  const history = [minute(0), minute(1, { open: 100, high: 105, low: 99, close: 104, volume: 2, trades: 2 })];

  it("merges an update into the current candle: open kept, the rest replaced", () => {
    const live = minute(1, { open: 100, high: 110, low: 95, close: 108, volume: 5, trades: 6, vwap: 103 });
    const { book, change } = applyLive(book1m(history), live);
    expect(change).toBe("update");
    expect(book.candles).toHaveLength(2);
    expect(book.candles[1]).toMatchObject({ time: T0 + 60, open: 100, high: 110, low: 95, close: 108, volume: 5 });
  });

  it("does not double count when the same committed candle arrives twice", () => {
    const live = minute(1, { close: 108, volume: 5, trades: 6 });
    const once = applyLive(book1m(history), live).book;
    const twice = applyLive(once, live).book;
    expect(twice.candles).toEqual(once.candles);
  });

  it("appends a bar for a new minute", () => {
    const { book, change } = applyLive(book1m(history), minute(2, { open: 104, close: 106 }));
    expect(change).toBe("append");
    expect(book.candles.map((c) => c.time)).toEqual([T0, T0 + 60, T0 + 120]);
    expect(book.candles[2]).toMatchObject({ open: 104, close: 106 });
  });

  it("leaves the series intact for an update older than the current candle", () => {
    const before = book1m(history);
    const { book, change } = applyLive(before, minute(0, { close: 1, trades: 99 }));
    expect(change).toBe("stale");
    expect(book).toBe(before);
  });

  it("ignores an older commit of the current minute arriving late", () => {
    const newer = applyLive(book1m(history), minute(1, { close: 108, trades: 6 })).book;
    const { book, change } = applyLive(newer, minute(1, { close: 103, trades: 3 }));
    expect(change).toBe("superseded");
    expect(book.candles[1]!.close).toBe(108);
  });

  it("starts an empty book with the first live candle", () => {
    const { book, change } = applyLive(book1m([]), minute(3));
    expect(change).toBe("append");
    expect(book.candles.map((c) => c.time)).toEqual([T0 + 180]);
  });
});

describe("applyLive above 1m: folding minutes into the enclosing bar", () => {
  it("folds 1m candles into the 5m bar, replacing each minute's contribution", () => {
    let book = createBook("5m", "UTC", [], []);
    book = applyLive(book, minute(0, { open: 10, high: 12, low: 9, close: 11, volume: 1, trades: 1, vwap: 10 })).book;
    book = applyLive(book, minute(1, { open: 11, high: 15, low: 11, close: 14, volume: 1, trades: 1, vwap: 14 })).book;
    // The same minute again, now committed with more trades: it replaces, not adds.
    book = applyLive(book, minute(1, { open: 11, high: 16, low: 8, close: 13, volume: 3, trades: 4, vwap: 12 })).book;

    expect(book.candles).toHaveLength(1);
    expect(book.candles[0]).toEqual({
      time: T0,
      open: 10,
      high: 16,
      low: 8,
      close: 13,
      volume: 4,
      trades: 5,
      vwap: (10 * 1 + 12 * 3) / 4,
      closeTime: T0 + 300,
      sma10: null,
    });
  });

  it("keeps the open of the earliest minute when minutes arrive out of order", () => {
    let book = createBook("15m", "UTC", [], []);
    book = applyLive(book, minute(7, { open: 50, close: 55 })).book;
    book = applyLive(book, minute(3, { open: 40, close: 45 })).book;
    expect(book.candles).toHaveLength(1);
    expect(book.candles[0]).toMatchObject({ time: T0, open: 40, close: 55, volume: 2 });
  });

  it("starts a new bar when a minute crosses into the next bucket", () => {
    let book = createBook("5m", "UTC", [], []);
    book = applyLive(book, minute(4, { close: 1 })).book;
    const { book: next, change } = applyLive(book, minute(5, { open: 2, close: 3 }));
    expect(change).toBe("append");
    expect(next.candles.map((c) => [c.time, c.open, c.close])).toEqual([
      [T0, 100, 1],
      [T0 + 300, 2, 3],
    ]);
    expect([...next.minutes.keys()]).toEqual([T0 + 300]);
  });

  it("puts minutes into 1h buckets aligned to the UTC hour", () => {
    expect(bucketStart(T0 + 59 * 60 + 59, "1h", "UTC")).toBe(T0);
    expect(bucketStart(T0 + 3600, "1h", "UTC")).toBe(T0 + 3600);
    let book = createBook("1h", "UTC", [], []);
    book = applyLive(book, minute(0, { high: 101, volume: 2, trades: 2 })).book;
    book = applyLive(book, minute(59, { low: 97, volume: 3, trades: 3 })).book;
    expect(book.candles).toHaveLength(1);
    expect(book.candles[0]).toMatchObject({ time: T0, high: 101, low: 97, volume: 5, trades: 5 });
  });

  it("asks for a refetch rather than guess when the open bar's minutes are unknown", () => {
    const book = createBook("5m", "UTC", [bar(T0, 300, { volume: 5 })], []);
    const result = applyLive(book, minute(1));
    expect(result.change).toBe("stale");
    expect(result.book).toBe(book);
  });

  it("ignores a minute of an older, closed bucket", () => {
    const book = createBook("5m", "UTC", [bar(T0 - 300, 300), bar(T0, 300)], [minute(0)]);
    const result = applyLive(book, minute(-1, { close: 1 }));
    expect(result.change).toBe("stale");
    expect(result.book).toBe(book);
  });
});

describe("live SMA10", () => {
  it("stays null below 10 bars", () => {
    const { book } = applyLive(book1m(bars(8, 60)), minute(8, { close: 50 }));
    expect(book.candles).toHaveLength(9);
    expect(book.candles.at(-1)!.sma10).toBeNull();
  });

  it("is the mean of the last 10 closes once 10 bars exist", () => {
    const history = bars(12, 60); // closes 1..12
    const { book } = applyLive(book1m(history), minute(12, { close: 13 }));
    expect(book.candles.at(-1)!.sma10).toBeCloseTo((4 + 5 + 6 + 7 + 8 + 9 + 10 + 11 + 12 + 13) / 10);
    // Older bars keep the server's values.
    expect(book.candles.at(-2)!.sma10).toBe(history.at(-1)!.sma10);
  });
});

describe("candlesSince", () => {
  const candles = bars(4, 60);
  it("returns the last drawn candle and everything newer", () => {
    expect(candlesSince(candles, T0 + 120).map((c) => c.time)).toEqual([T0 + 120, T0 + 180]);
    expect(candlesSince(candles, T0 + 180)).toHaveLength(1);
    expect(candlesSince(candles, T0 + 240)).toHaveLength(0);
  });
});

describe("findCandle", () => {
  const candles = bars(5, 60);
  it("finds a candle by its start time", () => {
    expect(findCandle(candles, T0)?.close).toBe(1);
    expect(findCandle(candles, T0 + 240)?.close).toBe(5);
    expect(findCandle(candles, T0 + 30)).toBeNull();
    expect(findCandle([], T0)).toBeNull();
  });
});

describe("mergeOlder: an older page in front of the book", () => {
  const newest = bars(5, 60, T0); // T0 .. T0+240
  const book = book1m(newest);

  it("prepends the older candles in time order", () => {
    const older = bars(3, 60, T0 - 180).reverse();
    const merged = mergeOlder(book, older);
    expect(merged.candles.map((c) => c.time)).toEqual([-180, -120, -60, 0, 60, 120, 180, 240].map((d) => T0 + d));
    expect(merged.minutes).toBe(book.minutes);
  });

  it("never duplicates or overwrites a bar the book already has (pages may overlap)", () => {
    const live = applyLive(book, minute(4, { close: 999, trades: 9 })).book;
    const overlapping = [...bars(2, 60, T0 - 120), bar(T0, 60, { close: -1 }), bar(T0 + 240, 60, { close: -2 })];
    const merged = mergeOlder(live, overlapping);
    expect(merged.candles.map((c) => c.time)).toEqual([-120, -60, 0, 60, 120, 180, 240].map((d) => T0 + d));
    expect(merged.candles[2]!.close).toBe(1);
    expect(merged.candles.at(-1)!.close).toBe(999);
  });

  it("returns the same book for an empty or fully overlapping page", () => {
    expect(mergeOlder(book, [])).toBe(book);
    expect(mergeOlder(book, bars(2, 60, T0))).toBe(book);
  });

  it("keeps live merging working at the newest bar after merging", () => {
    let merged: CandleBook = mergeOlder(book, bars(3, 60, T0 - 180));
    merged = applyLive(merged, minute(5, { close: 42 })).book;
    expect(merged.candles).toHaveLength(9);
    expect(merged.candles.at(-1)).toMatchObject({ time: T0 + 300, close: 42 });
  });
});

describe("live bars in a time zone", () => {
  it("starts a new 4h bar at the zone's 4-hour boundary, not UTC's", () => {
    // Kolkata is UTC+05:30: local 08:00 is 02:30 UTC.
    const kolkata = Date.UTC(2026, 10, 24, 2, 30) / 1000;
    let book = createBook("4h", "Asia/Kolkata", [], []);
    book = applyLive(book, minute(0, { time: kolkata + 60 })).book;
    expect(book.candles[0]).toMatchObject({ time: kolkata, closeTime: kolkata + 4 * 3600 });
  });

  it("uses the open bar's closeTime from the API to decide where a minute belongs", () => {
    const berlinDay = Date.UTC(2026, 9, 24, 22) / 1000; // 25 Oct 2026 00:00 in Berlin (CEST)
    const history = [bar(berlinDay, 25 * 3600)]; // the DST switch day lasts 25 hours
    const book = createBook("1d", "Europe/Berlin", history, [minute(0, { time: berlinDay })]);
    const late = applyLive(book, minute(0, { time: berlinDay + 24 * 3600 + 60 }));
    expect(late.change).toBe("update");
    const next = applyLive(book, minute(0, { time: berlinDay + 25 * 3600 }));
    expect(next.change).toBe("append");
    expect(next.book.candles.at(-1)!.time).toBe(berlinDay + 25 * 3600);
  });

  it("treats a late minute inside a seeded hour of a long bar as stale, not as an addition", () => {
    const day = Date.UTC(2026, 10, 24) / 1000;
    const hour = (h: number) => bar(day + h * 3600, 3600, { volume: 10, trades: 10 });
    const book = createBook("1d", "UTC", [bar(day, 86_400)], [hour(0), hour(1), minute(0, { time: day + 2 * 3600 })]);
    expect(book.candles[0]).toMatchObject({ volume: 21, trades: 21 });
    expect(applyLive(book, minute(0, { time: day + 3600 + 120 })).change).toBe("stale");
    expect(applyLive(book, minute(0, { time: day + 2 * 3600 + 60, volume: 5 })).book.candles[0]!.volume).toBe(26);
  });
});
