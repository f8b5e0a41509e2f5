interface ChartStatusProps {
  symbolsLoaded: boolean;
  symbolCount: number;
  /** Candles of the selection: null while loading. */
  candleCount: number | null;
  error: string | null;
}

function describe({ symbolsLoaded, symbolCount, candleCount }: ChartStatusProps): string | null {
  if (candleCount === null && !symbolsLoaded) return "Loading symbols…";
  if (candleCount === null && symbolCount === 0) return "No active symbols yet.";
  if (candleCount === null) return "Loading candles…";
  return candleCount === 0 ? "No trades yet: waiting for the first tick." : null;
}

/** A message over the chart while it has nothing (or nothing current) to show. */
export function ChartStatus(props: ChartStatusProps) {
  if (props.error) {
    return (
      <p className="chart-message chart-message-error" role="alert">
        {props.error}
      </p>
    );
  }
  const message = describe(props);
  return message && <p className="chart-message">{message}</p>;
}
