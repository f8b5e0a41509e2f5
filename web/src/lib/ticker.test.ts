import { describe, expect, it } from "vitest";
import { formatAge, formatCompact, formatCountdown, formatPercent, formatPrice, formatVolume } from "./format";
import {
  applyTrade,
  feedState,
  matchesSearch,
  mergeSnapshot,
  parseTicker,
  sortWatchlist,
  tradeFreshness,
  watchlistKey,
} from "./ticker";

const NOW = Date.UTC(2026, 10, 24, 12) / 1000;
const iso = (seconds: number) => new Date(seconds * 1000).toISOString();

const snapshot = parseTicker({
  symbol: "BTCUSDT",
  trades: 120,
  last: 43_100,
  open: 42_000,
  high: 43_500,
  low: 41_900,
  change: 1_100,
  changePercent: 2.619,
  volume: 12.5,
  quoteVolume: 538_000,
  lastTradeTime: iso(NOW - 30),
});

describe("24h ticker", () => {
  it("parses the API's ticker, price fields absent without trades", () => {
    expect(snapshot).toMatchObject({ last: 43_100, changePercent: 2.619, lastTradeTime: NOW - 30, trades: 120 });
    expect(parseTicker({ symbol: "IDLEUSD", trades: 0, volume: 0, quoteVolume: 0 })).toMatchObject({
      last: null,
      change: null,
      lastTradeTime: null,
    });
  });

  it("folds a live trade into last, extremes and change against the window's open", () => {
    const next = applyTrade(snapshot, { price: 44_100, time: NOW });
    expect(next).toMatchObject({ last: 44_100, high: 44_100, low: 41_900, change: 2_100, lastTradeTime: NOW });
    expect(next.changePercent).toBeCloseTo(5);
    expect(next.volume).toBe(12.5); // volumes wait for the next snapshot
    expect(applyTrade(next, { price: 1, time: NOW - 10 })).toBe(next); // older trade: no change
  });

  it("never takes the last trade back in time with an older snapshot", () => {
    const live = applyTrade(snapshot, { price: 44_100, time: NOW });
    const merged = mergeSnapshot(live, { ...snapshot, volume: 13 });
    expect(merged).toMatchObject({ last: 44_100, lastTradeTime: NOW, volume: 13 });
    const newer = { ...snapshot, last: 45_000, lastTradeTime: NOW + 5 };
    expect(mergeSnapshot(live, newer)).toBe(newer);
  });

  it("formats figures the way the header and watchlist show them", () => {
    expect(formatPrice(43_179.63)).toBe("43,179.63");
    expect(formatPrice(0.00012345)).toBe("0.00012345");
    expect(formatPrice(null)).toBe("–");
    expect(formatPercent(2.619)).toBe("+2.62%");
    expect(formatPercent(-0.004)).toBe("0.00%"); // rounds to zero: no sign
    expect(formatVolume(538_000)).toBe("538K");
    expect(formatVolume(12.5)).toBe("12.5");
    expect(formatCompact(3034.0753)).toBe("3.03K");
    expect(formatCompact(51_670_000)).toBe("51.7M");
    expect(formatAge(42)).toBe("42 s");
    expect(formatAge(3 * 3600 + 5)).toBe("3 h");
    expect(formatCountdown(42.2)).toBe("0:43");
    expect(formatCountdown(3 * 3600 + 61)).toBe("3:01:01");
    expect(formatCountdown(2 * 86_400 + 4 * 3600)).toBe("2d 04:00:00");
  });
});

describe("freshness", () => {
  it("dots a symbol by the age of its last trade", () => {
    expect(tradeFreshness(NOW - 5, NOW)).toBe("fresh");
    expect(tradeFreshness(NOW - 600, NOW)).toBe("recent");
    expect(tradeFreshness(NOW - 3600, NOW)).toBe("stale");
    expect(tradeFreshness(null, NOW)).toBe("none");
  });

  it("calls a connected feed stale after a few intervals without a trade", () => {
    expect(feedState("live", NOW - 100, NOW, 60)).toBe("live");
    expect(feedState("live", NOW - 181, NOW, 60)).toBe("stale");
    // At 1h, an hour without trades is still live; four hours is not.
    expect(feedState("live", NOW - 3600, NOW, 3600)).toBe("live");
    expect(feedState("live", NOW - 4 * 3600, NOW, 3600)).toBe("stale");
    expect(feedState("live", null, NOW, 60)).toBe("stale");
    // The connection state wins while the stream is not open.
    expect(feedState("reconnecting", NOW, NOW, 60)).toBe("reconnecting");
  });
});

describe("watchlist", () => {
  const rows = [
    { symbol: "ETHUSDT", base: "ETH", quote: "USDT" },
    { symbol: "BTCUSDT", base: "BTC", quote: "USDT" },
    { symbol: "BTCEUR", base: "BTC", quote: "EUR" },
  ];

  it("searches by symbol, base or quote, case-insensitively", () => {
    expect(rows.filter((r) => matchesSearch(r, "btc")).map((r) => r.symbol)).toEqual(["BTCUSDT", "BTCEUR"]);
    expect(rows.filter((r) => matchesSearch(r, "eur")).map((r) => r.symbol)).toEqual(["BTCEUR"]);
    expect(rows.filter((r) => matchesSearch(r, "btc/usdt")).map((r) => r.symbol)).toEqual(["BTCUSDT"]);
    expect(rows.filter((r) => matchesSearch(r, "  ")).length).toBe(3);
    expect(rows.filter((r) => matchesSearch(r, "xrp")).length).toBe(0);
  });

  it("lists favourites first, then by symbol", () => {
    expect(sortWatchlist(rows, new Set(["ETHUSDT"])).map((r) => r.symbol)).toEqual(["ETHUSDT", "BTCEUR", "BTCUSDT"]);
  });
});

describe("watchlistKey", () => {
  it("lets a keyboard-only user add and remove favourites: * on the active row", () => {
    expect(watchlistKey({ key: "*" })).toBe("favourite");
    expect(watchlistKey({ key: "*", ctrlKey: true })).toBeNull();
    expect(watchlistKey({ key: "ArrowDown" })).toBe("down");
    expect(watchlistKey({ key: "ArrowUp" })).toBe("up");
    expect(watchlistKey({ key: "Enter" })).toBe("open");
    expect(watchlistKey({ key: "Escape" })).toBe("clear");
    expect(watchlistKey({ key: "b" })).toBeNull();
  });
});
