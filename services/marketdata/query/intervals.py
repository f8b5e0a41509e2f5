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
    # An unencoded "+" in a query string arrives as a space (form encoding): "timeZone=+08:00" is "+08:00".
    match = OFFSET_PATTERN.match("+" + text[1:] if text[:1] == " " else text)
    if match:
        sign, hours, minutes = match.groups()
        offset = timedelta(hours=int(hours), minutes=int(minutes)) * (1 if sign == "+" else -1)
        if not offset:
            return TimeZone("UTC", timezone.utc, "UTC", fixed=True)
        return offset_zone(f"{sign}{hours}:{minutes}", offset)
    if text in _iana_names():
        return TimeZone(text, ZoneInfo(text), text)
    return None


def offset_zone(name: str, offset: timedelta) -> TimeZone:
    """The zone of a fixed UTC offset (whole minutes, not 0), named `name`."""
    minutes = offset // timedelta(minutes=1)
    hours_minutes = f"{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    sign = "+" if minutes > 0 else "-"
    # POSIX zone strings count hours west of Greenwich: +08:00 is "<+08:00>-08:00".
    posix = f"<{sign}{hours_minutes}>{'-' if minutes > 0 else '+'}{hours_minutes}"
    return TimeZone(name, timezone(offset), posix, fixed=True)


# At least the longest bucket (12M: 366 days; 52w: 364).
LONGEST_BUCKET = timedelta(days=max(31 * UNIT_LIMITS["M"], 7 * UNIT_LIMITS["w"], UNIT_LIMITS["d"]))


@lru_cache(maxsize=512)
def _offset_changes(zone: TimeZone) -> tuple[tuple[datetime, timedelta | None], ...]:
    """The named zone's UTC offset from 1969 to 2100: (the first week with it, the offset) at the start and after
    each change, sampled weekly (an offset lasts months or years). From 1969: a bucket of data (from 1970 on)
    may start in it."""
    moment, last = datetime(1969, 1, 1, 12, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc)
    changes = [(moment, moment.astimezone(zone.tzinfo).utcoffset())]
    while moment < last:
        moment += timedelta(days=7)
        offset = moment.astimezone(zone.tzinfo).utcoffset()
        if offset != changes[-1][1]:
            changes.append((moment, offset))
    return tuple(changes)


@lru_cache(maxsize=512)
def constant_offset(zone: TimeZone) -> tuple[datetime | None, TimeZone] | None:
    """For a named zone whose UTC offset no longer changes (Asia/Kolkata; Asia/Shanghai since 1991): the moment
    after which every bucket holding data is the same in the zone as in its offset (None: any bucket), and the
    offset as a zone of the same name. None for a zone with changes to come (DST) or an offset already.

    The moment is the first week after the last change plus the longest bucket, so that a bucket holding only
    data from then on starts after the change too."""
    if zone.fixed:
        return None
    changes = _offset_changes(zone)
    changed, offset = changes[-1]
    if changed > datetime.now(timezone.utc) or offset is None or offset % timedelta(minutes=1):
        return None
    since = changed + LONGEST_BUCKET if len(changes) > 1 else None
    if not offset:
        return since, TimeZone(zone.name, timezone.utc, "UTC", fixed=True)
    return since, offset_zone(zone.name, offset)


@lru_cache(maxsize=4096)
def offsets_in_steps(zone: TimeZone, step: timedelta) -> bool:
    """Whether every local boundary of `step` (a stored tier's length) in the zone is a UTC one: its offset was a
    multiple of step at every moment from 1969 to 2100 (_offset_changes)."""
    if isinstance(zone.tzinfo, timezone):
        return zone.tzinfo.utcoffset(None) % step == timedelta(0)
    return all(offset is not None and not offset % step for _, offset in _offset_changes(zone))


TIME_ZONE_RULE = 'must be an IANA time zone name (e.g. "Europe/Berlin") or an offset like "+08:00"'

# --- SQL -----------------------------------------------------------------------------------------------------
# Each function returns SQL text from SQL arguments: `t` the timestamptz being bucketed, `tz` the zone (text),
# `step` the interval (interval), `n` the multiple (int). history.py calls them once per statement it prepares.
#
# These buckets are aligned in a zone given as a parameter, so they are not rollup.utc_bucket (date_bin from the
# epoch), which serves UTC buckets of a step known in advance; in UTC the buckets are the same. Days, weeks and
# months in a zone with DST last 23 or 25 hours around a switch, which date_bin's fixed stride cannot express:
# they are date_trunc of the local time.


def _local(t: str, tz: str) -> str:
    """The local wall-clock time (timestamp) of `t` in the zone."""
    return f"({t}) AT TIME ZONE {tz}"


def _local_origin(day: str, tz: str) -> str:
    """Local midnight of `day` (a date literal) in the zone, as a timestamptz."""
    return f"(SELECT timestamp '{day}' AT TIME ZONE {tz})"


def _mod(index: str, n: str) -> str:
    """index mod n, from 0 to n - 1 for a negative index too (periods before 1970)."""
    return f"((({index} % {n}) + {n}) % {n})"


def _calendar_start(period: str, index: str, n: str, unit: str, tz: str) -> str:
    """Start of the bucket of n periods holding the local `period` start (numbered `index` from 1970's), in UTC."""
    return f"({period} - {_mod(index, n)} * interval '{unit}') AT TIME ZONE {tz}"


def bucket_start_sql(kind: str, t: str, tz: str, step: str, n: str) -> str:
    """Start of the bucket of Interval.sql_kind `kind` holding `t`."""
    local = _local(t, tz)
    if kind == "fixed":
        # With a fixed offset, buckets of m, h, d (and w, below) are date_bin's strides from local midnight of
        # 1970-01-01 (of Monday 1970-01-05): the same buckets as the other kinds, at a fraction of the cost per row.
        return f"date_bin({step}, {t}, {_local_origin('1970-01-01', tz)})"
    if kind == "fixed_week":
        return f"date_bin({step}, {t}, {_local_origin('1970-01-05', tz)})"
    if kind == "subday":
        return f"date_bin({step}, {t}, date_trunc('day', {t}, {tz}))"
    if kind == "day":
        day = f"(date_trunc('day', {local}))"
        return _calendar_start(day, f"({day}::date - DATE '1970-01-01')", n, "1 day", tz)
    if kind == "week":
        week = f"date_trunc('week', {local})"
        return _calendar_start(week, f"({week}::date - DATE '1970-01-05') / 7", n, "7 days", tz)
    if kind == "month":
        # Months since January 1970 (1970 * 12 = 23640).
        month = f"(extract(year FROM {local})::int * 12 + extract(month FROM {local})::int - 1 - 23640)"
        return _calendar_start(f"date_trunc('month', {local})", month, n, "1 month", tz)
    raise ValueError(f"unknown bucket kind {kind!r}")


def bucket_end_sql(kind: str, t: str, tz: str, step: str) -> str:
    """End of the bucket of Interval.sql_kind `kind` that starts at `t`."""
    if kind in ("fixed", "fixed_week"):
        return f"{t} + {step}"
    if kind == "subday":  # cut at the next local midnight
        return f"least({t} + {step}, (date_trunc('day', {_local(t, tz)}) + interval '1 day') AT TIME ZONE {tz})"
    if kind in ("day", "week", "month"):  # calendar steps, on the local time
        return f"(({_local(t, tz)}) + {step}) AT TIME ZONE {tz}"
    raise ValueError(f"unknown bucket kind {kind!r}")


def _local_midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(timezone.utc)


def bucket_end(start: datetime, interval: Interval, zone: TimeZone) -> datetime:
    """End of the bucket that starts at `start` (a bucket start), by the rules bucket_end_sql applies in SQL."""
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
