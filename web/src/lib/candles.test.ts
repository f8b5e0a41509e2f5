import { describe, expect, it } from "vitest";
import type { ApiCandle } from "./api-types";
import {
  applyLive,
  bucketStart,
  type Candle,
  candlesSince,
  createBook,
  findCandle,
  parseCandle,
  parseTime,
  summarize,
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
    trades: "42",
    vwap: 43001.2,
    sma10: 43002.7,
    ...overrides,
  };
}

/** A 1-minute candle starting `minute` minutes after T0. */
function minute(minuteIndex: number, values: Partial<Candle> = {}): Candle {
  return {
    time: T0 + minuteIndex * 60,
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

/** `count` consecutive bars of `seconds` each, closes 1, 2, 3, ... */
function bars(count: number, seconds: number): Candle[] {
  return Array.from({ length: count }, (_, i) =>
    minute(0, { time: T0 + i * seconds, open: i + 1, high: i + 1, low: i + 1, close: i + 1 }),
  );
}

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
    const book = createBook(60, [b, a, bAgain]);
    expect(book.candles.map((c) => [c.time, c.close])).toEqual([
      [T0, 100],
      [T0 + 60, 101],
    ]);
    expect([...book.minutes.keys()]).toEqual([T0 + 60]);
  });

  it("rebuilds the open bar above 1m from its minutes", () => {
    const history = [minute(0, { time: T0 - 300 }), minute(0, { open: 1, close: 2, volume: 3, trades: 3 })];
    const book = createBook(300, history, [
      minute(0, { open: 1, high: 2, low: 1, close: 2, volume: 2, trades: 2 }),
      minute(1, { open: 2, high: 9, low: 2, close: 3, volume: 2, trades: 2 }),
    ]);
    expect(book.candles).toHaveLength(2);
    expect(book.candles[1]).toMatchObject({ time: T0, open: 1, high: 9, low: 1, close: 3, volume: 4, trades: 4 });
    expect([...book.minutes.keys()]).toEqual([T0, T0 + 60]);
  });

  it("appends a bar for minutes past the newest history bar", () => {
    const book = createBook(300, [minute(0)], [minute(0), minute(5, { close: 7 })]);
    expect(book.candles.map((c) => c.time)).toEqual([T0, T0 + 300]);
    expect(book.candles[1]!.close).toBe(7);
  });
});

describe("applyLive at 1m", () => {
  const history = [minute(0), minute(1, { open: 100, high: 105, low: 99, close: 104, volume: 2, trades: 2 })];

  it("merges an update into the current candle: open kept, the rest replaced", () => {
    const live = minute(1, { open: 100, high: 110, low: 95, close: 108, volume: 5, trades: 6, vwap: 103 });
    const { book, change } = applyLive(createBook(60, history), live);
    expect(change).toBe("update");
    expect(book.candles).toHaveLength(2);
    expect(book.candles[1]).toMatchObject({ time: T0 + 60, open: 100, high: 110, low: 95, close: 108, volume: 5 });
  });

  it("does not double count when the same committed candle arrives twice", () => {
    const live = minute(1, { close: 108, volume: 5, trades: 6 });
    const once = applyLive(createBook(60, history), live).book;
    const twice = applyLive(once, live).book;
    expect(twice.candles).toEqual(once.candles);
  });

  it("appends a bar for a new minute", () => {
    const { book, change } = applyLive(createBook(60, history), minute(2, { open: 104, close: 106 }));
    expect(change).toBe("append");
    expect(book.candles.map((c) => c.time)).toEqual([T0, T0 + 60, T0 + 120]);
    expect(book.candles[2]).toMatchObject({ open: 104, close: 106 });
  });

  it("leaves the series intact for an update older than the current candle", () => {
    const before = createBook(60, history);
    const { book, change } = applyLive(before, minute(0, { close: 1, trades: 99 }));
    expect(change).toBe("stale");
    expect(book).toBe(before);
  });

  it("ignores an older commit of the current minute arriving late", () => {
    const newer = applyLive(createBook(60, history), minute(1, { close: 108, trades: 6 })).book;
    const { book, change } = applyLive(newer, minute(1, { close: 103, trades: 3 }));
    expect(change).toBe("superseded");
    expect(book.candles[1]!.close).toBe(108);
  });

  it("starts an empty book with the first live candle", () => {
    const { book, change } = applyLive(createBook(60, []), minute(3));
    expect(change).toBe("append");
    expect(book.candles.map((c) => c.time)).toEqual([T0 + 180]);
  });
});

describe("applyLive above 1m: folding minutes into the enclosing bar", () => {
  it("folds 1m candles into the 5m bar, replacing each minute's contribution", () => {
    let book = createBook(300, [], []);
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
      sma10: null,
    });
  });

  it("keeps the open of the earliest minute when minutes arrive out of order", () => {
    let book = createBook(900, [], []);
    book = applyLive(book, minute(7, { open: 50, close: 55 })).book;
    book = applyLive(book, minute(3, { open: 40, close: 45 })).book;
    expect(book.candles).toHaveLength(1);
    expect(book.candles[0]).toMatchObject({ time: T0, open: 40, close: 55, volume: 2 });
  });

  it("starts a new bar when a minute crosses into the next bucket", () => {
    let book = createBook(300, [], []);
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
    expect(bucketStart(T0 + 59 * 60 + 59, 3600)).toBe(T0);
    expect(bucketStart(T0 + 3600, 3600)).toBe(T0 + 3600);
    let book = createBook(3600, [], []);
    book = applyLive(book, minute(0, { high: 101, volume: 2, trades: 2 })).book;
    book = applyLive(book, minute(59, { low: 97, volume: 3, trades: 3 })).book;
    expect(book.candles).toHaveLength(1);
    expect(book.candles[0]).toMatchObject({ time: T0, high: 101, low: 97, volume: 5, trades: 5 });
  });

  it("asks for a refetch rather than guess when the open bar's minutes are unknown", () => {
    const book = createBook(300, [minute(0, { volume: 5 })], []);
    const result = applyLive(book, minute(1));
    expect(result.change).toBe("stale");
    expect(result.book).toBe(book);
  });

  it("ignores a minute of an older, closed bucket", () => {
    const book = createBook(300, [minute(0, { time: T0 - 300 }), minute(0)], [minute(0)]);
    const result = applyLive(book, minute(-1, { close: 1 }));
    expect(result.change).toBe("stale");
    expect(result.book).toBe(book);
  });
});

describe("live SMA10", () => {
  it("stays null below 10 bars", () => {
    const { book } = applyLive(createBook(60, bars(8, 60)), minute(8, { close: 50 }));
    expect(book.candles).toHaveLength(9);
    expect(book.candles.at(-1)!.sma10).toBeNull();
  });

  it("is the mean of the last 10 closes once 10 bars exist", () => {
    const history = bars(12, 60); // closes 1..12
    const { book } = applyLive(createBook(60, history), minute(12, { close: 13 }));
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

describe("summarize", () => {
  const candles = bars(5, 60); // open = close = 1..5

  it("is empty without candles", () => {
    expect(summarize([], null)).toEqual({ last: null, change: null, changePercent: null, vwap: null, volume: null });
  });

  it("measures the change over the whole series without a visible range", () => {
    const summary = summarize(candles, null);
    expect(summary).toMatchObject({ last: 5, change: 4, vwap: 100, volume: 1 });
    expect(summary.changePercent).toBeCloseTo(400);
  });

  it("measures the change over the visible bars only, clamping past the ends", () => {
    expect(summarize(candles, { from: 1.4, to: 3.2 }).change).toBe(4 - 3);
    expect(summarize(candles, { from: -10, to: 50 }).change).toBe(4);
  });
});
