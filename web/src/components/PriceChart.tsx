import {
  type AutoscaleInfo,
  CandlestickSeries,
  type CandlestickData,
  createChart,
  createSeriesMarkers,
  CrosshairMode,
  HistogramSeries,
  type IChartApi,
  type ISeriesApi,
  type ISeriesMarkersPluginApi,
  LineSeries,
  type LogicalRange,
  type MouseEventParams,
  PriceScaleMode,
  type Time,
  type TickMarkType,
  type UTCTimestamp,
  type WhitespaceData,
} from "lightweight-charts";
import { type Ref, useEffect, useImperativeHandle, useLayoutEffect, useRef, useState } from "react";
import { robustBounds } from "../lib/autoscale";
import {
  type Candle,
  type CandleBook,
  candlesSince,
  findCandle,
  isUp,
  toBar,
  toSmaPoint,
  toVolumePoint,
} from "../lib/candles";
import { bucketEnd, bucketStart } from "../lib/intervals";
import { type ChartTime, chartTime } from "../lib/chart-time";
import { formatCompact, formatCountdown, formatFixed, formatPercent, LOCALE } from "../lib/format";
import { CANDLE_COLORS, chartTheme, type ColorScheme, SMA_COLOR, VOLUME_COLORS } from "../lib/theme";
import { ChartLegend } from "./ChartLegend";

export type ScaleMode = "linear" | "log" | "percent";

const SCALE_MODES: Record<ScaleMode, PriceScaleMode> = {
  linear: PriceScaleMode.Normal,
  log: PriceScaleMode.Logarithmic,
  percent: PriceScaleMode.Percentage,
};

/** What the chart has drawn, for the end-to-end test hook. */
export interface PriceChartHandle {
  bars(): readonly (CandlestickData<Time> | WhitespaceData<Time>)[];
  /** Times of the bars at both edges of the visible range, and its width in bars (the zoom). */
  visibleTimes(): { from: number; to: number; bars: number } | null;
  /** The text of the end-of-data marker, when shown. */
  markers(): string[];
  /** The price scale's label for a price. */
  axisPrice(price: number): string;
  priceScaleWidth(): number;
  /** The price range the price scale shows. */
  priceRange(): { from: number; to: number } | null;
  /** The axis labels the chart asked for since the data was last redrawn: true UTC time and tick mark type. */
  tickMarks(): { time: number; type: TickMarkType; label: string }[];
}

interface PriceChartProps {
  book: CandleBook | null;
  /** A new value means the book was rebuilt from history: redraw everything. */
  resetId: number;
  /** A new value means an older page was merged in front: redraw, keeping the view. */
  olderId: number;
  /** A new value also resets zoom and scroll. */
  selection: string;
  zone: string;
  /** Decimals of every price of the symbol (price scale, legend), null before its first price. */
  precision: number | null;
  /** The book holds the symbol's first candle: mark it. */
  complete: boolean;
  scheme: ColorScheme;
  scaleMode: ScaleMode;
  ignoreOutliers: boolean;
  /** Fewer than OLDER_THRESHOLD bars are left of the view. */
  onNeedOlder(): void;
  ref?: Ref<PriceChartHandle>;
}

/** lightweight-charts' default, and a cap so a short history is not drawn as a few slabs. */
const DEFAULT_BAR_SPACING = 6;
const MAX_BAR_SPACING = 24;
/** Half the height of the last-price label: the countdown hangs right under it, as its extension. */
const LAST_LABEL_HALF_HEIGHT = 9;
/** Empty bars right of the newest one. */
const RIGHT_OFFSET = 3;
/** Bars left of the visible range below which the next older page is loaded. */
export const OLDER_THRESHOLD = 50;
/** Bars scrolled away from the newest before "go to realtime" shows. */
const REALTIME_BUTTON_BARS = 5;

interface Parts {
  chart: IChartApi;
  candles: ISeriesApi<"Candlestick">;
  sma: ISeriesApi<"Line">;
  volume: ISeriesApi<"Histogram">;
  markers: ISeriesMarkersPluginApi<Time>;
}

interface Drawn {
  resetId: number;
  olderId: number;
  selection: string;
  /** Time of the newest bar drawn, -Infinity when none. */
  lastTime: number;
}

/** Candles with an SMA10 overlay, and volume in a pane of its own below them. */
export function PriceChart(props: PriceChartProps) {
  const { book, resetId, olderId, selection, zone, precision, complete, scheme, scaleMode, ignoreOutliers, ref } = props;
  const containerRef = useRef<HTMLDivElement>(null);
  const partsRef = useRef<Parts | null>(null);
  const drawnRef = useRef<Drawn>({ resetId: -1, olderId: 0, selection: "", lastTime: -Infinity });
  const onNeedOlderRef = useRef(props.onNeedOlder);
  onNeedOlderRef.current = props.onNeedOlder;
  const ignoreOutliersRef = useRef(ignoreOutliers);
  ignoreOutliersRef.current = ignoreOutliers;
  const bookRef = useRef(book);
  bookRef.current = book;
  // The chart holds shifted times (see lib/chart-time.ts), in the zone of the book it drew.
  const timeRef = useRef<ChartTime>(chartTime(book?.zone ?? zone));
  const tickMarksRef = useRef(new Map<number, { time: number; type: TickMarkType; label: string }>());
  const [hoverTime, setHoverTime] = useState<number | null>(null);
  const [awayFromRealtime, setAwayFromRealtime] = useState(false);
  const [scaleWidth, setScaleWidth] = useState(0);
  const [lastY, setLastY] = useState<number | null>(null);

  useLayoutEffect(() => {
    const chart = createChart(containerRef.current!, {
      autoSize: true,
      ...chartTheme(scheme),
      crosshair: { mode: CrosshairMode.Normal },
      // Percentages and volumes through the page's formatters too (prices: per series, see the precision effect).
      localization: { locale: LOCALE, percentageFormatter: formatPercent },
      timeScale: {
        timeVisible: true,
        secondsVisible: false,
        rightOffset: RIGHT_OFFSET,
        maxBarSpacing: MAX_BAR_SPACING,
      },
    });
    chart.applyOptions(timeFormatters(timeRef.current, tickMarksRef.current));
    const candles = chart.addSeries(CandlestickSeries, {
      upColor: CANDLE_COLORS.up,
      downColor: CANDLE_COLORS.down,
      wickUpColor: CANDLE_COLORS.up,
      wickDownColor: CANDLE_COLORS.down,
      borderVisible: false,
      autoscaleInfoProvider: (original: () => AutoscaleInfo | null) => {
        const base = original();
        if (!ignoreOutliersRef.current || !base) return base;
        const range = chart.timeScale().getVisibleLogicalRange();
        const bars = bookRef.current?.candles ?? [];
        if (!range) return base;
        const visible = bars.slice(Math.max(0, Math.floor(range.from)), Math.max(0, Math.ceil(range.to) + 1));
        const bounds = robustBounds(visible);
        return bounds ? { ...base, priceRange: bounds } : base;
      },
    });
    const sma = chart.addSeries(LineSeries, {
      color: SMA_COLOR,
      lineWidth: 2,
      priceLineVisible: false,
      lastValueVisible: false,
      crosshairMarkerVisible: false,
      autoscaleInfoProvider: () => null, // the candles alone decide the price range
    });
    const volume = chart.addSeries(
      HistogramSeries,
      {
        priceFormat: { type: "custom", minMove: 1e-8, formatter: formatCompact },
        priceLineVisible: false,
        lastValueVisible: false,
      },
      1,
    );
    const [pricePane, volumePane] = chart.panes();
    pricePane?.setStretchFactor(3);
    volumePane?.setStretchFactor(1);

    const onRange = (range: LogicalRange | null) => {
      if (!range) return;
      if (range.from < OLDER_THRESHOLD) onNeedOlderRef.current();
      setAwayFromRealtime(chart.timeScale().scrollPosition() < -REALTIME_BUTTON_BARS);
    };
    const onCrosshair = (param: MouseEventParams<Time>) =>
      setHoverTime(typeof param.time === "number" ? timeRef.current.toReal(param.time) : null);
    chart.timeScale().subscribeVisibleLogicalRangeChange(onRange);
    chart.subscribeCrosshairMove(onCrosshair);
    const markers = createSeriesMarkers(candles, []);
    partsRef.current = { chart, candles, sma, volume, markers };
    drawnRef.current = { resetId: -1, olderId: 0, selection: "", lastTime: -Infinity };
    return () => {
      partsRef.current = null;
      chart.remove();
    };
    // Created once: theme, zone and data follow in the effects below.
  }, []);

  useEffect(() => {
    partsRef.current?.chart.applyOptions(chartTheme(scheme));
  }, [scheme]);

  // One precision for every price of the symbol: the price scale's labels, the header's and the legend's.
  useEffect(() => {
    const parts = partsRef.current;
    if (!parts || precision === null) return;
    // The axis formats through the same Intl formatter as the header (one locale).
    const priceFormat = {
      type: "custom",
      minMove: 10 ** -precision,
      formatter: (price: number) => formatFixed(price, precision),
    } as const;
    parts.candles.applyOptions({ priceFormat });
    parts.sma.applyOptions({ priceFormat });
  }, [precision]);

  useEffect(() => {
    partsRef.current?.chart.priceScale("right").applyOptions({ mode: SCALE_MODES[scaleMode] });
  }, [scaleMode]);

  useEffect(() => {
    // Re-run autoscale with the new provider behaviour.
    partsRef.current?.chart.priceScale("right").applyOptions({ autoScale: true });
    partsRef.current?.candles.applyOptions({});
  }, [ignoreOutliers]);

  useImperativeHandle(
    ref,
    () => ({
      // In true UTC seconds, as everything outside the chart.
      bars: () =>
        (partsRef.current?.candles.data() ?? []).map((bar) => ({
          ...bar,
          time: timeRef.current.toReal(bar.time as number) as UTCTimestamp,
        })),
      visibleTimes: () => {
        const timeScale = partsRef.current?.chart.timeScale();
        const range = timeScale?.getVisibleRange();
        const logical = timeScale?.getVisibleLogicalRange();
        const real = (time: Time) => timeRef.current.toReal(time as number);
        return range && logical
          ? { from: real(range.from), to: real(range.to), bars: logical.to - logical.from }
          : null;
      },
      markers: () => partsRef.current?.markers.markers().map((marker) => marker.text ?? "") ?? [],
      tickMarks: () => [...tickMarksRef.current.values()],
      axisPrice: (price) => partsRef.current?.candles.priceFormatter().format(price) ?? "",
      priceScaleWidth: () => partsRef.current?.chart.priceScale("right").width() ?? 0,
      priceRange: () => {
        const range = partsRef.current?.chart.priceScale("right").getVisibleRange();
        return range ? { from: range.from, to: range.to } : null;
      },
    }),
    [],
  );

  useEffect(() => {
    const parts = partsRef.current;
    if (!parts) return;
    const candles = book?.candles ?? [];
    const drawn = drawnRef.current;
    if (drawn.resetId !== resetId || drawn.olderId !== olderId) {
      const mapping = chartTime(book?.zone ?? zone);
      if (mapping !== timeRef.current) {
        timeRef.current = mapping;
        tickMarksRef.current.clear();
        parts.chart.applyOptions(timeFormatters(mapping, tickMarksRef.current));
      }
      redraw(parts, candles, mapping);
      // The first loaded book of a selection (not the empty one shown while it loads) resets the view;
      // older pages and refetches keep it (the time scale stays anchored at the right edge).
      const shownSelection = book ? selection : drawn.selection;
      if (shownSelection !== drawn.selection) showLatest(parts.chart, candles.length);
      drawnRef.current = { resetId, olderId, selection: shownSelection, lastTime: candles.at(-1)?.time ?? -Infinity };
    } else {
      // Live: update the newest bar in place or append, never redraw.
      const mapping = timeRef.current;
      for (const candle of candlesSince(candles, drawn.lastTime)) {
        parts.candles.update(shifted(toBar(candle), mapping));
        parts.sma.update(shifted(toSmaPoint(candle), mapping));
        parts.volume.update(shifted(toVolumePoint(candle, VOLUME_COLORS), mapping));
        drawn.lastTime = candle.time;
      }
    }
    // The price scale's width follows the labels once the chart rendered them (its own frame comes first).
    const newest = candles.at(-1);
    const frame = requestAnimationFrame(() => {
      setScaleWidth(parts.chart.priceScale("right").width());
      setLastY(newest ? parts.candles.priceToCoordinate(newest.close) : null);
    });
    const first = candles[0];
    parts.markers.setMarkers(
      complete && first
        ? [{ time: timeRef.current.toChart(first.time) as UTCTimestamp, position: "belowBar", shape: "arrowUp", color: "#8b97a8", text: "First trade" }]
        : [],
    );
    return () => cancelAnimationFrame(frame);
  }, [book, resetId, olderId, selection, complete]);

  // The countdown label follows the last price on the price scale; the legend keeps clear of the scale.
  const last = book?.candles.at(-1) ?? null;
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  useEffect(() => {
    const parts = partsRef.current;
    if (!parts) return;
    setScaleWidth(parts.chart.priceScale("right").width());
    setLastY(last ? parts.candles.priceToCoordinate(last.close) : null);
  }, [now, last, scaleMode]);

  const candles = book?.candles ?? [];
  const shown: Candle | null = (hoverTime !== null && findCandle(candles, hoverTime)) || candles.at(-1) || null;
  // To the close of the current bucket, traded in or not (an empty bucket still closes on time).
  const remaining = book && last ? currentBucketEnd(book, now / 1000) - now / 1000 : null;
  return (
    <div className="chart">
      <div className="chart-canvas" ref={containerRef} />
      <ChartLegend candle={shown} zone={zone} rightInset={scaleWidth} precision={precision} />
      {remaining !== null && remaining > 0 && lastY !== null && scaleWidth > 0 && (
        <div
          className={`countdown countdown-${last && isUp(last) ? "up" : "down"}`}
          data-testid="countdown"
          title="Time to the candle's close"
          style={{ top: `${lastY + LAST_LABEL_HALF_HEIGHT}px`, width: `${scaleWidth}px` }}
        >
          {formatCountdown(remaining)}
        </div>
      )}
      {awayFromRealtime && (
        <button
          type="button"
          className="realtime-button"
          data-testid="go-realtime"
          style={{ right: `${scaleWidth + 8}px` }}
          onClick={() => partsRef.current?.chart.timeScale().scrollToPosition(RIGHT_OFFSET, false)}
          title="Scroll to the newest candle"
        >
          Go to realtime ⇥
        </button>
      )}
    </div>
  );
}

function currentBucketEnd(book: CandleBook, now: number): number {
  return bucketEnd(bucketStart(now, book.interval, book.zone), book.interval, book.zone);
}

/** Default zoom at the newest bar; a short history is spread over the width instead. */
function showLatest(chart: IChartApi, barCount: number) {
  const timeScale = chart.timeScale();
  timeScale.resetTimeScale();
  if (barCount * DEFAULT_BAR_SPACING < timeScale.width()) timeScale.fitContent();
}

function redraw(parts: Parts, candles: readonly Candle[], mapping: ChartTime) {
  parts.candles.setData(candles.map((candle) => shifted(toBar(candle), mapping)));
  parts.sma.setData(candles.map((candle) => shifted(toSmaPoint(candle), mapping)));
  parts.volume.setData(candles.map((candle) => shifted(toVolumePoint(candle, VOLUME_COLORS), mapping)));
}

/** A point at its chart time: the wall clock of the book's zone, read as UTC (lib/chart-time.ts). */
function shifted<P extends { time: UTCTimestamp }>(point: P, mapping: ChartTime): P {
  return { ...point, time: mapping.toChart(point.time) as UTCTimestamp };
}

/** Crosshair and axis labels of chart times; the axis labels asked for are noted for the test hook. */
function timeFormatters(mapping: ChartTime, noted: Map<number, { time: number; type: TickMarkType; label: string }>) {
  return {
    localization: { timeFormatter: mapping.crosshair },
    timeScale: {
      tickMarkFormatter: (time: Time, type: TickMarkType) => {
        const label = mapping.tickMark(time, type);
        if (noted.size > 2_000) noted.clear();
        noted.set(time as number, { time: mapping.toReal(time as number), type, label });
        return label;
      },
    },
  };
}
