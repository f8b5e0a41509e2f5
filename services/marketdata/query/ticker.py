"""The rolling-window ticker (GetTicker): statistics of each symbol's trades over [now - window, now].

The window is cut into pieces, each read from the cheapest source that is exact for it:

    [start, first_minute)          ticks_history (the partial minute at the window's start)
    [first_minute, first_hour)     ohlc_1m
    [first_hour, settled_end)      whole hours that settled (ended more than SETTLE ago): HourCache
    [settled_end, last_minute)     ohlc_1m (the last 10 to 70 minutes)
    [last_minute, end]             ticks_history (the current minute)

ohlc_1m keeps open/close exactly by (event_time, trade_id), sums and extremes, so the minutes and hours
combine into the same figures a computation over every tick gives. Per request the database reads at most
~130 minute rows and two minutes of ticks per symbol, whatever the window and the tick rate.

The trade-off: settled hours come from an in-process cache that a background task re-reads every
HOUR_CACHE_REFRESH_SECONDS. A trade arriving more than 10 minutes late for an hour already cached (or a
Rebuild of an old range) reaches the ticker within that period; everything else (the last 10 to 70 minutes,
the window's edges) is read at request time.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

from marketdata.v1 import market_pb2

log = logging.getLogger(__name__)

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW_PATTERN = re.compile(r"^([1-9][0-9]?)([mhd])$")
WINDOW_LIMITS = {"m": 59, "h": 23, "d": 7}
WINDOW_RULE = "must be <n>m (1 to 59), <n>h (1 to 23) or <n>d (1 to 7)"
DEFAULT_WINDOW = "1d"
MAX_TICKER_SYMBOLS = 1000
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
# An hour is served from the cache once it ended this long ago (so the minutes read per request stay under
# 70 + 60); trades for it that arrive later still reach the ticker, within HOUR_CACHE_REFRESH_SECONDS.
SETTLE = timedelta(minutes=10)
HOUR_CACHE_REFRESH_SECONDS = 30.0
# Cached symbols nobody asked for in this long are forgotten.
HOUR_CACHE_IDLE_SECONDS = 300.0


def parse_window(text: str) -> timedelta | None:
    match = WINDOW_PATTERN.match(text or DEFAULT_WINDOW)
    if not match or int(match.group(1)) > WINDOW_LIMITS[match.group(2)]:
        return None
    n, unit = int(match.group(1)), match.group(2)
    return {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}[unit]


def _ceil(moment: datetime, step: timedelta) -> datetime:
    floor = moment - (moment - EPOCH) % step
    return floor if floor == moment else floor + step


def _floor(moment: datetime, step: timedelta) -> datetime:
    return moment - (moment - EPOCH) % step


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    first_minute: datetime
    last_minute: datetime
    # The cached hours [cached_from, cached_to); empty (equal) when the window holds no settled hour.
    cached_from: datetime
    cached_to: datetime

    @classmethod
    def ending(cls, end: datetime, length: timedelta) -> Window:
        start = end - length
        first_minute, last_minute = _ceil(start, MINUTE), _floor(end, MINUTE)
        cached_from, cached_to = _ceil(first_minute, HOUR), _floor(end - SETTLE, HOUR)
        if cached_to <= cached_from:
            cached_from = cached_to = last_minute
        return cls(start, end, first_minute, last_minute, cached_from, cached_to)

    def hours(self) -> list[int]:
        """The cached hours, as epoch microseconds."""
        return list(range(_micros(self.cached_from), _micros(self.cached_to), 3600 * 1_000_000))


@dataclass(frozen=True)
class Piece:
    """Aggregates of one symbol over part of the window (prices and volumes as doubles, times in µs)."""

    trades: int
    volume: float
    turnover: float
    high: float
    low: float
    open: float
    open_us: int
    close: float
    close_us: int


def merge(pieces: Iterable[Piece]) -> Piece | None:
    """The aggregates of consecutive pieces, in time order."""
    found = [p for p in pieces if p.trades]
    if not found:
        return None
    return Piece(trades=sum(p.trades for p in found), volume=sum(p.volume for p in found),
                 turnover=sum(p.turnover for p in found), high=max(p.high for p in found),
                 low=min(p.low for p in found), open=found[0].open, open_us=found[0].open_us,
                 close=found[-1].close, close_us=found[-1].close_us)


_PIECE_COLUMNS = """trades::int8, volume::float8, turnover::float8, high::float8, low::float8, open::float8,
       (extract(epoch FROM open_time) * 1000000)::int8 AS open_us, close::float8,
       (extract(epoch FROM close_time) * 1000000)::int8 AS close_us"""

_EDGE_TICKS = """
    SELECT {part} AS part, count(*) AS trades, sum(t.size) AS volume, sum(t.price * t.size) AS turnover,
           max(t.price) AS high, min(t.price) AS low,
           (array_agg(t.price ORDER BY t.event_time, t.trade_id))[1] AS open, min(t.event_time) AS open_time,
           (array_agg(t.price ORDER BY t.event_time DESC, t.trade_id DESC))[1] AS close,
           max(t.event_time) AS close_time
    FROM ticks_history t
    WHERE t.symbol = s.symbol AND t.event_time >= {lo} AND t.event_time {hi_op} {hi}"""

_MINUTE_RANGE = """
    SELECT {part}, sum(o.trades), sum(o.volume), sum(o.turnover), max(o.high), min(o.low),
           (SELECT f.open FROM ohlc_1m f WHERE f.symbol = s.symbol AND f.bucket >= {lo} AND f.bucket < {hi}
            ORDER BY f.bucket LIMIT 1),
           min(o.open_time),
           (SELECT l.close FROM ohlc_1m l WHERE l.symbol = s.symbol AND l.bucket >= {lo} AND l.bucket < {hi}
            ORDER BY l.bucket DESC LIMIT 1),
           max(o.close_time)
    FROM ohlc_1m o
    WHERE o.symbol = s.symbol AND o.bucket >= {lo} AND o.bucket < {hi}"""

# $1 symbols (text[]; all active symbols when empty), $2 window start, $3 first whole minute, $4 start of the
# cached hours, $5 their end, $6 start of the last (partial) minute, $7 window end (inclusive).
# One row per symbol and non-empty piece (part 1, 2, 4, 5 in time order; 3 is the cache's), and one row with
# part 0 per symbol, so symbols without trades are listed too.
TICKER_SQL = f"""
WITH chosen AS (
    SELECT symbol FROM symbols
    WHERE CASE WHEN cardinality($1::text[]) = 0 THEN active ELSE symbol = ANY($1::text[]) END
)
SELECT s.symbol, p.part, {_PIECE_COLUMNS}
FROM chosen s
CROSS JOIN LATERAL (
    SELECT 0 AS part, 0 AS trades, NULL::numeric AS volume, NULL::numeric AS turnover, NULL::numeric AS high,
           NULL::numeric AS low, NULL::numeric AS open, NULL::timestamptz AS open_time, NULL::numeric AS close,
           NULL::timestamptz AS close_time
  UNION ALL
{_EDGE_TICKS.format(part=1, lo="$2", hi_op="<", hi="$3")}
  UNION ALL
{_MINUTE_RANGE.format(part=2, lo="$3", hi="$4")}
  UNION ALL
{_MINUTE_RANGE.format(part=4, lo="$5", hi="$6")}
  UNION ALL
{_EDGE_TICKS.format(part=5, lo="$6", hi_op="<=", hi="$7")}
) p
WHERE p.part = 0 OR p.trades > 0
ORDER BY s.symbol, p.part
"""

# The settled hours of the symbols: $1 symbols, $2 first hour, $3 end of the last.
HOURS_SQL = f"""
SELECT symbol, (extract(epoch FROM hour) * 1000000)::int8 AS hour_us, {_PIECE_COLUMNS}
FROM (
    SELECT symbol, date_trunc('hour', bucket) AS hour, sum(trades) AS trades, sum(volume) AS volume,
           sum(turnover) AS turnover, max(high) AS high, min(low) AS low,
           (array_agg(open ORDER BY bucket))[1] AS open, min(open_time) AS open_time,
           (array_agg(close ORDER BY bucket DESC))[1] AS close, max(close_time) AS close_time
    FROM ohlc_1m
    WHERE symbol = ANY($1::text[]) AND bucket >= $2 AND bucket < $3
    GROUP BY 1, 2
) h
"""


def _piece(row: Any) -> Piece:
    return Piece(row["trades"], row["volume"], row["turnover"], row["high"], row["low"], row["open"],
                 row["open_us"], row["close"], row["close_us"])


EMPTY = Piece(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, 0)


class HourCache:
    """Aggregates of settled hours per symbol, read from ohlc_1m on first use and re-read in the background."""

    def __init__(self) -> None:
        self.hours: dict[str, dict[int, Piece]] = {}
        self.used: dict[str, float] = {}
        # Merged spans, (symbol, first hour, last hour) -> Piece: a window slides by minutes, its hours by hours.
        self.spans: dict[tuple[str, int, int], Piece | None] = {}

    def missing(self, symbols: Sequence[str], hours: Sequence[int]) -> list[str]:
        return [s for s in symbols if not (cached := self.hours.get(s)) or any(h not in cached for h in hours)]

    async def load(self, conn: asyncpg.Connection, symbols: Sequence[str], first_us: int, end_us: int,
                   timeout: float | None) -> None:
        """Reads the hours [first_us, end_us) of the symbols (every hour gets an entry, empty ones too)."""
        rows = await conn.fetch(HOURS_SQL, list(symbols), EPOCH + timedelta(microseconds=first_us),
                                EPOCH + timedelta(microseconds=end_us), timeout=timeout)
        found: dict[str, dict[int, Piece]] = {s: {} for s in symbols}
        for row in rows:
            found[row["symbol"]][row["hour_us"]] = _piece(row)
        self.spans.clear()
        for symbol, hours in found.items():
            entry = self.hours.setdefault(symbol, {})
            for hour in range(first_us, end_us, 3600 * 1_000_000):
                entry[hour] = hours.get(hour, EMPTY)

    def take(self, symbol: str, hours: Sequence[int]) -> Piece | None:
        self.used[symbol] = time.monotonic()
        key = (symbol, hours[0], hours[-1])
        if key not in self.spans:
            cached = self.hours[symbol]
            self.spans[key] = merge(cached[h] for h in hours)
        return self.spans[key]

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Re-reads every cached hour of the symbols asked for recently; forgets the others."""
        now = time.monotonic()
        for symbol in [s for s, used in self.used.items() if now - used > HOUR_CACHE_IDLE_SECONDS]:
            self.used.pop(symbol, None)
            self.hours.pop(symbol, None)
        self.spans.clear()
        by_span: dict[tuple[int, int], list[str]] = {}
        for symbol, hours in self.hours.items():
            if hours:
                by_span.setdefault((min(hours), max(hours) + 3600 * 1_000_000), []).append(symbol)
        for (first, end), symbols in by_span.items():
            async with pool.acquire() as conn:
                await self.load(conn, symbols, first, end, None)

    async def refresh_forever(self, pool: asyncpg.Pool) -> None:
        while True:
            await asyncio.sleep(HOUR_CACHE_REFRESH_SECONDS)
            try:
                await self.refresh(pool)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("ticker hour cache refresh failed", extra={"error": str(exc)})


def set_time_micros(stamp: Any, micros: int) -> None:
    """Sets a Timestamp from microseconds since the epoch."""
    seconds, micro = divmod(micros, 1_000_000)
    stamp.seconds, stamp.nanos = seconds, micro * 1000


def build_tickers(out: Any, window_size: str, window: Window, rows: Sequence[Any], cache: HourCache) -> list[str]:
    """Appends one Ticker per symbol of TICKER_SQL's rows, its pieces merged in time order with the cached
    hours (which lie between parts 2 and 4); returns the symbols."""
    hours = window.hours()
    parts: dict[str, dict[int, Piece]] = {}
    for row in rows:
        entry = parts.setdefault(row["symbol"], {})
        if row["part"]:
            entry[row["part"]] = _piece(row)
    for symbol, found in parts.items():
        cached = cache.take(symbol, hours) if hours else None
        total = merge(p for p in (found.get(1), found.get(2), cached, found.get(4), found.get(5)) if p is not None)
        ticker: market_pb2.Ticker = out.add(symbol=symbol, window_size=window_size)
        set_time_micros(ticker.open_time, _micros(window.start))
        set_time_micros(ticker.close_time, _micros(window.end))
        if total is None:
            continue
        ticker.trades, ticker.volume, ticker.quote_volume = total.trades, total.volume, total.turnover
        ticker.last, ticker.open, ticker.high, ticker.low = total.close, total.open, total.high, total.low
        ticker.change = total.close - total.open
        ticker.change_percent = ticker.change / total.open * 100
        if total.volume > 0:
            ticker.vwap = total.turnover / total.volume
        set_time_micros(ticker.first_trade_time, total.open_us)
        set_time_micros(ticker.last_trade_time, total.close_us)
    return list(parts)


def window_arguments(window: Window) -> tuple[datetime, ...]:
    return (window.start, window.first_minute, window.cached_from, window.cached_to, window.last_minute,
            window.end)


def now_utc() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)


# A watchlist stream sends at most one message per this many seconds; tickers computed within it are shared
# by every stream (a thousand dashboards watching the same symbols cost one computation a second).
PUSH_SECONDS = 1.0


class TickerFeed:
    """The tickers of WatchTicker streams, computed once per symbol, window and PUSH_SECONDS."""

    def __init__(self, compute: Any) -> None:
        # compute(symbols, window_size, length) -> GetTickerResponse (History.ticker without a deadline).
        self.compute = compute
        self.recent: dict[tuple[str, str], tuple[float, market_pb2.Ticker]] = {}

    async def tickers(self, symbols: Sequence[str], window_size: str, length: timedelta) -> list[market_pb2.Ticker]:
        now = time.monotonic()
        for key in [k for k, (at, _) in self.recent.items() if now - at > 10 * PUSH_SECONDS]:
            del self.recent[key]
        stale = [s for s in symbols
                 if (hit := self.recent.get((s, window_size))) is None or now - hit[0] >= PUSH_SECONDS]
        if stale:
            response = await self.compute(stale, window_size, length)
            for ticker in response.items:
                self.recent[(ticker.symbol, window_size)] = (now, ticker)
        return [self.recent[(s, window_size)][1] for s in symbols if (s, window_size) in self.recent]
