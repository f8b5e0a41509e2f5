import { type Interval, MAIN_INTERVALS, MORE_INTERVALS } from "../lib/intervals";
import { BROWSER_ZONE, EXCHANGE_ZONES } from "../lib/zones";

interface ControlsProps {
  interval: Interval;
  zone: string;
  onIntervalChange(interval: Interval): void;
  onZoneChange(zone: string): void;
}

/** Interval switch (the common ones as buttons, the rest in a menu) and the time-zone picker. */
export function Controls({ interval, zone, onIntervalChange, onZoneChange }: ControlsProps) {
  const more = (MORE_INTERVALS as readonly string[]).includes(interval);
  const zones = [...new Set([BROWSER_ZONE, "UTC", ...EXCHANGE_ZONES, zone])];
  return (
    <div className="controls">
      <div className="intervals" role="group" aria-label="Candle interval">
        {MAIN_INTERVALS.map((name) => (
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
        <label className="interval-more">
          <span className="visually-hidden">More intervals</span>
          <select
            data-testid="interval-more"
            value={more ? interval : ""}
            className={more ? "interval-more-active" : ""}
            onChange={(event) => event.target.value && onIntervalChange(event.target.value)}
          >
            <option value="">More</option>
            {MORE_INTERVALS.map((name) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </label>
      </div>
      <label className="zone-picker">
        <span className="visually-hidden">Time zone</span>
        <select data-testid="zone-select" value={zone} onChange={(event) => onZoneChange(event.target.value)}>
          {zones.map((name) => (
            <option key={name} value={name}>
              {name === BROWSER_ZONE ? `${name} (browser)` : name}
            </option>
          ))}
        </select>
      </label>
    </div>
  );
}
