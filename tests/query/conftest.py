"""Fixtures of the query tests: a query process of their own (with a metrics port), a gRPC stub, a database
connection for direct inserts, and a NATS client for publishing live updates by hand."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import httpx
import nats
import pytest
from nats.aio.client import Client as NATS

from marketdata.common.embedded import free_port
from marketdata.v1 import query_pb2_grpc
from tests.support.processes import ServiceProcess


class QueryProcess(ServiceProcess):
    """A query service process whose Prometheus metrics the tests can read."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.metrics_port = free_port()
        super().__init__("query", {**env, "METRICS_PORT": str(self.metrics_port)}, log_dir)

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert match, f"metric {name} not exported"
        return float(match.group(1))


@pytest.fixture(scope="session")
def query_service(service_env: dict[str, str], run_dir: Path) -> Iterator[QueryProcess]:
    """A query process of the query tests (same database and NATS namespace as the shared stack)."""
    log_dir = run_dir / "query-tests"
    log_dir.mkdir(parents=True, exist_ok=True)
    process = QueryProcess(service_env, log_dir)
    process.start()
    try:
        process.wait_serving(60)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
async def query_stub(query_service: QueryProcess) -> AsyncIterator[query_pb2_grpc.QueryServiceStub]:
    async with grpc.aio.insecure_channel(query_service.address) as channel:
        yield query_pb2_grpc.QueryServiceStub(channel)


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the run's database, for writing rows directly."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def nats_client(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()
