"""During an outage the logs say so once, then at a slow pace, and say when it is over: not a line per second."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from marketdata.common.embedded import EmbeddedPostgres
from tests.support.infra import create_database, embedded_postgres
from tests.support.processes import SERVICE_NAMES, ServiceProcess, health_status, wait_for


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    with embedded_postgres() as server:
        yield server


def lines_with(service: ServiceProcess, text: str) -> list[str]:
    return [line for line in service.log_text().splitlines() if text in line]


async def test_a_postgres_outage_is_logged_once_and_its_end_too(own_postgres, start_service) -> None:  # type: ignore[no-untyped-def]
    database_url = await create_database(own_postgres.url)
    service: ServiceProcess = await asyncio.to_thread(start_service, "query", DATABASE_URL=database_url,
                                                      LOG_FORMAT="text")
    await asyncio.to_thread(own_postgres.stop)
    await asyncio.to_thread(wait_for, lambda: lines_with(service, "PostgreSQL unreachable"), 15,
                            message="the outage warning")
    # The health check fails every second; the warning is not repeated meanwhile.
    await asyncio.sleep(6)
    down = lines_with(service, "PostgreSQL unreachable")
    assert len(down) == 1, "\n".join(down)
    assert "error=" in down[0]

    await asyncio.to_thread(own_postgres.start)
    name = SERVICE_NAMES["query"]
    await asyncio.to_thread(wait_for, lambda: health_status(service.address, name) == "SERVING", 30,
                            message="query SERVING again")
    await asyncio.sleep(0.5)
    log = service.log_text()
    assert "health SERVING" in log[log.index("PostgreSQL unreachable"):], log[-2000:]
