import { TickMarkType, type UTCTimestamp } from "lightweight-charts";
import { describe, expect, it } from "vitest";
import { formatFixed, formatPercent, pricePrecision, timeLabels } from "./format";

const formatBarTime = (seconds: number) => timeLabels().barTime(seconds);
const formatTickMark = timeLabels().tickMark;

// 2026-11-24T05:00:00Z; vitest runs in Asia/Kolkata (UTC+05:30), see vite.config.ts.
const T0 = Date.UTC(2026, 10, 24, 5) / 1000;

describe("pricePrecision", () => {
  it("shows about six significant digits, between 2 and 8 decimals", () => {
    expect(pricePrecision(43000.5)).toBe(2);
    expect(pricePrecision(2300)).toBe(2);
    expect(pricePrecision(1.2345)).toBe(5);
    expect(pricePrecision(0.000123)).toBe(8);
    expect(pricePrecision(0)).toBe(5);
  });
});

describe("local time labels", () => {
  it("formats axis ticks and bar times in the browser's zone, not UTC", () => {
    expect(formatTickMark(T0 as UTCTimestamp, TickMarkType.Time)).toMatch(/10:30/);
    expect(formatBarTime(T0)).toMatch(/10:30/);
    expect(formatBarTime(T0)).toMatch(/24/);
  });

  it("labels a day tick with the local date", () => {
    // 20:00 UTC on the 24th is already the 25th in Kolkata.
    expect(formatTickMark((T0 + 15 * 3600) as UTCTimestamp, TickMarkType.DayOfMonth)).toMatch(/25/);
  });
});

describe("labels in a chosen zone", () => {
  it("labels bars and ticks in that zone, whatever the browser's", () => {
    expect(timeLabels("UTC").tickMark(T0 as UTCTimestamp, TickMarkType.Time)).toMatch(/05:00/);
    expect(timeLabels("America/New_York").barTime(T0)).toMatch(/12:00/);
  });
});

describe("formatFixed", () => {
  it("is the price scale's and the header's formatter: fixed decimals, grouped", () => {
    expect(formatFixed(43179.63, 2)).toBe("43,179.63");
    expect(formatFixed(0.5, 4)).toBe("0.5000");
  });
});

describe("formatPercent", () => {
  it("signs changes and shows placeholders for missing values", () => {
    expect(formatPercent(1.5)).toMatch(/^\+1[.,]50%$/);
    expect(formatPercent(-0.25)).toMatch(/^-0[.,]25%$/);
    expect(formatPercent(null)).toBe("–");
  });
});
