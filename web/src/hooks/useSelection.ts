import { useCallback, useEffect, useState } from "react";
import { type Interval, isInterval } from "../lib/intervals";

export interface Selection {
  symbol: string | null;
  interval: Interval;
}

function fromLocation(): Selection {
  const params = new URLSearchParams(window.location.search);
  const interval = params.get("interval");
  return { symbol: params.get("symbol"), interval: isInterval(interval) ? interval : "1m" };
}

/** Symbol and interval, mirrored in the query string so a view can be bookmarked or shared. */
export function useSelection(): [Selection, (change: Partial<Selection>) => void] {
  const [selection, setSelection] = useState(fromLocation);

  useEffect(() => {
    const url = new URL(window.location.href);
    if (selection.symbol) url.searchParams.set("symbol", selection.symbol);
    else url.searchParams.delete("symbol");
    url.searchParams.set("interval", selection.interval);
    window.history.replaceState(null, "", url);
  }, [selection]);

  const update = useCallback((change: Partial<Selection>) => {
    setSelection((previous) => ({ ...previous, ...change }));
  }, []);
  return [selection, update];
}
