// Number and time formatting in the browser's locale and time zone.
//
// Time zone choice: the chart keeps true UTC seconds (what the API sends and
// what lightweight-charts expects) and only its *labels* are localised, via
// localization.timeFormatter (crosshair) and timeScale.tickMarkFormatter
// (axis), both formatting with Intl in the browser's zone. Shifting the data by
// the local offset instead would repeat or skip bar times at DST changes, which
// the chart rejects. The trade-off: the library picks day/month tick marks at
// UTC boundaries, so a "date" tick may sit a few hours off local midnight; it
// is still labelled with the correct local date.

import { type Time, TickMarkType } from "lightweight-charts";

/** Decimals worth showing for a price of this size (about 6 significant digits, 2 to 8 decimals). */
export function pricePrecision(price: number): number {
  const magnitude = Math.floor(Math.log10(Math.abs(price) || 1));
  return Math.min(8, Math.max(2, 5 - magnitude));
}

export function formatPrice(price: number | null): string {
  if (price === null) return "–";
  const digits = pricePrecision(price);
  return price.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function formatSignedPrice(change: number | null, reference: number | null): string {
  if (change === null) return "–";
  const digits = pricePrecision(reference ?? change);
  return change.toLocaleString(undefined, {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
    signDisplay: "exceptZero",
  });
}

export function formatPercent(percent: number | null): string {
  if (percent === null) return "–";
  return `${percent.toLocaleString(undefined, {
    minimumFractionDigits: 2,
    maximumFractionDigits: 2,
    signDisplay: "exceptZero",
  })}%`;
}

export function formatVolume(volume: number | null): string {
  if (volume === null) return "–";
  return volume >= 10_000
    ? volume.toLocaleString(undefined, { notation: "compact", maximumFractionDigits: 2 })
    : volume.toLocaleString(undefined, { maximumFractionDigits: 4 });
}

const crosshairTime = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  day: "numeric",
  month: "short",
  hour: "2-digit",
  minute: "2-digit",
});
const axisFormats: Record<TickMarkType, Intl.DateTimeFormat> = {
  [TickMarkType.Year]: new Intl.DateTimeFormat(undefined, { year: "numeric" }),
  [TickMarkType.Month]: new Intl.DateTimeFormat(undefined, { month: "short" }),
  [TickMarkType.DayOfMonth]: new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" }),
  [TickMarkType.Time]: new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" }),
  [TickMarkType.TimeWithSeconds]: new Intl.DateTimeFormat(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  }),
};

/** The chart only ever holds UTCTimestamp times (seconds). */
const toDate = (time: Time) => new Date((time as number) * 1000);

/** A bar's start (UTC seconds) in local time, as on the crosshair. */
export function formatBarTime(seconds: number): string {
  return crosshairTime.format(new Date(seconds * 1000));
}

/** Crosshair label in local time (localization.timeFormatter). */
export function formatCrosshairTime(time: Time): string {
  return crosshairTime.format(toDate(time));
}

/** Axis tick label in local time (timeScale.tickMarkFormatter). */
export function formatTickMark(time: Time, type: TickMarkType): string {
  return axisFormats[type].format(toDate(time));
}
