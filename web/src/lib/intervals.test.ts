import { describe, expect, it } from "vitest";
import { bucketEnd, bucketStart, intervalSeconds, isInterval, parseInterval } from "./intervals";

const utc = (...args: [number, number, number, number?, number?]) => Date.UTC(...args) / 1000;

describe("intervals", () => {
  it("accepts what the API accepts", () => {
    for (const name of ["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"]) {
      expect(isInterval(name)).toBe(true);
    }
    for (const bad of ["bogus", "7m", "5h", "0m", "1y", "13M", ""]) expect(isInterval(bad)).toBe(false);
    expect(parseInterval("4h")).toEqual({ n: 4, unit: "h" });
    expect(intervalSeconds("15m")).toBe(900);
    expect(intervalSeconds("1w")).toBe(7 * 86_400);
  });

  it("aligns day, week and month buckets at local midnight, DST-correct", () => {
    // Berlin switches back on 25 Oct 2026: that day lasts 25 hours.
    const start = bucketStart(utc(2026, 9, 25, 12), "1d", "Europe/Berlin");
    expect(start).toBe(utc(2026, 9, 24, 22));
    expect(bucketEnd(start, "1d", "Europe/Berlin") - start).toBe(25 * 3600);
    // Weeks start on Monday: 24 Nov 2026 is a Tuesday.
    expect(bucketStart(utc(2026, 10, 24, 12), "1w", "UTC")).toBe(utc(2026, 10, 23));
    expect(bucketStart(utc(2026, 10, 24, 12), "1M", "America/New_York")).toBe(utc(2026, 10, 1, 4));
    expect(bucketEnd(utc(2026, 10, 1, 4), "1M", "America/New_York")).toBe(utc(2026, 11, 1, 5));
  });

  it("counts sub-day buckets from local midnight, in fixed offsets too", () => {
    expect(bucketStart(utc(2026, 10, 24, 3), "4h", "Asia/Kolkata")).toBe(utc(2026, 10, 24, 2, 30));
    expect(bucketStart(utc(2026, 10, 24, 3), "4h", "+08:00")).toBe(utc(2026, 10, 24, 0));
    expect(bucketStart(utc(2026, 10, 24, 3, 7), "5m", "UTC")).toBe(utc(2026, 10, 24, 3, 5));
  });
});
