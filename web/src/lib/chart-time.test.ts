import { TickMarkType, type UTCTimestamp } from "lightweight-charts";
import { describe, expect, it } from "vitest";
import { chartTime } from "./chart-time";
import { bucketEnd, bucketStart } from "./intervals";
import { localDate, localMidnight } from "./zones";

const DAY = 86_400;
const utc = (...args: [number, number, number, number?, number?]) => Date.UTC(...args) / 1000;

/** Every bar start of `interval` in `zone` from `from` (UTC seconds) for `count` bars. */
function bars(from: number, interval: string, zone: string, count: number): number[] {
  const times = [bucketStart(from, interval, zone)];
  while (times.length < count) times.push(bucketEnd(times.at(-1)!, interval, zone));
  return times;
}

/** What lightweight-charts sees: the UTC calendar day of a chart time. */
const chartDay = (chart: number) => Math.floor(chart / DAY);

describe("chart times put day boundaries at the zone's midnight", () => {
  for (const zone of ["Asia/Kolkata", "America/New_York", "Europe/Berlin", "+05:30", "-03:00", "UTC", "Australia/Sydney"]) {
    it(`${zone}: a bar starts a new chart day exactly when it starts a new local day`, () => {
      const mapping = chartTime(zone);
      const times = bars(utc(2026, 11, 3), "1h", zone, 24 * 8);
      for (let i = 1; i < times.length; i += 1) {
        const newLocalDay = localDate(times[i]!, zone).day !== localDate(times[i - 1]!, zone).day;
        const newChartDay = chartDay(mapping.toChart(times[i]!)) !== chartDay(mapping.toChart(times[i - 1]!));
        expect(newChartDay, new Date(times[i]! * 1000).toISOString()).toBe(newLocalDay);
      }
    });
  }

  it("Kolkata: local midnight is a UTC midnight on the chart, and the issue's Dec 7 gridline is 12:00 AM", () => {
    const mapping = chartTime("Asia/Kolkata");
    const midnight = localMidnight({ year: 2026, month: 12, day: 7 }, "Asia/Kolkata");
    expect(midnight).toBe(utc(2026, 11, 6, 18, 30));
    expect(mapping.toChart(midnight) % DAY).toBe(0);
    expect(mapping.tickMark(mapping.toChart(midnight) as UTCTimestamp, TickMarkType.DayOfMonth)).toMatch(/7/);
    expect(mapping.crosshair(mapping.toChart(midnight) as UTCTimestamp)).toMatch(/Mon.*Dec 7.*12:00/);
    // UTC midnight of Dec 7 is 05:30 in Kolkata: not a day boundary on the chart any more.
    expect(mapping.toChart(utc(2026, 11, 7)) % DAY).toBe(5.5 * 3600);
  });

  it("New York: the Dec 5 boundary is at local midnight, not Sat Dec 5, 7:00 PM", () => {
    const mapping = chartTime("America/New_York");
    expect(mapping.toChart(utc(2026, 11, 5, 5)) % DAY).toBe(0); // 00:00 EST
    expect(mapping.toChart(utc(2026, 11, 6)) % DAY).toBe(19 * 3600);
  });
});

describe("chart times across clock changes", () => {
  // Europe/Berlin: forward 2026-03-29 01:00Z, back 2026-10-25 01:00Z; New York back 2026-11-01 06:00Z.
  for (const [zone, day] of [
    ["Europe/Berlin", utc(2026, 2, 28)],
    ["Europe/Berlin", utc(2026, 9, 24)],
    ["America/New_York", utc(2026, 10, 31)],
    ["Australia/Sydney", utc(2026, 3, 4)],
  ] as const) {
    it(`${zone} around ${new Date(day * 1000).toISOString().slice(0, 10)}: strictly ascending, invertible, local days`, () => {
      const mapping = chartTime(zone);
      for (const interval of ["1m", "1h", "4h", "1d"]) {
        const times = bars(day, interval, zone, interval === "1m" ? 3 * 24 * 60 : interval === "1d" ? 5 : 3 * 24);
        const charted = times.map((time) => mapping.toChart(time));
        for (let i = 1; i < charted.length; i += 1) expect(charted[i]!).toBeGreaterThan(charted[i - 1]!);
        for (let i = 0; i < times.length; i += 1) expect(mapping.toReal(charted[i]!)).toBe(times[i]);
        for (let i = 1; i < times.length; i += 1) {
          const newLocalDay = localDate(times[i]!, zone).day !== localDate(times[i - 1]!, zone).day;
          expect(chartDay(charted[i]!) !== chartDay(charted[i - 1]!)).toBe(newLocalDay);
        }
      }
    });
  }

  it("labels the repeated hour with its real wall clock (02:xx twice), from the true time", () => {
    const mapping = chartTime("Europe/Berlin");
    const first = utc(2026, 9, 25, 0, 30); // 02:30 CEST
    const second = utc(2026, 9, 25, 1, 30); // 02:30 CET
    expect(mapping.toChart(second)).toBeGreaterThan(mapping.toChart(first));
    for (const time of [first, second]) {
      expect(mapping.crosshair(mapping.toChart(time) as UTCTimestamp)).toMatch(/02:30/);
      expect(mapping.tickMark(mapping.toChart(time) as UTCTimestamp, TickMarkType.Time)).toMatch(/02:30/);
    }
  });

  it("inverts times it never mapped (found again from the zone)", () => {
    const fresh = chartTime("Asia/Tokyo");
    expect(fresh.toReal(utc(2026, 0, 1, 9))).toBe(utc(2026, 0, 1));
    const berlin = chartTime("Europe/Berlin");
    const inRepeat = utc(2026, 9, 25, 0, 40);
    const charted = berlin.toChart(inRepeat);
    expect(chartTime("Europe/Berlin").toReal(charted)).toBe(inRepeat);
  });
});
