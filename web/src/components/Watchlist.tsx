import { type KeyboardEvent, useEffect, useMemo, useRef, useState } from "react";
import type { ApiSymbol } from "../lib/api-types";
import { formatCompact, formatNarrowPrice, formatPercent, formatPrice, symbolPrecision } from "../lib/format";
import { matchesSearch, sortWatchlist, type Ticker, tradeFreshness, watchlistKey } from "../lib/ticker";

interface WatchlistProps {
  symbols: readonly ApiSymbol[];
  tickers: ReadonlyMap<string, Ticker>;
  selected: string | null;
  favourites: ReadonlySet<string>;
  /** Decimals of the selected symbol's prices, as in the header; other rows take theirs from their 24h figures. */
  selectedPrecision: number | null;
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

const KEY_HELP = "↑/↓ move through the symbols, Enter opens one, * adds it to or removes it from the favourites";

/**
 * Every active symbol with its 24h figures and a freshness dot. Search filters
 * as you type (symbol, base or quote); ↑/↓ move through the results, Enter
 * opens one, * (or the row's ★ button, one tab stop after the search) adds it to
 * or removes it from the favourites, Escape clears the search. Favourites are listed first.
 */
export default function Watchlist(props: WatchlistProps) {
  const { symbols, tickers, selected, favourites, selectedPrecision, now, onSelect, onToggleFavourite } = props;
  const [query, setQuery] = useState("");
  // The active row follows its symbol: a favourite toggled moves up or down, the cursor with it.
  const [activeSymbol, setActiveSymbol] = useState<string | null>(null);
  const [announcement, setAnnouncement] = useState("");
  const listRef = useRef<HTMLUListElement>(null);

  const rows = useMemo(
    () => sortWatchlist(symbols.filter((s) => matchesSearch(s, query)), favourites),
    [symbols, query, favourites],
  );
  const active = Math.max(0, rows.findIndex((row) => row.symbol === activeSymbol));
  useEffect(() => setActiveSymbol(null), [query]);
  useEffect(() => {
    listRef.current?.querySelector(`[data-index="${active}"]`)?.scrollIntoView({ block: "nearest" });
  }, [active]);

  const toggle = (symbol: string) => {
    setActiveSymbol(symbol);
    setAnnouncement(`${symbol} ${favourites.has(symbol) ? "removed from" : "added to"} favourites`);
    onToggleFavourite(symbol);
  };

  const onKeyDown = (event: KeyboardEvent) => {
    const action = watchlistKey(event);
    const row = rows[active];
    if (action === "up" || action === "down") {
      event.preventDefault();
      const step = action === "down" ? 1 : -1;
      setActiveSymbol(rows[Math.min(Math.max(active + step, 0), Math.max(rows.length - 1, 0))]?.symbol ?? null);
    } else if (action === "open") {
      if (row) onSelect(row.symbol);
    } else if (action === "favourite") {
      event.preventDefault(); // not typed into the search: no symbol has a *
      if (row) toggle(row.symbol);
    } else if (action === "clear" && query) {
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
        aria-describedby="watchlist-keys"
        value={query}
        onChange={(event) => setQuery(event.target.value)}
        onKeyDown={onKeyDown}
      />
      <p id="watchlist-keys" className="visually-hidden">{KEY_HELP}</p>
      <p className="visually-hidden" role="status" data-testid="watchlist-announcement">{announcement}</p>
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
          const digits = row.symbol === selected && selectedPrecision !== null
            ? selectedPrecision
            : symbolPrecision([ticker?.last, ticker?.open, ticker?.high, ticker?.low]);
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
                aria-label={`Favourite ${row.symbol}`}
                aria-pressed={favourite}
                title={`${favourite ? "Remove from" : "Add to"} favourites (key: * in the search)`}
                data-testid="watch-star"
                // One tab stop: the active row's star (the search's ↑/↓ pick the row).
                tabIndex={index === active ? 0 : -1}
                onClick={(event) => {
                  event.stopPropagation();
                  toggle(row.symbol);
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
              <span className="watch-last" data-testid="watch-last" title={formatPrice(ticker?.last, digits)}>
                {formatNarrowPrice(ticker?.last, digits)}
              </span>
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
