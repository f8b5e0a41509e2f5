"""Outages. PostgreSQL: UNAVAILABLE and health NOT_SERVING while it is down, SERVING and answers once it is back.
NATS: the live streams learn that updates were lost while it was away.

Each uses a server of its own (the run's shared ones are never stopped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import grpc
import nats
import pytest

from marketdata.common.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from marketdata.v1 import query_pb2, query_pb2_grpc
from tests.query.helpers import UTC, insert_minutes, insert_symbol, new_symbol, random_minutes
from tests.query.test_intervals import Trade, fold
from tests.query.test_watch import live_subject, update
from tests.support.infra import create_database, embedded_postgres
from tests.support.processes import health_status, wait_for

SERVICE = "marketdata.v1.QueryService"


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    with embedded_postgres() as server:
        yield server


async def test_postgres_down_and_back(own_postgres: EmbeddedPostgres, start_service) -> None:
    database_url = await create_database(own_postgres.url)
    symbol = new_symbol()
    minutes = random_minutes(datetime(2025, 5, 1, tzinfo=UTC), 30, seed=5)
    conn = await asyncpg.connect(database_url)
    try:
        await insert_symbol(conn, symbol)
        await insert_minutes(conn, symbol, minutes)
    finally:
        await conn.close()

    service = await asyncio.to_thread(start_service, "query", DATABASE_URL=database_url)
    request = query_pb2.GetHistoryRequest(symbol=symbol, limit=5000)
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        assert len((await stub.GetHistory(request, timeout=5)).candles) == 30

        await asyncio.to_thread(own_postgres.stop)
        for call in (lambda: stub.GetHistory(request, timeout=5),
                     lambda: stub.GetLatest(query_pb2.GetLatestRequest(symbol=symbol), timeout=5),
                     lambda: stub.ListSymbols(query_pb2.ListSymbolsRequest(), timeout=5)):
            for _ in range(2):  # a broken pooled connection, then a refused new one
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await call()
                assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for _ in stub.WatchTicks(query_pb2.WatchTicksRequest(symbols=[symbol]), timeout=5):
                pass
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.to_thread(wait_for, lambda: health_status(service.address, SERVICE) == "NOT_SERVING", 10,
                                message="NOT_SERVING while PostgreSQL is down")
        assert health_status(service.address) == "NOT_SERVING"

        await asyncio.to_thread(own_postgres.start)
        await asyncio.to_thread(wait_for, lambda: health_status(service.address, SERVICE) == "SERVING", 15,
                                message="SERVING once PostgreSQL is back")
        response = await stub.GetHistory(request, timeout=5)
        assert [c.time.ToDatetime(tzinfo=UTC) for c in response.candles] == [m.bucket for m in minutes]


async def test_nats_down_and_back_tells_the_live_streams(start_service, tmp_path: Path, db: asyncpg.Connection,
                                                        service_env: dict[str, str]) -> None:
    """What is published while NATS is away is lost. Once the query service has reconnected, and before any new
    update, a WatchTicks stream ends with UNAVAILABLE (reload, then watch again) and WatchTicker sends every
    symbol of its watchlist again, not only those it hears about from then on."""
    quiet, busy = new_symbol(), new_symbol()
    for symbol in (quiet, busy):
        await insert_symbol(db, symbol)
        await fold(db, symbol, [Trade(f"{symbol}-0", datetime.now(UTC) - timedelta(minutes=5), Decimal(10),
                                      Decimal(2), 1)])
    own_nats = EmbeddedNats(tmp_path / "nats", port=free_port())
    own_nats.start()
    try:
        service = await asyncio.to_thread(start_service, "query", NATS_URL=own_nats.url)
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = query_pb2_grpc.QueryServiceStub(channel)
            ticks = stub.WatchTicks(query_pb2.WatchTicksRequest(symbols=[busy]))
            await ticks.initial_metadata()
            ticker = stub.WatchTicker(query_pb2.WatchTickerRequest(symbol=[quiet, busy], window_size="1h"))
            assert {t.symbol for t in (await asyncio.wait_for(ticker.read(), 10)).items} == {quiet, busy}
            publisher = await nats.connect(own_nats.url)
            await publisher.publish(live_subject(service_env, busy), update(busy, 1).SerializeToString())
            await publisher.close()
            assert (await asyncio.wait_for(ticks.read(), 5)).update.last_tick.trade_id == "t1"
            assert [t.symbol for t in (await asyncio.wait_for(ticker.read(), 5)).items] == [busy]

            await asyncio.to_thread(own_nats.stop)
            await asyncio.to_thread(own_nats.start)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await asyncio.wait_for(ticks.read(), 20)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "reload history and watch again" in (ended.value.details() or "")
            assert {t.symbol for t in (await asyncio.wait_for(ticker.read(), 20)).items} == {quiet, busy}
            ticker.cancel()
    finally:
        own_nats.stop()
