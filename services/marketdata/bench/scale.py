"""The `scale` phase: months of stored history, and what it costs ingest, GetHistory, disk and retention.

1. End-to-end ingest (PublishTicks → JetStream → aggregator) on the tables as they are (empty when the
   phase runs alone: `--phases scale`): the median of three runs, as every ingest figure of the phase.
2. Seeding: --scale-ticks synthetic ticks (default 100 million) over --scale-symbols symbols (100) and the
   --scale-days UTC days (90) before today, by COPY into each day's ticks_history partition (created by
   ensure_partition, as the aggregator does), rows in (symbol, time) order; then the minute rollups by the
   aggregator's Rebuild statement and the stored tiers by rebuild_tiers(), per symbol; VACUUM ANALYZE.
3. The same ingest again with all of that stored, then once more while retention drops the oldest day.
4. After a VACUUM ANALYZE of what the ingest runs wrote, GetHistory (500 candles + SMA10) over gRPC at every interval from 1m to 1w, in UTC and two other zones.
5. Disk per million ticks of each table.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

from marketdata.aggregator import rollup
from marketdata.bench import measure as m
from marketdata.bench.data import make_batches
from marketdata.retention import lifecycle

SCALE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
SCALE_CASES = [("ohlc1m", interval, "") for interval in SCALE_INTERVALS]
# A DST zone (hour tier) and a half-hour zone (minute tier).
SCALE_CASES += [("ohlc1m", interval, zone) for zone in ("Europe/Berlin", "Asia/Kolkata") for interval in ("1h", "1d", "1w")]
# The p99 target holds every interval to its slowest 1 %: taken over 3 interleaved passes (see query_latency).
HISTORY_PASSES = 3
TABLES = ("ticks_raw", "ticks_history", "ohlc_1m", "metrics_1m", *rollup.TIERS)
COPY_CHUNK_LINES = 20_000


def scale_symbols(count: int) -> list[str]:
    return [f"SC{i:03d}USD" for i in range(count)]


async def day_lines(day: datetime, symbols: list[str], per_symbol: int) -> AsyncIterator[bytes]:
    """COPY text rows of one day: per symbol, per_symbol ticks evenly over the day, in time order."""
    prefix = f"{day:%Y-%m-%d} "
    step = 86_400_000_000 // per_symbol
    stamp = f"{day:%Y%m%d}"
    for s, symbol in enumerate(symbols):
        lines = []
        for i in range(per_symbol):
            micros = i * step + s
            seconds, fraction = divmod(micros, 1_000_000)
            minutes, second = divmod(seconds, 60)
            hour, minute = divmod(minutes, 60)
            lines.append(f"{symbol}\t{stamp}-{i}\t{prefix}{hour:02d}:{minute:02d}:{second:02d}.{fraction:06d}+00\t"
                         f"{100 + s + (i * 7919 % 1000) / 100:.2f}\t{(i % 13 + 1) / 4:.4f}\t{1 + (i & 1)}\tscale\n")
            if len(lines) == COPY_CHUNK_LINES:
                yield "".join(lines).encode()
                lines = []
        if lines:
            yield "".join(lines).encode()
        await asyncio.sleep(0)


async def seed(database_url: str, ticks: int, symbols: list[str], days: int,
               log: Callable[[str], None]) -> dict[str, Any]:
    end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    per_symbol = max(1, -(-ticks // (days * len(symbols))))  # rounded up: at least `ticks` are seeded
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=2, command_timeout=3600)
    started = time.perf_counter()
    try:
        await pool.execute("INSERT INTO symbols (symbol, base, quote) SELECT s, left(s, 5), 'USD' "
                           "FROM unnest($1::text[]) s ON CONFLICT DO NOTHING", symbols)
        for table, step in lifecycle.PARTITIONED.items():
            if step == lifecycle.MONTHLY:
                await pool.execute("SELECT ensure_partitions($1, $2::text::interval, $3, $4)", table, step, start, end)

        async def copy_day(day: datetime) -> None:
            async with pool.acquire() as conn:
                await conn.execute("SELECT ensure_partition('ticks_history', $1, $2)", day, day + timedelta(days=1))
                await conn.copy_to_table(f"ticks_history_p{day:%Y%m%d}", source=day_lines(day, symbols, per_symbol),
                                         columns=("symbol", "trade_id", "event_time", "price", "size", "side", "source"),
                                         format="text")

        queue = [start + timedelta(days=d) for d in range(days)]
        for first in range(0, days, 2):  # two days at once: one generates while the other is parsed
            await asyncio.gather(*(copy_day(day) for day in queue[first:first + 2]))
            if (first // 2) % 10 == 0:
                log(f"scale: {min(first + 2, days)}/{days} days copied "
                    f"({time.perf_counter() - started:.0f}s)")
        copied = time.perf_counter() - started

        async def fold(symbol: str) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(rollup.REBUILD_INSERT, symbol, start, end)
                await conn.execute(rollup.REBUILD_TIERS, symbol, start, end)

        for first in range(0, len(symbols), 2):
            await asyncio.gather(*(fold(symbol) for symbol in symbols[first:first + 2]))
        folded = time.perf_counter() - started - copied
        log(f"scale: rollups built ({folded:.0f}s); vacuum analyze")
        async with pool.acquire() as conn:
            for table in TABLES:
                await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await pool.close()
    return {"ticks": per_symbol * len(symbols) * days, "symbols": len(symbols), "days": days,
            "from": start.isoformat(), "to": end.isoformat(), "copy_seconds": m._r(copied, 1),
            "copy_ticks_per_second": m._r(per_symbol * len(symbols) * days / copied, 0),
            "rollup_seconds": m._r(folded, 1), "seconds": m._r(time.perf_counter() - started, 1)}


async def disk(database_url: str) -> dict[str, Any]:
    """Bytes (heap + indexes + TOAST, all partitions) of each table, and per million stored ticks."""
    conn = await asyncpg.connect(database_url)
    try:
        ticks = await conn.fetchval("SELECT count(*) FROM ticks_history")
        raw = await conn.fetchval("SELECT count(*) FROM ticks_raw")
        out: dict[str, Any] = {"ticks_history_rows": ticks, "ticks_raw_rows": raw}
        for table in TABLES:
            # pg_partition_tree lists no rows for a table that is not partitioned (the tiers).
            size = await conn.fetchval("SELECT coalesce((SELECT sum(pg_total_relation_size(relid))::int8 "
                                       "FROM pg_partition_tree($1::regclass)), pg_total_relation_size($1::regclass))",
                                       table)
            rows = raw if table == "ticks_raw" else ticks
            out[table] = {"bytes": size, "mb_per_million_ticks": m._r(size / 1e6 / (rows / 1e6), 1) if rows else None}
        return out
    finally:
        await conn.close()


# Ingest runs per figure: a run lasts seconds, so one run is at the mercy of the machine; the median of three is
# less so. (The run during a retention drop is one run: the drop happens in it.)
INGEST_RUNS = 3


async def ingest(stack: Any, tag: str, symbols: list[str], ticks: int, clients: int, batch: int,
                 aggregator: m.Aggregator, sampler: m.Sampler, runs: int = INGEST_RUNS) -> dict[str, Any]:
    """`runs` end-to-end runs of `ticks` fresh ticks each; ticks_per_second is their median."""
    figures = []
    for run in range(runs):
        batches = make_batches(f"{tag}{run}", symbols, ticks, batch, seed=len(tag) + run)
        result = await m.end_to_end(f"scale_{tag}{run}", m.send_batched, stack.services["ingest"].address,
                                    [b.request_bytes() for b in batches], [len(b) for b in batches], clients,
                                    aggregator, sampler, timeout=max(60.0, ticks / 1000))
        figures.append(result["ticks_per_second"] or 0)
        await aggregator.wait_idle()
    return {"ticks_per_second": statistics.median(figures), "runs": figures, "ticks_per_run": ticks}


async def drop_oldest_day(database_url: str, after: float) -> dict[str, Any]:
    """Retention of one day: detaches and drops the oldest ticks_history partition, `after` seconds from now."""
    from marketdata.retention import lifecycle

    await asyncio.sleep(after)
    conn = await asyncpg.connect(database_url)
    attempts = 0
    try:
        oldest = (await lifecycle.partitions(conn, "ticks_history"))[0]
        while True:  # as the aggregator's next rounds would, sooner
            attempts += 1
            try:
                seconds = await lifecycle.drop(conn, oldest)
                break
            except asyncpg.LockNotAvailableError:
                await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return {"partition": oldest.name, "mb": m._r(oldest.bytes / 1e6, 1), "seconds": m._r(seconds, 3),
            "attempts": attempts}


async def run(stack: Any, args: Any, aggregator: m.Aggregator, sampler: m.Sampler,
              log: Callable[[str], None]) -> dict[str, Any]:
    ingest_symbols = [f"SI{i:02d}USD" for i in range(20)]
    await m.register_symbols(stack.services["ingest"].address, ingest_symbols)
    symbols = scale_symbols(args.scale_symbols)
    out: dict[str, Any] = {"scale": {"ticks": args.scale_ticks, "symbols": args.scale_symbols, "days": args.scale_days}}
    log(f"scale: e2e ingest of {args.scale_ingest_ticks:,} ticks before seeding")
    out["ingest_before"] = await ingest(stack, "SA", ingest_symbols, args.scale_ingest_ticks, args.clients, args.batch,
                                        aggregator, sampler)
    out["disk_before"] = await disk(stack.database_url)
    log(f"scale: seeding {args.scale_ticks:,} ticks, {args.scale_symbols} symbols, {args.scale_days} days")
    out["seed"] = await seed(stack.database_url, args.scale_ticks, symbols, args.scale_days, log)
    await m.settle_database(stack.database_url)
    log("scale: e2e ingest with the history stored")
    out["ingest_after"] = await ingest(stack, "SB", ingest_symbols, args.scale_ingest_ticks, args.clients, args.batch,
                                       aggregator, sampler)
    log("scale: e2e ingest while retention drops the oldest day")
    dropping = asyncio.create_task(drop_oldest_day(stack.database_url, 1.0))
    out["ingest_during_drop"] = await ingest(stack, "SC", ingest_symbols, args.scale_ingest_ticks, args.clients,
                                             args.batch, aggregator, sampler, runs=1)
    out["drop_day"] = await dropping
    before, after = out["ingest_before"]["ticks_per_second"], out["ingest_after"]["ticks_per_second"]
    during = out["ingest_during_drop"]["ticks_per_second"]
    out["ingest_ratio"] = m._r(after / before, 3) if before and after else None
    out["ingest_during_drop_ratio"] = m._r(during / after, 3) if after and during else None
    # As the query phase does: the ingest runs above leave autovacuum work that would otherwise land in the
    # middle of the latency measurement.
    out["settle_seconds"] = m._r(await m.settle_database(stack.database_url), 1)
    log(f"scale: GetHistory, {HISTORY_PASSES} passes of {args.query_requests} requests per case")
    out["history"] = await m.query_latency(stack.services["query"].address, None, args.query_requests,
                                           symbols=symbols, cases=SCALE_CASES, passes=HISTORY_PASSES)
    out["disk"] = await disk(stack.database_url)
    return out
