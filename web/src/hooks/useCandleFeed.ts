import { useCallback, useEffect, useRef, useState } from "react";
import { fetchCandles } from "../lib/api";
import type { ApiLiveUpdate } from "../lib/api-types";
import {
  applyLive,
  type Candle,
  type CandleBook,
  createBook,
  mergeOlder,
  parseCandle,
  parseTime,
} from "../lib/candles";
import { type Interval, intervalSeconds } from "../lib/intervals";
import { type ConnectionStatus, useEventStream } from "./useLiveStream";

/** Candles per history page (the first one and each older one). */
export const PAGE_LIMIT = 500;
/** Quiet period before refetching after late events for closed bars. */
const STALE_REFETCH_MS = 2_000;
const FAILED_LOAD_RETRY_MS = 5_000;
const HOUR = 3600;

export interface CandleFeed {
  /** null until the first history load of the selection completes. */
  book: CandleBook | null;
  /** Changes whenever the book was rebuilt from history (the chart then redraws everything). */
  resetId: number;
  /** Changes whenever an older page was merged in front (the chart redraws and keeps its view). */
  olderId: number;
  /** The selection the book belongs to, and its key `${symbol}/${interval}/${zone}`. */
  symbol: string | null;
  interval: Interval;
  selection: string;
  /** An older page is being fetched. */
  loadingOlder: boolean;
  /** The book starts at the symbol's first candle: there is nothing older. */
  complete: boolean;
  error: string | null;
  status: ConnectionStatus;
  /** The newest trade seen live (price, UTC seconds), null before one. */
  lastTrade: LiveTrade | null;
  /** Fetches the next older page; a call while one is in flight (or after the first candle) does nothing. */
  loadOlder(): void;
}

export interface LiveTrade {
  price: number;
  /** UTC seconds. */
  time: number;
}

type FeedState = Omit<CandleFeed, "status" | "loadOlder">;

/**
 * History from REST plus live 1-minute candles from SSE, merged per interval.
 * History is (re)loaded on a selection change, after the stream reopens, on a
 * `resync` event and after late events for closed bars; live candles arriving
 * during a load are buffered and merged on top of the fresh history. Older
 * pages follow the API's page tokens.
 */
export function useCandleFeed(symbol: string | null, interval: Interval, zone: string): CandleFeed {
  const selection = `${symbol ?? ""}/${interval}/${zone}`;
  const initial = (resetId: number): FeedState => ({
    book: null,
    resetId,
    olderId: 0,
    symbol,
    interval,
    selection,
    loadingOlder: false,
    complete: false,
    error: null,
    lastTrade: null,
  });
  const [feed, setFeed] = useState<FeedState>(() => initial(0));
  const bookRef = useRef<CandleBook | null>(null);
  /** Live candles received while history loads; null when no load is running. */
  const pendingRef = useRef<Candle[] | null>(null);
  const loadRef = useRef<AbortController | null>(null);
  const olderRef = useRef<{ token: string; inFlight: boolean }>({ token: "", inFlight: false });
  const refetchTimer = useRef<ReturnType<typeof setTimeout>>(undefined);

  const load = useCallback(async () => {
    if (symbol === null) return;
    clearTimeout(refetchTimer.current);
    loadRef.current?.abort();
    const controller = new AbortController();
    loadRef.current = controller;
    pendingRef.current ??= [];
    try {
      const query = { interval, timeZone: zone };
      const page = await fetchCandles(symbol, { ...query, limit: PAGE_LIMIT }, controller.signal);
      const parts = await openBarParts(symbol, interval, zone, page.candles.at(-1), controller.signal);
      if (controller.signal.aborted) return;
      let book = createBook(interval, zone, page.candles, parts);
      // A refetch keeps the older pages already loaded.
      const previous = bookRef.current;
      if (previous && previous.interval === interval && previous.zone === zone) book = mergeOlder(book, previous.candles);
      // Buffered events are older than, or already in, this history when stale.
      for (const minute of pendingRef.current ?? []) book = applyLive(book, minute).book;
      pendingRef.current = null;
      if (!previous) olderRef.current = { token: page.nextPageToken, inFlight: false };
      bookRef.current = book;
      setFeed((state) => ({
        ...state,
        book,
        resetId: state.resetId + 1,
        complete: previous ? state.complete : page.nextPageToken === "",
        error: null,
      }));
    } catch (error) {
      if (controller.signal.aborted) return;
      pendingRef.current = null;
      setFeed((state) => ({ ...state, error: `Could not load candles: ${(error as Error).message}` }));
      refetchTimer.current = setTimeout(() => void load(), FAILED_LOAD_RETRY_MS);
    }
  }, [symbol, interval, zone]);

  useEffect(() => {
    bookRef.current = null;
    pendingRef.current = null;
    olderRef.current = { token: "", inFlight: false };
    setFeed((state) => initial(state.resetId + 1));
    void load();
    return () => {
      loadRef.current?.abort();
      clearTimeout(refetchTimer.current);
    };
  }, [load, selection]);

  const loadOlder = useCallback(() => {
    const older = olderRef.current;
    if (symbol === null || older.inFlight || older.token === "" || !bookRef.current) return;
    older.inFlight = true;
    const owner = olderRef.current;
    setFeed((state) => ({ ...state, loadingOlder: true }));
    fetchCandles(symbol, { interval, timeZone: zone, limit: PAGE_LIMIT, pageToken: older.token })
      .then((page) => {
        if (olderRef.current !== owner || !bookRef.current) return; // the selection changed meanwhile
        owner.token = page.nextPageToken;
        owner.inFlight = false;
        const book = mergeOlder(bookRef.current, page.candles);
        bookRef.current = book;
        setFeed((state) => ({
          ...state,
          book,
          olderId: state.olderId + 1,
          loadingOlder: false,
          complete: page.nextPageToken === "",
        }));
      })
      .catch((error: Error) => {
        if (olderRef.current !== owner) return;
        owner.inFlight = false;
        setFeed((state) => ({ ...state, loadingOlder: false, error: `Could not load older candles: ${error.message}` }));
      });
  }, [symbol, interval, zone]);

  const onUpdate = useCallback(
    (update: ApiLiveUpdate) => {
      if (update.symbol !== symbol || !update.candle) return;
      const minute = parseCandle(update.candle);
      const tick = update.lastTick;
      const trade = tick ? { price: tick.price, time: parseTime(tick.eventTime) } : null;
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
      bookRef.current = result.book;
      setFeed((state) => ({
        ...state,
        book: result.book,
        lastTrade: trade && (!state.lastTrade || trade.time >= state.lastTrade.time) ? trade : state.lastTrade,
      }));
    },
    [symbol, load],
  );

  const onGap = useCallback(() => void load(), [load]);
  const url = symbol === null ? null : `/realtime/ticks?symbol=${encodeURIComponent(symbol)}`;
  const status = useEventStream<ApiLiveUpdate>(url, "update", { onMessage: onUpdate, onGap });
  return { ...feed, status, loadOlder };
}

/**
 * The parts of the open bar needed to merge live minutes into it: its minutes for bars up to an hour;
 * above that its closed hours (1h candles tile every longer bucket, which starts at local midnight) and
 * the minutes of its current hour.
 */
async function openBarParts(
  symbol: string,
  interval: Interval,
  zone: string,
  openBar: Candle | undefined,
  signal: AbortSignal,
): Promise<Candle[]> {
  const seconds = intervalSeconds(interval);
  if (!openBar || interval === "1m") return [];
  const minutesFrom = async (from: number) =>
    (await fetchCandles(symbol, { interval: "1m", timeZone: zone, limit: 2 * 60 + 5, from }, signal)).candles;
  if (seconds <= HOUR) return minutesFrom(openBar.time);
  const hours = (await fetchCandles(symbol, { interval: "1h", timeZone: zone, limit: 5000, from: openBar.time }, signal))
    .candles;
  const currentHour = hours.at(-1);
  if (!currentHour) return [];
  return [...hours.slice(0, -1), ...(await minutesFrom(currentHour.time))];
}
