import { useCallback, useEffect, useState } from "react";
import { DEFAULT_INTERVAL, INTERVAL_NAMES, type Interval, isInterval } from "../lib/intervals";
import { BROWSER_ZONE, isTimeZone } from "../lib/zones";

export interface Selection {
  symbol: string | null;
  interval: Interval;
  /** Time zone the candles are aligned and labelled in. */
  zone: string;
}

export interface ParsedLocation {
  selection: Selection;
  /** What in the link could not be used, and what is shown instead. */
  notices: string[];
}

/** The view in a query string (?symbol=…&interval=…&tz=…), with a notice for every unusable part. */
export function parseLocation(search: string): ParsedLocation {
  const params = new URLSearchParams(search);
  const notices: string[] = [];
  const interval = params.get("interval");
  // A "+" typed into a link arrives as a space (form encoding): "?tz=+08:00" means "+08:00".
  const zone = params.get("tz")?.replace(/^ (?=\d)/, "+") ?? null;
  // The API accepts any <n><unit>; the dashboard offers its named intervals.
  const offered = interval !== null && isInterval(interval) && INTERVAL_NAMES.includes(interval);
  if (interval !== null && !offered) {
    notices.push(`Interval “${interval}” is not offered; showing ${DEFAULT_INTERVAL}.`);
  }
  if (zone !== null && !isTimeZone(zone)) notices.push(`Time zone “${zone}” is unknown; showing ${BROWSER_ZONE}.`);
  return {
    selection: {
      symbol: params.get("symbol")?.trim().toUpperCase() || null,
      interval: offered ? interval : DEFAULT_INTERVAL,
      zone: zone !== null && isTimeZone(zone) ? zone : BROWSER_ZONE,
    },
    notices,
  };
}

/** Symbol, interval and zone, mirrored in the query string so a view can be bookmarked or shared. */
export function useSelection(): [Selection, (change: Partial<Selection>) => void, string[]] {
  const [parsed] = useState(() => parseLocation(window.location.search));
  const [selection, setSelection] = useState(parsed.selection);

  useEffect(() => {
    const url = new URL(window.location.href);
    if (selection.symbol) url.searchParams.set("symbol", selection.symbol);
    else url.searchParams.delete("symbol");
    url.searchParams.set("interval", selection.interval);
    if (selection.zone !== BROWSER_ZONE) url.searchParams.set("tz", selection.zone);
    else url.searchParams.delete("tz");
    window.history.replaceState(null, "", url);
  }, [selection]);

  const update = useCallback((change: Partial<Selection>) => {
    setSelection((previous) => ({ ...previous, ...change }));
  }, []);
  return [selection, update, parsed.notices];
}
