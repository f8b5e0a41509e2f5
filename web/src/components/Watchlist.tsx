import { type KeyboardEvent, useEffect, useMemo, useRef, useState } from "react";
import type { ApiSymbol } from "../lib/api-types";
import { formatCompact, formatPercent, formatPrice } from "../lib/format";
import { matchesSearch, sortWatchlist, type Ticker, tradeFreshness } from "../lib/ticker";

interface WatchlistProps {
  symbols: readonly ApiSymbol[];
  tickers: ReadonlyMap<string, Ticker>;
  selected: string | null;
  favourites: ReadonlySet<string>;
  /** Seconds since the epoch, ticking: the freshness dots age with it. */
  now: number;
  onSelect(symbol: string): void;
  onToggleFavourite(symbol: string): void;
}

const FRESHNESS_TITLES = {
  fresh: "Traded within the last minute",
  recent: "Traded within the last 15 minutes",
  stale: "No trade for more than 15 minutes",
  none: "No trade in 24 hours",
} as const;

/**
 * Every active symbol with its 24h figures and a freshness dot. Search filters
 * as you type (symbol, base or quote); ↑/↓ move through the results, Enter
 * opens one, Escape clears the search. Favourites (★) are listed first.
 */
export default function Watchlist(props: WatchlistProps) {
  const { symbols, tickers, selected, favourites, now, onSelect, onToggleFavourite } = props;
  const [query, setQuery] = useState("");
  const [active, setActive] = useState(0);
  const listRef = useRef<HTMLUListElement>(null);

  const rows = useMemo(
    () => sortWatchlist(symbols.filter((s) => matchesSearch(s, query)), favourites),
    [symbols, query, favourites],
  );
  useEffect(() => setActive(0), [query]);
  useEffect(() => {
    listRef.current?.querySelector(`[data-index="${active}"]`)?.scrollIntoView({ block: "nearest" });
  }, [active]);

  const onKeyDown = (event: KeyboardEvent) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      setActive((index) => Math.min(Math.max(index + step, 0), Math.max(rows.length - 1, 0)));
    } else if (event.key === "Enter") {
      const row = rows[active];
      if (row) onSelect(row.symbol);
    } else if (event.key === "Escape" && query) {
      event.stopPropagation(); // clears the search; a second Escape closes the drawer
      setQuery("");
    }
  };

  return (
    <section className="watchlist" aria-label="Watchlist" data-testid="watchlist">
      <input
        type="search"
        className="watchlist-search"
        data-testid="watchlist-search"
        placeholder="Search symbol, base or quote"
        aria-label="Search symbols"
        aria-controls="watchlist-rows"
        aria-activedescendant={rows[active] ? `watch-${rows[active].symbol}` : undefined}
        value={query}
        onChange={(event) => setQuery(event.target.value)}
        onKeyDown={onKeyDown}
      />
      <div className="watchlist-head" aria-hidden="true">
        <span>Symbol</span>
        <span>Last</span>
        <span>24h</span>
        <span title="24h volume in the quote currency">Vol</span>
      </div>
      <ul className="watchlist-rows" id="watchlist-rows" role="listbox" ref={listRef} aria-label="Symbols">
        {rows.map((row, index) => {
          const ticker = tickers.get(row.symbol);
          const freshness = tradeFreshness(ticker?.lastTradeTime ?? null, now);
          const change = ticker?.changePercent ?? null;
          const favourite = favourites.has(row.symbol);
          return (
            <li
              key={row.symbol}
              id={`watch-${row.symbol}`}
              role="option"
              aria-selected={row.symbol === selected}
              data-index={index}
              data-symbol={row.symbol}
              data-testid="watch-row"
              className={`watch-row${index === active ? " watch-row-active" : ""}`}
              onClick={() => onSelect(row.symbol)}
            >
              <button
                type="button"
                className={`watch-star${favourite ? " watch-star-on" : ""}`}
                aria-label={favourite ? `Remove ${row.symbol} from favourites` : `Add ${row.symbol} to favourites`}
                aria-pressed={favourite}
                data-testid="watch-star"
                tabIndex={-1}
                onClick={(event) => {
                  event.stopPropagation();
                  onToggleFavourite(row.symbol);
                }}
              >
                {favourite ? "★" : "☆"}
              </button>
              <span className="watch-symbol">
                <span
                  className={`fresh-dot fresh-${freshness}`}
                  data-testid="watch-fresh"
                  data-freshness={freshness}
                  title={FRESHNESS_TITLES[freshness]}
                />
                <span className="watch-name">{row.symbol}</span>
                <span className="watch-pair">
                  {row.base}/{row.quote}
                </span>
              </span>
              <span className="watch-last" data-testid="watch-last">{formatPrice(ticker?.last)}</span>
              <span
                className={`watch-change ${change === null || change === 0 ? "" : change > 0 ? "up" : "down"}`}
                data-testid="watch-change"
              >
                {formatPercent(change)}
              </span>
              <span className="watch-volume" data-testid="watch-volume">{formatCompact(ticker?.quoteVolume)}</span>
            </li>
          );
        })}
        {rows.length === 0 && <li className="watch-empty">No symbol matches “{query}”.</li>}
      </ul>
    </section>
  );
}
