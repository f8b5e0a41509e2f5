import type { ApiSymbol } from "../lib/api-types";
import { INTERVAL_NAMES, type Interval } from "../lib/intervals";

interface ControlsProps {
  symbols: ApiSymbol[];
  symbol: string | null;
  interval: Interval;
  onSymbolChange(symbol: string): void;
  onIntervalChange(interval: Interval): void;
}

/** Symbol picker and interval switch: a native <select> and real buttons, so keyboards work as usual. */
export function Controls({ symbols, symbol, interval, onSymbolChange, onIntervalChange }: ControlsProps) {
  return (
    <div className="controls">
      <label className="symbol-picker">
        <span className="visually-hidden">Symbol</span>
        <select
          data-testid="symbol-select"
          value={symbol ?? ""}
          disabled={symbols.length === 0}
          onChange={(event) => onSymbolChange(event.target.value)}
        >
          {symbols.length === 0 && <option value="">No symbols</option>}
          {symbols.map((s) => (
            <option key={s.symbol} value={s.symbol}>
              {s.base && s.quote ? `${s.base}/${s.quote}` : s.symbol}
            </option>
          ))}
        </select>
      </label>
      <div className="intervals" role="group" aria-label="Candle interval">
        {INTERVAL_NAMES.map((name) => (
          <button
            key={name}
            type="button"
            data-testid={`interval-${name}`}
            aria-pressed={name === interval}
            onClick={() => onIntervalChange(name)}
          >
            {name}
          </button>
        ))}
      </div>
    </div>
  );
}
