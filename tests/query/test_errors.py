"""Unknown symbols, invalid arguments (with the BadRequest field), the limit bound and deadlines."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from marketdata.common.errors import field_violations_of
from marketdata.v1 import query_pb2
from tests.query.helpers import UTC, insert_symbol, new_symbol
from tests.support.processes import health_status


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@pytest.fixture(scope="module")
async def known(db) -> str:
    symbol = new_symbol()
    await insert_symbol(db, symbol)
    return symbol


async def test_unknown_symbol_is_not_found(query_stub) -> None:
    unknown = new_symbol()
    for call, request in [
        (query_stub.GetHistory, query_pb2.GetHistoryRequest(symbol=unknown)),
        (query_stub.GetHistory, query_pb2.GetHistoryRequest(symbol=unknown, view="ticks")),
        (query_stub.GetHistory, query_pb2.GetHistoryRequest(symbol=unknown, view="metrics1m")),
        (query_stub.GetHistory, query_pb2.GetHistoryRequest(symbol=unknown, interval="1h")),
        (query_stub.GetLatest, query_pb2.GetLatestRequest(symbol=unknown)),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(request, timeout=5)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert unknown in error.value.details()


async def test_watch_unknown_symbol_is_not_found(query_stub, known) -> None:
    unknown = new_symbol()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in query_stub.WatchTicks(query_pb2.WatchTicksRequest(symbols=[known, unknown]), timeout=5):
            pass
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert unknown in error.value.details() and known not in error.value.details()


@pytest.mark.parametrize(("fields", "field"), [
    ({"view": "candles"}, "view"),
    ({"view": "OHLC1M"}, "view"),
    ({"interval": "7m"}, "interval"),
    ({"interval": "13M"}, "interval"),
    ({"view": "ticks", "interval": "5m"}, "interval"),
    ({"limit": 5001}, "limit"),
    ({"limit": 4_000_000_000}, "limit"),
    # Proto names over gRPC, as every other field (the edge says from / to over HTTP).
    ({"from_time": ts(datetime(2025, 1, 2, tzinfo=UTC)), "to_time": ts(datetime(2025, 1, 1, tzinfo=UTC))},
     "from_time"),
    ({"from_time": ts(datetime(2025, 1, 1, tzinfo=UTC)), "to_time": ts(datetime(2025, 1, 1, tzinfo=UTC))},
     "from_time"),
    ({"from_time": Timestamp(seconds=-10**12)}, "from_time"),
    ({"to_time": Timestamp(seconds=0, nanos=-5)}, "to_time"),
    ({"to_time": Timestamp(seconds=253402300800)}, "to_time"),
    ({"from_time": Timestamp(seconds=1_700_000_000, nanos=1_999_999_999)}, "from_time"),
])
async def test_invalid_history_arguments(query_stub, known, fields, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await query_stub.GetHistory(query_pb2.GetHistoryRequest(symbol=known, **fields), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations_of(error.value)] == [field]


async def test_every_bad_field_is_named(query_stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await query_stub.GetHistory(query_pb2.GetHistoryRequest(
            symbol="bad symbol", view="x", interval="y", limit=99999,
            from_time=ts(datetime(2025, 1, 2, tzinfo=UTC)), to_time=ts(datetime(2025, 1, 1, tzinfo=UTC))), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations_of(error.value)] == ["symbol", "view", "interval", "limit",
                                                                      "from_time"]


async def test_limit_bound_is_inclusive(query_stub, known) -> None:
    response = await query_stub.GetHistory(query_pb2.GetHistoryRequest(symbol=known, limit=5000), timeout=5)
    assert list(response.candles) == []


@pytest.mark.parametrize("symbol", ["", "x", "btcusdt", "A" * 21, "BTC/USDT"])
async def test_invalid_symbol(query_stub, symbol) -> None:
    for call, request in [(query_stub.GetHistory, query_pb2.GetHistoryRequest(symbol=symbol)),
                          (query_stub.GetLatest, query_pb2.GetLatestRequest(symbol=symbol))]:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(request, timeout=5)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [name for name, _ in field_violations_of(error.value)] == ["symbol"]


@pytest.mark.parametrize(("symbols", "fields"), [
    ([], ["symbols"]),
    (["OKSYM", "bad"], ["symbols[1]"]),
    (["a", "OK", "B C"], ["symbols[0]", "symbols[2]"]),
    ([f"S{i:03d}" for i in range(101)], ["symbols"]),
])
async def test_invalid_watch_arguments(query_stub, symbols, fields) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in query_stub.WatchTicks(query_pb2.WatchTicksRequest(symbols=symbols), timeout=5):
            pass
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations_of(error.value)] == fields


async def waiting_queries(db, application_name: str, reading: str) -> list[str]:
    """Queries of the query service blocked right now on a lock of the table `reading`, found by the lock they
    wait for (a prepared statement's Bind waits for its locks while pg_stat_activity still reports "idle" and
    the text of its previous statement). `db` may be inside a transaction, where pg_stat_activity would show
    the sessions as they were at its first read (a connection opened since would be missing): cleared first."""
    await db.execute("SELECT pg_stat_clear_snapshot()")
    return [row["query"] for row in await db.fetch(
        "SELECT a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE NOT l.granted AND l.relation = $2::regclass AND a.application_name = $1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        application_name, reading)]


async def test_deadline_cancels_the_query_in_postgresql(query_stub, query_service, known, database_url) -> None:
    """A query still running at the caller's deadline is DEADLINE_EXCEEDED and is cancelled in PostgreSQL
    too (asyncpg gets the time remaining as its timeout); the service stays healthy."""
    request = query_pb2.GetHistoryRequest(symbol=known, interval="1h", limit=5000)
    locker = await asyncpg.connect(database_url)
    try:
        async with locker.transaction():
            # Every read of the candle tiers (1h reads ohlc_1h) now waits for this lock: the query cannot finish in time.
            await locker.execute("LOCK TABLE ohlc_1m, ohlc_1h IN ACCESS EXCLUSIVE MODE")
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await query_stub.GetHistory(request, timeout=0.001)
                assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # A deadline long enough for the query to reach PostgreSQL on a loaded machine, short enough that it
            # is still waiting for the lock when it passes.
            call = asyncio.ensure_future(query_stub.GetHistory(request, timeout=3))
            # The query reaches PostgreSQL and waits there for the lock...
            deadline = time.monotonic() + 3
            while not await waiting_queries(locker, "marketdata-query", "ohlc_1h"):
                assert time.monotonic() < deadline, "the query never reached PostgreSQL"
                await asyncio.sleep(0.01)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call
            assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # ...and is cancelled there at the deadline, while the lock is still held.
            # (Well before the pool's 30 s command timeout, which would end it anyway.)
            deadline = time.monotonic() + 5
            while waiting := await waiting_queries(locker, "marketdata-query", "ohlc_1h"):
                assert time.monotonic() < deadline, f"the timed-out query is still running in PostgreSQL: {waiting}"
                await asyncio.sleep(0.01)
    finally:
        await locker.close()
    assert health_status(query_service.address, "marketdata.v1.QueryService") == "SERVING"
    assert list((await query_stub.GetHistory(request, timeout=5)).candles) == []


async def test_one_millisecond_deadline(query_stub, query_service, known) -> None:
    """A 1 ms deadline: DEADLINE_EXCEEDED unless the answer was faster still; the server stays healthy."""
    request = query_pb2.GetHistoryRequest(symbol=known, interval="1h", limit=5000,
                                          from_time=ts(datetime(2000, 1, 1, tzinfo=UTC)))
    for _ in range(20):
        try:
            response = await query_stub.GetHistory(request, timeout=0.001)
            assert list(response.candles) == []
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert health_status(query_service.address, "marketdata.v1.QueryService") == "SERVING"
    future = datetime.now(UTC) + timedelta(days=1)
    response = await query_stub.GetHistory(query_pb2.GetHistoryRequest(symbol=known, from_time=ts(future)), timeout=5)
    assert list(response.candles) == []
