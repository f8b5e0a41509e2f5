import { formatAge, formatPercent, formatPrice, formatSignedPrice, formatVolume } from "../lib/format";
import type { Ticker } from "../lib/ticker";

interface QuoteHeaderProps {
  symbol: string | null;
  ticker: Ticker | null;
  base: string | null;
  quote: string | null;
  /** Seconds since the symbol's last trade, null when unknown. */
  tradeAge: number | null;
  /** Decimals of every price of the symbol (symbolPrecision), null before its first price. */
  precision: number | null;
}

/** 24h rolling figures of the selected symbol, from the ticker (not from the bars on screen). */
export function QuoteHeader({ symbol, ticker, base, quote, tradeAge, precision }: QuoteHeaderProps) {
  const change = ticker?.change ?? null;
  const trend = change === null || change === 0 ? "flat" : change > 0 ? "up" : "down";
  const last = ticker?.last ?? null;
  return (
    <section className="quote" aria-label="24 hour quote">
      <div className="quote-last">
        <span className="quote-symbol" data-testid="quote-symbol">{symbol ?? "–"}</span>
        <span className="quote-price" data-testid="last-price">
          {formatPrice(last, precision)}
        </span>
        {quote && <span className="quote-unit">{quote}</span>}
      </div>
      <dl className="quote-stats">
        <div>
          <dt>24h change</dt>
          <dd className={trend} data-testid="change">
            {formatSignedPrice(change, last, precision)} ({formatPercent(ticker?.changePercent)})
          </dd>
        </div>
        <div>
          <dt>24h high</dt>
          <dd data-testid="high">{formatPrice(ticker?.high, precision)}</dd>
        </div>
        <div>
          <dt>24h low</dt>
          <dd data-testid="low">{formatPrice(ticker?.low, precision)}</dd>
        </div>
        <div>
          <dt>24h volume{base ? ` (${base})` : ""}</dt>
          <dd data-testid="volume">{formatVolume(ticker?.volume)}</dd>
        </div>
        <div>
          <dt>24h volume{quote ? ` (${quote})` : ""}</dt>
          <dd data-testid="quote-volume">{formatVolume(ticker?.quoteVolume)}</dd>
        </div>
        <div>
          <dt>Last trade</dt>
          <dd data-testid="trade-age">{tradeAge === null ? "–" : `${formatAge(tradeAge)} ago`}</dd>
        </div>
      </dl>
    </section>
  );
}
