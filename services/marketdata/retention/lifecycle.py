"""Partitions ahead and retention by whole partitions (docs/architecture.md, "Storage lifecycle").

ticks_raw and ticks_history are partitioned by UTC day, ohlc_1m, metrics_1m, ohlc_3m and ohlc_5m by UTC month,
each with a DEFAULT partition for rows outside the partitions that exist. The aggregator runs `maintain`
at start and every AGGREGATOR_MAINTENANCE_SECONDS: it creates the partitions of the next
PARTITIONS_AHEAD_DAYS days (rows of their range already in DEFAULT move into them) and drops the
partitions whose whole range is older than the table's retention. `marketdata retention --dry-run` lists
what would go.

Retention never outruns what a higher tier is built from: ticks are folded into ohlc_1m and every stored tier
in the transaction that stores them, so every tier of a period exists before its source can expire, and the
settings refuse minute rollups kept for less time than ticks (Rebuild recomputes minutes from ticks, and the
tiers from minutes). ohlc_3m and ohlc_5m are kept as long as the minutes; the tiers from 15 minutes up for
ever; rows in DEFAULT partitions (far past or future ticks) are never dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from marketdata.common.config import Settings

log = logging.getLogger(__name__)

# Partitioned tables: partition length (as ensure_partitions takes it) and which retention setting applies.
DAILY, MONTHLY = "1 day", "1 month"
PARTITIONED = {"ticks_raw": DAILY, "ticks_history": DAILY, "ohlc_1m": MONTHLY, "metrics_1m": MONTHLY,
               "ohlc_3m": MONTHLY, "ohlc_5m": MONTHLY}

# Detaching needs the parent's ACCESS EXCLUSIVE lock, and while it waits for a commit in flight, new commits
# queue behind it: waiting longer than this gives up until the next round rather than stall ingest.
DROP_LOCK_TIMEOUT = "300ms"

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


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    lo: datetime
    hi: datetime
    bytes: int


def retention_days(settings: Settings) -> dict[str, int]:
    """Days each partitioned table keeps (0: for ever)."""
    return {"ticks_raw": settings.retention_raw_days, "ticks_history": settings.retention_ticks_days,
            "ohlc_1m": settings.retention_minutes_days, "metrics_1m": settings.retention_minutes_days,
            "ohlc_3m": settings.retention_minutes_days, "ohlc_5m": settings.retention_minutes_days}


async def partitions(conn: asyncpg.Connection, table: str) -> list[Partition]:
    return [Partition(table, r["name"], r["lo"], r["hi"], r["bytes"]) for r in await conn.fetch(PARTITIONS_SQL, table)]


async def expired(conn: asyncpg.Connection, settings: Settings, now: datetime) -> list[Partition]:
    """The partitions whose whole range ends at or before their table's horizon (now - retention)."""
    out = []
    for table, days in retention_days(settings).items():
        if days:
            horizon = now - timedelta(days=days)
            out += [p for p in await partitions(conn, table) if p.hi <= horizon]
    return out


async def drop(conn: asyncpg.Connection, partition: Partition) -> float:
    """Detaches and drops one partition; returns the seconds it took."""
    started = time.perf_counter()
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
        await conn.execute(f'ALTER TABLE "{partition.table}" DETACH PARTITION "{partition.name}"')
        await conn.execute(f'DROP TABLE "{partition.name}"')
    return time.perf_counter() - started


async def ensure_ahead(conn: asyncpg.Connection, settings: Settings, now: datetime) -> int:
    """Creates the partitions from yesterday to PARTITIONS_AHEAD_DAYS after now; returns how many were new."""
    created = 0
    for table, step in PARTITIONED.items():
        created += await conn.fetchval("SELECT ensure_partitions($1, $2::text::interval, $3, $4)", table, step,
                                       now - timedelta(days=1), now + timedelta(days=settings.partitions_ahead_days))
    return created


async def maintain(pool: asyncpg.Pool, settings: Settings, now: datetime) -> tuple[int, list[Partition]]:
    """Partitions ahead, then retention: (partitions created, partitions dropped)."""
    async with pool.acquire() as conn:
        created = await ensure_ahead(conn, settings, now)
        dropped = []
        for partition in await expired(conn, settings, now):
            try:
                seconds = await drop(conn, partition)
            except asyncpg.LockNotAvailableError:
                log.warning("partition busy, dropping it next round", extra={"partition": partition.name})
                continue
            dropped.append(partition)
            log.info("dropped expired partition", extra={"partition": partition.name, "bytes": partition.bytes,
                                                         "seconds": round(seconds, 3)})
    if created:
        log.info("created partitions ahead", extra={"partitions": created})
    return created, dropped
