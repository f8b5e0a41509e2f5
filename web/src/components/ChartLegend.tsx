import { type Candle, isUp } from "../lib/candles";
import { formatPrice, formatVolume, timeLabels } from "../lib/format";

interface ChartLegendProps {
  candle: Candle | null;
  zone: string;
  /** Width of the price scale: the legend wraps before it instead of running into it. */
  rightInset: number;
  /** Decimals of every price of the symbol, as in the header and on the price scale. */
  precision: number | null;
}

/** OHLC, SMA10 and volume of the bar under the crosshair, or of the newest bar. */
export function ChartLegend({ candle, zone, rightInset, precision }: ChartLegendProps) {
  if (!candle) return null;
  const direction = isUp(candle) ? "up" : "down";
  return (
    <dl className="legend" aria-label="Bar values" data-testid="legend" style={{ right: `${rightInset + 8}px` }}>
      <div className="legend-time">{timeLabels(zone).barTime(candle.time)}</div>
      {(
        [
          ["O", formatPrice(candle.open, precision)],
          ["H", formatPrice(candle.high, precision)],
          ["L", formatPrice(candle.low, precision)],
          ["C", formatPrice(candle.close, precision)],
        ] as const
      ).map(([label, value]) => (
        <div key={label}>
          <dt>{label}</dt>
          <dd className={direction}>{value}</dd>
        </div>
      ))}
      <div className="legend-sma">
        <dt>SMA10</dt>
        <dd>{formatPrice(candle.sma10, precision)}</dd>
      </div>
      <div>
        <dt>Vol</dt>
        <dd>{formatVolume(candle.volume)}</dd>
      </div>
    </dl>
  );
}
