import { useCallback, useEffect, useRef, useState } from "react";
import { fetchTickers } from "../lib/api";
import type { ApiTickerResponse } from "../lib/api-types";
import { mergeSnapshot, parseTicker, type Ticker } from "../lib/ticker";
import { type ConnectionStatus, useEventStream } from "./useLiveStream";

/** The edge's cap on symbols per /realtime/ticker stream. */
export const MAX_STREAM_SYMBOLS = 100;
/**
 * How often the REST snapshot of every symbol is taken: for symbols past the
 * stream's cap, and for rolling windows that move on while a symbol is quiet
 * (the stream sends a symbol only when it traded).
 */
const SNAPSHOT_MS = 30_000;

export interface TickerBoard {
  tickers: ReadonlyMap<string, Ticker>;
  status: ConnectionStatus;
  error: string | null;
}

/**
 * 24h tickers of the watchlist: ONE SSE connection (/realtime/ticker) for the
 * `streamed` symbols — all of them first, then at most once a second those
 * that traded — plus a REST snapshot of every active symbol every 30 s.
 */
export function useTickers(streamed: readonly string[]): TickerBoard {
  const [tickers, setTickers] = useState<ReadonlyMap<string, Ticker>>(new Map());
  const [error, setError] = useState<string | null>(null);
  const snapshotRef = useRef<() => void>(() => undefined);

  const merge = useCallback((items: Ticker[]) => {
    setTickers((current) => {
      const next = new Map(current);
      for (const item of items) next.set(item.symbol, mergeSnapshot(current.get(item.symbol), item));
      return next;
    });
  }, []);

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const refresh = async () => {
      clearTimeout(timer);
      try {
        merge((await fetchTickers([], controller.signal)).map(parseTicker));
        setError(null);
      } catch (failure) {
        if (controller.signal.aborted) return;
        setError(`Could not load 24h tickers: ${(failure as Error).message}`);
      }
      if (!controller.signal.aborted) timer = setTimeout(() => void refresh(), SNAPSHOT_MS);
    };
    snapshotRef.current = () => void refresh();
    void refresh();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [merge]);

  const onMessage = useCallback((message: ApiTickerResponse) => merge((message.items ?? []).map(parseTicker)), [merge]);
  // A reopened stream starts with every symbol again; the snapshot covers the symbols past the cap.
  const onGap = useCallback(() => snapshotRef.current(), []);
  // Sorted: picking another symbol reorders `streamed` but must not reopen the stream for the same set.
  const symbols = streamed.slice(0, MAX_STREAM_SYMBOLS).sort().join(",");
  const url = symbols ? `/realtime/ticker?symbol=${encodeURIComponent(symbols)}` : null;
  const status = useEventStream<ApiTickerResponse>(url, "ticker", { onMessage, onGap });
  return { tickers, status, error };
}
