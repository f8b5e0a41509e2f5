"""ListSymbols, GetLatest and GetHistory's ticks / metrics1m views, on rows written directly."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from marketdata.v1 import query_pb2
from tests.query.helpers import (UTC, RefCandle, RefTick, insert_minutes, insert_symbol, insert_ticks,
                                 new_symbol, random_minutes)
from tests.support.processes import health_status


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_list_symbols_with_active_filter(query_stub, db) -> None:
    active, inactive = new_symbol(), new_symbol()
    await insert_symbol(db, active, active=True)
    await insert_symbol(db, inactive, active=False)
    every = {s.symbol: s for s in (await query_stub.ListSymbols(query_pb2.ListSymbolsRequest(), timeout=5)).items}
    assert every[active].active and not every[inactive].active
    assert (every[active].base, every[active].quote) == (active, "USDT")
    names = [s.symbol for s in every.values()]
    assert names == sorted(names)
    only_active = (await query_stub.ListSymbols(query_pb2.ListSymbolsRequest(active=True), timeout=5)).items
    assert active in {s.symbol for s in only_active} and inactive not in {s.symbol for s in only_active}
    assert all(s.active for s in only_active)
    only_inactive = (await query_stub.ListSymbols(query_pb2.ListSymbolsRequest(active=False), timeout=5)).items
    assert inactive in {s.symbol for s in only_inactive} and not any(s.active for s in only_inactive)


def make_ticks(start: datetime, count: int) -> list[RefTick]:
    # Two ticks share each event time, so the trade id orders them.
    return [RefTick(trade_id=f"t{i:04d}", event_time=start + timedelta(milliseconds=500 * (i // 2)),
                    price=Decimal(100) + Decimal(i) / 100, size=Decimal(i % 7 + 1) / 10) for i in range(count)]


async def test_ticks_view(query_stub, db) -> None:
    symbol = new_symbol()
    start = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    ticks = make_ticks(start, 300)
    await insert_symbol(db, symbol)
    await insert_ticks(db, symbol, ticks)

    def check(got, expected) -> None:
        assert [(t.trade_id, t.event_time.ToDatetime(tzinfo=UTC), t.price, t.size) for t in got] == [
            (t.trade_id, t.event_time, float(t.price), float(t.size)) for t in expected]
        assert all(t.symbol == symbol and t.side == 1 and t.source == "test" for t in got)

    response = await query_stub.GetHistory(query_pb2.GetHistoryRequest(symbol=symbol, view="ticks"), timeout=5)
    assert response.view == "ticks" and response.interval == "" and not response.candles
    check(response.ticks, ticks[-100:])  # newest 100, ascending by (event_time, trade_id)
    response = await query_stub.GetHistory(query_pb2.GetHistoryRequest(
        symbol=symbol, view="ticks", limit=7, from_time=ts(ticks[10].event_time), to_time=ts(ticks[40].event_time)),
        timeout=5)
    in_range = [t for t in ticks if ticks[10].event_time <= t.event_time < ticks[40].event_time]
    check(response.ticks, in_range[-7:])
    response = await query_stub.GetHistory(query_pb2.GetHistoryRequest(
        symbol=symbol, view="ticks", limit=5000, from_time=ts(ticks[250].event_time)), timeout=5)
    check(response.ticks, ticks[250:])


async def test_metrics_view(query_stub, db) -> None:
    symbol = new_symbol()
    minutes = random_minutes(datetime(2025, 3, 2, tzinfo=UTC), 150, seed=3)
    await insert_symbol(db, symbol)
    await insert_minutes(db, symbol, minutes)  # metrics: min=low, max=high, avg=(low+high)/2, last=close
    response = await query_stub.GetHistory(query_pb2.GetHistoryRequest(symbol=symbol, view="metrics1m", limit=40),
                                           timeout=5)
    assert response.view == "metrics1m" and not response.candles
    got = response.metrics
    assert [m.time.ToDatetime(tzinfo=UTC) for m in got] == [m.bucket for m in minutes[-40:]]
    for metric, ref in zip(got, minutes[-40:]):
        assert (metric.min, metric.max, metric.last, metric.trades) == (
            float(ref.low), float(ref.high), float(ref.close), ref.trades)
        assert metric.avg == pytest.approx(float((ref.low + ref.high) / 2))
        assert metric.vwap == pytest.approx(float(ref.vwap))
        assert metric.volume == pytest.approx(float(ref.volume))
    middle = minutes[75].bucket
    response = await query_stub.GetHistory(query_pb2.GetHistoryRequest(
        symbol=symbol, view="metrics1m", limit=5000, to_time=ts(middle)), timeout=5)
    assert [m.time.ToDatetime(tzinfo=UTC) for m in response.metrics] == [m.bucket for m in minutes[:75]]


async def test_latest(query_stub, db) -> None:
    symbol = new_symbol()
    await insert_symbol(db, symbol)
    # Known symbol, no ticks yet: every field empty.
    empty = await query_stub.GetLatest(query_pb2.GetLatestRequest(symbol=symbol), timeout=5)
    assert empty.symbol == symbol
    assert not empty.HasField("last_tick") and not empty.HasField("candle") and not empty.HasField("metrics")

    start = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    minutes = [RefCandle(bucket=start + timedelta(minutes=i), open=Decimal(i), high=Decimal(i + 1),
                         low=Decimal(i), close=Decimal(i + 1), volume=Decimal(2), trades=2,
                         turnover=Decimal(2 * i + 1)) for i in range(12)]
    await insert_minutes(db, symbol, minutes)
    last_minute = minutes[-1].bucket
    ticks = [RefTick("a", last_minute + timedelta(seconds=5), Decimal(11), Decimal(1)),
             RefTick("c", last_minute + timedelta(seconds=30), Decimal(12), Decimal(1)),
             RefTick("b", last_minute + timedelta(seconds=30), Decimal("11.5"), Decimal(1)),
             RefTick("z", minutes[3].bucket, Decimal(3), Decimal(1))]
    await insert_ticks(db, symbol, ticks)
    latest = await query_stub.GetLatest(query_pb2.GetLatestRequest(symbol=symbol), timeout=5)
    # The last tick by (event_time, trade_id), its minute's candle (with SMA10 of closes 3..12) and metrics.
    assert (latest.last_tick.trade_id, latest.last_tick.price) == ("c", 12.0)
    assert latest.last_tick.event_time.ToDatetime(tzinfo=UTC) == last_minute + timedelta(seconds=30)
    assert latest.candle.time.ToDatetime(tzinfo=UTC) == last_minute
    assert (latest.candle.open, latest.candle.close, latest.candle.trades) == (11, 12, 2)
    assert latest.candle.sma10 == pytest.approx(sum(range(3, 13)) / 10)
    assert latest.metrics.time.ToDatetime(tzinfo=UTC) == last_minute
    assert (latest.metrics.last, latest.metrics.trades) == (12, 2)


def test_health_and_reflection(query_service) -> None:
    """What `grpcurl -plaintext host:port list` / `describe` rely on."""
    assert health_status(query_service.address, "marketdata.v1.QueryService") == "SERVING"
    assert health_status(query_service.address) == "SERVING"
    with grpc.insecure_channel(query_service.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "marketdata.v1.QueryService" in database.get_services()
        service = database.FindFileContainingSymbol("marketdata.v1.QueryService")
        assert service.name == "marketdata/v1/query.proto"
