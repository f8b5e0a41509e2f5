import { useCallback, useEffect, useRef, useState } from "react";
import { fetchCandles } from "../lib/api";
import type { ApiLiveUpdate } from "../lib/api-types";
import { applyLive, type Candle, type CandleBook, createBook, parseCandle } from "../lib/candles";
import { type Interval, intervalSeconds } from "../lib/intervals";
import { type ConnectionStatus, useLiveStream } from "./useLiveStream";

const HISTORY_LIMIT = 300;
/** Quiet period before refetching after late events for closed bars. */
const STALE_REFETCH_MS = 2_000;
const FAILED_LOAD_RETRY_MS = 5_000;

export interface CandleFeed {
  /** null until the first history load of the selection completes. */
  book: CandleBook | null;
  /** Changes whenever the book was rebuilt from history (the chart then redraws everything). */
  resetId: number;
  /** The selection the book belongs to, and its key `${symbol}/${interval}`. */
  symbol: string | null;
  interval: Interval;
  selection: string;
  error: string | null;
  status: ConnectionStatus;
}

/**
 * History from REST plus live 1-minute candles from SSE, merged per interval.
 * History is (re)loaded on a selection change, after the stream reopens, on a
 * `resync` event and after late events for closed bars; live candles arriving
 * during a load are buffered and merged on top of the fresh history.
 */
export function useCandleFeed(symbol: string | null, interval: Interval): CandleFeed {
  const selection = `${symbol ?? ""}/${interval}`;
  const [feed, setFeed] = useState<Omit<CandleFeed, "status">>({
    book: null,
    resetId: 0,
    symbol,
    interval,
    selection,
    error: null,
  });
  const bookRef = useRef<CandleBook | null>(null);
  /** Live candles received while history loads; null when no load is running. */
  const pendingRef = useRef<Candle[] | null>(null);
  const loadRef = useRef<AbortController | null>(null);
  const refetchTimer = useRef<ReturnType<typeof setTimeout>>(undefined);

  const load = useCallback(async () => {
    if (symbol === null) return;
    clearTimeout(refetchTimer.current);
    loadRef.current?.abort();
    const controller = new AbortController();
    loadRef.current = controller;
    pendingRef.current ??= [];
    try {
      const seconds = intervalSeconds(interval);
      const history = await fetchCandles(symbol, { interval, limit: HISTORY_LIMIT }, controller.signal);
      const openBar = history.at(-1);
      // Above 1m, the open bar's minutes are needed to merge live minutes into it
      // (the limit leaves room for a bar that started since the first request).
      const minutes = openBar && seconds > 60
        ? await fetchCandles(symbol, { interval: "1m", limit: (2 * seconds) / 60, from: openBar.time }, controller.signal)
        : [];
      if (controller.signal.aborted) return;
      let book = createBook(seconds, history, minutes);
      // Buffered events are older than, or already in, this history when stale.
      for (const minute of pendingRef.current ?? []) book = applyLive(book, minute).book;
      pendingRef.current = null;
      bookRef.current = book;
      setFeed((previous) => ({ book, resetId: previous.resetId + 1, symbol, interval, selection, error: null }));
    } catch (error) {
      if (controller.signal.aborted) return;
      pendingRef.current = null;
      setFeed((previous) => ({ ...previous, error: `Could not load candles: ${(error as Error).message}` }));
      refetchTimer.current = setTimeout(() => void load(), FAILED_LOAD_RETRY_MS);
    }
  }, [symbol, interval, selection]);

  useEffect(() => {
    bookRef.current = null;
    pendingRef.current = null;
    setFeed((previous) => ({ book: null, resetId: previous.resetId + 1, symbol, interval, selection, error: null }));
    void load();
    return () => {
      loadRef.current?.abort();
      clearTimeout(refetchTimer.current);
    };
  }, [load, symbol, interval, selection]);

  const onUpdate = useCallback(
    (update: ApiLiveUpdate) => {
      if (update.symbol !== symbol || !update.candle) return;
      const minute = parseCandle(update.candle);
      if (pendingRef.current) {
        pendingRef.current.push(minute);
        return;
      }
      const book = bookRef.current;
      if (!book) return;
      const result = applyLive(book, minute);
      if (result.change === "stale") {
        clearTimeout(refetchTimer.current);
        refetchTimer.current = setTimeout(() => void load(), STALE_REFETCH_MS);
      }
      if (result.book !== book) {
        bookRef.current = result.book;
        setFeed((previous) => ({ ...previous, book: result.book }));
      }
    },
    [symbol, load],
  );

  const onGap = useCallback(() => void load(), [load]);
  const status = useLiveStream(symbol, { onUpdate, onGap });
  return { ...feed, status };
}
