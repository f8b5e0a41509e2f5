import { TickMarkType, type UTCTimestamp } from "lightweight-charts";
import { describe, expect, it } from "vitest";
import {
  formatFixed,
  formatNarrowPrice,
  formatPercent,
  formatPrice,
  formatSignedPrice,
  pricePrecision,
  symbolPrecision,
  timeLabels,
} from "./format";

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

describe("symbolPrecision", () => {
  it("chooses one number of decimals per symbol, from its typical price, not per value", () => {
    // The issue: 24h high 43,015.14 next to 24h low 1.00000 after a single 1.0 print.
    const closes = [43_000.5, 43_015.14, 42_990.1, 1.0, 43_001.2];
    const digits = symbolPrecision(closes);
    expect(digits).toBe(2);
    expect(formatPrice(43_015.14, digits)).toBe("43,015.14");
    expect(formatPrice(1.0, digits)).toBe("1.00");
    expect(formatSignedPrice(-43_014.14, 1.0, digits)).toBe("-43,014.14");
    expect(symbolPrecision([0.000123, 0.000125, 430])).toBe(8);
    expect(symbolPrecision([100.1, 99.9, 101.5])).toBe(3);
    expect(symbolPrecision([null, undefined, 0, Number.NaN])).toBeNull();
  });
});

describe("formatNarrowPrice", () => {
  it("keeps ordinary prices as in the header and shortens long ones for the watchlist", () => {
    expect(formatNarrowPrice(43_015.14)).toBe("43,015.14");
    expect(formatNarrowPrice(0.0012345)).toBe("0.001235");
    expect(formatNarrowPrice(0.00000999)).toBe("9.99E-6");
    expect(formatNarrowPrice(67_816_817.2)).toBe("67.82M");
    expect(formatNarrowPrice(null)).toBe("–");
    expect(formatNarrowPrice(1.0, symbolPrecision([1.0, 43_000, 43_447.78, 1.0]))).toBe("1.00");
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
