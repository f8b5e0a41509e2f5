"""Through the real pipeline: ticks published to ingest, folded by the aggregator, read by the query service."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import grpc
import pytest

from marketdata.v1 import ingest_pb2, ingest_pb2_grpc, market_pb2, query_pb2, query_pb2_grpc
from tests.query.helpers import STEPS, UTC, RefTick, candles_from_ticks, new_symbol
from tests.query.test_candles import assert_candles


async def publish(stack, ticks: Sequence[RefTick], symbol: str) -> None:
    async with grpc.aio.insecure_channel(stack.ingest.address) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for i in range(0, len(ticks), 250):
            items = []
            for t in ticks[i:i + 250]:
                tick = market_pb2.Tick(symbol=symbol, price=float(t.price), size=float(t.size), trade_id=t.trade_id,
                                       side=market_pb2.SIDE_BUY, source="query-test")
                tick.event_time.FromDatetime(t.event_time)
                items.append(tick)
            response = await stub.PublishTicks(ingest_pb2.PublishTicksRequest(items=items),
                                               metadata=stack.metadata, timeout=10)
            assert response.accepted == len(items)


async def wait_committed(stub: query_pb2_grpc.QueryServiceStub, symbol: str, count: int, timeout: float = 30) -> None:
    """Polls until the aggregator has committed `count` trades of the symbol."""
    deadline = time.monotonic() + timeout
    while True:
        response = await stub.GetHistory(query_pb2.GetHistoryRequest(symbol=symbol, interval="1d", limit=5000),
                                         timeout=5)
        trades = sum(c.trades for c in response.candles)
        if trades == count:
            return
        assert trades < count and time.monotonic() < deadline, f"{trades} of {count} trades committed"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def stack_stub(stack):
    async with grpc.aio.insecure_channel(stack.query.address) as channel:
        yield query_pb2_grpc.QueryServiceStub(channel)


async def test_candles_from_ingested_ticks(stack, stack_stub) -> None:
    symbol = new_symbol()
    await asyncio.to_thread(stack.seed_symbols, symbol)
    rng = random.Random(42)
    now = datetime.now(UTC)
    ticks: list[RefTick] = []
    moment = (now - timedelta(hours=14)).replace(minute=37, second=11, microsecond=0)
    while len(ticks) < 900 and moment < now - timedelta(minutes=10):
        # Bursts of trades, and quiet stretches of several minutes without any (no candle, not counted by SMA10).
        moment += timedelta(milliseconds=rng.choice([rng.randint(1, 20_000)] * 9 + [rng.randint(60_000, 600_000)]))
        ticks.append(RefTick(trade_id=f"{symbol}-{len(ticks)}", event_time=moment,
                             price=Decimal(rng.randint(9_000, 11_000)) / 100, size=Decimal(rng.randint(1, 5_000)) / 1000))
    shuffled = ticks[:]
    rng.shuffle(shuffled)  # arrival order must not matter
    await publish(stack, shuffled, symbol)
    await wait_committed(stack_stub, symbol, len(ticks))

    for interval in ("1m", "5m", "1h"):
        expected = candles_from_ticks(ticks, STEPS[interval])
        assert len(expected) > 10  # some candles with an SMA10
        response = await stack_stub.GetHistory(
            query_pb2.GetHistoryRequest(symbol=symbol, interval=interval, limit=5000), timeout=5)
        assert_candles(symbol, response.candles, expected)
        page = await stack_stub.GetHistory(
            query_pb2.GetHistoryRequest(symbol=symbol, interval=interval, limit=12), timeout=5)
        assert_candles(symbol, page.candles, expected[-12:])

    latest = await stack_stub.GetLatest(query_pb2.GetLatestRequest(symbol=symbol), timeout=5)
    last = max(ticks, key=lambda t: (t.event_time, t.trade_id))
    assert latest.last_tick.trade_id == last.trade_id and latest.last_tick.price == float(last.price)
    expected_1m = candles_from_ticks(ticks)
    assert_candles(symbol, [latest.candle], expected_1m[-1:])
    assert latest.metrics.trades == expected_1m[-1].trades and latest.metrics.last == float(last.price)

    response = await stack_stub.GetHistory(query_pb2.GetHistoryRequest(symbol=symbol, view="ticks", limit=5000),
                                           timeout=5)
    ordered = sorted(ticks, key=lambda t: (t.event_time, t.trade_id))
    assert [t.trade_id for t in response.ticks] == [t.trade_id for t in ordered]


async def test_watch_receives_an_ingested_tick_within_a_second(stack, query_stub, query_service) -> None:
    symbol = new_symbol()
    await asyncio.to_thread(stack.seed_symbols, symbol)
    call = query_stub.WatchTicks(query_pb2.WatchTicksRequest(symbols=[symbol]))
    await call.initial_metadata()
    assert query_service.metric("query_watch_subscriptions") >= 1
    minute = datetime.now(UTC).replace(second=0, microsecond=0)  # all three in one minute: one candle
    for n in range(3):
        tick = RefTick(trade_id=f"live-{n}", event_time=minute + timedelta(milliseconds=n), price=Decimal("123.45") + n,
                       size=Decimal("0.5"))
        started = time.monotonic()
        await publish(stack, [tick], symbol)
        response = await asyncio.wait_for(call.read(), 5)
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"update took {elapsed:.3f}s"
        update = response.update
        assert update.symbol == symbol and update.last_tick.trade_id == f"live-{n}"
        assert update.last_tick.price == pytest.approx(123.45 + n)
        assert update.candle.trades == n + 1 and update.candle.close == pytest.approx(123.45 + n)
    call.cancel()
    assert await call.code() == grpc.StatusCode.CANCELLED
