"""Retention drops exactly the expired partitions (whole ones), lists them first with --dry-run, keeps the
tiers from 15 minutes up, and refuses settings that would drop minutes their ticks could still rebuild."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from marketdata.aggregator import rollup
from marketdata.common.config import SettingsError, load_settings
from marketdata.retention import lifecycle
from tests.operations.test_operator_messages import marketdata

POLICY = {"RETENTION_RAW_DAYS": "2", "RETENTION_TICKS_DAYS": "30", "RETENTION_MINUTES_DAYS": "400"}


def retention_cli(database_url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`marketdata retention ARGS` on database_url, with POLICY."""
    return marketdata("retention", *args, timeout=timeout, DATABASE_URL=database_url, LOG_FORMAT="text", **POLICY)


def retention_output(database_url: str, *args: str) -> str:
    result = retention_cli(database_url, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def seed(database_url: str, now: datetime) -> None:
    """Partitions (each with a row) reaching back 40 days of ticks, 5 days of audit, 20 months of minutes, plus
    rows of every tier and of the DEFAULT partitions (a tick of 1999)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO symbols (symbol, base, quote) VALUES ('RETX', 'RET', 'X')")
        for table, step, back in (("ticks_history", "1 day", timedelta(days=40)), ("ticks_raw", "1 day", timedelta(days=5)),
                                  ("ohlc_1m", "1 month", timedelta(days=610)), ("metrics_1m", "1 month", timedelta(days=610)),
                                  ("ohlc_3m", "1 month", timedelta(days=610)), ("ohlc_5m", "1 month", timedelta(days=610))):
            await conn.execute("SELECT ensure_partitions($1, $2::text::interval, $3, $4)", table, step, now - back, now)
        days = [now - timedelta(days=n) for n in range(41)] + [datetime(1999, 1, 1, tzinfo=timezone.utc)]
        await conn.executemany("INSERT INTO ticks_history (symbol, trade_id, event_time, price, size) "
                               "VALUES ('RETX', $1, $2, 1, 1)", [(f"t{n}", day) for n, day in enumerate(days)])
        await conn.executemany("INSERT INTO ticks_raw (stream, stream_seq, symbol, trade_id, event_time, price, size, "
                               "side, source, received_at) VALUES ('S', 1, 'RETX', $1, $2, 1, 1, 0, '', $2)",
                               [(f"r{n}", now - timedelta(days=n)) for n in range(6)])
        months = [now - timedelta(days=30 * n) for n in range(21)]
        for table in ("ohlc_1m", *rollup.TIERS):
            await conn.executemany(
                f"INSERT INTO {table} (symbol, bucket, open, high, low, close, volume, trades, turnover, open_time, "
                "open_trade_id, close_time, close_trade_id) VALUES ('RETX', date_trunc('hour', $1::timestamptz), "
                "1, 1, 1, 1, 1, 1, 1, $1, 'a', $1, 'a') ON CONFLICT DO NOTHING", [(m,) for m in months])
    finally:
        await conn.close()


async def state(database_url: str) -> dict[str, object]:
    conn = await asyncpg.connect(database_url)
    try:
        names = {table: {p.name for p in await lifecycle.partitions(conn, table)} for table in lifecycle.PARTITIONED}
        counts = {table: await conn.fetchval(f"SELECT count(*) FROM {table}")
                  for table in ("ticks_history", "ticks_raw", "ohlc_1m", *rollup.TIERS, "ticks_history_default")}
        return {"partitions": names, "rows": counts}
    finally:
        await conn.close()


def expected_expired(partitions: dict[str, set[str]], now: datetime) -> set[str]:
    """From the partition names alone: days ending 30 (ticks) / 2 (audit) days ago or earlier, months ending
    400 days ago or earlier."""
    out = set()
    for table, names in partitions.items():
        for name in names:
            suffix = name.rsplit("_p", 1)[1]
            if len(suffix) == 8:
                end = datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=timezone.utc) + timedelta(days=1)
                keep = 30 if table == "ticks_history" else 2
            else:
                start = datetime.strptime(suffix, "%Y%m").replace(tzinfo=timezone.utc)
                end = (start + timedelta(days=32)).replace(day=1)
                keep = 400
            if end <= now - timedelta(days=keep):
                out.add(name)
    return out


def test_dry_run_lists_and_retention_drops_exactly_the_expired_partitions(own_database: str) -> None:
    now = datetime.now(timezone.utc)
    asyncio.run(seed(own_database, now))
    before = asyncio.run(state(own_database))
    expired = expected_expired(before["partitions"], now)
    assert len(expired) >= 8 + 2 + 4 * 6, sorted(expired)  # ticks 40 → 30 days, audit 5 → 2, minutes 20 → 13 months

    listing = retention_output(own_database, "--dry-run")
    listed = {line.split()[2] for line in listing.splitlines() if line.startswith("would drop ") and "_p" in line}
    assert listed == expired
    assert asyncio.run(state(own_database)) == before  # a dry run changes nothing

    retention_output(own_database)
    after = asyncio.run(state(own_database))
    for table, names in before["partitions"].items():
        # (a round also makes partitions ahead: none are new here unless the day turned meanwhile)
        assert names - expired <= after["partitions"][table] and not after["partitions"][table] & expired, table
    rows = after["rows"]
    # A row per dropped day or month is gone with its partition; the tiers and DEFAULT keep theirs.
    assert rows["ticks_history"] == before["rows"]["ticks_history"] - sum(n.startswith("ticks_history") for n in expired)
    assert rows["ticks_history_default"] == before["rows"]["ticks_history_default"] == 1
    kept_for_ever = [tier for tier in rollup.TIERS if tier not in lifecycle.PARTITIONED]
    assert all(rows[tier] == before["rows"][tier] for tier in kept_for_ever) and len(kept_for_ever) == 7
    assert all(0 < rows[table] < before["rows"][table] for table in ("ohlc_1m", "ohlc_3m", "ohlc_5m"))

    again = retention_output(own_database, "--dry-run")
    assert "would drop 0 partition(s)" in again


def test_settings_refuse_minutes_kept_shorter_than_ticks() -> None:
    with pytest.raises(SettingsError, match="RETENTION_MINUTES_DAYS=10"):
        load_settings({"RETENTION_TICKS_DAYS": "30", "RETENTION_MINUTES_DAYS": "10"})
    with pytest.raises(SettingsError, match="RETENTION_MINUTES_DAYS=400"):
        load_settings({"RETENTION_TICKS_DAYS": "0", "RETENTION_MINUTES_DAYS": "400"})
    assert load_settings({"RETENTION_TICKS_DAYS": "0", "RETENTION_MINUTES_DAYS": "0"}).retention_minutes_days == 0
