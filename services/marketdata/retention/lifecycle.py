"""Partitions ahead and retention by whole partitions (docs/architecture.md, "Storage lifecycle").

ticks_raw and ticks_history are partitioned by UTC day, ohlc_1m, metrics_1m, ohlc_3m and ohlc_5m by UTC month,
each with a DEFAULT partition for rows outside the partitions that exist. The aggregator runs `maintain`
at start and every AGGREGATOR_MAINTENANCE_SECONDS: it creates the missing partitions from the table's
retention horizon (the day or month containing now - its retention; yesterday for a table kept for ever) to
PARTITIONS_AHEAD_DAYS days ahead (rows of their range already in DEFAULT move into them), and drops the
partitions whose whole range is older than the table's retention. `marketdata retention --dry-run` lists
what would go. Creating from the horizon, not from yesterday, matters on a fresh install and after an outage
longer than PARTITIONS_AHEAD_DAYS: ingest accepts ticks of every day still kept (TickRules.earliest_event_seconds)
and Rebuild ranges from the oldest ticks_history partition on, so each such day needs its partition (rows of
DEFAULT are never dropped). A partition made so always ends after the horizon: it is not expired.

Neither may stall reads or ingest: attaching a partition locks the DEFAULT partition, and detaching one the
parent, in ACCESS EXCLUSIVE mode, and while such a lock is waited for (behind a long query) every new query of
the table queues behind it. So each partition is created or dropped in a transaction of its own that waits at
most PARTITION_LOCK_TIMEOUT for its locks; a partition it could not lock is skipped this round (and the rest of
that table's, which would wait for the same lock), and reported in the round's `skipped`. Partitions are made
days ahead, so a skipped round costs nothing. Reads (listing a table's partitions, which reads their sizes, and
counting DEFAULT rows) take ACCESS SHARE locks, which only an ACCESS EXCLUSIVE lock (LOCK TABLE, an ALTER
TABLE in progress) blocks: they wait at most READ_LOCK_TIMEOUT for it, then raise TableBusy naming the locked
table and the sessions holding it; a round skips that table (action "list"), the command exits 1. Concurrent rounds (aggregator replicas, the command beside the
aggregator) take turns per table on an advisory lock, the one ensure_partition() takes: a partition the other
round created or dropped meanwhile counts as done, not as an error.

Retention never outruns what a higher tier is built from: ticks are folded into ohlc_1m and every stored tier
in the transaction that stores them, so every tier of a period exists before its source can expire, and the
settings refuse minute rollups kept for less time than ticks (Rebuild recomputes minutes from ticks, and the
tiers from minutes). ohlc_3m and ohlc_5m are kept as long as the minutes; the tiers from 15 minutes up for
ever. Rows in DEFAULT partitions (far past or future ticks, days that had no partition yet) are never dropped:
`default_rows` counts them, in all and older than the table's retention, for the command to report.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import asyncpg

from marketdata.common.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Partitioned tables: partition length (as ensure_partitions takes it) and which retention setting applies.
DAILY, MONTHLY = "1 day", "1 month"
PARTITIONED = {"ticks_raw": DAILY, "ticks_history": DAILY, "ohlc_1m": MONTHLY, "metrics_1m": MONTHLY,
               "ohlc_3m": MONTHLY, "ohlc_5m": MONTHLY}

# Attaching needs the DEFAULT partition's ACCESS EXCLUSIVE lock, detaching the parent's, and while either waits
# (for a long reader, a commit in flight) new queries of the table queue behind it: waiting longer than this
# gives up until the next round rather than stall reads and ingest.
PARTITION_LOCK_TIMEOUT = "300ms"
# How long a round waits for another round's turn on the same table (the advisory lock below). That wait
# blocks no query: only the other round's own lock waits (PARTITION_LOCK_TIMEOUT) and row moves are in it.
# (Below the aggregator's command_timeout of 30 s.)
TURN_LOCK_TIMEOUT = "20s"
# The advisory lock of ensure_partition() (migration 0004): one creation or drop per table at a time.
TURN_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('marketdata partitions of ' || $1::text))"
# A listing holds it shared: a drop that another round starts meanwhile would fail the listing's read of the
# partition's size (and the next listing's, of the next partition that round drops).
LIST_TURN_SQL = "SELECT pg_advisory_xact_lock_shared(hashtext('marketdata partitions of ' || $1::text))"

# A DEFAULT partition of at most this many pages (8 kB) is counted exactly; a larger one without an index
# leading with the partition key is estimated (pg_class.reltuples, and a sample of SAMPLE_PAGES pages).
EXACT_COUNT_PAGES = 12_800  # 100 MB
SAMPLE_PAGES = 1_000

LIST_ATTEMPTS = 5

# How long a read of a table's partitions (their sizes) or of a DEFAULT partition waits for a lock held by
# another session before giving up with TableBusy (a round skips the table, the command exits 1): reads do not
# make others queue, so this may be longer than PARTITION_LOCK_TIMEOUT, but a round must not hang.
READ_LOCK_TIMEOUT = "3s"

# The range partitions of $1 with their bounds (the DEFAULT partition has none) and sizes.
PARTITIONS_SQL = r"""
SELECT c.relname AS name, b.bounds[1]::timestamptz AS lo, b.bounds[2]::timestamptz AS hi,
       pg_total_relation_size(c.oid) AS bytes
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                        'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS bounds) b
WHERE i.inhparent = $1::regclass AND b.bounds IS NOT NULL
ORDER BY lo
"""

# Sessions other than this one holding a granted lock on the relations $1 (for the report of a skipped partition).
LOCK_HOLDERS_SQL = """
SELECT DISTINCT a.pid, a.state, extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::int AS seconds,
       left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80) AS query
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.locktype = 'relation' AND l.relation = ANY($1::regclass[]) AND a.pid <> pg_backend_pid()
ORDER BY seconds DESC NULLS LAST
LIMIT 3
"""

# Sessions other than this one holding an ACCESS EXCLUSIVE lock (the one mode a read waits for) on the table $1
# or on one of its partitions: the table itself first, then its DEFAULT partition, then the longest held.
READ_BLOCKERS_SQL = """
SELECT l.relation::regclass::text AS relation, a.pid, a.state,
       extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::int AS seconds,
       left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80) AS query
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND a.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation IN (SELECT $1::regclass UNION ALL SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)
ORDER BY l.relation <> $1::regclass, l.relation::regclass::text <> $1 || '_default', seconds DESC NULLS LAST
"""


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    lo: datetime
    hi: datetime
    bytes: int


@dataclass(frozen=True)
class Skipped:
    """A partition a round could not create or drop (action "create" / "drop"), and why."""
    table: str
    name: str
    action: str
    reason: str


@dataclass(frozen=True)
class DefaultRows:
    """Rows of a table's DEFAULT partition: in all, and older than the table's retention horizon (None when the
    table is kept for ever). rows_estimated: rows is pg_class.reltuples, not a count; older_estimated: older is
    extrapolated from a sample of the partition's pages, not counted."""
    table: str
    partition: str
    rows: int
    older: int | None
    horizon: datetime | None
    rows_estimated: bool = False
    older_estimated: bool = False


@dataclass
class Round:
    """What a maintenance round did: partitions created, dropped, and skipped (to try again next round)."""
    created: list[str] = field(default_factory=list)
    dropped: list[Partition] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


class PartitionGone(LookupError):
    """The partition to drop is no longer there (a concurrent round dropped it)."""


class TableBusy(Exception):
    """A read of `table` (or of one of its partitions) waited READ_LOCK_TIMEOUT for a lock another session holds.
    str(): one line naming the locked table and, when still known, the session holding it."""

    def __init__(self, table: str, reason: str) -> None:
        super().__init__(reason)
        self.table = table
        self.reason = reason


async def _holders(conn: asyncpg.Connection, sql: str, *args: object) -> list[asyncpg.Record]:
    """The sessions holding the locks `sql` asks about, one row per session (none when they cannot be read)."""
    try:
        rows = await conn.fetch(sql, *args)
    except asyncpg.PostgresError:  # a relation gone meanwhile: the caller's reason is enough
        return []
    first: dict[int, asyncpg.Record] = {}
    for row in rows:
        first.setdefault(row["pid"], row)
    return list(first.values())[:3]


def _sessions(holders: list[asyncpg.Record]) -> str:
    return "; ".join(f"pid {h['pid']}, {h['state'] or 'busy'} for {h['seconds']} s: {h['query']}" for h in holders)


async def _read_blocked_reason(conn: asyncpg.Connection, table: str, what: str) -> str:
    holders = await _holders(conn, READ_BLOCKERS_SQL, table)
    if not holders:
        return (f"{table} (or one of its partitions) was locked, or its partitions were being created or dropped, "
                f"by another session for more than {READ_LOCK_TIMEOUT} while {what}")
    return (f"{holders[0]['relation']} was locked (ACCESS EXCLUSIVE) by {_sessions(holders)}; gave up {what} "
            f"after {READ_LOCK_TIMEOUT}")


async def _read(conn: asyncpg.Connection, table: str, what: str, read: Callable[[], Awaitable[T]]) -> T:
    """read() (queries of `table`, outside any transaction of the caller's) waiting at most READ_LOCK_TIMEOUT for
    each lock; TableBusy when one was not free."""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{READ_LOCK_TIMEOUT}'")
            return await read()
    except asyncpg.LockNotAvailableError as exc:
        raise TableBusy(table, await _read_blocked_reason(conn, table, what)) from exc


def retention_days(settings: Settings) -> dict[str, int]:
    """Days each partitioned table keeps (0: for ever)."""
    return {"ticks_raw": settings.retention_raw_days, "ticks_history": settings.retention_ticks_days,
            "ohlc_1m": settings.retention_minutes_days, "metrics_1m": settings.retention_minutes_days,
            "ohlc_3m": settings.retention_minutes_days, "ohlc_5m": settings.retention_minutes_days}


async def _list(conn: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    await conn.execute(LIST_TURN_SQL, table)
    return await conn.fetch(PARTITIONS_SQL, table)


async def partitions(conn: asyncpg.Connection, table: str) -> list[Partition]:
    """The range partitions of table, oldest first, once a creation or drop in progress ended. TableBusy when that
    or a lock another session holds on the table (or on a partition, whose size is read) took longer than
    READ_LOCK_TIMEOUT."""
    for attempt in range(LIST_ATTEMPTS):
        try:
            rows = await _read(conn, table, f"listing the partitions of {table}", lambda: _list(conn, table))
            break
        except asyncpg.InternalServerError as exc:
            # "could not open relation with OID n": a partition listed was dropped (by a session not taking turns,
            # such as a DROP by hand) before its size was read. The list of a moment later no longer has it.
            if "could not open relation" not in str(exc) or attempt == LIST_ATTEMPTS - 1:
                raise
    return [Partition(table, r["name"], r["lo"], r["hi"], r["bytes"]) for r in rows]


def horizon(settings: Settings, table: str, now: datetime) -> datetime | None:
    """now - the table's retention: its rows older than this may go; None when it is kept for ever."""
    days = retention_days(settings)[table]
    return now - timedelta(days=days) if days else None


async def expired(conn: asyncpg.Connection, settings: Settings, now: datetime, result: Round | None = None,
                  skip: Iterable[str] = ()) -> list[Partition]:
    """The partitions whose whole range ends at or before their table's horizon (now - retention), of the tables
    not in `skip`. A table that could not be listed (READ_LOCK_TIMEOUT) is added to result.skipped (action
    "list"); without a result, TableBusy."""
    found: list[Partition] = []
    for table in PARTITIONED:
        limit = horizon(settings, table, now)
        if table in skip or limit is None:
            continue
        try:
            found += [p for p in await partitions(conn, table) if p.hi <= limit]
        except TableBusy as exc:
            if result is None:
                raise
            result.skipped.append(Skipped(table, table, "list", exc.reason))
    return found


def first_kept(settings: Settings, table: str, now: datetime) -> datetime:
    """Where the partitions a round makes for table start (in the day or month containing it): its horizon, so
    every day or month whose rows are kept has one, or yesterday for a table kept for ever. The partition
    containing it ends after the horizon, so expired() never lists it in the same round."""
    return min(horizon(settings, table, now) or now, now - timedelta(days=1))


def partition_name(table: str, step: str, lo: datetime) -> str:
    """ensure_partition()'s name of the partition starting at lo: <table>_pYYYYMMDD, or _pYYYYMM by month."""
    return f"{table}_p{lo:%Y%m}" if step == MONTHLY else f"{table}_p{lo:%Y%m%d}"


def ranges(step: str, lo: datetime, hi: datetime) -> list[tuple[datetime, datetime]]:
    """The UTC days (months) overlapping [lo, hi), as ensure_partitions() walks them."""
    lo = lo.astimezone(timezone.utc)
    t = datetime(lo.year, lo.month, 1 if step == MONTHLY else lo.day, tzinfo=timezone.utc)
    out = []
    while t < hi:
        following = (t + timedelta(days=32)).replace(day=1) if step == MONTHLY else t + timedelta(days=1)
        out.append((t, following))
        t = following
    return out


async def _take_turn(conn: asyncpg.Connection, table: str) -> None:
    """In a transaction: waits (at most TURN_LOCK_TIMEOUT) for other rounds' work on `table`, then limits the lock
    waits of what follows to PARTITION_LOCK_TIMEOUT."""
    await conn.execute(f"SET LOCAL lock_timeout = '{TURN_LOCK_TIMEOUT}'")
    try:
        await conn.execute(TURN_LOCK_SQL, table)
    except asyncpg.LockNotAvailableError as exc:
        exc.marketdata_reason = f"another maintenance round kept working on {table} for {TURN_LOCK_TIMEOUT}"
        raise
    await conn.execute(f"SET LOCAL lock_timeout = '{PARTITION_LOCK_TIMEOUT}'")


async def _busy_reason(conn: asyncpg.Connection, exc: asyncpg.LockNotAvailableError, relations: list[str]) -> str:
    """Why a lock was not had: the sessions holding locks on the relations now, when there are any."""
    if getattr(exc, "marketdata_reason", None):
        return exc.marketdata_reason  # type: ignore[no-any-return]
    reason = f"a lock on {relations[-1]} was not free within {PARTITION_LOCK_TIMEOUT}"
    holders = await _holders(conn, LOCK_HOLDERS_SQL, relations)
    return f"{reason} (held by {_sessions(holders)})" if holders else reason


async def create(conn: asyncpg.Connection, table: str, lo: datetime, hi: datetime) -> bool:
    """Creates the partition of table for [lo, hi) unless it exists (rows of it in DEFAULT move into it); True
    when this call made it. Raises LockNotAvailableError when a lock was not free within PARTITION_LOCK_TIMEOUT."""
    try:
        async with conn.transaction():
            await _take_turn(conn, table)
            return bool(await conn.fetchval("SELECT ensure_partition($1, $2, $3)", table, lo, hi))
    except asyncpg.DuplicateTableError:  # made meanwhile by a round that does not take turns (an older version)
        return False


async def drop(conn: asyncpg.Connection, partition: Partition) -> float:
    """Detaches and drops one partition; returns the seconds it took. Raises LockNotAvailableError when a lock was
    not free within PARTITION_LOCK_TIMEOUT, PartitionGone when it was dropped meanwhile (by another round)."""
    started = time.perf_counter()
    try:
        async with conn.transaction():
            await _take_turn(conn, partition.table)
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", partition.name):
                raise PartitionGone(partition.name)
            await conn.execute(f'ALTER TABLE "{partition.table}" DETACH PARTITION "{partition.name}"')
            await conn.execute(f'DROP TABLE "{partition.name}"')
    except asyncpg.UndefinedTableError as exc:  # by a round that does not take turns (an older version)
        raise PartitionGone(partition.name) from exc
    return time.perf_counter() - started


async def ensure_ahead(conn: asyncpg.Connection, settings: Settings, now: datetime,
                       result: Round | None = None) -> int:
    """Creates the missing partitions from the table's horizon (first_kept: yesterday for a table kept for ever)
    to PARTITIONS_AHEAD_DAYS after now, oldest first (rows of their range move out of DEFAULT); returns how many
    were new. Those whose lock was busy are added to result.skipped (with the rest of their table's); a table
    that could not be listed too (action "list")."""
    result = result if result is not None else Round()
    created = 0
    for table, step in PARTITIONED.items():
        try:
            existing = {p.name for p in await partitions(conn, table)}
        except TableBusy as exc:
            result.skipped.append(Skipped(table, table, "list", exc.reason))
            continue
        busy: str | None = None
        for lo, hi in ranges(step, first_kept(settings, table, now),
                             now + timedelta(days=settings.partitions_ahead_days)):
            name = partition_name(table, step, lo)
            if name in existing:
                continue
            if busy is not None:
                result.skipped.append(Skipped(table, name, "create", busy))
                continue
            try:
                if await create(conn, table, lo, hi):
                    created += 1
                    result.created.append(name)
            except asyncpg.LockNotAvailableError as exc:
                if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
                    continue  # made by another round
                reason = await _busy_reason(conn, exc, [table, f"{table}_default"])
                result.skipped.append(Skipped(table, name, "create", reason))
                busy = f"not tried: {table} was busy ({name} could not be created)"
    return created


async def maintain(pool: asyncpg.Pool, settings: Settings, now: datetime) -> Round:
    """Partitions ahead, then retention: what was created, dropped and skipped (logged with one warning)."""
    result = Round()
    async with pool.acquire() as conn:
        await ensure_ahead(conn, settings, now, result)
        busy: dict[str, str] = {}
        unlisted = {s.table for s in result.skipped if s.action == "list"}  # not waited for twice in a round
        for partition in await expired(conn, settings, now, result, skip=unlisted):
            if partition.table in busy:
                result.skipped.append(Skipped(partition.table, partition.name, "drop", busy[partition.table]))
                continue
            try:
                seconds = await drop(conn, partition)
            except PartitionGone:
                continue  # dropped by another round
            except asyncpg.LockNotAvailableError as exc:
                if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", partition.name):
                    continue  # dropped by another round
                reason = await _busy_reason(conn, exc, [partition.table])
                result.skipped.append(Skipped(partition.table, partition.name, "drop", reason))
                busy[partition.table] = f"not tried: {partition.table} was busy ({partition.name} could not be dropped)"
                continue
            result.dropped.append(partition)
            log.info("dropped expired partition", extra={"partition": partition.name, "bytes": partition.bytes,
                                                         "seconds": round(seconds, 3)})
    if result.created:
        log.info("created partitions ahead", extra={"partitions": len(result.created)})
    if result.skipped:
        log.warning(f"storage maintenance skipped {skipped_summary(result)}: their tables were busy; "
                    "trying again next round",
                    extra={"partitions": [s.name for s in result.skipped],
                           "reason": result.skipped[0].reason})
    return result


def skipped_summary(result: Round) -> str:
    """'N partition(s) to create and M to drop' (', and the partitions of K table(s) it could not list')."""
    count = {action: sum(s.action == action for s in result.skipped) for action in ("create", "drop", "list")}
    text = f"{count['create']} partition(s) to create and {count['drop']} to drop"
    if count["list"]:
        unlisted = ", ".join(s.table for s in result.skipped if s.action == "list")
        text += f", and the partitions of {count['list']} table(s) it could not list ({unlisted})"
    return text


async def _partition_key(conn: asyncpg.Connection, table: str) -> tuple[str, int]:
    row = await conn.fetchrow(
        "SELECT a.attname, a.attnum FROM pg_partitioned_table p JOIN pg_attribute a "
        "ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] WHERE p.partrelid = $1::regclass", table)
    return row["attname"], row["attnum"]


async def default_rows(conn: asyncpg.Connection, settings: Settings, now: datetime,
                       tables: Iterable[str] = tuple(PARTITIONED)) -> list[DefaultRows]:
    """Per partitioned table (of `tables`), the rows of its DEFAULT partition, in all and older than its retention
    horizon. TableBusy when a lock on a DEFAULT partition was not free within READ_LOCK_TIMEOUT.

    Counted exactly when the partition is small (EXACT_COUNT_PAGES); else the total is pg_class.reltuples and the
    older ones are counted through an index leading with the partition key if the partition has one, or else
    estimated from a sample of SAMPLE_PAGES pages (rows_estimated, older_estimated)."""
    out = []
    for table in tables:
        out.append(await _read(conn, table, f"counting the rows of {table}_default",
                               functools.partial(_default_rows_of, conn, table, horizon(settings, table, now))))
    return out


async def _default_rows_of(conn: asyncpg.Connection, table: str, horizon: datetime | None) -> DefaultRows:
    default = f"{table}_default"
    key, attnum = await _partition_key(conn, table)
    stats = await conn.fetchrow("SELECT relpages, reltuples FROM pg_class WHERE oid = $1::regclass", default)
    pages = max(stats["relpages"], await conn.fetchval(
        "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::int", default))
    if pages <= EXACT_COUNT_PAGES:
        row = await conn.fetchrow(f'SELECT count(*) AS rows, count(*) FILTER (WHERE "{key}" < $1) AS older '
                                  f'FROM "{default}"', horizon)
        return DefaultRows(table, default, row["rows"], row["older"] if horizon else None, horizon)
    rows = max(int(stats["reltuples"]), 0)  # -1: never analyzed
    indexed = await conn.fetchval("SELECT EXISTS (SELECT FROM pg_index WHERE indrelid = $1::regclass "
                                  "AND indisvalid AND indkey[0] = $2)", default, attnum)
    older: int | None = None
    if horizon is not None and indexed:
        older = await conn.fetchval(f'SELECT count(*) FROM "{default}" WHERE "{key}" < $1', horizon)
    elif horizon is not None:
        percent = min(100.0, 100.0 * SAMPLE_PAGES / max(pages, 1))
        sample = await conn.fetchrow(
            f'SELECT count(*) AS n, count(*) FILTER (WHERE "{key}" < $1) AS older '
            f'FROM "{default}" TABLESAMPLE SYSTEM ($2)', horizon, percent)
        rows = rows or round(sample["n"] * 100.0 / percent)
        older = round(sample["older"] / max(sample["n"], 1) * rows)
    return DefaultRows(table, default, rows, older, horizon, rows_estimated=True,
                       older_estimated=horizon is not None and not indexed)
