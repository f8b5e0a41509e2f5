"""Dependencies for the tests: NATS and PostgreSQL from NATS_URL / DATABASE_URL, or embedded ones."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from marketdata.common.embedded import EmbeddedNats, EmbeddedPostgres
from marketdata.migrate.migrations import DEFAULT_DIRECTORY, apply


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database (keeps a unix-socket ?host= query)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@contextmanager
def nats_server(tmp: Path) -> Iterator[str]:
    """NATS_URL when set, else a fresh embedded nats-server with JetStream."""
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
        return
    server = EmbeddedNats(tmp / "nats")
    server.start(tmp / "nats.log")
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """A started embedded PostgreSQL in a directory of its own, removed afterwards.

    Not under pytest's temp tree: as root, pgserver runs PostgreSQL as another user, which needs to
    traverse the parents of the data directory, and a concurrent pytest session may reset them to 0700.
    """
    directory = Path(tempfile.mkdtemp(prefix="md-test-pg-", dir="/tmp"))
    directory.chmod(0o755)
    server = EmbeddedPostgres(directory / "pg")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """DATABASE_URL when set, else a fresh embedded PostgreSQL. Yields a URL of an administrative database."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with embedded_postgres() as server:
        yield server.url


async def create_database(server_url: str, migrate: bool = True) -> str:
    """Creates a database of its own for this test run (and applies the migrations); returns its URL."""
    name = f"md_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = with_database(server_url, name)
    if migrate:
        await apply(url, DEFAULT_DIRECTORY)
    return url


async def drop_database(server_url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


