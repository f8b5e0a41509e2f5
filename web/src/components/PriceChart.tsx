import {
  CandlestickSeries,
  type CandlestickData,
  createChart,
  CrosshairMode,
  HistogramSeries,
  type IChartApi,
  type ISeriesApi,
  LineSeries,
  type LogicalRange,
  type MouseEventParams,
  type Time,
  type WhitespaceData,
} from "lightweight-charts";
import { type Ref, useEffect, useImperativeHandle, useLayoutEffect, useRef, useState } from "react";
import {
  type Candle,
  type CandleBook,
  candlesSince,
  findCandle,
  toBar,
  toSmaPoint,
  toVolumePoint,
  type VisibleRange,
} from "../lib/candles";
import { formatCrosshairTime, formatTickMark, pricePrecision } from "../lib/format";
import { CANDLE_COLORS, chartTheme, type ColorScheme, SMA_COLOR, VOLUME_COLORS } from "../lib/theme";
import { ChartLegend } from "./ChartLegend";

/** What the chart has drawn, for the end-to-end test hook. */
export interface PriceChartHandle {
  bars(): readonly (CandlestickData<Time> | WhitespaceData<Time>)[];
}

interface PriceChartProps {
  book: CandleBook | null;
  /** A new value means the book was rebuilt from history: redraw everything. */
  resetId: number;
  /** A new value also resets zoom and scroll. */
  selection: string;
  scheme: ColorScheme;
  onVisibleRangeChange(range: VisibleRange | null): void;
  ref?: Ref<PriceChartHandle>;
}

/** lightweight-charts' default, and a cap so a short history is not drawn as a few slabs. */
const DEFAULT_BAR_SPACING = 6;
const MAX_BAR_SPACING = 24;

interface Parts {
  chart: IChartApi;
  candles: ISeriesApi<"Candlestick">;
  sma: ISeriesApi<"Line">;
  volume: ISeriesApi<"Histogram">;
}

interface Drawn {
  resetId: number;
  selection: string;
  /** Time of the newest bar drawn, -Infinity when none. */
  lastTime: number;
}

/** Candles with an SMA10 overlay, and volume in a pane of its own below them. */
export function PriceChart({ book, resetId, selection, scheme, onVisibleRangeChange, ref }: PriceChartProps) {
  const containerRef = useRef<HTMLDivElement>(null);
  const partsRef = useRef<Parts | null>(null);
  const drawnRef = useRef<Drawn>({ resetId: -1, selection: "", lastTime: -Infinity });
  const onRangeRef = useRef(onVisibleRangeChange);
  onRangeRef.current = onVisibleRangeChange;
  const [hoverTime, setHoverTime] = useState<number | null>(null);

  useLayoutEffect(() => {
    const chart = createChart(containerRef.current!, {
      autoSize: true,
      ...chartTheme(scheme),
      crosshair: { mode: CrosshairMode.Normal },
      localization: { timeFormatter: formatCrosshairTime },
      timeScale: {
        timeVisible: true,
        secondsVisible: false,
        rightOffset: 3,
        maxBarSpacing: MAX_BAR_SPACING,
        tickMarkFormatter: formatTickMark,
      },
    });
    const candles = chart.addSeries(CandlestickSeries, {
      upColor: CANDLE_COLORS.up,
      downColor: CANDLE_COLORS.down,
      wickUpColor: CANDLE_COLORS.up,
      wickDownColor: CANDLE_COLORS.down,
      borderVisible: false,
    });
    const sma = chart.addSeries(LineSeries, {
      color: SMA_COLOR,
      lineWidth: 2,
      priceLineVisible: false,
      lastValueVisible: false,
      crosshairMarkerVisible: false,
    });
    const volume = chart.addSeries(
      HistogramSeries,
      { priceFormat: { type: "volume" }, priceLineVisible: false, lastValueVisible: false },
      1,
    );
    const [pricePane, volumePane] = chart.panes();
    pricePane?.setStretchFactor(3);
    volumePane?.setStretchFactor(1);

    const onRange = (range: LogicalRange | null) =>
      onRangeRef.current(range && { from: Math.ceil(range.from), to: Math.floor(range.to) });
    const onCrosshair = (param: MouseEventParams<Time>) =>
      setHoverTime(typeof param.time === "number" ? param.time : null);
    chart.timeScale().subscribeVisibleLogicalRangeChange(onRange);
    chart.subscribeCrosshairMove(onCrosshair);
    partsRef.current = { chart, candles, sma, volume };
    drawnRef.current = { resetId: -1, selection: "", lastTime: -Infinity };
    return () => {
      partsRef.current = null;
      chart.remove();
    };
    // Created once: the theme follows in the effect below, data in the one after.
  }, []);

  useEffect(() => {
    partsRef.current?.chart.applyOptions(chartTheme(scheme));
  }, [scheme]);

  useImperativeHandle(ref, () => ({ bars: () => partsRef.current?.candles.data() ?? [] }), []);

  useEffect(() => {
    const parts = partsRef.current;
    if (!parts) return;
    const candles = book?.candles ?? [];
    const drawn = drawnRef.current;
    if (drawn.resetId !== resetId) {
      redraw(parts, candles);
      // The first loaded book of a selection (not the empty one shown while it loads) resets the view.
      const shownSelection = book ? selection : drawn.selection;
      if (shownSelection !== drawn.selection) showLatest(parts.chart, candles.length);
      drawnRef.current = { resetId, selection: shownSelection, lastTime: candles.at(-1)?.time ?? -Infinity };
      return;
    }
    // Live: update the newest bar in place or append, never redraw.
    for (const candle of candlesSince(candles, drawn.lastTime)) {
      parts.candles.update(toBar(candle));
      parts.sma.update(toSmaPoint(candle));
      parts.volume.update(toVolumePoint(candle, VOLUME_COLORS));
      drawn.lastTime = candle.time;
    }
  }, [book, resetId, selection]);

  const candles = book?.candles ?? [];
  const shown: Candle | null = (hoverTime !== null && findCandle(candles, hoverTime)) || candles.at(-1) || null;
  return (
    <div className="chart">
      <div className="chart-canvas" ref={containerRef} />
      <ChartLegend candle={shown} />
    </div>
  );
}

/** Default zoom at the newest bar; a short history is spread over the width instead. */
function showLatest(chart: IChartApi, barCount: number) {
  const timeScale = chart.timeScale();
  timeScale.resetTimeScale();
  if (barCount * DEFAULT_BAR_SPACING < timeScale.width()) timeScale.fitContent();
}

function redraw(parts: Parts, candles: readonly Candle[]) {
  const reference = candles.at(-1)?.close;
  if (reference !== undefined) {
    const precision = pricePrecision(reference);
    const priceFormat = { type: "price", precision, minMove: 10 ** -precision } as const;
    parts.candles.applyOptions({ priceFormat });
    parts.sma.applyOptions({ priceFormat });
  }
  parts.candles.setData(candles.map(toBar));
  parts.sma.setData(candles.map(toSmaPoint));
  parts.volume.setData(candles.map((candle) => toVolumePoint(candle, VOLUME_COLORS)));
}
