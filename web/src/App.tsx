import { useEffect, useMemo, useRef, useState } from "react";
import { ChartStatus } from "./components/ChartStatus";
import { ConnectionBadge } from "./components/ConnectionBadge";
import { Controls } from "./components/Controls";
import { PriceChart, type PriceChartHandle } from "./components/PriceChart";
import { QuoteHeader } from "./components/QuoteHeader";
import { useCandleFeed } from "./hooks/useCandleFeed";
import { useColorScheme } from "./hooks/useColorScheme";
import { useSelection } from "./hooks/useSelection";
import { useSymbols } from "./hooks/useSymbols";
import { summarize, type VisibleRange } from "./lib/candles";
import { formatPrice } from "./lib/format";
import { exposeTestHook } from "./lib/test-hook";

const TIME_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;

export function App() {
  const scheme = useColorScheme();
  const { symbols, loading: symbolsLoading, error: symbolsError } = useSymbols();
  const [selection, select] = useSelection();
  const { symbol, interval } = selection;
  const feed = useCandleFeed(symbol, interval);
  const [visible, setVisible] = useState<VisibleRange | null>(null);
  const chartRef = useRef<PriceChartHandle>(null);

  // Default to the first symbol, and leave one that is no longer listed.
  useEffect(() => {
    const first = symbols[0];
    if (first && !symbols.some((s) => s.symbol === symbol)) select({ symbol: first.symbol });
  }, [symbols, symbol, select]);

  const summary = useMemo(() => summarize(feed.book?.candles ?? [], visible), [feed.book, visible]);
  const listed = symbols.find((s) => s.symbol === symbol);

  useEffect(() => {
    document.title = symbol && summary.last !== null
      ? `${symbol} ${formatPrice(summary.last)} · marketdata`
      : "marketdata";
  }, [symbol, summary.last]);

  // Runs after the chart drew the feed's book: the hook names the selection the chart shows.
  const drawn = feed.book !== null;
  useEffect(() => {
    exposeTestHook({
      barCount: () => chartRef.current?.bars().length ?? 0,
      lastBar: () => {
        const bar = chartRef.current?.bars().at(-1);
        return bar && "open" in bar
          ? { time: bar.time as number, open: bar.open, high: bar.high, low: bar.low, close: bar.close }
          : null;
      },
      symbol: drawn ? feed.symbol : null,
      interval: drawn ? feed.interval : null,
    });
  }, [drawn, feed.symbol, feed.interval]);

  const onVisibleRangeChange = (range: VisibleRange | null) =>
    setVisible((previous) =>
      previous && range && previous.from === range.from && previous.to === range.to ? previous : range,
    );

  return (
    <div className="app">
      <header className="topbar">
        <h1 className="brand">
          <span className="brand-mark" aria-hidden="true" />
          marketdata
        </h1>
        <Controls
          symbols={symbols}
          symbol={symbol}
          interval={interval}
          onSymbolChange={(next) => select({ symbol: next })}
          onIntervalChange={(next) => select({ interval: next })}
        />
        <ConnectionBadge status={feed.status} />
      </header>
      <QuoteHeader summary={summary} quote={listed?.quote ?? null} />
      <main className="chart-panel">
        <PriceChart
          ref={chartRef}
          book={feed.book}
          resetId={feed.resetId}
          selection={feed.selection}
          scheme={scheme}
          onVisibleRangeChange={onVisibleRangeChange}
        />
        <ChartStatus
          symbolsLoaded={!symbolsLoading}
          symbolCount={symbols.length}
          candleCount={feed.book?.candles.length ?? null}
          error={feed.error ?? symbolsError}
        />
      </main>
      <footer className="footnote">
        <span>
          <span className="key key-sma" aria-hidden="true" /> SMA10 · <span className="key key-up" aria-hidden="true" />
          <span className="key key-down" aria-hidden="true" /> volume by candle direction
        </span>
        <span>Times in {TIME_ZONE}</span>
      </footer>
    </div>
  );
}
