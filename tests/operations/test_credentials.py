"""The chart's credential shape against a PostgreSQL that checks passwords: DATABASE_URL names the user but
carries no password, PGPASSWORD (from the kept or existing Secret) does, so a password with URL-reserved
characters needs no escaping. The migration and the services connect with it; a wrong one is refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from marketdata.common.embedded import EmbeddedPostgres
from tests.support.infra import embedded_postgres
from tests.support.processes import ServiceProcess, health_status

PASSWORD = "p@ss:w/rd?#%&="  # every character a URL would need escaped
USER = "mdapp"


@pytest.fixture
def password_postgres() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL where USER must give its password (scram-sha-256), everyone else is trusted."""
    with embedded_postgres() as server:
        hba = server.data_dir / "pg_hba.conf"
        hba.write_text(f"local all {USER} scram-sha-256\n" + hba.read_text())
        asyncio.run(_create_user(server.url))
        yield server


async def _create_user(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("SELECT pg_reload_conf()")
        await conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        await conn.execute(f"CREATE DATABASE marketdata OWNER {USER}")
    finally:
        await conn.close()


def chart_url(server: EmbeddedPostgres) -> str:
    """As the chart renders it: postgresql://<user>@<host>:5432/<db>, no password (here: the unix socket)."""
    return f"postgresql://{USER}@/marketdata?{urlsplit(server.url).query}"


def migrate(url: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "PGPASSWORD": password, "LOG_FORMAT": "text"}
    return subprocess.run([sys.executable, "-m", "marketdata", "migrate"], env=env, capture_output=True, text=True,
                          timeout=60)


def test_migration_and_services_connect_with_pgpassword(password_postgres, start_service) -> None:
    url = chart_url(password_postgres)
    refused = migrate(url, "wrong")
    assert refused.returncode != 0
    assert "password authentication failed" in refused.stdout + refused.stderr

    applied = migrate(url, PASSWORD)
    assert applied.returncode == 0, applied.stdout + applied.stderr

    query: ServiceProcess = start_service("query", DATABASE_URL=url, PGPASSWORD=PASSWORD)
    assert health_status(query.address, "marketdata.v1.QueryService") == "SERVING"
    ingest: ServiceProcess = start_service("ingest", DATABASE_URL=url, PGPASSWORD=PASSWORD)
    assert health_status(ingest.address, "marketdata.v1.IngestService") == "SERVING"
    assert "password authentication failed" not in ingest.log_text(), "the LISTEN connection uses it too"
