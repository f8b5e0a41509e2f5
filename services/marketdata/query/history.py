"""Reads of the query service: request validation, the SQL, and the mapping of rows to protos.

Every statement is a constant string with $n parameters, so asyncpg prepares it once per pooled connection
(its statement cache) and PostgreSQL can reuse the plan. Numerics are converted with ::float8 in SQL.

Candles and SMA10
-----------------
* 1m candles are the stored rows of ohlc_1m: the newest limit+9 rows before `to`, read by a backward scan
  of the primary key (symbol, bucket) with LIMIT; the window function runs over them, so the oldest
  candles of the page get their SMA10 from candles before the page; then the rows before `from` and the
  9 lead-in rows are dropped.
* 5m/15m/1h/1d candles are derived from ohlc_1m: open of the first minute, close of the last, max high,
  min low, sum of volume and trades, vwap = sum(turnover) / sum(volume) (the close when the volume is 0, as
  ohlc_1m does). Bins are aligned on the Unix epoch, so 1d candles are UTC days. A derived candle belongs
  to the range when its start is in [from, to) and always aggregates its whole interval, so a candle is
  the same whatever range it is asked with. 5m candles aggregate the newest (limit + 9) * 5 minute rows
  (enough for the newest limit + 9 bins, one backward index scan with LIMIT); 15m, 1h and 1d candles come
  from a recursive query that walks the primary key backwards one bin at a
  time (one index probe per bin, however sparse the data) to find the oldest bin needed (the page plus 9
  before it), then aggregates only the minutes from there.
* SMA10 = avg(close) over the candle and the 9 candles before it at the same interval, NULL unless all 10
  exist. Intervals without trades have no candle, so SMA10 counts candles, not clock intervals.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from marketdata.common.errors import FieldViolations
from marketdata.v1 import market_pb2, query_pb2

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# asyncpg encodes these two values as PostgreSQL's -infinity / infinity.
NEGATIVE_INFINITY = datetime(1, 1, 1, tzinfo=UTC)
INFINITY = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9._-]{2,20}$")
VIEWS = ("ticks", "metrics1m", "ohlc1m")
DEFAULT_VIEW = "ohlc1m"
INTERVALS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
DEFAULT_INTERVAL = "1m"
DEFAULT_LIMIT = 100
# Time a pooled connection gets to settle (finish a cancelled query, reset) before it is reused.
RELEASE_TIMEOUT_SECONDS = 5.0
SMA_PERIOD = 10


def symbol_problem(symbol: str) -> str | None:
    """Why a symbol is not a valid token, or None."""
    if not symbol:
        return "required"
    if not SYMBOL_PATTERN.match(symbol):
        return "must be 2 to 20 characters of A-Z, 0-9, '.', '-' or '_'"
    return None


@dataclass(frozen=True)
class HistoryQuery:
    symbol: str
    view: str
    interval: str
    # Inclusive start / exclusive end, microsecond precision; the infinities when not given.
    start: datetime
    end: datetime
    limit: int


def _ceil_micro(ts: Timestamp) -> datetime:
    """The timestamp as a UTC datetime, rounded up to the microsecond (PostgreSQL's precision)."""
    micros = ts.seconds * 1_000_000 + -(-ts.nanos // 1000)
    try:
        return min(EPOCH + timedelta(microseconds=micros), INFINITY)
    except OverflowError:  # 9999-12-31T23:59:59.9999995Z and later round past datetime.max
        return INFINITY


def _timestamp_problem(ts: Timestamp) -> str | None:
    # The range google.protobuf.Timestamp allows: 0001-01-01 to 9999-12-31.
    if not -62135596800 <= ts.seconds <= 253402300799 or not 0 <= ts.nanos <= 999_999_999:
        return "must be a valid timestamp between 0001-01-01 and 9999-12-31"
    return None


def parse_history_request(request: query_pb2.GetHistoryRequest, max_limit: int) -> tuple[HistoryQuery | None,
                                                                                        FieldViolations]:
    """Validates a GetHistoryRequest; returns the query, or the violations naming each bad field."""
    violations = FieldViolations()
    problem = symbol_problem(request.symbol)
    if problem:
        violations.add("symbol", problem)
    view = request.view or DEFAULT_VIEW
    if view not in VIEWS:
        violations.add("view", f"must be one of {', '.join(VIEWS)}")
    interval = request.interval or DEFAULT_INTERVAL
    if interval not in INTERVALS:
        violations.add("interval", f"must be one of {', '.join(INTERVALS)}")
    elif view != "ohlc1m" and interval != DEFAULT_INTERVAL:
        violations.add("interval", "only view=ohlc1m has intervals other than 1m")
    limit = request.limit or DEFAULT_LIMIT
    if limit > max_limit:
        violations.add("limit", f"must be at most {max_limit}")
    start, end = NEGATIVE_INFINITY, INFINITY
    has_from, has_to = request.HasField("from_time"), request.HasField("to_time")
    from_problem = _timestamp_problem(request.from_time) if has_from else None
    to_problem = _timestamp_problem(request.to_time) if has_to else None
    if from_problem:
        violations.add("from", from_problem)
    elif has_from:
        start = _ceil_micro(request.from_time)
    if to_problem:
        violations.add("to", to_problem)
    elif has_to:
        end = _ceil_micro(request.to_time)
    if (has_from and has_to and not from_problem and not to_problem
            and (request.from_time.seconds, request.from_time.nanos) >= (request.to_time.seconds, request.to_time.nanos)):
        violations.add("from", "must be before to")
    if violations:
        return None, violations
    return HistoryQuery(request.symbol, view, interval, start, end, limit), violations


def floor_to(moment: datetime, step: timedelta) -> datetime:
    """Start of the epoch-aligned interval of length step that contains moment (UTC days for 1d)."""
    return moment - (moment - EPOCH) % step


def ceil_to(moment: datetime, step: timedelta) -> datetime:
    """The first epoch-aligned interval start at or after moment (the infinities stay as they are)."""
    if moment in (NEGATIVE_INFINITY, INFINITY):
        return moment
    floor = floor_to(moment, step)
    if floor == moment:
        return moment
    try:
        return floor + step
    except OverflowError:
        return INFINITY


# --- SQL -------------------------------------------------------------------------------------------------

LIST_SYMBOLS_SQL = """
SELECT symbol, base, quote, active
FROM symbols
WHERE $1::boolean IS NULL OR active = $1::boolean
ORDER BY symbol
"""

SYMBOL_EXISTS_SQL = "SELECT EXISTS (SELECT 1 FROM symbols WHERE symbol = $1)"

KNOWN_SYMBOLS_SQL = "SELECT symbol FROM symbols WHERE symbol = ANY($1::text[])"

LATEST_SQL = """
SELECT t.trade_id, (extract(epoch FROM t.event_time) * 1000000)::int8 AS micros,
       t.price::float8 AS price, t.size::float8 AS size, t.side, t.source,
       extract(epoch FROM o.bucket)::int8 AS o_epoch, o.open::float8 AS o_open, o.high::float8 AS o_high, o.low::float8 AS o_low,
       o.close::float8 AS o_close, o.volume::float8 AS o_volume, o.trades AS o_trades,
       o.vwap::float8 AS o_vwap, sma.sma10::float8 AS o_sma10,
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
    ON o.symbol = s.symbol AND o.bucket = date_bin('1 minute', t.event_time, TIMESTAMPTZ 'epoch')
LEFT JOIN metrics_1m m
    ON m.symbol = s.symbol AND m.bucket = date_bin('1 minute', t.event_time, TIMESTAMPTZ 'epoch')
LEFT JOIN LATERAL (
    SELECT CASE WHEN count(*) = 10 THEN avg(l.close) END AS sma10
    FROM (SELECT x.close FROM ohlc_1m x
          WHERE x.symbol = s.symbol AND x.bucket <= o.bucket
          ORDER BY x.bucket DESC
          LIMIT 10) l
) sma ON true
WHERE s.symbol = $1
"""

# $1 symbol, $2 from (inclusive), $3 to (exclusive), $4 limit.
TICKS_SQL = """
SELECT trade_id, (extract(epoch FROM event_time) * 1000000)::int8 AS micros,
       price::float8 AS price, size::float8 AS size, side, source
FROM ticks_history
WHERE symbol = $1 AND event_time >= $2 AND event_time < $3
ORDER BY event_time DESC, trade_id DESC
LIMIT $4
"""

METRICS_SQL = """
SELECT extract(epoch FROM bucket)::int8 AS epoch, min::float8 AS min, max::float8 AS max, avg::float8 AS avg, vwap::float8 AS vwap,
       volume::float8 AS volume, last::float8 AS last, trades
FROM metrics_1m
WHERE symbol = $1 AND bucket >= $2 AND bucket < $3
ORDER BY bucket DESC
LIMIT $4
"""

# 1-minute candles: the newest $4 + 9 rows before $3, read by a backward scan of the primary key with LIMIT;
# SMA10 computed newest-first over them (in that order the 9 rows after a row are the 9 candles before it),
# so the oldest candles of the page get their SMA10 from rows before the page; then trimmed to the rows of
# [$2, $3), at most $4. No sort anywhere. Rows come newest first: the caller reverses them. A range with
# fewer than $4 candles still reads at most $4 + 9 rows, never more than a full page.
CANDLES_1M_SQL = """
SELECT epoch, open, high, low, close, volume, trades, vwap, sma10
FROM (
    SELECT bucket, extract(epoch FROM bucket)::int8 AS epoch, open::float8 AS open, high::float8 AS high,
           low::float8 AS low, close::float8 AS close, volume::float8 AS volume, trades, vwap::float8 AS vwap,
           (CASE WHEN count(*) OVER w = 10 THEN avg(close) OVER w END)::float8 AS sma10
    FROM (SELECT bucket, open, high, low, close, volume, trades, vwap
          FROM ohlc_1m
          WHERE symbol = $1 AND bucket < $3
          ORDER BY bucket DESC
          LIMIT $4 + 9) newest
    WINDOW w AS (ORDER BY bucket DESC ROWS BETWEEN CURRENT ROW AND 9 FOLLOWING)
) candles
WHERE bucket >= $2
ORDER BY bucket DESC
LIMIT $4
"""

# Derived candles over few minutes (5m). $1 symbol, $2 interval, $3 first bin start allowed (from
# rounded up to the interval), $4 end of the last bin allowed (to rounded up to the interval), $5 limit.
# A bin holds at most k = interval / 1 minute rows, so the newest ($5 + 9) * k minute rows before $4 (one
# backward scan of the primary key with LIMIT) contain every row of the newest $5 + 9 bins: those bins are
# complete, older ones may be cut off and are dropped. SMA10 newest-first, then the page: bins >= $3, at
# most $5. Rows come newest first: the caller reverses them.
CANDLES_RECENT_BINS_SQL = """
WITH newest AS (
    SELECT date_bin($2::interval, bucket, TIMESTAMPTZ 'epoch') AS bin,
           bucket, open, high, low, close, volume, trades, turnover
    FROM ohlc_1m
    WHERE symbol = $1 AND bucket < $4
    ORDER BY bucket DESC
    LIMIT ($5 + 9) * (extract(epoch FROM $2::interval)::int8 / 60)
), candles AS (
    SELECT bin AS bucket,
           (array_agg(open ORDER BY bucket))[1] AS open,
           max(high) AS high,
           min(low) AS low,
           (array_agg(close ORDER BY bucket DESC))[1] AS close,
           sum(volume) AS volume,
           sum(trades)::int8 AS trades,
           sum(turnover) AS turnover
    FROM newest
    GROUP BY bin
    ORDER BY bin DESC
    LIMIT $5 + 9
), windowed AS (
    SELECT c.*,
           CASE WHEN count(*) OVER w = 10 THEN avg(c.close) OVER w END AS sma10
    FROM candles c
    WINDOW w AS (ORDER BY c.bucket DESC ROWS BETWEEN CURRENT ROW AND 9 FOLLOWING)
)
SELECT extract(epoch FROM bucket)::int8 AS epoch, open::float8 AS open, high::float8 AS high,
       low::float8 AS low, close::float8 AS close, volume::float8 AS volume, trades,
       (CASE WHEN volume > 0 THEN turnover / volume ELSE close END)::float8 AS vwap,
       sma10::float8 AS sma10
FROM windowed
WHERE bucket >= $3
ORDER BY bucket DESC
LIMIT $5
"""
# Intervals served by CANDLES_RECENT_BINS_SQL (at most (5000 + 9) * 5 rows read): measured twice as fast as
# the walk at 5m; from 15m on, the walk (which reads only the bins that exist, however sparse) is as fast.
RECENT_BINS_INTERVALS = ("5m",)

# Derived candles over longer intervals (15m, 1h, 1d), same parameters, ascending order.
# `walk` visits the non-empty bins newest first with one index probe each: extra = 0 while a bin belongs to
# the page (start >= $3 and among the newest $5), then it counts the lead-in bins and stops at 9.
CANDLES_DERIVED_SQL = """
WITH RECURSIVE walk(bin, n, extra) AS (
    SELECT f.bin, 1, CASE WHEN f.bin >= $3 THEN 0 ELSE 1 END
    FROM (SELECT date_bin($2::interval, o.bucket, TIMESTAMPTZ 'epoch') AS bin
          FROM ohlc_1m o
          WHERE o.symbol = $1 AND o.bucket < $4
          ORDER BY o.bucket DESC
          LIMIT 1) f
  UNION ALL
    SELECT p.bin, w.n + 1,
           w.extra + CASE WHEN w.extra = 0 AND p.bin >= $3 AND w.n < $5::int THEN 0 ELSE 1 END
    FROM walk w
    CROSS JOIN LATERAL (
        SELECT date_bin($2::interval, o.bucket, TIMESTAMPTZ 'epoch') AS bin
        FROM ohlc_1m o
        WHERE o.symbol = $1 AND o.bucket < w.bin
        ORDER BY o.bucket DESC
        LIMIT 1) p
    WHERE w.extra < 9 AND w.n > w.extra
), bounds AS (
    SELECT min(bin) AS first_bin, min(bin) FILTER (WHERE extra = 0) AS first_page_bin FROM walk
), candles AS (
    SELECT date_bin($2::interval, o.bucket, TIMESTAMPTZ 'epoch') AS bucket,
           (array_agg(o.open ORDER BY o.bucket))[1] AS open,
           max(o.high) AS high,
           min(o.low) AS low,
           (array_agg(o.close ORDER BY o.bucket DESC))[1] AS close,
           sum(o.volume) AS volume,
           sum(o.trades)::int8 AS trades,
           sum(o.turnover) AS turnover
    FROM ohlc_1m o
    WHERE o.symbol = $1 AND o.bucket >= (SELECT first_bin FROM bounds) AND o.bucket < $4
    GROUP BY 1
), windowed AS (
    SELECT c.*,
           CASE WHEN count(*) OVER w = 10 THEN avg(c.close) OVER w END AS sma10
    FROM candles c
    WINDOW w AS (ORDER BY c.bucket ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)
)
SELECT extract(epoch FROM bucket)::int8 AS epoch, open::float8 AS open, high::float8 AS high,
       low::float8 AS low, close::float8 AS close,
       volume::float8 AS volume, trades,
       (CASE WHEN volume > 0 THEN turnover / volume ELSE close END)::float8 AS vwap,
       sma10::float8 AS sma10
FROM windowed
WHERE bucket >= (SELECT first_page_bin FROM bounds)
ORDER BY bucket
"""


# --- rows to protos ----------------------------------------------------------------------------------------
# Hot path (500 candles must cost well under a millisecond): the SQL returns times as integers (epoch seconds,
# or microseconds for ticks) and the rows are unpacked positionally into messages added in place; building
# Timestamps with FromDatetime and copying messages into the repeated field cost about 10 times more.

def add_candles(out: Any, symbol: str, rows: Sequence[Sequence[Any]]) -> None:
    """Appends candle rows (epoch, open, high, low, close, volume, trades, vwap, sma10) to a repeated field."""
    add = out.add
    for epoch, open_, high, low, close, volume, trades, vwap, sma10 in rows:
        candle = add(symbol=symbol, open=open_, high=high, low=low, close=close, volume=volume, trades=trades,
                     vwap=vwap)
        candle.time.seconds = epoch
        if sma10 is not None:
            candle.sma10 = sma10


def add_metrics(out: Any, symbol: str, rows: Sequence[Sequence[Any]]) -> None:
    """Appends metrics rows (epoch, min, max, avg, vwap, volume, last, trades) to a repeated field."""
    add = out.add
    for epoch, min_, max_, avg, vwap, volume, last, trades in rows:
        metrics = add(symbol=symbol, min=min_, max=max_, avg=avg, vwap=vwap, volume=volume, last=last,
                      trades=trades)
        metrics.time.seconds = epoch


def set_time_micros(stamp: Timestamp, micros: int) -> None:
    seconds, micro = divmod(micros, 1_000_000)
    stamp.seconds = seconds
    stamp.nanos = micro * 1000


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

    async def history(self, q: HistoryQuery, deadline: float | None) -> query_pb2.GetHistoryResponse:
        response = query_pb2.GetHistoryResponse(symbol=q.symbol, view=q.view)
        symbol = q.symbol
        if q.view == "ticks":
            rows = await self._fetch(TICKS_SQL, symbol, q.start, q.end, q.limit, deadline=deadline)
            add_ticks(response.ticks, symbol, rows[::-1])
        elif q.view == "metrics1m":
            rows = await self._fetch(METRICS_SQL, symbol, q.start, q.end, q.limit, deadline=deadline)
            add_metrics(response.metrics, symbol, rows[::-1])
        else:
            response.interval = q.interval
            if q.interval == "1m":
                rows = (await self._fetch(CANDLES_1M_SQL, symbol, q.start, q.end, q.limit, deadline=deadline))[::-1]
            elif q.interval in RECENT_BINS_INTERVALS:
                step = INTERVALS[q.interval]
                rows = (await self._fetch(CANDLES_RECENT_BINS_SQL, symbol, step, ceil_to(q.start, step),
                                          ceil_to(q.end, step), q.limit, deadline=deadline))[::-1]
            else:
                step = INTERVALS[q.interval]
                rows = await self._fetch(CANDLES_DERIVED_SQL, symbol, step, ceil_to(q.start, step),
                                         ceil_to(q.end, step), q.limit, deadline=deadline)
            add_candles(response.candles, symbol, rows)
        if not rows and not await self.symbol_exists(symbol, deadline):
            raise SymbolNotFound([symbol])
        return response
