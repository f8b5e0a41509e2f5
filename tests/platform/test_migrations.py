"""`marketdata migrate`: idempotent, safe when run concurrently, refuses edited history."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg

from marketdata.migrate.migrations import DEFAULT_DIRECTORY, MigrationError, apply
from tests.support.infra import create_database


def migrate_cli(database_url: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATIONS_DIR": str(directory), "LOG_FORMAT": "text"}
    return subprocess.run([sys.executable, "-m", "marketdata", "migrate"], env=env, capture_output=True, text=True,
                          timeout=120)


async def applied_versions(database_url: str) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        return [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()


def test_applying_twice_is_a_no_op(postgres_url: str) -> None:
    url = asyncio.run(create_database(postgres_url, migrate=False))
    first = migrate_cli(url, DEFAULT_DIRECTORY)
    second = migrate_cli(url, DEFAULT_DIRECTORY)
    assert first.returncode == 0 and "0001_schema.sql" in first.stdout, first.stderr
    assert second.returncode == 0 and "applied 0 migration(s)" in second.stdout, second.stderr
    assert asyncio.run(applied_versions(url)) == [1]


def test_concurrent_runs_do_not_collide(postgres_url: str) -> None:
    url = asyncio.run(create_database(postgres_url, migrate=False))

    async def race() -> list[int]:
        results = await asyncio.gather(*(apply(url, DEFAULT_DIRECTORY) for _ in range(4)))
        return [len(r) for r in results]

    counts = asyncio.run(race())
    assert sorted(counts) == [0, 0, 0, 1]
    assert asyncio.run(applied_versions(url)) == [1]


def test_edited_applied_migration_is_refused(postgres_url: str, tmp_path: Path) -> None:
    url = asyncio.run(create_database(postgres_url, migrate=False))
    directory = tmp_path / "migrations"
    shutil.copytree(DEFAULT_DIRECTORY, directory)
    assert migrate_cli(url, directory).returncode == 0
    edited = directory / "0001_schema.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent edit\n")
    result = migrate_cli(url, directory)
    assert result.returncode != 0
    assert "0001_schema.sql was edited after it was applied" in result.stderr
    try:
        asyncio.run(apply(url, directory))
    except MigrationError:
        pass
    else:
        raise AssertionError("apply() accepted an edited migration")


def test_new_migration_is_applied_in_order(postgres_url: str, tmp_path: Path) -> None:
    url = asyncio.run(create_database(postgres_url, migrate=False))
    directory = tmp_path / "migrations"
    shutil.copytree(DEFAULT_DIRECTORY, directory)
    (directory / "0002_extra.sql").write_text("CREATE TABLE extra (id int);")
    (directory / "0003_broken.sql").write_text("CREATE TABLE broken (id int); SELECT * FROM missing_table;")
    result = migrate_cli(url, directory)
    assert result.returncode != 0
    # 0003 failed as a whole (its transaction rolled back), 0001 and 0002 stay applied.
    assert asyncio.run(applied_versions(url)) == [1, 2]
