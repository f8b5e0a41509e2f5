// Numbers and times for the header, the watchlist, the legend AND the chart's
// axes, all through the same Intl formatters in one locale (the browser's), so
// de-DE reads 43.179,63 on the price scale as in the header.
//
// Time zone choice: times are true UTC seconds everywhere (what the API sends)
// and labels are formatted in the chosen zone. The chart itself is handed
// times shifted to the zone's wall clock, so that it puts day and month labels
// at local midnight (lib/chart-time.ts); its formatters map them back first.
// Bars themselves are aligned in that zone by the API (timeZone parameter).

import { type Time, TickMarkType } from "lightweight-charts";

/** The one locale of every number and date on the page. */
export const LOCALE = typeof navigator === "undefined" ? "en-US" : navigator.language || "en-US";

const numberFormats = new Map<string, Intl.NumberFormat>();

function numberFormat(key: string, options: Intl.NumberFormatOptions): Intl.NumberFormat {
  let format = numberFormats.get(key);
  if (!format) {
    format = new Intl.NumberFormat(LOCALE, options);
    numberFormats.set(key, format);
  }
  return format;
}

/** Decimals worth showing for a price of this size (about 6 significant digits, 2 to 8 decimals). */
export function pricePrecision(price: number): number {
  const magnitude = Math.floor(Math.log10(Math.abs(price) || 1));
  return Math.min(8, Math.max(2, 5 - magnitude));
}

/**
 * Decimals of every price of one symbol, from its typical price (the upper median of `prices`, e.g. its
 * candles' closes): a stray print far off the usual price is shown with the symbol's decimals too, so the
 * header, the legend and the price scale never mix "43,015.14" with "1.00000". null without any price.
 */
export function symbolPrecision(prices: Iterable<number | null | undefined>): number | null {
  const magnitudes: number[] = [];
  for (const price of prices) {
    if (price !== null && price !== undefined && Number.isFinite(price) && price !== 0) magnitudes.push(Math.abs(price));
  }
  if (magnitudes.length === 0) return null;
  magnitudes.sort((a, b) => a - b);
  return pricePrecision(magnitudes[Math.floor(magnitudes.length / 2)]!);
}

/** A price with a fixed number of decimals: the chart's price scale uses this too. */
export function formatFixed(value: number, digits: number): string {
  return numberFormat(`fixed${digits}`, { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(value);
}

/** A price with the symbol's decimals (symbolPrecision); without them, with decimals for its own size. */
export function formatPrice(price: number | null | undefined, digits?: number | null): string {
  if (price === null || price === undefined) return "–";
  return formatFixed(price, digits ?? pricePrecision(price));
}

/** A price change, signed, with the symbol's decimals (without them: those of `reference`). */
export function formatSignedPrice(
  change: number | null | undefined,
  reference: number | null | undefined,
  symbolDigits?: number | null,
): string {
  if (change === null || change === undefined) return "–";
  const digits = symbolDigits ?? pricePrecision(reference ?? change);
  return numberFormat(`signed${digits}`, {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
    signDisplay: "exceptZero",
  }).format(change);
}

export function formatPercent(percent: number | null | undefined): string {
  if (percent === null || percent === undefined) return "–";
  const text = numberFormat("percent", {
    minimumFractionDigits: 2,
    maximumFractionDigits: 2,
    signDisplay: "exceptZero",
  }).format(percent);
  return `${text}%`;
}

export function formatVolume(volume: number | null | undefined): string {
  if (volume === null || volume === undefined) return "–";
  return volume >= 10_000
    ? numberFormat("compact", { notation: "compact", maximumFractionDigits: 2 }).format(volume)
    : numberFormat("volume", { maximumFractionDigits: 4 }).format(volume);
}

/**
 * A price for a narrow column (the watchlist): the symbol's decimals (`digits`) while it fits in about
 * `maxChars` characters, else shorter ("67.82M", "0.001235", "9.99E-6"), so the column never crowds out the symbol's name.
 */
export function formatNarrowPrice(price: number | null | undefined, digits?: number | null, maxChars = 9): string {
  if (price === null || price === undefined) return "–";
  const full = formatFixed(price, digits ?? pricePrecision(price));
  if (full.length <= maxChars) return full;
  // Big: "67.82M". Small: four significant digits ("0.001235"), or "9.99E-6" when even those leave
  // so many zeros that an ellipsis would keep nothing else.
  if (Math.abs(price) >= 1) return numberFormat("compact4", { notation: "compact", maximumSignificantDigits: 4 }).format(price);
  const short = numberFormat("significant4", { maximumSignificantDigits: 4 }).format(price);
  if (short.length <= maxChars) return short;
  return numberFormat("scientific4", { notation: "scientific", maximumSignificantDigits: 3 }).format(price);
}

/** Three significant digits, compact ("3.03K", "51.7M"): for narrow columns. */
export function formatCompact(value: number | null | undefined): string {
  if (value === null || value === undefined) return "–";
  return numberFormat("compact3", { notation: "compact", maximumSignificantDigits: 3 }).format(value);
}

/** "12 s", "4 min", "3 h", "2 d": how long ago something happened. */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86_400)} d`;
}

/** Countdown to a candle's close: "0:42", "12:05", "3:59:59", "2d 04:00:00". */
export function formatCountdown(seconds: number): string {
  const s = Math.max(0, Math.ceil(seconds));
  const days = Math.floor(s / 86_400);
  const hours = Math.floor((s % 86_400) / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  if (days > 0) return `${days}d ${String(hours).padStart(2, "0")}:${String(minutes).padStart(2, "0")}:${rest}`;
  if (hours > 0) return `${hours}:${String(minutes).padStart(2, "0")}:${rest}`;
  return `${minutes}:${rest}`;
}

// ------------------------------------------------------------------ times

export interface TimeLabels {
  /** A bar's start (UTC seconds), as on the crosshair and in the legend. */
  barTime(seconds: number): string;
  /** Crosshair label (localization.timeFormatter). */
  crosshair(time: Time): string;
  /** Axis tick label (timeScale.tickMarkFormatter). */
  tickMark(time: Time, type: TickMarkType): string;
}

const labelCache = new Map<string, TimeLabels>();

/** Time labels in `zone` (an IANA name or offset; undefined: the browser's zone). */
export function timeLabels(zone?: string): TimeLabels {
  const key = zone ?? "";
  const cached = labelCache.get(key);
  if (cached) return cached;
  const format = (options: Intl.DateTimeFormatOptions) => {
    try {
      return new Intl.DateTimeFormat(LOCALE, { ...options, timeZone: zone });
    } catch {
      return new Intl.DateTimeFormat(LOCALE, { ...options, timeZone: "UTC" });
    }
  };
  const crosshairTime = format({ weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  const axisFormats: Record<TickMarkType, Intl.DateTimeFormat> = {
    [TickMarkType.Year]: format({ year: "numeric" }),
    [TickMarkType.Month]: format({ month: "short" }),
    [TickMarkType.DayOfMonth]: format({ day: "numeric", month: "short" }),
    [TickMarkType.Time]: format({ hour: "2-digit", minute: "2-digit" }),
    [TickMarkType.TimeWithSeconds]: format({ hour: "2-digit", minute: "2-digit", second: "2-digit" }),
  };
  /** The chart only ever holds UTCTimestamp times (seconds). */
  const toDate = (time: Time) => new Date((time as number) * 1000);
  const labels: TimeLabels = {
    barTime: (seconds) => crosshairTime.format(new Date(seconds * 1000)),
    crosshair: (time) => crosshairTime.format(toDate(time)),
    tickMark: (time, type) => axisFormats[type].format(toDate(time)),
  };
  labelCache.set(key, labels);
  return labels;
}
