import type { Summary } from "../lib/candles";
import { formatPercent, formatPrice, formatSignedPrice, formatVolume } from "../lib/format";

interface QuoteHeaderProps {
  summary: Summary;
  quote: string | null;
}

/** Last price, change over the visible bars, and VWAP and volume of the current bar. */
export function QuoteHeader({ summary, quote }: QuoteHeaderProps) {
  const trend = summary.change === null || summary.change === 0 ? "flat" : summary.change > 0 ? "up" : "down";
  return (
    <section className="quote" aria-label="Quote">
      <div className="quote-last">
        <span className="quote-label">Last</span>
        <span className="quote-price" data-testid="last-price">
          {formatPrice(summary.last)}
        </span>
        {quote && <span className="quote-unit">{quote}</span>}
      </div>
      <dl className="quote-stats">
        <div>
          <dt>Change (visible)</dt>
          <dd className={trend} data-testid="change">
            {formatSignedPrice(summary.change, summary.last)} ({formatPercent(summary.changePercent)})
          </dd>
        </div>
        <div>
          <dt>VWAP (bar)</dt>
          <dd data-testid="vwap">{formatPrice(summary.vwap)}</dd>
        </div>
        <div>
          <dt>Volume (bar)</dt>
          <dd data-testid="volume">{formatVolume(summary.volume)}</dd>
        </div>
      </dl>
    </section>
  );
}
