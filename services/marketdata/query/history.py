"""Reads of the query service: request validation, the SQL, and the mapping of rows to protos.

Every statement is a constant string with $n parameters, so asyncpg prepares it once per pooled connection
(its statement cache) and PostgreSQL can reuse the plan. Numerics are converted with ::float8 in SQL, except
in pages of stored candles, which read the tier's float8 copies (migration 0007).

Candles and SMA10
-----------------
* Candles whose buckets are a stored tier's are that tier's rows: 1m from ohlc_1m in every zone; 3m, 5m, 15m,
  30m, 1h, 2h, 4h, 6h and 1d from ohlc_3m ... ohlc_1d where candle_tier picks them (UTC days; the others in
  zones whose offsets are multiples of their length). The newest limit+9 rows before `to` are read by a
  backward scan of the primary key (symbol, bucket) with LIMIT; the window function runs over them, so the
  oldest candles of the page get their SMA10 from candles before the page; then the rows before `from` and
  the 9 lead-in rows are dropped.
* Other intervals are derived from the coarsest stored tier whose buckets fit inside theirs (candle_tier):
  ohlc_1d (UTC days) for days, weeks and months in UTC, ohlc_4h for 8h and ohlc_6h for 12h in UTC, ohlc_1h
  (UTC hours) for calendar periods in zones with whole-hour offsets, ohlc_30m for any interval in zones such as
  Asia/Kolkata, ohlc_5m for 10m, ohlc_3m for 6m, else ohlc_1m (e.g. 7m). Below, "minute"
  stands for a row of that tier: open of the first minute, close of the last, max high, min low,
  sums of volume, trades, turnover and taker-buy volumes, vwap = sum(turnover) / sum(volume) (the close when
  the volume is 0, as ohlc_1m does). Buckets are aligned in the requested time zone (intervals.py). A derived
  candle belongs to the range when its start is in [from, to) and always aggregates its whole interval, so a
  candle is the same whatever range it is asked with. Buckets of a few tier rows (8h, 12h, 1w in UTC, ...)
  aggregate the newest (limit + 9) * n rows (one backward index scan with LIMIT); the others come from a
  recursive query that walks the primary key backwards one bucket at a time (one index probe per bucket,
  however sparse the data) to find the page's buckets and the 9 before them, then aggregates each bucket from
  its own index range, or, for buckets of a day or more, from the whole ohlc_6h or ohlc_1d rows inside it and
  the tier's rows at its edges (cover_tier): a Europe/Berlin day reads 9 rows instead of 24, a week 30 instead
  of 168.
* A named zone whose offset no longer changes is read as that offset (History._in_constant_offset) when the
  symbol has no candle from before a year after its last change: Asia/Shanghai (+08:00 since 1991) then reads
  days as 6 rows of ohlc_4h, as +08:00 does, instead of 24 of ohlc_1h, which its summers of 1986-1991
  (+09:00) would need.
* SMA10 = avg(close) over the candle and the 9 candles before it at the same interval, NULL unless all 10
  exist. Intervals without trades have no candle, so SMA10 counts candles, not clock intervals.

Paging
------
A page is the newest `limit` rows before `to` (order=desc) or the oldest from `from` (order=asc); rows are
always returned oldest first. An ascending candle page first finds where it ends (the end of its limit-th
candle, by a forward walk) and is then read as a descending page ending there, so both orders share one
SQL per interval. A full page carries a token with the bound of the next one: the start of its first row
(desc) or the end of its last (asc), a tick's trade id as the tie-break, and a digest of the query so a token
is not replayed against another symbol, view, interval or time zone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from marketdata.aggregator.rollup import utc_bucket
from marketdata.common import rules
from marketdata.common.errors import FieldViolations
from marketdata.query.intervals import (
    DAY_MINUTES,
    TIME_ZONE_RULE,
    Interval,
    TimeZone,
    bucket_end,
    bucket_end_sql,
    bucket_start_sql,
    constant_offset,
    offsets_in_steps,
    parse_interval,
    parse_time_zone,
)
from marketdata.query.ticker import (
    EPOCH,
    TICKER_SQL,
    UTC,
    Window,
    build_tickers,
    now_utc,
    set_time_micros,
    to_micros,
)
from marketdata.v1 import market_pb2, query_pb2

# asyncpg encodes these two values as PostgreSQL's -infinity / infinity.
NEGATIVE_INFINITY = datetime(1, 1, 1, tzinfo=UTC)
INFINITY = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

VIEWS = ("ticks", "metrics1m", "ohlc1m")
DEFAULT_VIEW = "ohlc1m"
DEFAULT_INTERVAL = "1m"
ORDERS = ("asc", "desc")
FILLS = ("none", "null", "prev")
NUMBERS = ("number", "string")
DEFAULT_LIMIT = 100
# Time a pooled connection gets to settle (finish a cancelled query, reset) before it is reused.
RELEASE_TIMEOUT_SECONDS = 5.0
PAGE_TOKEN_VERSION = 1


@dataclass(frozen=True)
class HistoryQuery:
    symbol: str
    view: str
    interval: Interval
    time_zone: TimeZone
    # Inclusive start / exclusive end, microsecond precision; the infinities when not given. For ticks the
    # trade ids complete the bounds: (start, start_id) inclusive, (end, end_id) exclusive.
    start: datetime
    end: datetime
    limit: int
    order: str
    fill: str = "none"
    numbers: str = "number"
    start_id: str = ""
    end_id: str = ""

    @property
    def digest(self) -> str:
        """What a page token is bound to."""
        key = f"{self.symbol}|{self.view}|{self.interval.text}|{self.time_zone.name}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]


def _from_micros(micros: int) -> datetime:
    return min(max(EPOCH + timedelta(microseconds=micros), NEGATIVE_INFINITY), INFINITY)


def encode_page_token(query: HistoryQuery, moment: datetime, trade_id: str = "") -> str:
    """A token for the page after `query`'s in its order, bounded at (moment, trade_id)."""
    payload = {"v": PAGE_TOKEN_VERSION, "o": query.order, "t": to_micros(moment), "q": query.digest}
    if trade_id:
        payload["id"] = trade_id
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def apply_page_token(query: HistoryQuery, token: str) -> tuple[HistoryQuery | None, str | None]:
    """The query narrowed to the token's page, or the problem with the token."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        version, order, micros, digest = payload["v"], payload["o"], int(payload["t"]), payload["q"]
        trade_id = str(payload.get("id", ""))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None, "not a page token of this API"
    if version != PAGE_TOKEN_VERSION or order not in ORDERS:
        return None, "not a page token of this API"
    if digest != query.digest:
        return None, "belongs to another symbol, view, interval or time zone"
    if order != query.order:
        return None, f"was issued for order={order}"
    bound = _from_micros(micros)
    if order == "asc":
        if (bound, trade_id) > (query.start, query.start_id):
            query = replace(query, start=bound, start_id=trade_id)
    elif (bound, trade_id) < (query.end, query.end_id):
        query = replace(query, end=bound, end_id=trade_id)
    return query, None


def _ceil_micro(ts: Timestamp) -> datetime:
    """The timestamp as a UTC datetime, rounded up to the microsecond (PostgreSQL's precision)."""
    micros = ts.seconds * 1_000_000 + -(-ts.nanos // 1000)
    try:
        return min(EPOCH + timedelta(microseconds=micros), INFINITY)
    except OverflowError:  # 9999-12-31T23:59:59.9999995Z and later round past datetime.max
        return INFINITY


def parse_history_request(request: query_pb2.GetHistoryRequest, max_limit: int) -> tuple[HistoryQuery | None,
                                                                                        FieldViolations]:
    """Validates a GetHistoryRequest; returns the query, or the violations naming each bad field."""
    violations = FieldViolations()
    problem = rules.symbol_problem(request.symbol)
    if problem:
        violations.add("symbol", problem)
    view = request.view or DEFAULT_VIEW
    if view not in VIEWS:
        violations.add("view", f"must be one of {', '.join(VIEWS)}")
    interval = parse_interval(request.interval or DEFAULT_INTERVAL)
    if interval is None:
        violations.add("interval", rules.INTERVAL_RULE)
    elif view != "ohlc1m" and interval.text != DEFAULT_INTERVAL:
        violations.add("interval", "only view=ohlc1m has intervals other than 1m")
    time_zone = parse_time_zone(request.time_zone)
    if time_zone is None:
        violations.add("time_zone", TIME_ZONE_RULE)
    limit = request.limit or DEFAULT_LIMIT
    if limit > max_limit:
        violations.add("limit", f"must be at most {max_limit}")
    has_from, has_to = request.HasField("from_time"), request.HasField("to_time")
    order = request.order or ("asc" if has_from and not has_to else "desc")
    if order not in ORDERS:
        violations.add("order", "must be asc or desc")
    start, end = NEGATIVE_INFINITY, INFINITY
    from_problem = rules.timestamp_problem(request.from_time) if has_from else None
    to_problem = rules.timestamp_problem(request.to_time) if has_to else None
    # Proto names, as every field of a gRPC error is named; the edge renames them (from, to) for HTTP.
    if from_problem:
        violations.add("from_time", from_problem)
    elif has_from:
        start = _ceil_micro(request.from_time)
    if to_problem:
        violations.add("to_time", to_problem)
    elif has_to:
        end = _ceil_micro(request.to_time)
    if (has_from and has_to and not from_problem and not to_problem
            and (request.from_time.seconds, request.from_time.nanos) >= (request.to_time.seconds, request.to_time.nanos)):
        violations.add("from_time", "must be before to")
    fill = request.fill or "none"
    if fill not in FILLS:
        violations.add("fill", "must be none, null or prev")
    elif fill != "none" and view != "ohlc1m":
        violations.add("fill", "only view=ohlc1m can be filled")
    numbers = request.numbers or "number"
    if numbers not in NUMBERS:
        violations.add("numbers", "must be number or string")
    elif numbers == "string" and view != "ohlc1m":
        violations.add("numbers", "only candles (view=ohlc1m) have decimal strings")
    query = None
    if not violations:
        assert interval is not None and time_zone is not None
        query = HistoryQuery(request.symbol, view, interval, time_zone, start, end, limit, order, fill, numbers)
        if request.page_token:
            query, token_problem = apply_page_token(query, request.page_token)
            if token_problem:
                violations.add("page_token", token_problem)
    return (None, violations) if violations else (query, violations)


# --- SQL -------------------------------------------------------------------------------------------------

LIST_SYMBOLS_SQL = """
SELECT symbol, base, quote, active
FROM symbols
WHERE $1::boolean IS NULL OR active = $1::boolean
ORDER BY symbol
"""

SYMBOL_EXISTS_SQL = "SELECT EXISTS (SELECT 1 FROM symbols WHERE symbol = $1)"

# Whether the symbol has a candle from before $2: a day that began before it (one index probe).
CANDLES_BEFORE_SQL = "SELECT EXISTS (SELECT 1 FROM ohlc_1d WHERE symbol = $1 AND bucket < $2)"

KNOWN_SYMBOLS_SQL = "SELECT symbol FROM symbols WHERE symbol = ANY($1::text[])"

LATEST_SQL = f"""
SELECT t.trade_id, (extract(epoch FROM t.event_time) * 1000000)::int8 AS micros,
       t.price::float8 AS price, t.size::float8 AS size, t.side, t.source,
       extract(epoch FROM o.bucket)::int8 AS o_epoch, o.open::float8 AS o_open, o.high::float8 AS o_high, o.low::float8 AS o_low,
       o.close::float8 AS o_close, o.volume::float8 AS o_volume, o.trades AS o_trades,
       o.vwap::float8 AS o_vwap, sma.sma10::float8 AS o_sma10, o.turnover::float8 AS o_quote_volume,
       o.taker_buy_volume::float8 AS o_taker_buy_volume, o.taker_buy_turnover::float8 AS o_taker_buy_quote_volume,
       extract(epoch FROM m.bucket)::int8 AS m_epoch, m.min::float8 AS m_min, m.max::float8 AS m_max, m.avg::float8 AS m_avg,
       m.vwap::float8 AS m_vwap, m.volume::float8 AS m_volume, m.last::float8 AS m_last, m.trades AS m_trades
FROM symbols s
LEFT JOIN LATERAL (
    SELECT th.trade_id, th.event_time, th.price, th.size, th.side, th.source
    FROM ticks_history th
    WHERE th.symbol = s.symbol
    ORDER BY th.event_time DESC, th.trade_id DESC
    LIMIT 1
) t ON true
LEFT JOIN ohlc_1m o
    ON o.symbol = s.symbol AND o.bucket = {utc_bucket('1 minute', 't.event_time')}
LEFT JOIN metrics_1m m
    ON m.symbol = s.symbol AND m.bucket = {utc_bucket('1 minute', 't.event_time')}
LEFT JOIN LATERAL (
    SELECT CASE WHEN count(*) = 10 THEN avg(l.close) END AS sma10
    FROM (SELECT x.close FROM ohlc_1m x
          WHERE x.symbol = s.symbol AND x.bucket <= o.bucket
          ORDER BY x.bucket DESC
          LIMIT 10) l
) sma ON true
WHERE s.symbol = $1
"""

# Ticks are ordered by (event_time, trade_id); pages are bounded by such pairs. $1 symbol, $2/$3 the lower
# bound (inclusive), $4/$5 the upper bound (exclusive), $6 limit. A bound of a plain time has the trade id ''
# (ids are never empty), and the smallest key after (t, id) is (t, id || E'\x01') (ids compare bytewise).
_TICKS = """
SELECT trade_id, (extract(epoch FROM event_time) * 1000000)::int8 AS micros,
       price::float8 AS price, size::float8 AS size, side, source
FROM ticks_history
WHERE symbol = $1 AND (event_time, trade_id) >= ($2, $3) AND (event_time, trade_id) < ($4, $5)
ORDER BY event_time {order}, trade_id {order}
LIMIT $6
"""
TICKS_SQL = _TICKS.format(order="DESC")
TICKS_ASC_SQL = _TICKS.format(order="ASC")

# $1 symbol, $2 from (inclusive), $3 to (exclusive), $4 limit.
_METRICS = """
SELECT extract(epoch FROM bucket)::int8 AS epoch, min::float8 AS min, max::float8 AS max, avg::float8 AS avg, vwap::float8 AS vwap,
       volume::float8 AS volume, last::float8 AS last, trades
FROM metrics_1m
WHERE symbol = $1 AND bucket >= $2 AND bucket < $3
ORDER BY bucket {order}
LIMIT $4
"""
METRICS_SQL = _METRICS.format(order="DESC")
METRICS_ASC_SQL = _METRICS.format(order="ASC")


# The numerics of a candle row that the API returns as doubles (vwap: a generated column of each tier).
_CANDLE_NUMERICS = ("open", "high", "low", "close", "volume", "vwap", "turnover", "taker_buy_volume",
                   "taker_buy_turnover")


def _candle_columns(end_epoch: str, vwap: str, *, float8_copies: bool) -> str:
    """Candle rows, in the order add_candles reads them. float8_copies: read a tier's float8 columns (migration
    0007) instead of converting its numerics, about a quarter of the time of a page of stored candles."""
    def double(column: str) -> str:
        return f"{column}_float8" if float8_copies else f"{column}::float8"
    return f"""extract(epoch FROM bucket)::int8 AS epoch, {end_epoch} AS end_epoch, {double("open")} AS open,
       {double("high")} AS high, {double("low")} AS low, {double("close")} AS close, {double("volume")} AS volume,
       least(trades, 4294967295)::int8 AS trades, {double(vwap)} AS vwap, sma10::float8 AS sma10,
       {double("turnover")} AS quote_volume, {double("taker_buy_volume")} AS taker_buy_volume,
       {double("taker_buy_turnover")} AS taker_buy_quote_volume"""


# The stored candle tables (migrations 0004 to 0006) and their bucket lengths in minutes.
TIER_MINUTES = {"ohlc_1m": 1, "ohlc_3m": 3, "ohlc_5m": 5, "ohlc_15m": 15, "ohlc_30m": 30, "ohlc_1h": 60, "ohlc_2h": 120,
                "ohlc_4h": 240, "ohlc_6h": 360, "ohlc_1d": 24 * 60}
TIERS = tuple(TIER_MINUTES)


# Candles that are a tier's rows (1m; 15m, 1h and 1d where the zone's buckets are the tier's, see
# candle_statement): the newest $4 + 9 rows before $3, read by a backward scan of the primary key with LIMIT;
# SMA10 computed newest-first over them (in that order the 9 rows after a row are the 9 candles before it),
# so the oldest candles of the page get their SMA10 from rows before the page; then trimmed to the rows of
# [$2, $3), at most $4. No sort anywhere. Rows come newest first: the caller reverses them. A range with
# fewer than $4 candles still reads at most $4 + 9 rows, never more than a full page. Doubles are the tier's
# float8 copies; numbers=string converts the numerics to text instead. The scan returns only the columns read,
# not all 26: the window copies every row it is given (narrow rows: the statement ~3 % faster).
def _stored_candles(tier: str, *, float8_copies: bool) -> str:
    columns = _candle_columns(f"extract(epoch FROM bucket)::int8 + {TIER_MINUTES[tier] * 60}", "vwap",
                              float8_copies=float8_copies)
    doubles = [f"{name}_float8" for name in _CANDLE_NUMERICS] if float8_copies else list(_CANDLE_NUMERICS)
    # close as well: SMA10 averages the exact numeric closes, whichever columns the page returns.
    read = ", ".join(dict.fromkeys(["bucket", "trades", "close", *doubles]))
    return f"""
SELECT {columns}
FROM (
    SELECT newest.*, CASE WHEN count(*) OVER w = 10 THEN avg(close) OVER w END AS sma10
    FROM (SELECT {read}
          FROM {tier}
          WHERE symbol = $1 AND bucket < $3
          ORDER BY bucket DESC
          LIMIT $4 + 9) newest
    WINDOW w AS (ORDER BY bucket DESC ROWS BETWEEN CURRENT ROW AND 9 FOLLOWING)
) candles
WHERE bucket >= $2
ORDER BY bucket DESC
LIMIT $4
"""


# End (exclusive) of the page of at most $4 of a tier's candles from $2 on, before $3: where an ascending page
# ends, so that the tier's STORED_CANDLES_SQL can serve it. No row when the range holds fewer than $4 candles.
def _stored_page_end(tier: str) -> str:
    return f"""
SELECT bucket + interval '{TIER_MINUTES[tier]} minutes'
FROM {tier}
WHERE symbol = $1 AND bucket >= $2 AND bucket < $3
ORDER BY bucket
OFFSET $4 - 1
LIMIT 1
"""


STORED_CANDLES_SQL = {tier: _stored_candles(tier, float8_copies=True) for tier in TIERS}
STORED_PAGE_END_SQL = {tier: _stored_page_end(tier) for tier in TIERS}

# Derived candles. Parameters: $1 symbol, $2 the interval (interval), $3 from: the first bucket start allowed,
# $4 to (exclusive bound of bucket starts), $5 limit, $6 time zone (text), $7 the interval's multiple n.
# `hi` is the end of the bucket holding the last instant before $4: every minute of the range's buckets is
# before it. The bucket expressions are in intervals.py.
# The interval arrives as text ("5 minutes", "1 months"): asyncpg has no Python type for calendar intervals.
_PARAMS = "($2::text)::interval", "$6::text", "$7::int"


def _start(t: str, kind: str) -> str:
    step, tz, n = _PARAMS
    return bucket_start_sql(kind, t, tz, step, n)


def _end(t: str, kind: str) -> str:
    step, tz, _ = _PARAMS
    return bucket_end_sql(kind, t, tz, step)


def _hi(kind: str) -> str:
    last_instant = "$4::timestamptz - interval '1 microsecond'"
    return f"CASE WHEN $4::timestamptz = 'infinity' THEN $4::timestamptz ELSE {_end(_start(last_instant, kind), kind)} END"


# Open and close: of the bucket's earliest and latest row, as min / max of [epoch, price] pairs (the buckets of a
# tier are unique), which needs no sort per group as array_agg(... ORDER BY) does.
_AGGREGATES = """(min(ARRAY[extract(epoch FROM bucket), open]))[2] AS open,
           max(high) AS high,
           min(low) AS low,
           (max(ARRAY[extract(epoch FROM bucket), close]))[2] AS close,
           sum(volume) AS volume,
           sum(trades)::int8 AS trades,
           sum(turnover) AS turnover,
           sum(taker_buy_volume) AS taker_buy_volume,
           sum(taker_buy_turnover) AS taker_buy_turnover"""

# The tier columns _AGGREGATES reads.
_AGGREGATED = "bucket, open, high, low, close, volume, trades, turnover, taker_buy_volume, taker_buy_turnover"

_VWAP = "(CASE WHEN volume > 0 THEN turnover / volume ELSE close END)"

# Over few tier rows per bucket (at most RECENT_BINS_MAX_ROWS of its tier): a bucket holds at most $7 rows (the
# interval's length in rows of the tier), so the newest ($5 + 9) * $7 rows before hi (one backward scan of the
# primary key with LIMIT) contain every row of the newest $5 + 9 buckets: those are complete, older ones may be
# cut off and are dropped. SMA10 newest-first, then the page: buckets >= $3, at most $5. Rows come newest first.
_RECENT_BINS = """
WITH newest AS (
    SELECT {start} AS bin, {aggregated}
    FROM {tier}
    WHERE symbol = $1 AND bucket < ({hi})
    ORDER BY bucket DESC
    LIMIT ($5 + 9) * $7::int
), candles AS (
    SELECT bin AS bucket, {aggregates}
    FROM newest
    GROUP BY bin
    ORDER BY bin DESC
    LIMIT $5 + 9
), windowed AS (
    SELECT c.*, CASE WHEN count(*) OVER w = 10 THEN avg(c.close) OVER w END AS sma10
    FROM candles c
    WINDOW w AS (ORDER BY c.bucket DESC ROWS BETWEEN CURRENT ROW AND 9 FOLLOWING)
)
SELECT {columns}
FROM windowed
WHERE bucket >= $3
ORDER BY bucket DESC
LIMIT $5
"""
# Minutes are often sparse (a quiet symbol), where walking the buckets reads fewer rows; hours and days rarely.
RECENT_BINS_MAX_ROWS = {"ohlc_1m": 5, "ohlc_3m": 5, "ohlc_5m": 6, "ohlc_15m": 8, "ohlc_30m": 8, "ohlc_1h": 12,
                        "ohlc_2h": 12, "ohlc_4h": 6, "ohlc_6h": 4, "ohlc_1d": 7}
# Kinds whose bucket expressions do not use $7 (n), which then carries the rows per bucket.
RECENT_BINS_KINDS = ("fixed", "fixed_week", "subday")

# Over longer intervals: `walk` visits the non-empty buckets newest first with one index probe each:
# extra = 0 while a bucket belongs to the page (start >= $3 and among the newest $5), then it counts the
# lead-in buckets and stops at 9. Each bucket found is then aggregated from its own rows ({bucket_rows}: an
# index range of the tier, or the cover below), so the bucket expression (time zone arithmetic) runs once per
# bucket, not once per tier row, and nothing is sorted but the page. Rows come newest first.
_WALK = """
WITH RECURSIVE walk(bin, n, extra) AS (
    SELECT f.bin, 1, CASE WHEN f.bin >= $3 THEN 0 ELSE 1 END
    FROM (SELECT {start_o} AS bin
          FROM {tier} o
          WHERE o.symbol = $1 AND o.bucket < ({hi})
          ORDER BY o.bucket DESC
          LIMIT 1) f
  UNION ALL
    SELECT p.bin, w.n + 1,
           w.extra + CASE WHEN w.extra = 0 AND p.bin >= $3 AND w.n < $5::int THEN 0 ELSE 1 END
    FROM walk w
    CROSS JOIN LATERAL (
        SELECT {start_o} AS bin
        FROM {tier} o
        WHERE o.symbol = $1 AND o.bucket < w.bin
        ORDER BY o.bucket DESC
        LIMIT 1) p
    WHERE w.extra < 9 AND w.n > w.extra
), candles AS (
    SELECT w.bin AS bucket, w.extra, a.*
    FROM walk w
    CROSS JOIN LATERAL (
        SELECT {aggregates}
        FROM {bucket_rows}) a
), windowed AS (
    SELECT c.*, CASE WHEN count(*) OVER w = 10 THEN avg(c.close) OVER w END AS sma10
    FROM candles c
    WINDOW w AS (ORDER BY c.bucket ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)
)
SELECT {columns}
FROM windowed
WHERE extra = 0
ORDER BY bucket DESC
"""

# The end of an ascending page: walks the non-empty buckets oldest first from $3 (one index probe each,
# skipping a bucket that starts before $3) and returns the end of the $5-th, or NULL when there are fewer.
_PAGE_END = """
WITH RECURSIVE walk(probe, n, bin_end) AS (
    SELECT $3::timestamptz, 0, NULL::timestamptz
  UNION ALL
    SELECT {end_p}, w.n + CASE WHEN p.bin >= $3 THEN 1 ELSE 0 END, {end_p}
    FROM walk w
    CROSS JOIN LATERAL (
        SELECT {start_o} AS bin
        FROM {tier} o
        WHERE o.symbol = $1 AND o.bucket >= w.probe AND o.bucket < ({hi})
        ORDER BY o.bucket
        LIMIT 1) p
    WHERE w.n < $5::int
)
SELECT bin_end FROM walk WHERE n = $5::int LIMIT 1
"""


# A walked bucket's rows: the tier's rows in [w.bin, its end).
_TIER_ROWS = "{tier} WHERE symbol = $1 AND bucket >= w.bin AND bucket < {end_w}"

# A walked bucket's rows, covered: the whole rows of a coarser tier (`cover`, UTC-aligned, its step a multiple of
# the tier's) that fit in the bucket, and the tier's rows before and after them. A winter day in Europe/Berlin is
# 9 rows (1 + 3 of 6 hours + 5) instead of 24, a month about 53 instead of 720. Every row lies within its own
# bucket and the three ranges do not overlap, so the aggregates are the same as over the tier alone (where
# retention dropped a fine tier's partitions, ohlc_1m, the cover's rows are kept: a bucket the walk still finds
# is then more complete). Without a whole cover row in the bucket, head_end = tail_start = bin_end: the tier's
# rows alone. OFFSET 0 keeps the bucket's end computed once: PostgreSQL would otherwise copy its time zone
# arithmetic into every range.
_COVERED_ROWS = """(
        SELECT bin_end,
               CASE WHEN first_whole < after_whole THEN first_whole ELSE bin_end END AS head_end,
               CASE WHEN first_whole < after_whole THEN after_whole ELSE bin_end END AS tail_start
        FROM (SELECT bin_end, {cover_ceil} AS first_whole, {cover_floor} AS after_whole
              FROM (SELECT {end_w} AS bin_end OFFSET 0) e) b) c
    CROSS JOIN LATERAL (
        SELECT {aggregated} FROM {tier} WHERE symbol = $1 AND bucket >= w.bin AND bucket < c.head_end
      UNION ALL
        SELECT {aggregated} FROM {cover} WHERE symbol = $1 AND bucket >= c.head_end AND bucket < c.tail_start
      UNION ALL
        SELECT {aggregated} FROM {tier} WHERE symbol = $1 AND bucket >= c.tail_start AND bucket < c.bin_end) covered"""


def _derived(template: str, kind: str, tier: str = "ohlc_1m", cover: str | None = None) -> str:
    end_w = _end("w.bin", kind)
    if cover is None:
        bucket_rows = _TIER_ROWS.format(tier=tier, end_w=end_w)
    else:
        step = f"{TIER_MINUTES[cover]} minutes"
        bucket_rows = _COVERED_ROWS.format(
            tier=tier, cover=cover, aggregated=_AGGREGATED, end_w=end_w, cover_floor=utc_bucket(step, "bin_end"),
            cover_ceil=utc_bucket(step, f"w.bin + interval '{step}' - interval '1 microsecond'"))
    return template.format(
        tier=tier, start=_start("bucket", kind), start_o=_start("o.bucket", kind), end_p=_end("p.bin", kind),
        end_w=end_w, hi=_hi(kind), bucket_rows=bucket_rows, aggregated=_AGGREGATED,
        aggregates=_AGGREGATES, columns=_candle_columns(f"extract(epoch FROM {_end('bucket', kind)})::int8", _VWAP,
                                                   float8_copies=False))


# The tiers that cover walked buckets, coarsest first.
COVER_TIERS = ("ohlc_1d", "ohlc_6h")


def _nests(tier: str, cover: str) -> bool:
    """Whether each of the cover's buckets is a whole number (> 1) of the tier's."""
    return TIER_MINUTES[cover] > TIER_MINUTES[tier] and TIER_MINUTES[cover] % TIER_MINUTES[tier] == 0


def cover_tier(interval: Interval, tier: str) -> str | None:
    """The coarsest of COVER_TIERS that a walked bucket of the interval read from `tier` is covered with: coarser
    than the tier, a multiple of its step, and at most a quarter of the interval's shortest bucket (whole rows of
    a longer one would replace few of the tier's rows, for two more index probes); None when none qualifies."""
    shortest = interval.minutes or interval.n * DAY_MINUTES * {"d": 1, "w": 7, "M": 28}[interval.unit]
    for cover in COVER_TIERS:
        if _nests(tier, cover) and 4 * TIER_MINUTES[cover] <= shortest:
            return cover
    return None


KINDS = ("fixed", "fixed_week", "subday", "day", "week", "month")
CANDLES_RECENT_BINS_SQL = {(tier, kind): _derived(_RECENT_BINS, kind, tier) for tier in TIERS for kind in RECENT_BINS_KINDS}
CANDLES_DERIVED_SQL = {(tier, kind, cover): _derived(_WALK, kind, tier, cover) for tier in TIERS for kind in KINDS
                       for cover in (None, *COVER_TIERS) if cover is None or _nests(tier, cover)}
CANDLES_PAGE_END_SQL = {(tier, kind): _derived(_PAGE_END, kind, tier) for tier in TIERS for kind in KINDS}
# How many of the common parameters ($1..$7) each derived statement takes: sub-day buckets need no n.
ARITY = {sql: max(int(number) for number in re.findall(r"\$(\d+)", sql))
         for sql in (*CANDLES_RECENT_BINS_SQL.values(), *CANDLES_DERIVED_SQL.values(), *CANDLES_PAGE_END_SQL.values())}
# numbers=string: the same statements with the stored decimals as text instead of doubles.
_DECIMAL_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "quote_volume", "taker_buy_volume",
                    "taker_buy_quote_volume")


def _as_text(sql: str) -> str:
    for name in _DECIMAL_COLUMNS:
        sql = sql.replace(f"::float8 AS {name},", f"::text AS {name},").replace(f"::float8 AS {name}\n",
                                                                                f"::text AS {name}\n")
    return sql


DECIMAL_SQL = {**{sql: _as_text(sql) for sql in (*CANDLES_RECENT_BINS_SQL.values(), *CANDLES_DERIVED_SQL.values())},
               **{STORED_CANDLES_SQL[tier]: _as_text(_stored_candles(tier, float8_copies=False)) for tier in TIERS}}
ARITY.update({DECIMAL_SQL[sql]: arity for sql, arity in ARITY.items() if sql in DECIMAL_SQL})


def candle_tier(interval: Interval, zone: TimeZone) -> str:
    """The coarsest stored tier whose buckets each fall inside one bucket of the interval in the zone: UTC days
    for day, week and month intervals in UTC; else the tier of the longest step that divides the interval (every
    step divides a calendar interval) in a zone whose offsets are multiples of that step, so that the zone's
    boundaries are UTC ones: 6 hours (6h, 12h in UTC; days in +06:00), 4 hours (4h, 8h; days in +08:00), 2 hours
    (2h), hours (days in Europe/Berlin), 30 minutes (any interval in Asia/Kolkata, +05:30), quarter hours
    (+05:45), 5 minutes (10m), 3 minutes (6m); minutes otherwise."""
    if interval.unit in "dwM" and zone.sql_name == "UTC":
        return "ohlc_1d"
    minutes = interval.minutes
    for tier in reversed(TIERS[1:-1]):  # coarsest first; days serve UTC only (above), minutes every zone
        step = TIER_MINUTES[tier]
        if (minutes is None or minutes % step == 0) and offsets_in_steps(zone, timedelta(minutes=step)):
            return tier
    return "ohlc_1m"


def rows_per_bucket(interval: Interval, kind: str, tier: str) -> int | None:
    """How many rows of the tier a bucket holds at most, for the fixed-length kinds; None for the others."""
    if kind not in RECENT_BINS_KINDS:
        return None
    minutes = interval.minutes or (interval.n * DAY_MINUTES * (7 if interval.unit == "w" else 1))
    return minutes // TIER_MINUTES[tier]


def _source(q: HistoryQuery) -> tuple[str, str, int | None]:
    """(bucket kind, tier, tier rows per bucket) of a candle query."""
    kind = q.interval.sql_kind(q.time_zone)
    tier = candle_tier(q.interval, q.time_zone)
    return kind, tier, rows_per_bucket(q.interval, kind, tier)


def candle_statement(q: HistoryQuery, end: datetime) -> tuple[str, tuple[object, ...]]:
    """The statement and arguments of the query's candles before `end`, newest first. One tier row per bucket:
    the buckets are the tier's rows (1m; the other tiers in zones that align with them), read as they are; a few rows per bucket: the newest rows, grouped; else the walk."""
    kind, tier, rows = _source(q)
    if rows == 1:
        sql, args = STORED_CANDLES_SQL[tier], (q.symbol, q.start, end, q.limit)
    else:
        args = (q.symbol, q.interval.step, q.start, end, q.limit, q.time_zone.sql_name, q.interval.n)
        if rows is not None and rows <= RECENT_BINS_MAX_ROWS[tier]:
            sql, args = CANDLES_RECENT_BINS_SQL[tier, kind], (*args[:6], rows)
        else:
            sql = CANDLES_DERIVED_SQL[tier, kind, cover_tier(q.interval, tier)]
        args = args[:ARITY[sql]]
    return (DECIMAL_SQL[sql] if q.numbers == "string" else sql), args


def page_end_statement(q: HistoryQuery) -> tuple[str, tuple[object, ...]]:
    """The statement and arguments that find where the query's ascending page ends (no row, or NULL, when the
    range holds fewer than a page)."""
    kind, tier, rows = _source(q)
    if rows == 1:
        return STORED_PAGE_END_SQL[tier], (q.symbol, q.start, q.end, q.limit)
    sql = CANDLES_PAGE_END_SQL[tier, kind]
    return sql, (q.symbol, q.interval.step, q.start, q.end, q.limit, q.time_zone.sql_name, q.interval.n)[:ARITY[sql]]


# --- rows to protos ----------------------------------------------------------------------------------------
# Hot path (500 candles must cost well under a millisecond): the SQL returns times as integers (epoch seconds,
# or microseconds for ticks) and the rows are unpacked positionally into messages added in place; building
# Timestamps with FromDatetime and copying messages into the repeated field cost about 10 times more.

def add_decimal_candles(out: Any, symbol: str, rows: Sequence[Sequence[Any]], now: float) -> None:
    """add_candles for rows of DECIMAL_SQL (decimals as text): the doubles are the texts rounded, and each
    candle carries the texts in `decimals`."""
    add = out.add
    for (epoch, end_epoch, open_, high, low, close, volume, trades, vwap, sma10, quote_volume, taker_buy_volume,
         taker_buy_quote_volume) in rows:
        candle = add(symbol=symbol, open=float(open_), high=float(high), low=float(low), close=float(close),
                     volume=float(volume), trades=trades, vwap=float(vwap), quote_volume=float(quote_volume),
                     taker_buy_volume=float(taker_buy_volume), taker_buy_quote_volume=float(taker_buy_quote_volume),
                     closed=end_epoch <= now)
        candle.decimals.open, candle.decimals.high, candle.decimals.low, candle.decimals.close = (
            open_, high, low, close)
        candle.decimals.volume, candle.decimals.quote_volume, candle.decimals.vwap = volume, quote_volume, vwap
        candle.decimals.taker_buy_volume = taker_buy_volume
        candle.decimals.taker_buy_quote_volume = taker_buy_quote_volume
        candle.time.seconds = epoch
        candle.close_time.seconds = end_epoch
        if sma10 is not None:
            candle.sma10 = sma10


def add_candles(out: Any, symbol: str, rows: Sequence[Sequence[Any]], now: float) -> None:
    """Appends candle rows (epoch, end_epoch, open, high, low, close, volume, trades, vwap, sma10, quote_volume,
    taker_buy_volume, taker_buy_quote_volume) to a repeated field; a candle whose end is past `now` (epoch
    seconds) is closed."""
    add = out.add
    for (epoch, end_epoch, open_, high, low, close, volume, trades, vwap, sma10, quote_volume, taker_buy_volume,
         taker_buy_quote_volume) in rows:
        # One assignment per field: ~18 % faster than keyword arguments to add(), which upb matches by name.
        candle = add()
        candle.symbol = symbol
        candle.time.seconds = epoch
        candle.open = open_
        candle.high = high
        candle.low = low
        candle.close = close
        candle.volume = volume
        candle.trades = trades
        candle.vwap = vwap
        if sma10 is not None:
            candle.sma10 = sma10
        candle.quote_volume = quote_volume
        candle.taker_buy_volume = taker_buy_volume
        candle.taker_buy_quote_volume = taker_buy_quote_volume
        candle.close_time.seconds = end_epoch
        candle.closed = end_epoch <= now


class TooManyRows(ValueError):
    """fill would make the page longer than allowed."""


def fill_gaps(candles: Any, q: HistoryQuery, max_rows: int) -> None:
    """Inserts a candle for each interval without trades between the candles of the page (fill=null: no
    prices; fill=prev: flat at the previous close). Buckets tile time, so a gap starts at a candle's close_time."""
    now = time.time()
    real = []
    for candle in candles:
        kept = market_pb2.Candle()
        kept.CopyFrom(candle)
        real.append(kept)
    del candles[:]
    previous = None
    count = 0
    for candle in real:
        if previous is not None:
            start = previous.close_time.ToDatetime(tzinfo=UTC)
            following = candle.time.ToDatetime(tzinfo=UTC)
            while start < following:
                end = bucket_end(start, q.interval, q.time_zone)
                count += 1
                if count + len(real) > max_rows:
                    raise TooManyRows(f"filling the gaps would return more than {max_rows} candles: "
                                      "ask a smaller limit or a narrower range")
                empty = candles.add(symbol=q.symbol, closed=end.timestamp() <= now)
                empty.time.FromDatetime(start)
                empty.close_time.FromDatetime(end)
                if q.fill == "prev":
                    empty.open = empty.high = empty.low = empty.close = empty.vwap = previous.close
                    if previous.HasField("decimals"):
                        flat = previous.decimals.close
                        empty.decimals.open = empty.decimals.high = empty.decimals.low = flat
                        empty.decimals.close = empty.decimals.vwap = flat
                        empty.decimals.volume = empty.decimals.quote_volume = "0"
                        empty.decimals.taker_buy_volume = empty.decimals.taker_buy_quote_volume = "0"
                start = end
        candles.append(candle)
        previous = candle


def add_metrics(out: Any, symbol: str, rows: Sequence[Sequence[Any]]) -> None:
    """Appends metrics rows (epoch, min, max, avg, vwap, volume, last, trades) to a repeated field."""
    add = out.add
    for epoch, min_, max_, avg, vwap, volume, last, trades in rows:
        metrics = add(symbol=symbol, min=min_, max=max_, avg=avg, vwap=vwap, volume=volume, last=last,
                      trades=trades)
        metrics.time.seconds = epoch


def add_ticks(out: Any, symbol: str, rows: Sequence[Sequence[Any]]) -> None:
    """Appends tick rows (trade_id, micros, price, size, side, source) to a repeated field."""
    add = out.add
    for trade_id, micros, price, size, side, source in rows:
        tick = add(symbol=symbol, trade_id=trade_id, price=price, size=size, side=side, source=source)
        set_time_micros(tick.event_time, micros)


# --- the repository ----------------------------------------------------------------------------------------

def remaining(deadline: float | None) -> float | None:
    """Seconds left until deadline (loop clock); TimeoutError once it has passed."""
    if deadline is None:
        return None
    left = deadline - asyncio.get_running_loop().time()
    if left <= 0:
        raise TimeoutError("deadline exceeded")
    return left


class SymbolNotFound(LookupError):
    def __init__(self, symbols: Sequence[str]) -> None:
        super().__init__(", ".join(symbols))
        self.symbols = list(symbols)


# GetTicker for this many symbols or more runs as two queries at once.
TICKER_SPLIT_SYMBOLS = 40


class History:
    """The read queries. Each takes `deadline`, the caller's deadline on the event loop's clock (or None):
    asyncpg gets the time remaining as its timeout, and on expiry cancels the query in PostgreSQL too."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _fetch(self, sql: str, *args: object, deadline: float | None) -> list[asyncpg.Record]:
        conn = await self.pool.acquire(timeout=remaining(deadline))
        try:
            return await conn.fetch(sql, *args, timeout=remaining(deadline))
        finally:
            # Not `async with pool.acquire(timeout=...)`: the release would inherit the (nearly spent)
            # acquire timeout, and a connection whose query was just cancelled needs a moment to finish the
            # cancellation and reset; when it cannot, asyncpg terminates the connection instead of reusing it.
            await self.pool.release(conn, timeout=RELEASE_TIMEOUT_SECONDS)

    async def list_symbols(self, active: bool | None, deadline: float | None) -> list[market_pb2.Symbol]:
        rows = await self._fetch(LIST_SYMBOLS_SQL, active, deadline=deadline)
        return [market_pb2.Symbol(symbol=r["symbol"], base=r["base"], quote=r["quote"], active=r["active"])
                for r in rows]

    async def symbol_exists(self, symbol: str, deadline: float | None) -> bool:
        rows = await self._fetch(SYMBOL_EXISTS_SQL, symbol, deadline=deadline)
        return bool(rows[0][0])

    async def unknown_symbols(self, symbols: Sequence[str], deadline: float | None) -> list[str]:
        rows = await self._fetch(KNOWN_SYMBOLS_SQL, list(symbols), deadline=deadline)
        known = {r["symbol"] for r in rows}
        return [s for s in symbols if s not in known]

    async def latest(self, symbol: str, deadline: float | None) -> query_pb2.GetLatestResponse:
        rows = await self._fetch(LATEST_SQL, symbol, deadline=deadline)
        if not rows:
            raise SymbolNotFound([symbol])
        row = rows[0]
        response = query_pb2.GetLatestResponse(symbol=symbol)
        if row["trade_id"] is not None:
            tick = response.last_tick
            tick.symbol, tick.trade_id, tick.price, tick.size = symbol, row["trade_id"], row["price"], row["size"]
            tick.side, tick.source = row["side"], row["source"]
            set_time_micros(tick.event_time, row["micros"])
        if row["o_epoch"] is not None:
            candle = response.candle
            candle.symbol = symbol
            candle.time.seconds = row["o_epoch"]
            candle.open, candle.high, candle.low, candle.close = (row["o_open"], row["o_high"], row["o_low"],
                                                                  row["o_close"])
            candle.volume, candle.trades, candle.vwap = row["o_volume"], row["o_trades"], row["o_vwap"]
            candle.quote_volume, candle.taker_buy_volume, candle.taker_buy_quote_volume = (
                row["o_quote_volume"], row["o_taker_buy_volume"], row["o_taker_buy_quote_volume"])
            candle.close_time.seconds = row["o_epoch"] + 60
            candle.closed = candle.close_time.seconds <= time.time()
            if row["o_sma10"] is not None:
                candle.sma10 = row["o_sma10"]
        if row["m_epoch"] is not None:
            metrics = response.metrics
            metrics.symbol = symbol
            metrics.time.seconds = row["m_epoch"]
            metrics.min, metrics.max, metrics.avg, metrics.vwap = (row["m_min"], row["m_max"], row["m_avg"],
                                                                   row["m_vwap"])
            metrics.volume, metrics.last, metrics.trades = row["m_volume"], row["m_last"], row["m_trades"]
        return response

    async def ticker(self, symbols: Sequence[str], window_size: str, length: timedelta,
                     deadline: float | None) -> query_pb2.GetTickerResponse:
        """Rolling-window statistics of the symbols (all active ones when none are named)."""
        window = Window.ending(now_utc(), length)
        # Many symbols: two halves on two connections, which PostgreSQL reads on two cores at once.
        halves = ([list(symbols)] if len(symbols) < TICKER_SPLIT_SYMBOLS
                  else [list(symbols[:len(symbols) // 2]), list(symbols[len(symbols) // 2:])])
        parts = await asyncio.gather(*(self._fetch(TICKER_SQL, half, *window.cuts, deadline=deadline)
                                       for half in halves))
        rows = [row for part in parts for row in part]
        if symbols and len(rows) < len(symbols):
            listed = {row["symbol"] for row in rows}
            raise SymbolNotFound([s for s in symbols if s not in listed])
        response = query_pb2.GetTickerResponse()
        build_tickers(response.items, window_size, window, rows)
        return response

    async def history(self, q: HistoryQuery, deadline: float | None,
                      max_rows: int = 5000) -> query_pb2.GetHistoryResponse:
        response = query_pb2.GetHistoryResponse(symbol=q.symbol, view=q.view, time_zone=q.time_zone.name)
        if q.view == "ticks":
            rows = await self._ticks(q, deadline)
            add_ticks(response.ticks, q.symbol, rows)
            if len(rows) == q.limit:
                edge = rows[-1] if q.order == "asc" else rows[0]
                moment = _from_micros(edge[1])
                # asc: the smallest key after the last tick; desc: the first tick itself, exclusive.
                response.next_page_token = encode_page_token(q, moment, edge[0] + "\x01" if q.order == "asc"
                                                             else edge[0])
        elif q.view == "metrics1m":
            sql = METRICS_ASC_SQL if q.order == "asc" else METRICS_SQL
            rows = await self._fetch(sql, q.symbol, q.start, q.end, q.limit, deadline=deadline)
            rows = rows if q.order == "asc" else rows[::-1]
            add_metrics(response.metrics, q.symbol, rows)
            if len(rows) == q.limit:
                edge_epoch = rows[-1][0] + 60 if q.order == "asc" else rows[0][0]
                response.next_page_token = encode_page_token(q, EPOCH + timedelta(seconds=edge_epoch))
        else:
            response.interval = q.interval.text
            rows = await self._candles(q, deadline)
            (add_decimal_candles if q.numbers == "string" else add_candles)(response.candles, q.symbol, rows,
                                                                           time.time())
            if q.fill != "none":
                fill_gaps(response.candles, q, max_rows)
            if len(rows) == q.limit:
                edge_epoch = rows[-1][1] if q.order == "asc" else rows[0][0]
                response.next_page_token = encode_page_token(q, EPOCH + timedelta(seconds=edge_epoch))
        if not rows and not await self.symbol_exists(q.symbol, deadline):
            raise SymbolNotFound([q.symbol])
        return response

    async def _ticks(self, q: HistoryQuery, deadline: float | None) -> list[asyncpg.Record]:
        """The page's ticks, oldest first."""
        args = (q.symbol, q.start, q.start_id, q.end, q.end_id, q.limit)
        if q.order == "asc":
            return await self._fetch(TICKS_ASC_SQL, *args, deadline=deadline)
        return (await self._fetch(TICKS_SQL, *args, deadline=deadline))[::-1]

    async def _in_constant_offset(self, q: HistoryQuery, deadline: float | None) -> HistoryQuery:
        """The query in its zone's offset when the symbol's candles all lie where that offset no longer changes
        (intervals.constant_offset): the same buckets, read as an offset's are, from the coarsest tier the offset
        aligns with and with fixed-length arithmetic (Asia/Shanghai 1d: 6 rows of ohlc_4h a day instead of 24
        of ohlc_1h, as +08:00). Candles that are a tier's own rows (1m) gain nothing: no probe for them."""
        constant = constant_offset(q.time_zone)
        if constant is None or _source(q)[2] == 1:
            return q
        since, zone = constant
        if since is not None and (await self._fetch(CANDLES_BEFORE_SQL, q.symbol, since, deadline=deadline))[0][0]:
            return q
        return replace(q, time_zone=zone)

    async def _candles(self, q: HistoryQuery, deadline: float | None) -> list[asyncpg.Record]:
        """The page's candles, oldest first. An ascending page is read as the descending page that ends where
        the ascending one does. The caller keeps its query (the zone's name for the answer, the page token and
        the gaps it fills): the zone read here may be its offset, whose buckets are the same."""
        q = await self._in_constant_offset(q, deadline)
        end = q.end
        if q.order == "asc":
            sql, args = page_end_statement(q)
            page_end = await self._fetch(sql, *args, deadline=deadline)
            if page_end and page_end[0][0] is not None:
                end = page_end[0][0]
        sql, args = candle_statement(q, end)
        return (await self._fetch(sql, *args, deadline=deadline))[::-1]
