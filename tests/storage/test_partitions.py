"""Daily partitions are created ahead, so ingest across a midnight never lands in the DEFAULT partition."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg

from marketdata.common.config import load_settings
from marketdata.retention import lifecycle
from tests.storage.helpers import commit
from tests.support.processes import wait_for
from tests.support.ticks import EPOCH, TickSpec, assert_rollups_match, expected_minutes, stored_minutes

# Retention off: the clock of these tests is years ahead of the partitions of the real today.
SETTINGS = load_settings({"PARTITIONS_AHEAD_DAYS": "1", "RETENTION_RAW_DAYS": "0", "RETENTION_TICKS_DAYS": "0",
                          "RETENTION_MINUTES_DAYS": "0"})
# A midnight that is also a month's end: daily and monthly partitions both roll over.
MIDNIGHT = datetime(2031, 6, 1, tzinfo=timezone.utc)


async def rows_per_partition(conn: asyncpg.Connection, table: str, symbol: str) -> dict[str, int]:
    rows = await conn.fetch(f"SELECT tableoid::regclass::text AS name, count(*) FROM {table} WHERE symbol = $1 "
                            "GROUP BY 1", symbol)
    return {r["name"]: r["count"] for r in rows}


async def test_ingest_across_midnight_lands_in_partitions_made_ahead(own_database: str) -> None:
    symbol = f"PD{uuid.uuid4().hex[:5].upper()}"
    pool = await asyncpg.create_pool(own_database, min_size=2, max_size=3, server_settings={"extra_float_digits": "1"})
    ticks: list[TickSpec] = []
    try:
        # The clock runs from 23:58 to 00:02 in steps of 5 s: each step, a batch of ticks of that moment
        # commits while storage maintenance runs at that moment too.
        clock = MIDNIGHT - timedelta(minutes=2)
        # Maintenance an hour earlier made the partitions up to a day ahead: tomorrow's exists before midnight.
        await lifecycle.maintain(pool, SETTINGS, clock - timedelta(hours=1))
        async with pool.acquire() as conn:
            names = {p.name for p in await lifecycle.partitions(conn, "ticks_history")}
            assert {f"ticks_history_p{MIDNIGHT - timedelta(days=1):%Y%m%d}", f"ticks_history_p{MIDNIGHT:%Y%m%d}"} <= names
        seq = 0
        while clock < MIDNIGHT + timedelta(minutes=2):
            seq += 1
            batch = [TickSpec(symbol, f"m-{seq}-{n}", (clock - EPOCH) // timedelta(microseconds=1) + n * 1000,
                              100.0 + n, 1.0) for n in range(20)]
            ticks += batch
            await asyncio.gather(commit(pool, "MIDNIGHT@1", [(seq, batch)]),
                                 lifecycle.maintain(pool, SETTINGS, clock))
            clock += timedelta(seconds=5)
        async with pool.acquire() as conn:
            day, next_day = f"{MIDNIGHT - timedelta(days=1):%Y%m%d}", f"{MIDNIGHT:%Y%m%d}"
            before = sum(1 for t in ticks if t.event_time < MIDNIGHT)
            for table in ("ticks_history", "ticks_raw"):
                counts = await rows_per_partition(conn, table, symbol)
                if table == "ticks_history":  # by event time; ticks_raw by receive time (the real today)
                    assert counts == {f"ticks_history_p{day}": before,
                                      f"ticks_history_p{next_day}": len(ticks) - before}, counts
                assert f"{table}_default" not in counts, counts
            assert await rows_per_partition(conn, "ohlc_1m", symbol) == {
                f"ohlc_1m_p{MIDNIGHT - timedelta(days=1):%Y%m}": 2, f"ohlc_1m_p{MIDNIGHT:%Y%m}": 2}
            # One day ahead of the clock's last reading (00:01:55): the day after is there, made while ingesting.
            names = {p.name for p in await lifecycle.partitions(conn, "ticks_history")}
            assert f"ticks_history_p{MIDNIGHT + timedelta(days=1):%Y%m%d}" in names
    finally:
        await pool.close()
    ohlc, metrics = await stored_minutes(own_database, [symbol])
    assert_rollups_match(expected_minutes(ticks), ohlc, metrics)


async def test_rows_in_default_move_into_the_partition_created_for_them(own_database: str) -> None:
    symbol = f"PM{uuid.uuid4().hex[:5].upper()}"
    far = datetime(2032, 2, 3, 12, tzinfo=timezone.utc)
    pool = await asyncpg.create_pool(own_database, min_size=1, max_size=2, server_settings={"extra_float_digits": "1"})
    try:
        tick = TickSpec(symbol, "far-1", (far - EPOCH) // timedelta(microseconds=1), 10.0, 2.0)
        assert await commit(pool, "FAR@1", [(1, [tick])]) == 1
        async with pool.acquire() as conn:
            assert await rows_per_partition(conn, "ticks_history", symbol) == {"ticks_history_default": 1}
        await lifecycle.maintain(pool, SETTINGS, far)
        async with pool.acquire() as conn:
            assert await rows_per_partition(conn, "ticks_history", symbol) == {"ticks_history_p20320203": 1}
            assert await rows_per_partition(conn, "ohlc_1m", symbol) == {"ohlc_1m_p203202": 1}
        # Still one tick: the moved row keeps deduplicating its redelivery.
        assert await commit(pool, "FAR@1", [(2, [tick])]) == 0
    finally:
        await pool.close()


def test_the_aggregator_keeps_partitions_ahead(start_service, own_database: str) -> None:
    namespace = uuid.uuid4().hex[:8]
    start_service("aggregator", DATABASE_URL=own_database, MD_STREAM=f"P{namespace}",
                  MD_SUBJECT_PREFIX=f"p{namespace}", MD_CONSUMER=f"c{namespace}", PARTITIONS_AHEAD_DAYS="5",
                  AGGREGATOR_MAINTENANCE_SECONDS="0.5")
    fifth = f"ticks_history_p{datetime.now(timezone.utc) + timedelta(days=5):%Y%m%d}"

    async def exists() -> bool:
        conn = await asyncpg.connect(own_database)
        try:
            return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", fifth)
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(own_database)
        try:
            await conn.execute(f"ALTER TABLE ticks_history DETACH PARTITION {fifth}")
            await conn.execute(f"DROP TABLE {fifth}")
        finally:
            await conn.close()

    wait_for(lambda: asyncio.run(exists()), 30, interval=0.2, message=f"{fifth} created at start")
    asyncio.run(drop())
    wait_for(lambda: asyncio.run(exists()), 10, interval=0.2, message=f"{fifth} created again by maintenance")


# Retention on: what a fresh install runs with (ticks 30 days, audit 2, minutes 400), one day ahead.
RETENTION = load_settings({"PARTITIONS_AHEAD_DAYS": "1", "RETENTION_RAW_DAYS": "2", "RETENTION_TICKS_DAYS": "30",
                           "RETENTION_MINUTES_DAYS": "400"})


async def test_a_fresh_install_has_partitions_back_to_the_retention_horizon(own_database: str) -> None:
    """Ingest accepts ticks of every day still kept and Rebuild ranges from the oldest ticks_history partition:
    after one round on a fresh database, a tick of 20 days ago lands in a partition of its day, not in DEFAULT
    (where retention would never drop it), and one already in DEFAULT moved there."""
    now = datetime.now(timezone.utc)
    back = now - timedelta(days=20)
    day = f"ticks_history_p{back:%Y%m%d}"
    conn = await asyncpg.connect(own_database)
    pool = await asyncpg.create_pool(own_database, min_size=1, max_size=1)
    try:
        await conn.execute("INSERT INTO symbols (symbol, base, quote) VALUES ('HZNX', 'HZN', 'X')")
        insert = "INSERT INTO ticks_history (symbol, trade_id, event_time, price, size) VALUES ('HZNX', $1, $2, 1, 1)"
        await conn.execute(insert, "before", back)  # ingested before any round: no partition for its day yet
        assert await rows_per_partition(conn, "ticks_history", "HZNX") == {"ticks_history_default": 1}

        done = await lifecycle.maintain(pool, RETENTION, now)
        assert day in done.created and not done.dropped and not done.skipped, done
        await conn.execute(insert, "after", back + timedelta(minutes=1))
        await conn.execute(insert, "oldest", now - timedelta(days=29, hours=23))  # the first day ingest accepts
        assert await rows_per_partition(conn, "ticks_history", "HZNX") == {
            day: 2, f"ticks_history_p{now - timedelta(days=29, hours=23):%Y%m%d}": 1}

        # From the horizon's day (month) on, and none of them expired: the next round drops nothing.
        for table, days in (("ticks_history", 30), ("ticks_raw", 2), ("ohlc_1m", 400), ("ohlc_5m", 400)):
            oldest = (await lifecycle.partitions(conn, table))[0]
            assert oldest.lo <= now - timedelta(days=days) < oldest.hi, (table, oldest)
        assert not await lifecycle.expired(conn, RETENTION, now)
        again = await lifecycle.maintain(pool, RETENTION, now)
        assert not again.created and not again.dropped and not again.skipped, again
    finally:
        await pool.close()
        await conn.close()
