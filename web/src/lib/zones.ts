// Time zones for bucket alignment and labels: IANA names through Intl, and
// fixed offsets ("+08:00") the API also accepts, parsed here because Intl's
// support for offset zones is recent.

export interface LocalDate {
  year: number;
  /** 1 to 12. */
  month: number;
  day: number;
}

export const BROWSER_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

/** Exchange zones offered besides the browser's zone and UTC. */
export const EXCHANGE_ZONES = [
  "America/New_York",
  "America/Chicago",
  "Europe/London",
  "Europe/Berlin",
  "Asia/Kolkata",
  "Asia/Singapore",
  "Asia/Hong_Kong",
  "Asia/Shanghai",
  "Asia/Tokyo",
  "Australia/Sydney",
] as const;

const OFFSET = /^([+-])([01][0-9]|2[0-3]):?([0-5][0-9])$/;
const formatters = new Map<string, Intl.DateTimeFormat>();

function fixedOffset(zone: string): number | null {
  const match = OFFSET.exec(zone);
  if (!match) return null;
  const seconds = Number(match[2]) * 3600 + Number(match[3]) * 60;
  return match[1] === "-" ? -seconds : seconds;
}

function formatter(zone: string): Intl.DateTimeFormat {
  let format = formatters.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone: zone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(zone, format);
  }
  return format;
}

/** True for an IANA name Intl knows or a ±HH:MM offset. */
export function isTimeZone(zone: unknown): zone is string {
  if (typeof zone !== "string" || zone === "") return false;
  if (fixedOffset(zone) !== null) return true;
  try {
    formatter(zone);
    return true;
  } catch {
    return false;
  }
}

/** Offset of local time from UTC at the instant `time` (UTC seconds), in seconds. */
export function zoneOffset(time: number, zone: string): number {
  const fixed = fixedOffset(zone);
  if (fixed !== null) return fixed;
  const parts: Record<string, number> = {};
  for (const part of formatter(zone).formatToParts(new Date(time * 1000))) {
    if (part.type !== "literal") parts[part.type] = Number(part.value);
  }
  const wall = Date.UTC(parts.year!, parts.month! - 1, parts.day!, parts.hour!, parts.minute!, parts.second!) / 1000;
  return wall - Math.floor(time);
}

/** The local calendar date at `time`. */
export function localDate(time: number, zone: string): LocalDate {
  const wall = new Date((time + zoneOffset(time, zone)) * 1000);
  return { year: wall.getUTCFullYear(), month: wall.getUTCMonth() + 1, day: wall.getUTCDate() };
}

/** The UTC instant of local midnight starting `date`. */
export function localMidnight(date: LocalDate, zone: string): number {
  const wall = Date.UTC(date.year, date.month - 1, date.day) / 1000;
  // The offset at midnight can differ from the offset a few hours off it (DST): settle it in two steps.
  const guess = wall - zoneOffset(wall, zone);
  return wall - zoneOffset(guess, zone);
}
