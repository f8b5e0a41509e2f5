// A tiny read-only window.__md for the end-to-end test (tests/e2e/test_dashboard.py):
// what the chart has actually drawn, and the current selection. Not an API.

export interface DrawnBar {
  time: number;
  open: number;
  high: number;
  low: number;
  close: number;
}

export interface DashboardTestHook {
  barCount(): number;
  lastBar(): DrawnBar | null;
  firstBar(): DrawnBar | null;
  /** Times of the bars at both edges of the visible range, and its width in bars (the zoom). */
  visibleTimes(): { from: number; to: number; bars: number } | null;
  /** Texts of the series markers (the end-of-data marker). */
  markers(): string[];
  /** The price scale's label of a price. */
  axisPrice(price: number): string;
  priceScaleWidth(): number;
  /** The price range the price scale shows. */
  priceRange(): { from: number; to: number } | null;
  /** The time axis labels drawn since the last redraw: true UTC time, lightweight-charts' TickMarkType, text. */
  tickMarks(): { time: number; type: number; label: string }[];
  /** The selection whose history the chart shows; null while one loads. */
  symbol: string | null;
  interval: string | null;
  zone: string | null;
  /** The chart holds the symbol's first candle. */
  complete: boolean;
}

declare global {
  interface Window {
    __md?: DashboardTestHook;
  }
}

export function exposeTestHook(hook: DashboardTestHook): void {
  window.__md = hook;
}
