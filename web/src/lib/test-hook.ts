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
  /** The selection whose history the chart shows; null while one loads. */
  symbol: string | null;
  interval: string | null;
}

declare global {
  interface Window {
    __md?: DashboardTestHook;
  }
}

export function exposeTestHook(hook: DashboardTestHook): void {
  window.__md = hook;
}
