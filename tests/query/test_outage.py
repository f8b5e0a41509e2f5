"""PostgreSQL outage: UNAVAILABLE and health NOT_SERVING while it is down, SERVING and answers once it is back.

Uses a PostgreSQL of its own (the run's shared one is never stopped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime

import asyncpg
import grpc
import pytest

from marketdata.common.embedded import EmbeddedPostgres
from marketdata.v1 import query_pb2, query_pb2_grpc
from tests.query.helpers import UTC, insert_minutes, insert_symbol, new_symbol, random_minutes
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
