"""The rolling-window ticker (GetTicker): statistics of each symbol's trades over [now - window, now].

The window is cut into pieces, each read from the cheapest source that is exact for it:

    [start, first_minute)          ticks_history (the partial minute at the window's start)
    [first_minute, first_hour)     ohlc_1m
    [first_hour, last_hour)        ohlc_1h (the whole hours)
    [last_hour, last_minute)       ohlc_1m
    [last_minute, end]             ticks_history (the current minute)

The candle tiers keep open/close exactly by (event_time, trade_id), sums and extremes, and the aggregator
folds them in the transaction that stores the ticks, so the pieces combine into the same figures a
computation over every tick gives, at once. Per request the database reads at most 118 minute rows, the
window's hours and two minutes of ticks per symbol, whatever the tick rate.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from marketdata.v1 import market_pb2

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW_PATTERN = re.compile(r"^([1-9][0-9]?)([mhd])$")
WINDOW_LIMITS = {"m": 59, "h": 23, "d": 7}
WINDOW_RULE = "must be <n>m (1 to 59), <n>h (1 to 23) or <n>d (1 to 7)"
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


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    first_minute: datetime
    last_minute: datetime
    # The whole hours [first_hour, last_hour); both at last_minute when the window holds none.
    first_hour: datetime
    last_hour: datetime

    @classmethod
    def ending(cls, end: datetime, length: timedelta) -> Window:
        start = end - length
        first_minute, last_minute = _ceil(start, MINUTE), _floor(end, MINUTE)
        first_hour, last_hour = _ceil(first_minute, HOUR), _floor(last_minute, HOUR)
        if last_hour <= first_hour:
            first_hour = last_hour = last_minute
        return cls(start, end, first_minute, last_minute, first_hour, last_hour)


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

# Buckets of a tier over a range: their first open and last close by bucket (a bucket's open and close are
# those of its first and last trade).
_TIER_RANGE = """
    SELECT {part}, sum(o.trades), sum(o.volume), sum(o.turnover), max(o.high), min(o.low),
           (array_agg(o.open ORDER BY o.bucket))[1], min(o.open_time),
           (array_agg(o.close ORDER BY o.bucket DESC))[1], max(o.close_time)
    FROM {tier} o
    WHERE o.symbol = s.symbol AND o.bucket >= {lo} AND o.bucket < {hi}"""

# $1 symbols (text[]; all active symbols when empty), $2 window start, $3 first whole minute, $4 first whole
# hour, $5 end of the whole hours, $6 start of the last (partial) minute, $7 window end (inclusive).
# One row per symbol and non-empty piece (part 1 to 5 in time order), and one row with part 0 per symbol, so
# symbols without trades are listed too.
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
{_TIER_RANGE.format(part=2, tier="ohlc_1m", lo="$3", hi="$4")}
  UNION ALL
{_TIER_RANGE.format(part=3, tier="ohlc_1h", lo="$4", hi="$5")}
  UNION ALL
{_TIER_RANGE.format(part=4, tier="ohlc_1m", lo="$5", hi="$6")}
  UNION ALL
{_EDGE_TICKS.format(part=5, lo="$6", hi_op="<=", hi="$7")}
) p
WHERE p.part = 0 OR p.trades > 0
ORDER BY s.symbol, p.part
"""

def _piece(row: Any) -> Piece:
    return Piece(row["trades"], row["volume"], row["turnover"], row["high"], row["low"], row["open"],
                 row["open_us"], row["close"], row["close_us"])


def set_time_micros(stamp: Any, micros: int) -> None:
    """Sets a Timestamp from microseconds since the epoch."""
    seconds, micro = divmod(micros, 1_000_000)
    stamp.seconds, stamp.nanos = seconds, micro * 1000


def build_tickers(out: Any, window_size: str, window: Window, rows: Sequence[Any]) -> list[str]:
    """Appends one Ticker per symbol of TICKER_SQL's rows, its pieces merged in time order; returns the
    symbols."""
    parts: dict[str, list[Piece]] = {}
    for row in rows:
        pieces = parts.setdefault(row["symbol"], [])
        if row["part"]:
            pieces.append(_piece(row))
    for symbol, pieces in parts.items():
        total = merge(pieces)
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
    return (window.start, window.first_minute, window.first_hour, window.last_hour, window.last_minute,
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
