"""Candle intervals and time zones: parsing, and the SQL expressions that put a minute into its bucket.

An interval is `<n><unit>`: m (minutes) and h (hours) whose length divides a day, d (days), w (weeks from
Monday) and M (calendar months). Buckets are aligned in a time zone (IANA name or fixed offset):

* d, w, M: local calendar periods; a bucket starts at local midnight (of a Monday for w, of the 1st for M),
  so a day lasts 23 or 25 hours across a DST switch. Multiples count from 1970-01-01 (days), the Monday
  1970-01-05 (weeks) and January 1970 (months), so 3d or 3M buckets are the same whatever the range.
* m, h: fixed-length buckets counted from local midnight, and cut at the next local midnight. On ordinary
  days they are the local wall-clock periods; across a DST switch no bucket spans the switch twice or lasts
  longer than its interval (the repeated autumn hour is two 1h candles, the shortened day's last 4h bucket
  lasts 3 hours).

Every expression is SQL over a timestamptz column with the zone in a text parameter; start and end are UTC
instants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

DAY_MINUTES = 24 * 60
INTERVAL_PATTERN = re.compile(r"^([1-9][0-9]{0,3})([mhdwM])$")
# (largest n, description) per unit; m and h must also divide a day.
UNIT_LIMITS = {"m": 720, "h": 12, "d": 31, "w": 52, "M": 12}
OFFSET_PATTERN = re.compile(r"^([+-])([01][0-9]|2[0-3]):?([0-5][0-9])$")


@dataclass(frozen=True)
class Interval:
    text: str
    n: int
    unit: str

    @property
    def minutes(self) -> int | None:
        """Length in minutes for m and h (fixed-length buckets), else None."""
        if self.unit == "m":
            return self.n
        if self.unit == "h":
            return self.n * 60
        return None

    @property
    def step(self) -> str:
        """The bucket length as a PostgreSQL interval literal (calendar units for d, w, M)."""
        return {"m": f"{self.n} minutes", "h": f"{self.n} hours", "d": f"{self.n} days",
                "w": f"{self.n * 7} days", "M": f"{self.n} months"}[self.unit]

    def sql_kind(self, zone: TimeZone) -> str:
        """Which bucket expression serves it in the zone: 'subday', 'day', 'week' or 'month'; in a zone with
        a fixed offset (UTC too) buckets other than months have a fixed length: 'fixed' or 'fixed_week'."""
        if zone.fixed and self.unit != "M":
            return "fixed_week" if self.unit == "w" else "fixed"
        return {"m": "subday", "h": "subday", "d": "day", "w": "week", "M": "month"}[self.unit]


def parse_interval(text: str) -> Interval | None:
    match = INTERVAL_PATTERN.match(text)
    if not match:
        return None
    n, unit = int(match.group(1)), match.group(2)
    if n > UNIT_LIMITS[unit]:
        return None
    interval = Interval(text, n, unit)
    if interval.minutes is not None and DAY_MINUTES % interval.minutes:
        return None
    return interval


INTERVAL_RULE = ("must be 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w or 1M, or <n>m / <n>h dividing "
                 "a day, <n>d up to 31d, <n>w up to 52w, <n>M up to 12M")


@dataclass(frozen=True)
class TimeZone:
    """A zone as the client named it, its Python tzinfo, and the name PostgreSQL understands."""

    name: str
    tzinfo: tzinfo
    sql_name: str
    # UTC or an offset: no DST, so a day is always 24 hours.
    fixed: bool = False


@lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones())


@lru_cache(maxsize=512)
def parse_time_zone(text: str) -> TimeZone | None:
    if not text or text in ("UTC", "Z", "Etc/UTC"):
        return TimeZone("UTC", timezone.utc, "UTC", fixed=True)
    match = OFFSET_PATTERN.match(text)
    if match:
        sign, hours, minutes = match.groups()
        name = f"{sign}{hours}:{minutes}"
        if name in ("+00:00", "-00:00"):
            return TimeZone("UTC", timezone.utc, "UTC", fixed=True)
        offset = timedelta(hours=int(hours), minutes=int(minutes)) * (1 if sign == "+" else -1)
        # POSIX zone strings count hours west of Greenwich: +08:00 is "<+08:00>-08:00".
        posix_sign = "-" if sign == "+" else "+"
        return TimeZone(name, timezone(offset), f"<{name}>{posix_sign}{hours}:{minutes}", fixed=True)
    if text in _iana_names():
        return TimeZone(text, ZoneInfo(text), text)
    return None


@lru_cache(maxsize=1024)
def offsets_in_steps(zone: TimeZone, step: timedelta) -> bool:
    """Whether every local boundary of `step` (15 minutes, an hour) in the zone is a UTC one: its offset was a
    multiple of step at every moment from 1970 to 2100 (sampled weekly; an offset lasts months or years)."""
    if isinstance(zone.tzinfo, timezone):
        return zone.tzinfo.utcoffset(None) % step == timedelta(0)
    moment, last = datetime(1970, 1, 1, 12, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc)
    while moment < last:
        offset = moment.astimezone(zone.tzinfo).utcoffset()
        if offset is None or offset % step:
            return False
        moment += timedelta(days=7)
    return True


TIME_ZONE_RULE = 'must be an IANA time zone name (e.g. "Europe/Berlin") or an offset like "+08:00"'

# --- SQL -----------------------------------------------------------------------------------------------------
# Parameters the expressions use: {tz} the zone (text), {step} the interval (interval), {n} the multiple (int).
# `{t}` is the timestamptz being bucketed.

_LOCAL_DAY = "date_trunc('day', ({t}) AT TIME ZONE {tz})"

# With a fixed offset, buckets of m, h, d and w are date_bin's fixed strides from local midnight of
# 1970-01-01 (of Monday 1970-01-05 for weeks): the same buckets as below, at a fraction of the cost per row.
_LOCAL_ORIGIN = "(SELECT timestamp '{day}' AT TIME ZONE {{tz}})"

BUCKET_START = {
    "fixed": f"date_bin({{step}}, {{t}}, {_LOCAL_ORIGIN.format(day='1970-01-01')})",
    "fixed_week": f"date_bin({{step}}, {{t}}, {_LOCAL_ORIGIN.format(day='1970-01-05')})",
    "subday": "date_bin({step}, {t}, date_trunc('day', {t}, {tz}))",
    "day": f"(({_LOCAL_DAY}) - ((((({_LOCAL_DAY})::date - DATE '1970-01-01') % {{n}}) + {{n}}) % {{n}})"
           " * interval '1 day') AT TIME ZONE {tz}",
    "week": "(date_trunc('week', ({t}) AT TIME ZONE {tz}) - ((((date_trunc('week', ({t}) AT TIME ZONE {tz})::date"
            " - DATE '1970-01-05') / 7 % {n}) + {n}) % {n}) * interval '7 days') AT TIME ZONE {tz}",
    "month": "(date_trunc('month', ({t}) AT TIME ZONE {tz}) - ((((extract(year FROM ({t}) AT TIME ZONE {tz})::int"
             " * 12 + extract(month FROM ({t}) AT TIME ZONE {tz})::int - 1 - 23640) % {n}) + {n}) % {n})"
             " * interval '1 month') AT TIME ZONE {tz}",
}

# End of the bucket that starts at {t}.
BUCKET_END = {
    "fixed": "{t} + {step}",
    "fixed_week": "{t} + {step}",
    "subday": "least({t} + {step}, (date_trunc('day', ({t}) AT TIME ZONE {tz}) + interval '1 day') AT TIME ZONE {tz})",
    "day": "((({t}) AT TIME ZONE {tz}) + {step}) AT TIME ZONE {tz}",
    "week": "((({t}) AT TIME ZONE {tz}) + {step}) AT TIME ZONE {tz}",
    "month": "((({t}) AT TIME ZONE {tz}) + {step}) AT TIME ZONE {tz}",
}


def bucket_start_sql(kind: str, t: str, tz: str, step: str, n: str) -> str:
    return BUCKET_START[kind].format(t=t, tz=tz, step=step, n=n)


def bucket_end_sql(kind: str, t: str, tz: str, step: str) -> str:
    return BUCKET_END[kind].format(t=t, tz=tz, step=step)


def _local_midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(timezone.utc)


def bucket_end(start: datetime, interval: Interval, zone: TimeZone) -> datetime:
    """End of the bucket that starts at `start` (a bucket start), by the rules BUCKET_END applies in SQL."""
    day = start.astimezone(zone.tzinfo).date()
    n = interval.n
    if interval.unit in "mh":
        return min(start + timedelta(minutes=interval.minutes or 0),
                   _local_midnight(day + timedelta(days=1), zone.tzinfo))
    if interval.unit == "d":
        return _local_midnight(day + timedelta(days=n), zone.tzinfo)
    if interval.unit == "w":
        return _local_midnight(day + timedelta(weeks=n), zone.tzinfo)
    index = day.year * 12 + day.month - 1 + n
    return _local_midnight(date(index // 12, index % 12 + 1, 1), zone.tzinfo)
