"""Liveness apart from readiness, against real PostgreSQL and NATS that the tests stop and start.

Liveness (the `liveness` health name, what the chart's liveness and startup probes ask) stays SERVING whatever
the dependencies do, so an outage never restarts pods; readiness (the service's own name and "") follows the
dependencies each process really needs: query needs PostgreSQL only, ingest needs NATS and its (cached)
symbol registry, the aggregator needs both.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from marketdata.common.embedded import EmbeddedNats, EmbeddedPostgres
from marketdata.common.grpc_server import LIVENESS_SERVICE
from marketdata.v1 import ingest_pb2, ingest_pb2_grpc, market_pb2, query_pb2, query_pb2_grpc
from tests.conftest import KEY
from tests.support.infra import create_database, embedded_postgres
from tests.support.processes import SERVICE_NAMES, ServiceProcess, health_status, wait_for

@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    with embedded_postgres() as server:
        yield server


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats")
    server.start(tmp_path / "nats.log")
    try:
        yield server
    finally:
        server.stop()


def wait_status(address: str, service: str, expected: str, timeout: float = 15) -> None:
    wait_for(lambda: health_status(address, service) == expected, timeout,
             message=f"{service or 'overall'} {expected} at {address}")


def assert_stays(address: str, service: str, expected: str, seconds: float) -> None:
    """The status holds for a while (the health watcher checks every second)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert health_status(address, service) == expected, f"{service or 'overall'} left {expected}"
        time.sleep(0.2)


def symbol_item(symbol: str) -> market_pb2.Symbol:
    return market_pb2.Symbol(symbol=symbol, base=symbol[:3], quote="USD", active=True)


def tick(symbol: str, trade_id: str) -> market_pb2.Tick:
    message = market_pb2.Tick(symbol=symbol, trade_id=trade_id, price=100.0, size=1.0)
    message.event_time.FromNanoseconds(time.time_ns())
    return message


@pytest.mark.parametrize("command", ["query", "aggregator"])
async def test_postgres_outage_keeps_liveness_and_takes_readiness(command, own_postgres, start_service) -> None:
    database_url = await create_database(own_postgres.url)
    service: ServiceProcess = await asyncio.to_thread(start_service, command, DATABASE_URL=database_url)
    name = SERVICE_NAMES[command]
    assert health_status(service.address, LIVENESS_SERVICE) == "SERVING"

    await asyncio.to_thread(own_postgres.stop)
    await asyncio.to_thread(wait_status, service.address, name, "NOT_SERVING")
    assert health_status(service.address) == "NOT_SERVING"
    # Longer than a few probe periods: a liveness probe would still pass, the pod is never restarted.
    await asyncio.to_thread(assert_stays, service.address, LIVENESS_SERVICE, "SERVING", 4)
    assert service.process is not None and service.process.poll() is None

    await asyncio.to_thread(own_postgres.start)
    await asyncio.to_thread(wait_status, service.address, name, "SERVING", 30)
    assert health_status(service.address, LIVENESS_SERVICE) == "SERVING"


async def test_ingest_keeps_accepting_ticks_while_postgres_is_down(own_postgres, start_service) -> None:
    """Ingest validates against its cached registry: PostgreSQL away degrades only UpsertSymbols."""
    database_url = await create_database(own_postgres.url)
    service: ServiceProcess = await asyncio.to_thread(start_service, "ingest", DATABASE_URL=database_url)
    symbol = f"H{uuid.uuid4().hex[:6].upper()}"
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        await stub.UpsertSymbols(ingest_pb2.UpsertSymbolsRequest(items=[symbol_item(symbol)]), metadata=KEY, timeout=5)

        await asyncio.to_thread(own_postgres.stop)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.UpsertSymbols(ingest_pb2.UpsertSymbolsRequest(items=[symbol_item(symbol)]),
                                     metadata=KEY, timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.to_thread(assert_stays, service.address, SERVICE_NAMES["ingest"], "SERVING", 3)
        reply = await stub.PublishTicks(ingest_pb2.PublishTicksRequest(items=[tick(symbol, "during-outage")]),
                                        metadata=KEY, timeout=5)
        assert reply.accepted == 1
        assert health_status(service.address, LIVENESS_SERVICE) == "SERVING"
        await asyncio.to_thread(own_postgres.start)


async def test_nats_outage_query_stays_ready_ingest_does_not(own_nats, start_service, database_url) -> None:
    ingest: ServiceProcess = await asyncio.to_thread(start_service, "ingest", NATS_URL=own_nats.url)
    query: ServiceProcess = await asyncio.to_thread(start_service, "query", NATS_URL=own_nats.url)
    symbol = f"N{uuid.uuid4().hex[:6].upper()}"
    async with grpc.aio.insecure_channel(ingest.address) as channel:
        await ingest_pb2_grpc.IngestServiceStub(channel).UpsertSymbols(
            ingest_pb2.UpsertSymbolsRequest(items=[symbol_item(symbol)]), metadata=KEY, timeout=5)

    await asyncio.to_thread(own_nats.stop)
    await asyncio.to_thread(wait_status, ingest.address, SERVICE_NAMES["ingest"], "NOT_SERVING")
    assert health_status(ingest.address, LIVENESS_SERVICE) == "SERVING"
    await asyncio.to_thread(assert_stays, query.address, SERVICE_NAMES["query"], "SERVING", 3)
    assert health_status(query.address) == "SERVING"
    async with grpc.aio.insecure_channel(query.address) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        symbols = await stub.ListSymbols(query_pb2.ListSymbolsRequest(), timeout=5)  # the read path answers
        assert symbol in [s.symbol for s in symbols.items]
        history = await stub.GetHistory(query_pb2.GetHistoryRequest(symbol=symbol, limit=10), timeout=5)
        assert list(history.candles) == []

    await asyncio.to_thread(own_nats.start)
    await asyncio.to_thread(wait_status, ingest.address, SERVICE_NAMES["ingest"], "SERVING", 30)


def test_edge_is_degraded_not_unready_without_ingest_or_nats(stack, tmp_path: Path) -> None:
    from marketdata.common.embedded import free_port

    env = {**stack.client_env(), "INGEST_ADDR": f"127.0.0.1:{free_port()}", "NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    edge = ServiceProcess("edge", env, tmp_path).start()
    try:
        url = f"http://127.0.0.1:{edge.port}/api/v1/health/readiness"

        def answered() -> httpx.Response | None:
            try:
                return httpx.get(url, timeout=2)
            except httpx.HTTPError:
                return None

        response = wait_for(answered, 30, message="edge readiness answers")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "degraded"
        assert body["degraded"] == ["marketdata.v1.IngestService", "nats"]
        assert body["dependencies"]["marketdata.v1.QueryService"] == "SERVING"
        assert body["dependencies"]["nats"] == "DISCONNECTED"
        # What still works is served: history through query.
        assert httpx.get(f"http://127.0.0.1:{edge.port}/api/v1/symbols", timeout=5).status_code == 200
    finally:
        edge.stop()
