"""Discovers and applies the SQL files of migrations/ (NNNN_description.sql)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Session advisory lock taken by every run, so concurrent runs apply each migration once.
ADVISORY_LOCK_KEY = 0x6D61726B657464  # "marketd"
DEFAULT_DIRECTORY = Path(__file__).resolve().parents[3] / "migrations"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str


def migrations_directory(configured: Path | None) -> Path:
    directory = configured or DEFAULT_DIRECTORY
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist (set MIGRATIONS_DIR)")
    return directory


def discover(directory: Path) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_description.sql")
        data = path.read_bytes()
        migrations.append(Migration(int(match.group(1)), path.name, data.decode(), hashlib.sha256(data).hexdigest()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations in {directory} share a version number")
    return migrations


def latest_version(directory: Path) -> int:
    return max((m.version for m in discover(directory)), default=0)


@dataclass(frozen=True)
class Applied:
    """A migration recorded in schema_migrations."""
    version: int
    name: str
    applied_at: datetime


async def applied_migrations(conn: asyncpg.Connection) -> list[Applied]:
    """The migrations applied to the database, by version; none when it was never migrated."""
    try:
        rows = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    except asyncpg.UndefinedTableError:
        return []
    return [Applied(r["version"], r["name"], r["applied_at"]) for r in rows]


async def schema_version(conn: asyncpg.Connection) -> int:
    """The newest migration applied (0: none), as SchemaCheck reads it."""
    return max((m.version for m in await applied_migrations(conn)), default=0)


def schema_behind_message(command: str, version: int, required: int) -> str | None:
    """The one line a command that needs the schema of `required` ends with on a database at `version`."""
    if version >= required:
        return None
    return (f"marketdata {command}: the database schema is at version {version}, this version of marketdata "
            f"needs {required}: run `marketdata migrate`")


def unknown_message(unknown: list[Applied], directory: Path) -> str:
    """The warning of `marketdata migrate` when the database has migrations the directory does not know."""
    return (f"the database has {len(unknown)} migration(s) that {directory} does not know (applied by a newer "
            "marketdata; this one applied none of them and cannot undo them): "
            + ", ".join(f"{m.name} (applied {m.applied_at:%Y-%m-%d %H:%M})" for m in unknown))


async def apply(dsn: str, directory: Path, unknown: list[Applied] | None = None) -> list[Migration]:
    """Applies the pending migrations; returns them. Refuses to run if an applied migration was edited. The
    applied migrations the directory does not know (a database migrated by a newer version) are added to
    `unknown` when it is given (for the caller to report), else logged as a warning."""
    migrations = discover(directory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())""")
            applied = {r["version"]: r for r in await conn.fetch("SELECT * FROM schema_migrations")}
            known = {m.version for m in migrations}
            newer = [Applied(r["version"], r["name"], r["applied_at"])
                     for version, r in sorted(applied.items()) if version not in known]
            if newer and unknown is None:
                log.warning("the database has migrations this directory does not know",
                            extra={"migrations": [m.name for m in newer], "directory": str(directory)})
            if unknown is not None:
                unknown.extend(newer)
            for migration in migrations:
                record = applied.get(migration.version)
                if record is not None and record["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} was edited after it was applied on "
                        f"{record['applied_at']:%Y-%m-%d %H:%M} (recorded checksum {record['checksum'][:12]}, "
                        f"file has {migration.checksum[:12]}): restore it and add a new migration instead")
            pending = [m for m in migrations if m.version not in applied]
            for migration in pending:
                started = time.perf_counter()
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version, migration.name, migration.checksum)
                log.info("applied migration", extra={"migration": migration.name,
                                                     "seconds": round(time.perf_counter() - started, 3)})
            return pending
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


async def wait_for_database(dsn: str, timeout: float) -> None:
    """Waits until PostgreSQL accepts connections (for a migration Job that starts beside its database)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
            await conn.close()
            return
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
            # Not there or not accepting yet (starting up, database or role not created yet). A malformed DSN
            # (asyncpg.ClientConfigurationError) fails at once: waiting would not fix it.
            if time.monotonic() >= deadline:
                raise MigrationError(f"PostgreSQL not reachable after {timeout:.0f}s: {exc}") from exc
            log.info("waiting for PostgreSQL", extra={"error": str(exc)})
            await asyncio.sleep(1)
