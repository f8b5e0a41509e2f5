import { useEffect, useRef, useState } from "react";
import { fetchSymbols } from "../lib/api";
import type { ApiSymbol } from "../lib/api-types";
import { createPoller, type Poller } from "../lib/poller";

const FIRST_RETRY_MS = 2_000;
const MAX_RETRY_MS = 30_000;
const REFRESH_MS = 60_000;

/** An unchanged list keeps its identity, so nothing downstream (the ticker stream) restarts. */
function sameSymbols(a: readonly ApiSymbol[], b: readonly ApiSymbol[]): boolean {
  return a.length === b.length && a.every((s, i) => JSON.stringify(s) === JSON.stringify(b[i]));
}

export interface SymbolList {
  symbols: ApiSymbol[];
  /** Until the first successful load. */
  loading: boolean;
  error: string | null;
  /** The connection is back (a stream reopened): load now instead of after the backoff. */
  retry(): void;
}

/**
 * Active symbols from /api/v1/symbols, refreshed every minute; retried with backoff while it fails or is
 * empty, and at once when the browser comes back online or `retry` is called (a stream reopened).
 */
export function useSymbols(): SymbolList {
  const [list, setList] = useState<Omit<SymbolList, "retry">>({ symbols: [], loading: true, error: null });
  const pollerRef = useRef<Poller | null>(null);
  const [retry] = useState(() => () => pollerRef.current?.retryNow());

  useEffect(() => {
    const poller = createPoller<ApiSymbol>({
      load: fetchSymbols,
      onLoaded: (symbols) =>
        setList((previous) => ({
          symbols: sameSymbols(previous.symbols, symbols) ? previous.symbols : [...symbols],
          loading: false,
          error: null,
        })),
      onFailed: (error) => setList((previous) => ({ ...previous, error: `Could not load symbols: ${error.message}` })),
      firstRetryMs: FIRST_RETRY_MS,
      maxRetryMs: MAX_RETRY_MS,
      refreshMs: REFRESH_MS,
    });
    pollerRef.current = poller;
    poller.start();
    const online = () => poller.retryNow();
    window.addEventListener("online", online);
    return () => {
      window.removeEventListener("online", online);
      poller.stop();
      pollerRef.current = null;
    };
  }, []);

  return { ...list, retry };
}
