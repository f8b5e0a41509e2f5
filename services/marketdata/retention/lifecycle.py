"""Partitions ahead and retention by whole partitions (docs/architecture.md, "Storage lifecycle").

ticks_raw and ticks_history are partitioned by UTC day, ohlc_1m, metrics_1m, ohlc_3m and ohlc_5m by UTC month,
each with a DEFAULT partition for rows outside the partitions that exist. The aggregator runs `maintain`
at start and every AGGREGATOR_MAINTENANCE_SECONDS: it creates the partitions of the next
PARTITIONS_AHEAD_DAYS days (rows of their range already in DEFAULT move into them) and drops the
partitions whose whole range is older than the table's retention. `marketdata retention --dry-run` lists
what would go.

Neither may stall reads or ingest: attaching a partition locks the DEFAULT partition, and detaching one the
parent, in ACCESS EXCLUSIVE mode, and while such a lock is waited for (behind a long query) every new query of
the table queues behind it. So each partition is created or dropped in a transaction of its own that waits at
most PARTITION_LOCK_TIMEOUT for its locks; a partition it could not lock is skipped this round (and the rest of
that table's, which would wait for the same lock), and reported in the round's `skipped`. Partitions are made
days ahead, so a skipped round costs nothing. Concurrent rounds (aggregator replicas, the command beside the
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

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import asyncpg

from marketdata.common.config import Settings

log = logging.getLogger(__name__)

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

# A DEFAULT partition of at most this many pages (8 kB) is counted exactly; a larger one without an index
# leading with the partition key is estimated (pg_class.reltuples, and a sample of SAMPLE_PAGES pages).
EXACT_COUNT_PAGES = 12_800  # 100 MB
SAMPLE_PAGES = 1_000

LIST_ATTEMPTS = 5

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


def retention_days(settings: Settings) -> dict[str, int]:
    """Days each partitioned table keeps (0: for ever)."""
    return {"ticks_raw": settings.retention_raw_days, "ticks_history": settings.retention_ticks_days,
            "ohlc_1m": settings.retention_minutes_days, "metrics_1m": settings.retention_minutes_days,
            "ohlc_3m": settings.retention_minutes_days, "ohlc_5m": settings.retention_minutes_days}


async def partitions(conn: asyncpg.Connection, table: str) -> list[Partition]:
    for attempt in range(LIST_ATTEMPTS):
        try:
            rows = await conn.fetch(PARTITIONS_SQL, table)
            break
        except asyncpg.InternalServerError as exc:
            # "could not open relation with OID n": a partition listed was dropped (by a concurrent round) before
            # its size was read. The list of a moment later no longer has it.
            if "could not open relation" not in str(exc) or attempt == LIST_ATTEMPTS - 1:
                raise
    return [Partition(table, r["name"], r["lo"], r["hi"], r["bytes"]) for r in rows]


async def expired(conn: asyncpg.Connection, settings: Settings, now: datetime) -> list[Partition]:
    """The partitions whose whole range ends at or before their table's horizon (now - retention)."""
    out = []
    for table, days in retention_days(settings).items():
        if days:
            horizon = now - timedelta(days=days)
            out += [p for p in await partitions(conn, table) if p.hi <= horizon]
    return out


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
    try:
        holders = await conn.fetch(LOCK_HOLDERS_SQL, relations)
    except asyncpg.PostgresError:  # a relation gone meanwhile: the reason is enough
        holders = []
    if holders:
        reason += " (held by " + "; ".join(
            f"pid {h['pid']}, {h['state'] or 'busy'} for {h['seconds']} s: {h['query']}" for h in holders) + ")"
    return reason


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
    """Creates the partitions from yesterday to PARTITIONS_AHEAD_DAYS after now; returns how many were new.
    Those whose lock was busy are added to result.skipped (with the rest of their table's)."""
    result = result if result is not None else Round()
    created = 0
    for table, step in PARTITIONED.items():
        existing = {p.name for p in await partitions(conn, table)}
        busy: str | None = None
        for lo, hi in ranges(step, now - timedelta(days=1), now + timedelta(days=settings.partitions_ahead_days)):
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
        for partition in await expired(conn, settings, now):
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
        creates = sum(s.action == "create" for s in result.skipped)
        log.warning(f"storage maintenance skipped {creates} partition(s) to create and "
                    f"{len(result.skipped) - creates} to drop: their tables were busy; trying again next round",
                    extra={"partitions": [s.name for s in result.skipped],
                           "reason": result.skipped[0].reason})
    return result


async def _partition_key(conn: asyncpg.Connection, table: str) -> tuple[str, int]:
    row = await conn.fetchrow(
        "SELECT a.attname, a.attnum FROM pg_partitioned_table p JOIN pg_attribute a "
        "ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] WHERE p.partrelid = $1::regclass", table)
    return row["attname"], row["attnum"]


async def default_rows(conn: asyncpg.Connection, settings: Settings, now: datetime) -> list[DefaultRows]:
    """Per partitioned table, the rows of its DEFAULT partition, in all and older than its retention horizon.

    Counted exactly when the partition is small (EXACT_COUNT_PAGES); else the total is pg_class.reltuples and the
    older ones are counted through an index leading with the partition key if the partition has one, or else
    estimated from a sample of SAMPLE_PAGES pages (rows_estimated, older_estimated)."""
    out = []
    days = retention_days(settings)
    for table in PARTITIONED:
        default = f"{table}_default"
        key, attnum = await _partition_key(conn, table)
        horizon = now - timedelta(days=days[table]) if days[table] else None
        stats = await conn.fetchrow("SELECT relpages, reltuples FROM pg_class WHERE oid = $1::regclass", default)
        pages = max(stats["relpages"], await conn.fetchval(
            "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::int", default))
        if pages <= EXACT_COUNT_PAGES:
            row = await conn.fetchrow(f'SELECT count(*) AS rows, count(*) FILTER (WHERE "{key}" < $1) AS older '
                                      f'FROM "{default}"', horizon)
            out.append(DefaultRows(table, default, row["rows"], row["older"] if horizon else None, horizon))
            continue
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
        out.append(DefaultRows(table, default, rows, older, horizon, rows_estimated=True,
                               older_estimated=horizon is not None and not indexed))
    return out
