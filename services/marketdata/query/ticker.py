"""The rolling-window ticker (GetTicker): statistics of each symbol's trades over [now - window, now].

The window is cut at whole minutes, quarter hours and hours, and each piece is read from the coarsest
source that is exact for it:

    [start, first minute)                ticks_history (the partial minute at the window's start)
    [first minute, first quarter hour)   ohlc_1m
    [first quarter hour, first hour)     ohlc_15m
    [first hour, last hour)              ohlc_1h (the whole hours)
    [last hour, last quarter hour)       ohlc_15m
    [last quarter hour, last minute)     ohlc_1m
    [last minute, end]                   ticks_history (the current minute)

The candle tiers keep open/close exactly by (event_time, trade_id), sums and extremes, and the aggregator
folds them in the transaction that stores the ticks, so the pieces combine into the same figures a
computation over every tick gives, at once. Per symbol the database reads at most 28 minute rows, 6 quarter
hours, the window's hours and two minutes of ticks, whatever the tick rate.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from marketdata.v1 import market_pb2

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW_PATTERN = re.compile(r"^([1-9][0-9]?)([mhd])$")
WINDOW_LIMITS = {"m": 59, "h": 23, "d": 7}
DEFAULT_WINDOW = "1d"
MAX_TICKER_SYMBOLS = 1000
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


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


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


# The pieces of a window in time order: the edges of each come from Window.cuts.
PIECE_SOURCES = ("ticks_history", "ohlc_1m", "ohlc_15m", "ohlc_1h", "ohlc_15m", "ohlc_1m", "ticks_history")
TIER_STEPS = (MINUTE, 15 * MINUTE, HOUR)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    # The edges of the pieces of PIECE_SOURCES: start, the first whole minute, quarter hour and hour, then the
    # last whole hour, quarter hour and minute (their starts), end.
    cuts: tuple[datetime, ...]

    @classmethod
    def ending(cls, end: datetime, length: timedelta) -> Window:
        start = end - length
        left, right = [start], [end]
        for step in TIER_STEPS:
            ceil, floor = _ceil(left[-1], step), _floor(right[-1], step)
            if ceil > floor:  # no whole step inside: this tier's pieces are empty, the finer ones meet
                ceil = floor = left[-1]
            left.append(ceil)
            right.append(floor)
        return cls(start, end, (*left, *reversed(right)))


_EDGE_TICKS = """
    SELECT {part} AS part, count(*) AS trades, sum(t.size) AS volume, sum(t.price * t.size) AS turnover,
           max(t.price) AS high, min(t.price) AS low,
           (array_agg(t.price ORDER BY t.event_time, t.trade_id))[1] AS open, min(t.event_time) AS open_time,
           (array_agg(t.price ORDER BY t.event_time DESC, t.trade_id DESC))[1] AS close,
           max(t.event_time) AS close_time
    FROM ticks_history t
    WHERE t.symbol = s.symbol AND t.event_time >= {lo} AND t.event_time {hi_op} {hi}"""

# Buckets of a tier over a range: their first open and last close by bucket (a bucket's open and close are
# those of its first and last trade).
_TIER_RANGE = """
    SELECT {part}, sum(o.trades), sum(o.volume), sum(o.turnover), max(o.high), min(o.low),
           (array_agg(o.open ORDER BY o.bucket))[1], min(o.open_time),
           (array_agg(o.close ORDER BY o.bucket DESC))[1], max(o.close_time)
    FROM {tier} o
    WHERE o.symbol = s.symbol AND o.bucket >= {lo} AND o.bucket < {hi}"""



def _piece_sql(part: int, source: str) -> str:
    lo, hi = f"${part + 1}", f"${part + 2}"
    if source == "ticks_history":  # the last piece ends at the window's end, inclusive
        return _EDGE_TICKS.format(part=part, lo=lo, hi_op="<=" if part == len(PIECE_SOURCES) else "<", hi=hi)
    return _TIER_RANGE.format(part=part, tier=source, lo=lo, hi=hi)


# $1 symbols (text[]; all active symbols when empty), $2..$9 the window's cuts.
# One row per symbol: its pieces with trades merged in time order (part order), sums exact in numeric; a
# symbol without trades in the window has trades 0 and NULLs.
TICKER_SQL = f"""
WITH chosen AS (
    SELECT symbol FROM symbols
    WHERE CASE WHEN cardinality($1::text[]) = 0 THEN active ELSE symbol = ANY($1::text[]) END
)
SELECT s.symbol, coalesce(sum(p.trades), 0)::int8 AS trades, coalesce(sum(p.volume), 0)::float8 AS volume,
       coalesce(sum(p.turnover), 0)::float8 AS turnover, max(p.high)::float8 AS high, min(p.low)::float8 AS low,
       (array_agg(p.open ORDER BY p.part))[1]::float8 AS open,
       (extract(epoch FROM min(p.open_time)) * 1000000)::int8 AS open_us,
       (array_agg(p.close ORDER BY p.part DESC))[1]::float8 AS close,
       (extract(epoch FROM max(p.close_time)) * 1000000)::int8 AS close_us
FROM chosen s
LEFT JOIN LATERAL (
{"  UNION ALL".join(_piece_sql(part, source) + chr(10) for part, source in enumerate(PIECE_SOURCES, 1))}) p ON p.trades > 0
GROUP BY s.symbol
ORDER BY s.symbol
"""


def set_time_micros(stamp: Any, micros: int) -> None:
    """Sets a Timestamp from microseconds since the epoch."""
    seconds, micro = divmod(micros, 1_000_000)
    stamp.seconds, stamp.nanos = seconds, micro * 1000


def build_tickers(out: Any, window_size: str, window: Window, rows: Sequence[Any]) -> None:
    """Appends one Ticker per row of TICKER_SQL."""
    start_us, end_us = to_micros(window.start), to_micros(window.end)
    for symbol, trades, volume, turnover, high, low, open_, open_us, close, close_us in rows:
        ticker: market_pb2.Ticker = out.add(symbol=symbol, window_size=window_size)
        set_time_micros(ticker.open_time, start_us)
        set_time_micros(ticker.close_time, end_us)
        if not trades:
            continue
        ticker.trades, ticker.volume, ticker.quote_volume = trades, volume, turnover
        ticker.last, ticker.open, ticker.high, ticker.low = close, open_, high, low
        ticker.change = close - open_
        ticker.change_percent = ticker.change / open_ * 100
        if volume > 0:
            ticker.vwap = turnover / volume
        set_time_micros(ticker.first_trade_time, open_us)
        set_time_micros(ticker.last_trade_time, close_us)


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
