import { describe, expect, it } from "vitest";
import { robustBounds } from "./autoscale";

const bar = (low: number, high: number) => ({ low, high });

describe("robustBounds", () => {
  it("is the full range when there is no outlier", () => {
    const bars = [bar(100, 101), bar(99.5, 100.8), bar(100.2, 102.4), bar(98.9, 100)];
    expect(robustBounds(bars)).toEqual({ minValue: 98.9, maxValue: 102.4 });
  });

  it("leaves out a bad print far above and below the rest", () => {
    const bars = Array.from({ length: 50 }, (_, i) => bar(100 + (i % 5) * 0.1, 101 + (i % 7) * 0.1));
    bars[20] = bar(100, 1000); // a fat-finger print
    bars[30] = bar(1, 101); // and one near zero
    const bounds = robustBounds(bars)!;
    expect(bounds.maxValue).toBeCloseTo(101.6);
    expect(bounds.minValue).toBeCloseTo(100);
  });

  it("has nothing to say about no bars", () => {
    expect(robustBounds([])).toBeNull();
  });
});
