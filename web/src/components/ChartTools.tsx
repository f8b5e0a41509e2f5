import type { ScaleMode } from "./PriceChart";

interface ChartToolsProps {
  scaleMode: ScaleMode;
  ignoreOutliers: boolean;
  loadingOlder: boolean;
  complete: boolean;
  onScaleModeChange(mode: ScaleMode): void;
  onIgnoreOutliersChange(ignore: boolean): void;
}

const MODES: [ScaleMode, string, string][] = [
  ["linear", "Lin", "Linear price scale"],
  ["log", "Log", "Logarithmic price scale"],
  ["percent", "%", "Percentage change from the first visible bar"],
];

/** Price scale mode, outlier-proof autoscale, and the state of older history. */
export function ChartTools(props: ChartToolsProps) {
  const { scaleMode, ignoreOutliers, loadingOlder, complete } = props;
  return (
    <div className="chart-tools">
      <div className="intervals scale-modes" role="group" aria-label="Price scale">
        {MODES.map(([mode, label, title]) => (
          <button
            key={mode}
            type="button"
            title={title}
            data-testid={`scale-${mode}`}
            aria-pressed={mode === scaleMode}
            onClick={() => props.onScaleModeChange(mode)}
          >
            {label}
          </button>
        ))}
      </div>
      <label className="outliers" title="Autoscale to the bulk of the visible prices, leaving bad prints off-screen">
        <input
          type="checkbox"
          data-testid="ignore-outliers"
          checked={ignoreOutliers}
          onChange={(event) => props.onIgnoreOutliersChange(event.target.checked)}
        />
        Ignore outliers
      </label>
      <span className="history-state" data-testid="history-state" aria-live="polite">
        {loadingOlder ? "Loading older candles…" : complete ? "Start of history reached" : ""}
      </span>
    </div>
  );
}
