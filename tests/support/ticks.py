"""Synthetic tick sets and the independent (plain Python, exact Decimal) computation of their minute rollups."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import grpc

from marketdata.v1 import ingest_pb2, ingest_pb2_grpc, market_pb2

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class TickSpec:
    symbol: str
    trade_id: str
    event_us: int  # µs since the epoch (PostgreSQL keeps microseconds)
    price: float
    size: float

    @property
    def event_time(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.event_us)

    def proto(self) -> market_pb2.Tick:
        tick = market_pb2.Tick(symbol=self.symbol, trade_id=self.trade_id, price=self.price, size=self.size)
        tick.event_time.FromMicroseconds(self.event_us)
        return tick


def make_ticks(symbols: Sequence[str], count: int, minutes: int = 30, seed: int = 7,
               end: datetime | None = None) -> list[TickSpec]:
    """count distinct ticks spread over the `minutes` before `end` (default: now), with repeated timestamps."""
    rng = random.Random(seed)
    end_us = int(((end or datetime.now(timezone.utc)) - EPOCH).total_seconds() * 1_000_000) - 1_000_000
    start_us = end_us - minutes * 60_000_000
    ticks = []
    for n in range(count):
        symbol = symbols[n % len(symbols)]
        # Some ticks share an exact timestamp, so ties are broken by trade_id.
        event_us = rng.randrange(start_us, end_us) if n % 10 else start_us + (n % 7) * 60_000_000 % (end_us - start_us)
        ticks.append(TickSpec(symbol, f"tr-{n}", event_us, round(rng.uniform(90, 110), 2),
                              round(rng.uniform(0.001, 5), 4)))
    return ticks


def with_duplicates(ticks: Sequence[TickSpec], fraction: float, seed: int = 11) -> list[TickSpec]:
    """The ticks plus copies of a fraction of them (same trade_id and content), shuffled."""
    rng = random.Random(seed)
    out = list(ticks) + rng.sample(list(ticks), int(len(ticks) * fraction))
    rng.shuffle(out)
    return out


def renamed(ticks: Sequence[TickSpec], prefix: str) -> list[TickSpec]:
    """The same ticks under new trade ids: distinct ticks to send again."""
    return [TickSpec(t.symbol, f"{prefix}-{t.trade_id}", t.event_us, t.price, t.size) for t in ticks]


def batches(items: Sequence[TickSpec], size: int) -> Iterable[list[TickSpec]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def dec(value: float) -> Decimal:
    # PostgreSQL's float8 → numeric cast keeps 15 significant digits; our prices and sizes have fewer.
    return Decimal(repr(value))


def expected_minutes(ticks: Iterable[TickSpec]) -> dict[tuple[str, datetime], dict[str, object]]:
    """Minute candles and metrics of the distinct ticks, computed independently of the SQL."""
    return expected_candles(ticks, timedelta(minutes=1))


def expected_candles(ticks: Iterable[TickSpec], step: timedelta) -> dict[tuple[str, datetime], dict[str, object]]:
    """Candles of `step` (a minute, an hour, a day: UTC buckets from the epoch) of the distinct ticks."""
    distinct = {(t.symbol, t.trade_id): t for t in ticks}
    groups: dict[tuple[str, datetime], list[TickSpec]] = defaultdict(list)
    for tick in distinct.values():
        bucket = EPOCH + (tick.event_time - EPOCH) // step * step
        groups[(tick.symbol, bucket)].append(tick)
    result = {}
    for key, group in groups.items():
        ordered = sorted(group, key=lambda t: (t.event_us, t.trade_id.encode()))
        volume = sum((dec(t.size) for t in group), Decimal(0))
        turnover = sum((dec(t.price) * dec(t.size) for t in group), Decimal(0))
        result[key] = {
            "open": dec(ordered[0].price), "close": dec(ordered[-1].price),
            "high": max(dec(t.price) for t in group), "low": min(dec(t.price) for t in group),
            "volume": volume, "trades": len(group), "turnover": turnover,
            "price_sum": sum((dec(t.price) for t in group), Decimal(0)),
        }
    return result


async def stored_minutes(database_url: str, symbols: Sequence[str]) -> tuple[dict, dict]:
    """(ohlc_1m rows, metrics_1m rows) of the symbols, keyed by (symbol, bucket)."""
    conn = await asyncpg.connect(database_url)
    try:
        ohlc = {(r["symbol"], r["bucket"]): dict(r) for r in await conn.fetch(
            "SELECT * FROM ohlc_1m WHERE symbol = ANY($1)", list(symbols))}
        metrics = {(r["symbol"], r["bucket"]): dict(r) for r in await conn.fetch(
            "SELECT * FROM metrics_1m WHERE symbol = ANY($1)", list(symbols))}
        return ohlc, metrics
    finally:
        await conn.close()


def assert_rollups_match(expected: dict, ohlc: dict, metrics: dict) -> None:
    assert set(ohlc) == set(expected), "ohlc_1m has other minutes than the ticks"
    assert set(metrics) == set(expected), "metrics_1m has other minutes than the ticks"
    for key, want in expected.items():
        candle, metric = ohlc[key], metrics[key]
        for name in ("open", "high", "low", "close", "volume", "trades", "turnover"):
            assert candle[name] == want[name], f"ohlc_1m {key} {name}: {candle[name]} != {want[name]}"
        assert abs(float(candle["vwap"]) - float(want["turnover"] / want["volume"])) < 1e-9
        assert metric["min"] == want["low"] and metric["max"] == want["high"], key
        assert metric["last"] == want["close"] and metric["trades"] == want["trades"], key
        assert metric["volume"] == want["volume"] and metric["price_sum"] == want["price_sum"], key
        assert abs(float(metric["vwap"]) - float(want["turnover"] / want["volume"])) < 1e-9
        assert abs(float(metric["avg"]) - float(want["price_sum"] / want["trades"])) < 1e-9


def publish(address: str, api_key: str, items: Sequence[TickSpec], batch_size: int = 1000) -> tuple[int, int]:
    """Publishes through IngestService.PublishTicks, retrying UNAVAILABLE; returns (accepted, duplicates)."""
    accepted = duplicates = 0
    with grpc.insecure_channel(address) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for chunk in batches(items, batch_size):
            request = ingest_pb2.PublishTicksRequest(items=[t.proto() for t in chunk])
            response = stub.PublishTicks(request, metadata=(("x-api-key", api_key),), timeout=30)
            accepted += response.accepted
            duplicates += response.duplicates
    return accepted, duplicates
