// 24h ticker state for the header and the watchlist, and how fresh a symbol's
// trading is. Pure, unit-tested: the hooks only feed it REST and SSE payloads.

import type { ApiTicker } from "./api-types";
import { parseTime } from "./candles";

export interface Ticker {
  symbol: string;
  last: number | null;
  open: number | null;
  high: number | null;
  low: number | null;
  change: number | null;
  changePercent: number | null;
  /** Base and quote volume of the window. */
  volume: number;
  quoteVolume: number;
  trades: number;
  /** UTC seconds of the newest trade known, null when none in the window. */
  lastTradeTime: number | null;
}

export function parseTicker(api: ApiTicker): Ticker {
  return {
    symbol: api.symbol,
    last: api.last ?? null,
    open: api.open ?? null,
    high: api.high ?? null,
    low: api.low ?? null,
    change: api.change ?? null,
    changePercent: api.changePercent ?? null,
    volume: api.volume ?? 0,
    quoteVolume: api.quoteVolume ?? 0,
    trades: Number(api.trades ?? 0),
    lastTradeTime: api.lastTradeTime ? parseTime(api.lastTradeTime) : null,
  };
}

export function emptyTicker(symbol: string): Ticker {
  return {
    symbol,
    last: null,
    open: null,
    high: null,
    low: null,
    change: null,
    changePercent: null,
    volume: 0,
    quoteVolume: 0,
    trades: 0,
    lastTradeTime: null,
  };
}

/**
 * The chart's own live trade folded into the 24h figures until the ticker
 * stream's next message (at most one a second): last price, extremes, change
 * against the window's open and the last trade time. Volumes stay the
 * ticker's (a live update carries the newest trade of a commit, not all of
 * them). A trade older than the one already known changes nothing.
 */
export function applyTrade(ticker: Ticker, tick: { price: number; time: number }): Ticker {
  const time = tick.time;
  if (ticker.lastTradeTime !== null && time < ticker.lastTradeTime) return ticker;
  const open = ticker.open ?? tick.price;
  const change = tick.price - open;
  return {
    ...ticker,
    last: tick.price,
    open,
    high: Math.max(ticker.high ?? tick.price, tick.price),
    low: Math.min(ticker.low ?? tick.price, tick.price),
    change,
    changePercent: open !== 0 ? (change / open) * 100 : null,
    lastTradeTime: time,
  };
}

/**
 * A newer ticker replaces the figures, but a REST snapshot answered after a
 * stream message must not take the last trade back in time.
 */
export function mergeSnapshot(current: Ticker | undefined, snapshot: Ticker): Ticker {
  if (!current || current.lastTradeTime === null) return snapshot;
  if (snapshot.lastTradeTime !== null && snapshot.lastTradeTime >= current.lastTradeTime) return snapshot;
  return { ...snapshot, last: current.last, lastTradeTime: current.lastTradeTime, change: current.change,
    changePercent: current.changePercent, high: current.high, low: current.low, open: current.open ?? snapshot.open };
}

// ------------------------------------------------------------------ freshness

/** Watchlist dot: traded within a minute, within 15 minutes, longer ago, or not in the window. */
export type TradeFreshness = "fresh" | "recent" | "stale" | "none";

const FRESH_SECONDS = 60;
const RECENT_SECONDS = 15 * 60;

export function tradeFreshness(lastTradeTime: number | null, now: number): TradeFreshness {
  if (lastTradeTime === null) return "none";
  const age = now - lastTradeTime;
  if (age <= FRESH_SECONDS) return "fresh";
  if (age <= RECENT_SECONDS) return "recent";
  return "stale";
}

/** Intervals without a trade after which a connected feed is called stale. */
export const STALE_INTERVALS = 3;

/**
 * What the header's badge says: the connection state while it is not open;
 * when it is, "live" only if the symbol traded within STALE_INTERVALS
 * intervals (at least 3 minutes), else "stale".
 */
export type FeedState = "connecting" | "live" | "stale" | "reconnecting" | "offline";

export function feedState(
  connection: "connecting" | "live" | "reconnecting" | "offline",
  lastTradeTime: number | null,
  now: number,
  intervalSeconds: number,
): FeedState {
  if (connection !== "live") return connection;
  if (lastTradeTime === null) return "stale";
  const limit = Math.max(STALE_INTERVALS * intervalSeconds, 3 * 60);
  return now - lastTradeTime > limit ? "stale" : "live";
}

/** Watchlist order: favourites first, then by symbol. */
export function sortWatchlist<T extends { symbol: string }>(rows: readonly T[], favourites: ReadonlySet<string>): T[] {
  return [...rows].sort((a, b) => {
    const favourite = Number(favourites.has(b.symbol)) - Number(favourites.has(a.symbol));
    return favourite || a.symbol.localeCompare(b.symbol);
  });
}

/** Instant search: every word of the query must start the symbol, the base or the quote, or occur in the symbol. */
export function matchesSearch(row: { symbol: string; base: string; quote: string }, query: string): boolean {
  const words = query.trim().toUpperCase().split(/[\s/]+/).filter(Boolean);
  const symbol = row.symbol.toUpperCase();
  const base = row.base.toUpperCase();
  const quote = row.quote.toUpperCase();
  return words.every((word) => symbol.includes(word) || base.startsWith(word) || quote.startsWith(word));
}

/** What a key pressed in the watchlist's search does to its active row. */
export type WatchlistAction = "up" | "down" | "open" | "favourite" | "clear" | null;

/**
 * The watchlist's keys (its search box keeps the focus): ↑/↓ move, Enter opens the
 * active row, * adds it to or removes it from the favourites (no symbol has a *, so
 * it is never part of a search), Escape clears the search.
 */
export function watchlistKey(event: { key: string; ctrlKey?: boolean; altKey?: boolean; metaKey?: boolean }): WatchlistAction {
  switch (event.key) {
    case "ArrowUp":
      return "up";
    case "ArrowDown":
      return "down";
    case "Enter":
      return "open";
    case "*":
      return event.ctrlKey || event.altKey || event.metaKey ? null : "favourite";
    case "Escape":
      return "clear";
    default:
      return null;
  }
}
