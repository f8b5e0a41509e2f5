"""Pool sizes per service (DB_POOL_SIZE) against real PostgreSQL: the connection budget the chart checks
(replicas x pool) holds only if a process never opens more than its pool, however many calls wait."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest

from marketdata.common.config import DEFAULT_POOL_SIZES, SettingsError, load_settings
from marketdata.v1 import query_pb2, query_pb2_grpc
from tests.support.infra import create_database, drop_database
from tests.support.processes import ServiceProcess, wait_for


async def connections(conn: asyncpg.Connection, application: str, database: str) -> int:
    return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
                               application, database)


async def test_query_never_opens_more_than_its_pool(start_service, postgres_url: str) -> None:
    # A database of its own: the run's shared query service must not be counted with this one.
    database_url = await create_database(postgres_url)
    service: ServiceProcess = await asyncio.to_thread(start_service, "query", DB_POOL_SIZE="2",
                                                      DATABASE_URL=database_url)
    database = urlsplit(database_url).path.lstrip("/")
    symbol = f"B{uuid.uuid4().hex[:6].upper()}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute("INSERT INTO symbols (symbol, base, quote, active) VALUES ($1, 'B', 'USD', true)", symbol)
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = query_pb2_grpc.QueryServiceStub(channel)
            async with admin.transaction():
                # Every history call now waits on the lock while holding a pooled connection.
                await admin.execute("LOCK TABLE ohlc_1m IN ACCESS EXCLUSIVE MODE")
                calls = [asyncio.ensure_future(stub.GetHistory(query_pb2.GetHistoryRequest(symbol=symbol, limit=10),
                                                               timeout=30)) for _ in range(8)]
                waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'ohlc_1m'::regclass"
                for _ in range(100):
                    if await admin.fetchval(waiting) >= 2:
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)  # the other six calls would have connected by now
                assert await connections(admin, "marketdata-query", database) == 2
                assert not any(call.done() for call in calls)
            replies = await asyncio.gather(*calls)  # the lock went with the transaction
            assert len(replies) == 8
    finally:
        await admin.close()
        await drop_database(postgres_url, database_url)


def test_pool_sizes_default_per_service_and_can_be_set() -> None:
    defaults = load_settings({})
    assert {s: defaults.pool_size_for(s) for s in DEFAULT_POOL_SIZES} == DEFAULT_POOL_SIZES
    assert load_settings({"DB_POOL_SIZE": "7"}).pool_size_for("query") == 7
    with pytest.raises(SettingsError, match="DB_POOL_SIZE"):
        load_settings({"DB_POOL_SIZE": "0"})


def test_aggregator_refuses_a_pool_smaller_than_its_commits(service_env, tmp_path) -> None:
    process = ServiceProcess("aggregator", {**service_env, "DB_POOL_SIZE": "2", "AGGREGATOR_COMMIT_CONCURRENCY": "2"},
                             tmp_path).start()
    assert process.process is not None
    wait_for(lambda: process.process.poll() is not None, 30, message="aggregator exits")
    assert process.process.returncode != 0
    assert "DB_POOL_SIZE=2: the aggregator needs more connections than AGGREGATOR_COMMIT_CONCURRENCY=2" in process.log_text()
