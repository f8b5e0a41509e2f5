import { useEffect, useState } from "react";
import { fetchSymbols } from "../lib/api";
import type { ApiSymbol } from "../lib/api-types";

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
}

/** Active symbols from /api/v1/symbols, refreshed every minute; retried with backoff while it fails or is empty. */
export function useSymbols(): SymbolList {
  const [list, setList] = useState<SymbolList>({ symbols: [], loading: true, error: null });

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let delay = FIRST_RETRY_MS;
    const retry = (load: () => Promise<void>) => {
      timer = setTimeout(() => void load(), delay);
      delay = Math.min(delay * 2, MAX_RETRY_MS);
    };
    const load = async () => {
      try {
        const symbols = await fetchSymbols(controller.signal);
        setList((previous) => ({ symbols: sameSymbols(previous.symbols, symbols) ? previous.symbols : symbols,
          loading: false, error: null }));
        if (symbols.length === 0) retry(load);
        else timer = setTimeout(() => void load(), REFRESH_MS); // symbols listed or delisted meanwhile
      } catch (error) {
        if (controller.signal.aborted) return;
        setList((previous) => ({ ...previous, error: `Could not load symbols: ${(error as Error).message}` }));
        retry(load);
      }
    };
    void load();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, []);

  return list;
}
