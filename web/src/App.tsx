import { lazy, Suspense, useEffect, useMemo, useRef, useState } from "react";
import { ChartStatus } from "./components/ChartStatus";
import { ChartTools } from "./components/ChartTools";
import { ConnectionBadge } from "./components/ConnectionBadge";
import { Controls } from "./components/Controls";
import { Notices } from "./components/Notices";
import { PriceChart, type PriceChartHandle, type ScaleMode } from "./components/PriceChart";
import { QuoteHeader } from "./components/QuoteHeader";
import { useCandleFeed } from "./hooks/useCandleFeed";
import { useColorScheme, useMediaQuery } from "./hooks/useColorScheme";
import { useFavourites } from "./hooks/useFavourites";
import { useSelection } from "./hooks/useSelection";
import { useSymbols } from "./hooks/useSymbols";
import { useTickers } from "./hooks/useTickers";
import { formatPrice, symbolPrecision } from "./lib/format";
import { intervalSeconds } from "./lib/intervals";
import { exposeTestHook } from "./lib/test-hook";
import { applyTrade, emptyTicker, feedState, sortWatchlist } from "./lib/ticker";

// Not needed for the first candle: loaded after it, in a chunk of its own.
const Watchlist = lazy(() => import("./components/Watchlist"));

const FIRST_CANDLE_MARK = "md-first-candle";

function useNow(): number {
  const [now, setNow] = useState(() => Date.now() / 1000);
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now() / 1000), 1000);
    return () => clearInterval(timer);
  }, []);
  return now;
}

export function App() {
  const scheme = useColorScheme();
  const { symbols, loading: symbolsLoading, error: symbolsError, retry: retrySymbols } = useSymbols();
  const [selection, select, linkNotices] = useSelection();
  const { symbol, interval, zone } = selection;
  const [notices, setNotices] = useState(linkNotices);
  // History only for a listed symbol: a link's unknown symbol is never requested (it would be a 404).
  const chartSymbol = symbols.some((s) => s.symbol === symbol) ? symbol : null;
  const feed = useCandleFeed(chartSymbol, interval, zone);
  const [favourites, toggleFavourite] = useFavourites();
  const [drawerOpen, setDrawerOpen] = useState(false);
  // Below 640 px the watchlist is a drawer (styles.css): closed, it is out of the tab order too.
  const phone = useMediaQuery("(max-width: 640px)");
  const [scaleMode, setScaleMode] = useState<ScaleMode>("linear");
  const [ignoreOutliers, setIgnoreOutliers] = useState(false);
  const chartRef = useRef<PriceChartHandle>(null);
  const now = useNow();

  // One stream for the watchlist: the selected symbol, the favourites, then the rest (up to the stream's cap).
  const streamed = useMemo(() => {
    const ordered = sortWatchlist(symbols, favourites).map((s) => s.symbol);
    return symbol && ordered.includes(symbol) ? [symbol, ...ordered.filter((s) => s !== symbol)] : ordered;
  }, [symbols, favourites, symbol]);
  const board = useTickers(streamed);

  // A stream that is live again means the connection is back: a failed symbol load is retried at once
  // (not after its backoff), so its error does not outlive the outage.
  const streamLive = feed.status === "live" || board.status === "live";
  useEffect(() => {
    if (streamLive && symbolsError) retrySymbols();
  }, [streamLive, symbolsError, retrySymbols]);

  // A symbol from the link that is not listed: say so, and show the first listed one.
  useEffect(() => {
    const first = symbols[0];
    if (!first || symbols.some((s) => s.symbol === symbol)) return;
    if (symbol) setNotices((current) => [...current, `Symbol “${symbol}” is not listed; showing ${first.symbol}.`]);
    select({ symbol: first.symbol });
  }, [symbols, symbol, select]);

  const listed = symbols.find((s) => s.symbol === symbol);
  const listedTicker = (symbol && board.tickers.get(symbol)) || null;
  // The chart's own stream is ahead of the ticker stream (at most a message a second): fold its last trade in.
  const ticker = useMemo(
    () => symbol && feed.lastTrade && feed.symbol === symbol
      ? applyTrade(listedTicker ?? emptyTicker(symbol), feed.lastTrade)
      : listedTicker,
    [symbol, feed.symbol, feed.lastTrade, listedTicker],
  );
  // The watchlist's row of the selected symbol agrees with the header.
  const watchTickers = useMemo(
    () => (symbol && ticker && ticker !== listedTicker ? new Map(board.tickers).set(symbol, ticker) : board.tickers),
    [board.tickers, symbol, ticker, listedTicker],
  );
  // One number of decimals for every price of the symbol (header, legend, price scale, title, its watchlist
  // row), from its typical price: its 24h figures, as the watchlist's rows, the first time they are known (then
  // kept while the page lives: neither a price moving past a power of ten nor another interval or zone changes
  // them); until then, or without a trade in 24h, the closes of the history loaded (refetches only).
  const dayPrecision = symbolPrecision([ticker?.last, ticker?.open, ticker?.high, ticker?.low]);
  const keptPrecision = useRef(new Map<string, number>());
  useEffect(() => {
    if (symbol && dayPrecision !== null && !keptPrecision.current.has(symbol)) {
      keptPrecision.current.set(symbol, dayPrecision);
    }
  }, [symbol, dayPrecision]);
  const historyPrecision = useMemo(
    () => (feed.book && feed.symbol === symbol ? symbolPrecision(feed.book.candles.map((c) => c.close)) : null),
    // Not on every live update (feed.book): only a (re)loaded history changes a symbol's decimals.
    [feed.resetId, feed.symbol, symbol],
  );
  const precision = (symbol ? keptPrecision.current.get(symbol) : undefined) ?? dayPrecision ?? historyPrecision;
  const lastCandle = feed.book?.candles.at(-1);
  // Without a trade in the 24h window, the newest bar tells when the symbol last traded (at the latest).
  const lastTradeTime = ticker?.lastTradeTime ?? lastCandle?.time ?? null;
  const state = feedState(feed.status, lastTradeTime, now, intervalSeconds(interval));

  useEffect(() => {
    const last = ticker?.last ?? lastCandle?.close ?? null;
    document.title = symbol && last !== null ? `${symbol} ${formatPrice(last, precision)} · marketdata` : "marketdata";
  }, [symbol, ticker?.last, lastCandle?.close, precision]);

  // Runs after the chart drew the feed's book: the hook names the selection the chart shows.
  const drawn = feed.book !== null;
  useEffect(() => {
    // Time to the first drawn candle after navigation, for the quality bar (≤ 1 s on a local stack).
    if (drawn && (feed.book?.candles.length ?? 0) > 0 && performance.getEntriesByName(FIRST_CANDLE_MARK).length === 0) {
      performance.mark(FIRST_CANDLE_MARK);
    }
  }, [drawn, feed.book]);
  useEffect(() => {
    const bar = (index: number) => {
      const drawnBar = chartRef.current?.bars().at(index);
      return drawnBar && "open" in drawnBar
        ? { time: drawnBar.time as number, open: drawnBar.open, high: drawnBar.high, low: drawnBar.low, close: drawnBar.close }
        : null;
    };
    exposeTestHook({
      barCount: () => chartRef.current?.bars().length ?? 0,
      lastBar: () => bar(-1),
      firstBar: () => bar(0),
      visibleTimes: () => chartRef.current?.visibleTimes() ?? null,
      markers: () => chartRef.current?.markers() ?? [],
      axisPrice: (price) => chartRef.current?.axisPrice(price) ?? "",
      priceScaleWidth: () => chartRef.current?.priceScaleWidth() ?? 0,
      priceRange: () => chartRef.current?.priceRange() ?? null,
      tickMarks: () => chartRef.current?.tickMarks() ?? [],
      symbol: drawn ? feed.symbol : null,
      interval: drawn ? feed.interval : null,
      // The drawn book's zone, not the selected one: right after a zone change the old book is still drawn.
      zone: feed.book?.zone ?? null,
      complete: feed.complete,
    });
  }, [drawn, feed.symbol, feed.interval, feed.book?.zone, feed.complete]);

  // Opening the drawer puts the cursor in its search; Escape closes it.
  useEffect(() => {
    if (!drawerOpen) return;
    document.querySelector<HTMLInputElement>("[data-testid=watchlist-search]")?.focus();
    const onKey = (event: KeyboardEvent) => event.key === "Escape" && setDrawerOpen(false);
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [drawerOpen]);

  const chooseSymbol = (next: string) => {
    select({ symbol: next });
    setDrawerOpen(false);
  };

  return (
    <div className="app">
      <header className="topbar">
        <h1 className="brand">
          <span className="brand-mark" aria-hidden="true" />
          marketdata
        </h1>
        <button
          type="button"
          className="symbol-button"
          data-testid="symbol-button"
          aria-expanded={drawerOpen}
          aria-controls="side-panel"
          onClick={() => setDrawerOpen((open) => !open)}
        >
          {symbol ?? "Symbols"} <span aria-hidden="true">▾</span>
        </button>
        <Controls
          interval={interval}
          zone={zone}
          onIntervalChange={(next) => select({ interval: next })}
          onZoneChange={(next) => select({ zone: next })}
        />
        <ConnectionBadge state={state} />
      </header>
      <Notices notices={notices} onDismiss={() => setNotices([])} />
      <div className="workspace">
        <aside
          id="side-panel"
          className={`side-panel${drawerOpen ? " side-panel-open" : ""}`}
          inert={phone && !drawerOpen}
          aria-label="Symbols"
        >
          <Suspense fallback={<p className="side-loading">Loading watchlist…</p>}>
            <Watchlist
              symbols={symbols}
              tickers={watchTickers}
              selected={symbol}
              favourites={favourites}
              selectedPrecision={precision}
              now={now}
              onSelect={chooseSymbol}
              onToggleFavourite={toggleFavourite}
            />
          </Suspense>
          {board.error && <p className="side-error">{board.error}</p>}
          {(board.status === "reconnecting" || board.status === "offline") && (
            <p className="side-error" data-testid="watchlist-status">Live tickers {board.status}…</p>
          )}
        </aside>
        {drawerOpen && <div className="drawer-backdrop" onClick={() => setDrawerOpen(false)} aria-hidden="true" />}
        <div className="main-column">
          <QuoteHeader
            symbol={symbol}
            ticker={ticker}
            base={listed?.base ?? null}
            quote={listed?.quote ?? null}
            tradeAge={lastTradeTime === null ? null : now - lastTradeTime}
            precision={precision}
          />
          <main className="chart-panel">
            <ChartTools
              scaleMode={scaleMode}
              ignoreOutliers={ignoreOutliers}
              loadingOlder={feed.loadingOlder}
              complete={feed.complete}
              onScaleModeChange={setScaleMode}
              onIgnoreOutliersChange={setIgnoreOutliers}
            />
            <PriceChart
              ref={chartRef}
              book={feed.book}
              resetId={feed.resetId}
              olderId={feed.olderId}
              selection={feed.selection}
              zone={zone}
              precision={precision}
              complete={feed.complete}
              scheme={scheme}
              scaleMode={scaleMode}
              ignoreOutliers={ignoreOutliers}
              onNeedOlder={feed.loadOlder}
            />
            <ChartStatus
              symbolsLoaded={!symbolsLoading}
              symbolCount={symbols.length}
              candleCount={feed.book?.candles.length ?? null}
              error={feed.error ?? symbolsError}
            />
          </main>
        </div>
      </div>
      <footer className="footnote">
        <span>
          <span className="key key-sma" aria-hidden="true" /> SMA10 · <span className="key key-up" aria-hidden="true" />
          <span className="key key-down" aria-hidden="true" /> volume by candle direction
        </span>
        <span>Candles aligned and labelled in {zone}</span>
      </footer>
    </div>
  );
}
