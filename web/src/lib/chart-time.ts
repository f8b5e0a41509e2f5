// The chart's own time axis in a chosen zone.
//
// lightweight-charts works in UTC only: it puts day, month and year labels (and
// their gridlines) where the *UTC* date of a bar changes. Its documented way to
// show another zone ("Time zones" guide) is to shift every bar's timestamp by
// that zone's offset at that moment, so the UTC clock of the shifted time reads
// the local wall clock, and to label the shifted times as UTC.
//
// Wall clock time is not one-to-one: when clocks go back, an hour of wall time
// repeats, and the chart rejects times that do not ascend. Around such a
// change, the two real hours [T - d, T + d) are mapped linearly onto the one
// wall hour they share (half speed), so the mapping stays strictly increasing
// for any bar of 2 s or more and continuous at both ends. When clocks go
// forward, wall time just skips ahead: nothing to do.
//
// Everything outside the chart (the book, the legend, the countdown, the API)
// keeps true UTC seconds; only what is handed to the chart is shifted, and what
// the chart hands back (crosshair, visible range, tick marks) is shifted back.

import type { Time, TickMarkType } from "lightweight-charts";
import { timeLabels } from "./format";
import { zoneOffset } from "./zones";

/** Farther apart than any clock change, and closer than two of them. */
const WINDOW = 3 * 3600;
/** Offsets lie within UTC-12:00 and UTC+14:00: the real time of a wall time lies within this much of it. */
const MAX_OFFSET = 15 * 3600;

export interface ChartTime {
  readonly zone: string;
  /** True UTC seconds → the time handed to the chart (its UTC clock reads the wall clock). */
  toChart(time: number): number;
  /** The chart's time → true UTC seconds (the inverse of toChart). */
  toReal(chartTime: number): number;
  /** Crosshair label (localization.timeFormatter) of a chart time. */
  crosshair(time: Time): string;
  /** Axis label (timeScale.tickMarkFormatter) of a chart time. */
  tickMark(time: Time, type: TickMarkType): string;
}

const cache = new Map<string, ChartTime>();

/** The chart-time mapping of `zone` (an IANA name or a ±HH:MM offset). */
export function chartTime(zone: string): ChartTime {
  let mapping = cache.get(zone);
  if (!mapping) {
    mapping = createChartTime(zone);
    cache.set(zone, mapping);
  }
  return mapping;
}

function createChartTime(zone: string): ChartTime {
  const offset = (time: number) => zoneOffset(time, zone);
  // Offsets at whole hours, remembered: the bars of an hour share them (Intl is slow, bars are many).
  const hourly = new Map<number, number>();
  const hourOffset = (hour: number) => {
    let value = hourly.get(hour);
    if (value === undefined) {
      value = offset(hour);
      if (hourly.size > 50_000) hourly.clear();
      hourly.set(hour, value);
    }
    return value;
  };

  const toChart = (time: number): number => {
    const hour = Math.floor(time / 3600) * 3600;
    const early = hourOffset(hour - WINDOW);
    // The same offset on both sides, hours apart: no clock change in between.
    if (early === hourOffset(hour + 3600 + WINDOW)) return time + early;
    const before = offset(time - WINDOW);
    const after = offset(time + WINDOW);
    if (before > after) {
      // Clocks go back near `time`: find the instant T of the change.
      let low = time - WINDOW;
      let high = time + WINDOW;
      while (high - low > 1) {
        const middle = Math.floor((low + high) / 2);
        if (offset(middle) === before) low = middle;
        else high = middle;
      }
      const change = high;
      const repeated = before - after;
      if (time >= change - repeated && time < change + repeated) {
        return change - repeated + before + Math.floor((time - (change - repeated)) / 2);
      }
    }
    return time + offset(time);
  };

  const inverse = new Map<number, number>();
  const toReal = (chart: number): number => {
    const known = inverse.get(chart);
    if (known !== undefined) return known;
    // Usually two steps settle it; near a clock change, search (toChart is increasing).
    let real = chart - offset(chart);
    real = chart - offset(real);
    if (toChart(real) !== chart) {
      let low = chart - MAX_OFFSET;
      let high = chart + MAX_OFFSET;
      while (high - low > 1) {
        const middle = Math.floor((low + high) / 2);
        if (toChart(middle) < chart) low = middle;
        else high = middle;
      }
      real = high;
    }
    if (inverse.size > 20_000) inverse.clear();
    inverse.set(chart, real);
    return real;
  };

  // Every bar is mapped again on each redraw (older pages, refetches): remembered both ways.
  const forward = new Map<number, number>();
  const labels = timeLabels(zone);
  return {
    zone,
    toChart: (time) => {
      let chart = forward.get(time);
      if (chart === undefined) {
        chart = toChart(time);
        if (forward.size > 20_000) forward.clear();
        forward.set(time, chart);
      }
      if (inverse.size > 20_000) inverse.clear();
      inverse.set(chart, time);
      return chart;
    },
    toReal,
    crosshair: (time) => labels.crosshair(toReal(time as number) as Time),
    tickMark: (time, type) => labels.tickMark(toReal(time as number) as Time, type),
  };
}
