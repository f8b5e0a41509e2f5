"""`marketdata retention [--dry-run]`: create the partitions ahead and drop the expired ones now.

The aggregator does the same every AGGREGATOR_MAINTENANCE_SECONDS; this command runs one round by hand (or
from a CronJob) and, with --dry-run, only lists the partitions retention would drop."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timezone

import asyncpg

from marketdata.common.runner import command_settings, exit_if_database_unreachable
from marketdata.retention import lifecycle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="marketdata retention", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="list the expired partitions, change nothing")
    args = parser.parse_args(argv)
    settings = command_settings("retention", database=True)
    dsn = settings.require_database_url()
    days = lifecycle.retention_days(settings)
    print("retention: " + ", ".join(f"{table} {n} days" if n else f"{table} for ever" for table, n in days.items())
          + ", ohlc_15m, ohlc_30m, ohlc_1h, ohlc_2h, ohlc_4h, ohlc_6h and ohlc_1d for ever")

    async def run() -> None:
        now = datetime.now(timezone.utc)
        if args.dry_run:
            conn = await asyncpg.connect(dsn)
            try:
                expired = await lifecycle.expired(conn, settings, now)
            finally:
                await conn.close()
            verb = "would drop"
        else:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            try:
                created, expired = await lifecycle.maintain(pool, settings, now)
            finally:
                await pool.close()
            print(f"created {created} partition(s) ahead")
            verb = "dropped"
        for p in expired:
            print(f"{verb} {p.name}  [{p.lo:%Y-%m-%d %H:%M}, {p.hi:%Y-%m-%d %H:%M}) UTC  {p.bytes / 1e6:.1f} MB")
        print(f"{verb} {len(expired)} partition(s), {sum(p.bytes for p in expired) / 1e6:.1f} MB")

    with exit_if_database_unreachable("retention", dsn):
        asyncio.run(run())


if __name__ == "__main__":
    main()
