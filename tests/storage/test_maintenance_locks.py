"""Storage maintenance beside readers and beside itself: a partition it cannot lock at once is skipped (and
reported), never waited for with every query of the table queued behind; two rounds at once share the work;
and rows of the DEFAULT partitions are reported."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from marketdata.common.config import load_settings
from marketdata.common.database import create_pool
from marketdata.retention import lifecycle
from tests.storage.test_retention import POLICY, retention_cli

# Retention off, one day ahead: the clock of the lock test is years ahead of the partitions of the real today.
NO_RETENTION = load_settings({"PARTITIONS_AHEAD_DAYS": "1", "RETENTION_RAW_DAYS": "0", "RETENTION_TICKS_DAYS": "0",
                              "RETENTION_MINUTES_DAYS": "0"})
RETENTION = load_settings(POLICY)
FAR = datetime(2033, 3, 10, 12, tzinfo=timezone.utc)


async def hold_reader(url: str, table: str) -> asyncpg.Connection:
    """A session inside a transaction that has read `table` (as a long report would): it holds ACCESS SHARE
    locks on the table and all its partitions until it ends."""
    reader = await asyncpg.connect(url)
    await reader.execute("BEGIN")
    await reader.fetchval(f"SELECT count(*) FROM {table}")
    return reader


async def timed_count(url: str, table: str) -> float:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.fetchval(f"SELECT count(*) FROM {table}")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def waiting_for_a_lock(url: str, timeout: float = 5.0) -> None:
    """Returns once a session of the database waits for a lock (polled every 10 ms, outside any transaction:
    pg_stat_activity is a snapshot within one)."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = "
                                      "current_database() AND wait_event_type = 'Lock')"):
            assert time.monotonic() < deadline, "no session waited for a lock"
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def seed_expired(url: str, now: datetime) -> None:
    """Partitions reaching back 60 days of ticks, 12 days of audit, 20 months of minutes."""
    conn = await asyncpg.connect(url)
    try:
        for table, step, back in (("ticks_history", "1 day", 60), ("ticks_raw", "1 day", 12), ("ohlc_1m", "1 month", 610),
                                  ("metrics_1m", "1 month", 610), ("ohlc_3m", "1 month", 610), ("ohlc_5m", "1 month", 610)):
            await conn.execute("SELECT ensure_partitions($1, $2::text::interval, $3, $4)", table, step,
                               now - timedelta(days=back), now)
    finally:
        await conn.close()


async def all_partitions(conn: asyncpg.Connection) -> set[str]:
    return {p.name for table in lifecycle.PARTITIONED for p in await lifecycle.partitions(conn, table)}


async def test_a_reader_does_not_make_partition_creation_stall_reads(own_database: str) -> None:
    pool = await asyncpg.create_pool(own_database, min_size=1, max_size=2)
    reader = await hold_reader(own_database, "ticks_history")
    try:
        # The days around FAR have no partition yet: this round must attach them to ticks_history, whose
        # DEFAULT partition the reader has locked. A read of the table meanwhile must not queue behind it.
        maintenance = asyncio.create_task(lifecycle.maintain(pool, NO_RETENTION, FAR))
        await waiting_for_a_lock(own_database)  # the read starts while the creation waits, not after
        read = asyncio.create_task(timed_count(own_database, "ticks_history"))
        # (Without a lock timeout both would wait for the reader, which ends after 6 s.)
        done, _ = await asyncio.wait({maintenance, read}, timeout=6)
        finished = {maintenance, read} == done
        await reader.execute("COMMIT")
        await asyncio.gather(maintenance, read)
        assert finished, "maintenance or a read waited for the reader"
        assert read.result() < 1.0, f"a read stalled {read.result():.1f} s behind partition creation"
        first = maintenance.result()
        wanted = {f"ticks_history_p{FAR + timedelta(days=n):%Y%m%d}" for n in (-1, 0, 1)}
        skipped = {s.name for s in first.skipped}
        assert skipped == wanted and {s.action for s in first.skipped} == {"create"}, first.skipped
        assert all("ticks_history" in s.reason for s in first.skipped), first.skipped
        # The other tables were not blocked: their partitions were made.
        assert f"ticks_raw_p{FAR:%Y%m%d}" in first.created and f"ohlc_1m_p{FAR:%Y%m}" in first.created

        # The reader gone, the next round creates what the first skipped.
        second = await lifecycle.maintain(pool, NO_RETENTION, FAR)
        assert set(second.created) == wanted and not second.skipped
        async with pool.acquire() as conn:
            assert wanted <= await all_partitions(conn)
    finally:
        if not reader.is_closed():
            await reader.close()
        await pool.close()


async def test_two_rounds_at_once_drop_each_expired_partition_once(own_database: str) -> None:
    now = datetime.now(timezone.utc)
    await seed_expired(own_database, now)
    pools = [await asyncpg.create_pool(own_database, min_size=1, max_size=1) for _ in range(2)]
    try:
        async with pools[0].acquire() as conn:
            expired = {p.name for p in await lifecycle.expired(conn, RETENTION, now)}
        assert len(expired) >= 29 + 9 + 4 * 6, len(expired)
        # Both rounds succeed (no error for a partition the other dropped or created first).
        rounds = await asyncio.gather(*(lifecycle.maintain(pool, RETENTION, now) for pool in pools))
        dropped = [[p.name for p in r.dropped] for r in rounds]
        assert not set(dropped[0]) & set(dropped[1])
        assert sorted(dropped[0] + dropped[1]) == sorted(expired)
        assert not rounds[0].skipped and not rounds[1].skipped, [r.skipped for r in rounds]
        async with pools[0].acquire() as conn:
            assert not await all_partitions(conn) & expired
            assert not await lifecycle.expired(conn, RETENTION, now)
    finally:
        for pool in pools:
            await pool.close()


async def test_two_rounds_at_once_create_each_partition_once(own_database: str) -> None:
    pools = [await asyncpg.create_pool(own_database, min_size=1, max_size=1) for _ in range(3)]
    try:
        rounds = await asyncio.gather(*(lifecycle.maintain(pool, NO_RETENTION, FAR) for pool in pools))
        created = [name for r in rounds for name in r.created]
        assert len(created) == len(set(created)) and not any(r.skipped for r in rounds)
        wanted = {f"{table}_p{FAR + timedelta(days=n):%Y%m%d}" for table in ("ticks_raw", "ticks_history")
                  for n in (-1, 0, 1)}
        assert wanted <= set(created)
    finally:
        for pool in pools:
            await pool.close()


async def test_a_busy_table_is_one_warning_per_round(own_database: str, caplog) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(timezone.utc)
    await seed_expired(own_database, now)
    pool = await asyncpg.create_pool(own_database, min_size=1, max_size=1)
    reader = await hold_reader(own_database, "ticks_history")
    try:
        caplog.set_level(logging.WARNING, logger=lifecycle.__name__)
        started = time.perf_counter()
        done = await lifecycle.maintain(pool, RETENTION, now)
        # One lock wait for the busy table, not one per partition.
        assert time.perf_counter() - started < 3
        skipped = [s for s in done.skipped if s.action == "drop"]
        assert len(skipped) >= 29 and {s.table for s in skipped} == {"ticks_history"}
        assert any(p.table == "ticks_raw" for p in done.dropped)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == lifecycle.__name__]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert f"{len(skipped)} to drop" in warnings[0].getMessage()
        assert "next round" in warnings[0].getMessage()
    finally:
        await reader.close()
        await pool.close()


async def seeded_and_expired(url: str) -> set[str]:
    """seed_expired now; the names of the partitions then expired under RETENTION."""
    now = datetime.now(timezone.utc)
    await seed_expired(url, now)
    conn = await asyncpg.connect(url)
    try:
        return {p.name for p in await lifecycle.expired(conn, RETENTION, now)}
    finally:
        await conn.close()


async def test_the_command_lists_what_it_could_not_drop_and_fails(own_database: str) -> None:
    expired = {name for name in await seeded_and_expired(own_database) if name.startswith("ticks_history_p")}
    reader = await hold_reader(own_database, "ticks_history")
    try:
        result = await asyncio.to_thread(retention_cli, own_database)
    finally:
        await reader.close()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    listed = {line.split()[3].rstrip(":") for line in result.stdout.splitlines() if line.startswith("could not drop ")}
    assert listed == expired, result.stdout
    assert f"a lock on ticks_history was not free within {lifecycle.PARTITION_LOCK_TIMEOUT} (held by pid " \
        in result.stdout, result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"marketdata retention: could not create 0 and drop {len(expired)} partition(s)"), last

    # Once the reader is gone, a run drops them and succeeds.
    again = await asyncio.to_thread(retention_cli, own_database)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {line.split()[1] for line in again.stdout.splitlines() if line.startswith("dropped ticks_history_p")} \
        == expired


async def test_a_listing_beside_a_round_dropping_partitions_succeeds(own_database: str) -> None:
    """A listing waits for the drop in progress, then lists what is left. It used to read the partition being
    dropped from its snapshot of before the drop (listing it without a size), or, as two `retention` commands
    at once did in CI, fail reading its size ("could not open relation with OID"), again for each next
    partition the other round dropped, until its retries ran out."""
    now = datetime.now(timezone.utc)
    await seed_expired(own_database, now)
    dropper, lister = await asyncpg.connect(own_database), await asyncpg.connect(own_database)
    try:
        oldest = (await lifecycle.partitions(lister, "ticks_history"))[:lifecycle.LIST_ATTEMPTS + 3]

        first_dropped = asyncio.Event()

        async def drop_slowly() -> None:  # as a round does, one partition per transaction, each taking a while
            for partition in oldest:
                async with dropper.transaction():
                    await dropper.execute(lifecycle.TURN_LOCK_SQL, partition.table)
                    await dropper.execute(f'ALTER TABLE ticks_history DETACH PARTITION "{partition.name}"')
                    await dropper.execute(f'DROP TABLE "{partition.name}"')
                    first_dropped.set()
                    await asyncio.sleep(0.1)

        dropping = asyncio.create_task(drop_slowly())
        await first_dropped.wait()  # the listing starts while the first drop is in progress
        listing = await lifecycle.partitions(lister, "ticks_history")
        await dropping
        # What the listing saw once the drop it met had ended: no partition already gone (without a size).
        gone = [p.name for p in oldest if p.name not in {q.name for q in listing}]
        assert gone and gone == [p.name for p in oldest[:len(gone)]], gone
        assert all(p.bytes is not None for p in listing), [p for p in listing if p.bytes is None]
        assert {p.name for p in await lifecycle.partitions(lister, "ticks_history")} == \
            {p.name for p in listing} - {p.name for p in oldest}
    finally:
        await dropper.close()
        await lister.close()


async def test_two_commands_at_once_both_succeed(own_database: str) -> None:
    expired = await seeded_and_expired(own_database)
    results = await asyncio.gather(*(asyncio.to_thread(retention_cli, own_database) for _ in range(2)))
    for result in results:
        assert result.returncode == 0, result.stdout + result.stderr
    dropped = [line.split()[1] for result in results for line in result.stdout.splitlines()
               if line.startswith("dropped ") and "_p" in line.split()[1]]
    assert sorted(dropped) == sorted(expired)


async def test_rows_in_default_partitions_are_reported(own_database: str) -> None:
    now = datetime.now(timezone.utc)
    conn = await asyncpg.connect(own_database)
    try:
        await conn.execute("INSERT INTO symbols (symbol, base, quote) VALUES ('DEFX', 'DEF', 'X')")
        # No partition for these: a tick of 1999, two of 100 days ago (a backfill), one of 2040.
        times = [datetime(1999, 1, 1, tzinfo=timezone.utc), now - timedelta(days=100),
                 now - timedelta(days=100, hours=1), datetime(2040, 1, 1, tzinfo=timezone.utc)]
        await conn.executemany("INSERT INTO ticks_history (symbol, trade_id, event_time, price, size) "
                               "VALUES ('DEFX', $1, $2, 1, 1)", [(f"d{n}", t) for n, t in enumerate(times)])
        await conn.execute("INSERT INTO ohlc_1m (symbol, bucket, open, high, low, close, volume, trades, turnover, "
                           "open_time, open_trade_id, close_time, close_trade_id) VALUES ('DEFX', $1, 1, 1, 1, 1, 1, "
                           "1, 1, $1, 'a', $1, 'a')", datetime(1999, 1, 1, tzinfo=timezone.utc))
        reports = {d.table: d for d in await lifecycle.default_rows(conn, RETENTION, now)}
        history = reports["ticks_history"]
        assert (history.rows, history.older, history.rows_estimated, history.older_estimated) == (4, 3, False, False)
        assert history.horizon == now - timedelta(days=30)
        assert (reports["ohlc_1m"].rows, reports["ohlc_1m"].older) == (1, 1)
        assert (reports["ticks_raw"].rows, reports["ticks_raw"].older) == (0, 0)
        forever = {d.table: d for d in await lifecycle.default_rows(conn, NO_RETENTION, now)}
        assert forever["ticks_history"].rows == 4 and forever["ticks_history"].older is None

        # A DEFAULT partition too large to count is estimated, from statistics and a sample.
        await conn.execute("ANALYZE ticks_history_default")
        exact_pages = lifecycle.EXACT_COUNT_PAGES
        lifecycle.EXACT_COUNT_PAGES = -1
        try:
            estimated = {d.table: d for d in await lifecycle.default_rows(conn, RETENTION, now)}["ticks_history"]
        finally:
            lifecycle.EXACT_COUNT_PAGES = exact_pages
        assert (estimated.rows, estimated.older, estimated.rows_estimated, estimated.older_estimated) \
            == (4, 3, True, True)
        # With an index leading with the partition key, the older rows are counted.
        await conn.execute("CREATE INDEX ticks_history_default_event_time ON ticks_history_default (event_time)")
        lifecycle.EXACT_COUNT_PAGES = -1
        try:
            indexed = {d.table: d for d in await lifecycle.default_rows(conn, RETENTION, now)}["ticks_history"]
        finally:
            lifecycle.EXACT_COUNT_PAGES = exact_pages
        assert (indexed.older, indexed.older_estimated) == (3, False)
    finally:
        await conn.close()

    for args in ((), ("--dry-run",)):
        result = await asyncio.to_thread(retention_cli, own_database, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if "_default: " in line}
        assert set(lines) == {"ticks_history_default", "ohlc_1m_default"}, result.stdout
        assert lines["ticks_history_default"].startswith(
            "ticks_history_default: 4 row(s), 3 older than its retention (before "), lines
        assert lines["ohlc_1m_default"].startswith("ohlc_1m_default: 1 row(s), 1 older than its retention"), lines


async def hold_exclusive(url: str, table: str) -> asyncpg.Connection:
    """A session holding `table` in ACCESS EXCLUSIVE mode (LOCK TABLE in an open transaction), as an operator's
    forgotten psql would."""
    locker = await asyncpg.connect(url)
    await locker.execute("BEGIN")
    await locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return locker


@pytest.mark.parametrize("locked", ["ticks_history_default", "ticks_history"])
async def test_an_exclusive_lock_makes_the_aggregators_round_skip_not_hang(own_database: str, locked: str) -> None:
    now = datetime.now(timezone.utc)
    # A pool as the aggregator's (its 30 s command_timeout is not what ends the round).
    pool = await create_pool(own_database, max_size=1, application_name="marketdata-aggregator")
    locker = await hold_exclusive(own_database, locked)
    try:
        started = time.perf_counter()
        done = await asyncio.wait_for(lifecycle.maintain(pool, RETENTION, now), 15)
        assert time.perf_counter() - started < 8
        assert {s.table for s in done.skipped} == {"ticks_history"}, done.skipped
        assert any(f"pid {locker.get_server_pid()}" in s.reason for s in done.skipped), done.skipped
        # The other tables were not held up: their partitions back to their horizon were made.
        assert {name.rsplit("_p", 1)[0] for name in done.created} == set(lifecycle.PARTITIONED) - {"ticks_history"}
    finally:
        await locker.close()
        await pool.close()


@pytest.mark.parametrize("locked", ["ticks_history_default", "ticks_history"])
async def test_an_exclusive_lock_makes_the_command_fail_with_one_line(own_database: str, locked: str) -> None:
    locker = await hold_exclusive(own_database, locked)
    try:
        pid = locker.get_server_pid()
        for args in (("--dry-run",), ()):
            started = time.perf_counter()
            result = await asyncio.to_thread(retention_cli, own_database, *args, timeout=30)
            assert time.perf_counter() - started < 15, args
            assert result.returncode == 1, result.stdout + result.stderr
            assert "Traceback" not in result.stderr, result.stderr
            last = result.stderr.strip().splitlines()[-1]
            assert last.startswith(f"marketdata retention: {locked} was locked (ACCESS EXCLUSIVE) by pid {pid}, "), last
            assert "LOCK TABLE" in last, last
            if args:
                assert result.stderr.strip() == last, result.stderr  # one line
    finally:
        await locker.close()
