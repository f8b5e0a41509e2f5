"""A command run against a database at another schema version than its own says so: `retention` on a schema
that is behind ends with one line naming both versions and `marketdata migrate` (and changes nothing);
`migrate` from a directory older than the database warns, naming the migrations it does not know."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from marketdata.migrate.migrations import DEFAULT_DIRECTORY, apply, latest_version
from tests.operations.test_operator_messages import marketdata, one_line_error
from tests.support.infra import create_database, drop_database

LATEST = latest_version(DEFAULT_DIRECTORY)


@pytest.fixture
def unmigrated_database(postgres_url: str) -> Iterator[str]:
    url = asyncio.run(create_database(postgres_url, migrate=False))
    yield url
    asyncio.run(drop_database(postgres_url, url))


def migrations_up_to(directory: Path, version: int) -> Path:
    directory.mkdir()
    for path in sorted(DEFAULT_DIRECTORY.glob("*.sql")):
        if int(path.name[:4]) <= version:
            shutil.copy(path, directory)
    return directory


async def relations(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {r["relname"] for r in await conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace")}
    finally:
        await conn.close()


@pytest.mark.parametrize("args", [(), ("--dry-run",)])
def test_retention_on_an_unmigrated_database_is_one_line(unmigrated_database: str, args: tuple[str, ...]) -> None:
    line = one_line_error(marketdata("retention", *args, DATABASE_URL=unmigrated_database))
    assert line == (f"marketdata retention: the database schema is at version 0, this version of marketdata needs "
                    f"{LATEST}: run `marketdata migrate`")
    assert asyncio.run(relations(unmigrated_database)) == set()


@pytest.mark.parametrize("args", [(), ("--dry-run",)])
def test_retention_on_a_schema_behind_is_one_line_and_changes_nothing(unmigrated_database: str, tmp_path: Path,
                                                                     args: tuple[str, ...]) -> None:
    asyncio.run(apply(unmigrated_database, migrations_up_to(tmp_path / "migrations", 4)))
    before = asyncio.run(relations(unmigrated_database))
    line = one_line_error(marketdata("retention", *args, DATABASE_URL=unmigrated_database))
    assert line == (f"marketdata retention: the database schema is at version 4, this version of marketdata needs "
                    f"{LATEST}: run `marketdata migrate`")
    assert asyncio.run(relations(unmigrated_database)) == before  # no partition was created

    # Migrated, it runs.
    assert marketdata("migrate", DATABASE_URL=unmigrated_database).returncode == 0
    result = marketdata("retention", *args, DATABASE_URL=unmigrated_database)
    assert result.returncode == 0, result.stderr


def test_migrate_from_an_older_directory_warns_that_the_database_is_ahead(unmigrated_database: str,
                                                                          tmp_path: Path) -> None:
    assert marketdata("migrate", DATABASE_URL=unmigrated_database).returncode == 0
    older = migrations_up_to(tmp_path / "migrations", LATEST - 2)
    result = marketdata("migrate", DATABASE_URL=unmigrated_database, MIGRATIONS_DIR=str(older), LOG_FORMAT="text")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "applied 0 migration(s)"
    assert "Traceback" not in result.stderr
    warning = [line for line in result.stderr.splitlines() if "does not know" in line]
    assert len(warning) == 1, result.stderr
    assert warning[0].startswith(f"marketdata migrate: warning: the database has 2 migration(s) that {older} "
                                 "does not know"), warning
    newer = sorted(p.name for p in DEFAULT_DIRECTORY.glob("*.sql"))[-2:]
    assert all(name in warning[0] for name in newer), warning

    # A directory as new as the database: no warning.
    same = marketdata("migrate", DATABASE_URL=unmigrated_database, LOG_FORMAT="text")
    assert same.returncode == 0 and "does not know" not in same.stderr, same.stderr


def test_retention_help_names_its_exit_status() -> None:
    helped = marketdata("retention", "--help", timeout=30)
    assert helped.returncode == 0
    assert "Exit status" in helped.stdout and "could not be" in helped.stdout and "marketdata migrate" in helped.stdout
