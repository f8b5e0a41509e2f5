"""Independent reference computations for the query tests (plain Python, exact decimals) and direct inserts."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import uuid4

import asyncpg

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STEPS = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
         "1h": timedelta(hours=1), "1d": timedelta(days=1)}


def new_symbol() -> str:
    return f"Q{uuid4().hex[:6].upper()}"


@dataclass(frozen=True)
class RefTick:
    trade_id: str
    event_time: datetime
    price: Decimal
    size: Decimal


@dataclass
class RefCandle:
    bucket: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int
    turnover: Decimal
    sma10: float | None = None

    @property
    def vwap(self) -> Decimal:
        return self.turnover / self.volume if self.volume > 0 else self.close


def bin_start(moment: datetime, step: timedelta) -> datetime:
    return moment - (moment - EPOCH) % step


def candles_from_ticks(ticks: Iterable[RefTick], step: timedelta = STEPS["1m"]) -> list[RefCandle]:
    """Candles straight from ticks: open/close by (event_time, trade_id), sums over the interval."""
    groups: dict[datetime, list[RefTick]] = {}
    for tick in ticks:
        groups.setdefault(bin_start(tick.event_time, step), []).append(tick)
    candles = []
    for bucket in sorted(groups):
        group = sorted(groups[bucket], key=lambda t: (t.event_time, t.trade_id))
        candles.append(RefCandle(
            bucket=bucket, open=group[0].price, high=max(t.price for t in group), low=min(t.price for t in group),
            close=group[-1].price, volume=sum((t.size for t in group), Decimal(0)), trades=len(group),
            turnover=sum((t.price * t.size for t in group), Decimal(0))))
    return with_sma10(candles)


def rollup(minutes: Sequence[RefCandle], step: timedelta) -> list[RefCandle]:
    """Candles at a longer interval from 1-minute candles (what the service derives in SQL)."""
    groups: dict[datetime, list[RefCandle]] = {}
    for minute in sorted(minutes, key=lambda c: c.bucket):
        groups.setdefault(bin_start(minute.bucket, step), []).append(minute)
    candles = [RefCandle(bucket=b, open=g[0].open, high=max(c.high for c in g), low=min(c.low for c in g),
                         close=g[-1].close, volume=sum((c.volume for c in g), Decimal(0)),
                         trades=sum(c.trades for c in g), turnover=sum((c.turnover for c in g), Decimal(0)))
               for b, g in sorted(groups.items())]
    return with_sma10(candles)


def with_sma10(candles: list[RefCandle]) -> list[RefCandle]:
    """SMA10 over candles (not clock intervals): the mean close of a candle and the 9 candles before it."""
    for i, candle in enumerate(candles):
        window = candles[i - 9:i + 1] if i >= 9 else []
        candle.sma10 = float(sum((c.close for c in window), Decimal(0)) / 10) if window else None
    return candles


def random_minutes(start: datetime, count: int, seed: int, gap_probability: float = 0.2) -> list[RefCandle]:
    """`count` 1-minute candles from `start`, skipping about gap_probability of the minutes (gaps)."""
    rng = random.Random(seed)
    minutes: list[RefCandle] = []
    moment = start
    price = Decimal("100.00")
    while len(minutes) < count:
        if rng.random() >= gap_probability:
            prices = [price + Decimal(rng.randint(-300, 300)) / 100 for _ in range(4)]
            volume = Decimal(rng.randint(1, 10_000)) / 1000
            trades = rng.randint(1, 50)
            vwap = Decimal(rng.randint(int(min(prices) * 100), int(max(prices) * 100))) / 100
            minutes.append(RefCandle(bucket=moment, open=prices[0], high=max(prices), low=min(prices),
                                     close=prices[3], volume=volume, trades=trades, turnover=vwap * volume))
            price = prices[3] if prices[3] > 10 else Decimal("100.00")
        moment += timedelta(minutes=1)
    return minutes


async def insert_symbol(conn: asyncpg.Connection, symbol: str, active: bool = True) -> None:
    await conn.execute("INSERT INTO symbols (symbol, base, quote, active) VALUES ($1, $2, 'USDT', $3) "
                       "ON CONFLICT (symbol) DO UPDATE SET active = EXCLUDED.active", symbol, symbol, active)


async def insert_minutes(conn: asyncpg.Connection, symbol: str, minutes: Sequence[RefCandle]) -> None:
    """Writes 1-minute candles straight into ohlc_1m (and matching rows into metrics_1m)."""
    await conn.executemany(
        """INSERT INTO ohlc_1m (symbol, bucket, open, high, low, close, volume, trades, turnover,
                                open_time, open_trade_id, close_time, close_trade_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $2, 'o', $2::timestamptz + interval '59 seconds', 'c')""",
        [(symbol, m.bucket, m.open, m.high, m.low, m.close, m.volume, m.trades, m.turnover) for m in minutes])
    await conn.executemany(
        """INSERT INTO metrics_1m (symbol, bucket, min, max, price_sum, trades, volume, turnover,
                                   last, last_time, last_trade_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $2::timestamptz + interval '59 seconds', 'c')""",
        [(symbol, m.bucket, m.low, m.high, (m.low + m.high) / 2 * m.trades, m.trades, m.volume, m.turnover,
          m.close) for m in minutes])
    if minutes:
        # The stored hour and day tiers of these minutes, as the aggregator folds them.
        await conn.execute("SELECT rebuild_tiers($1, $2, $3)", symbol, min(m.bucket for m in minutes),
                           max(m.bucket for m in minutes) + timedelta(minutes=1))


async def insert_ticks(conn: asyncpg.Connection, symbol: str, ticks: Sequence[RefTick]) -> None:
    await conn.executemany(
        "INSERT INTO ticks_history (symbol, trade_id, event_time, price, size, side, source) "
        "VALUES ($1, $2, $3, $4, $5, 1, 'test')",
        [(symbol, t.trade_id, t.event_time, t.price, t.size) for t in ticks])
