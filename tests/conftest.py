"""Fixtures shared by every test: one NATS, one PostgreSQL database and one stream namespace per test run.

NATS_URL / DATABASE_URL are used when set; otherwise an embedded nats-server and PostgreSQL are started.
Each run creates its own database and its own stream/subject names, so runs never see each other's data.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.infra import create_database, drop_database, nats_server, postgres_server
from tests.support.processes import ServiceProcess
from tests.support.stack import EdgeStack, Stack

API_KEY = "test-key"
# The gRPC metadata of a call with it.
KEY = (("x-api-key", API_KEY),)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="session")
def nats_url(run_dir: Path) -> Iterator[str]:
    with nats_server(run_dir) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of the PostgreSQL server (its administrative database)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def database_url(postgres_url: str) -> Iterator[str]:
    """A migrated database of this run's own."""
    url = asyncio.run(create_database(postgres_url))
    yield url
    asyncio.run(drop_database(postgres_url, url))


@pytest.fixture(scope="session")
def service_env(nats_url: str, database_url: str) -> dict[str, str]:
    """Environment of every service process of this run."""
    run_id = uuid.uuid4().hex[:8]
    return {
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "MD_STREAM": f"T{run_id}",
        "MD_SUBJECT_PREFIX": f"t{run_id}",
        "MD_CONSUMER": f"agg{run_id}",
        "API_KEYS": f"{API_KEY},second-key",
        "BIND_HOST": "127.0.0.1",
        "SHUTDOWN_GRACE_SECONDS": "5",
    }


@pytest.fixture
def start_service(service_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Starts `marketdata <command>` for this test only (stopped at its end): start_service("ingest", KEY=value)."""
    started: list[ServiceProcess] = []

    def start(command: str, wait: bool = True, port: int | None = None, args: tuple[str, ...] = (),
              **env: str) -> ServiceProcess:
        process = ServiceProcess(command, {**service_env, **env}, tmp_path, port=port, args=args).start()
        started.append(process)
        return process.wait_serving() if wait else process

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture(scope="session")
def pipeline(service_env: dict[str, str], run_dir: Path) -> Iterator[Stack]:
    """ingest and aggregator, shared by the tests of the run that do not stop them."""
    with Stack.running(service_env, run_dir / "stack", API_KEY) as running:
        yield running


@pytest.fixture(scope="session")
def stack(pipeline: Stack) -> Iterator[Stack]:
    """The shared pipeline plus a query service."""
    with pipeline.with_query() as running:
        yield running


@pytest.fixture(scope="session")
def edge_stack(stack: Stack, run_dir: Path) -> Iterator[EdgeStack]:
    """The shared stack plus the HTTP edge serving REST, SSE and the dashboard."""
    with EdgeStack.running(stack, run_dir / "edge") as running:
        yield running
