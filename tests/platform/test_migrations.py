"""`marketdata migrate`: idempotent, safe when run concurrently, refuses edited history."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg

from marketdata.common import rules
from marketdata.migrate.migrations import DEFAULT_DIRECTORY, MigrationError, apply, latest_version
from tests.support.infra import create_database

SHIPPED = list(range(1, latest_version(DEFAULT_DIRECTORY) + 1))


def migrate_cli(database_url: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATIONS_DIR": str(directory), "LOG_FORMAT": "text"}
    return subprocess.run([sys.executable, "-m", "marketdata", "migrate"], env=env, capture_output=True, text=True,
                          timeout=120)


# The repository's migrations, by version.


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
    assert asyncio.run(applied_versions(url)) == SHIPPED


def test_concurrent_runs_do_not_collide(postgres_url: str) -> None:
    url = asyncio.run(create_database(postgres_url, migrate=False))

    async def race() -> list[int]:
        results = await asyncio.gather(*(apply(url, DEFAULT_DIRECTORY) for _ in range(4)))
        return [len(r) for r in results]

    counts = asyncio.run(race())
    assert sorted(counts) == [0, 0, 0, len(SHIPPED)]
    assert asyncio.run(applied_versions(url)) == SHIPPED


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
    extra, broken = len(SHIPPED) + 1, len(SHIPPED) + 2
    (directory / f"{extra:04d}_extra.sql").write_text("CREATE TABLE extra (id int);")
    (directory / f"{broken:04d}_broken.sql").write_text("CREATE TABLE broken (id int); SELECT * FROM missing_table;")
    result = migrate_cli(url, directory)
    assert result.returncode != 0
    # The broken one failed as a whole (its transaction rolled back); those before it stay applied.
    assert asyncio.run(applied_versions(url)) == [*SHIPPED, extra]


def test_the_database_keeps_the_symbol_rule_of_the_proto(database_url: str) -> None:
    """The symbols CHECK is the proto's rule: same verdict as marketdata.common.rules on tricky names."""
    names = ["BTCUSDT", "BTC-PERP", "ES.Z24", "A_B", "AB", "BTC.", "A..B", "-BTC", "A", "btc", "A B", "A.-B",
             "X" * 20, "X" * 21, "MD.TICKS.X", "A*B", "A>B"]

    class Inserted(Exception):
        """Rolls the insert back once it passed the CHECK."""

    async def verdicts() -> dict[str, bool]:
        conn = await asyncpg.connect(database_url)
        try:
            out = {}
            for name in names:
                try:
                    async with conn.transaction():
                        await conn.execute("INSERT INTO symbols (symbol, base, quote) VALUES ($1, 'A', 'B')", name)
                        raise Inserted
                except asyncpg.CheckViolationError:
                    out[name] = False
                except Inserted:
                    out[name] = True
            return out
        finally:
            await conn.close()

    assert asyncio.run(verdicts()) == {name: rules.is_symbol(name) for name in names}
    migration = (DEFAULT_DIRECTORY / "0002_contract_rules.sql").read_text()
    assert f"symbol ~ '{rules.SYMBOL_PATTERN.pattern}'" in migration
    assert f"price >= {rules.PRICE_MIN:g} AND price <= {rules.PRICE_MAX:g}" in migration
    assert f"size >= {rules.SIZE_MIN:g} AND size <= {rules.SIZE_MAX:g}" in migration
