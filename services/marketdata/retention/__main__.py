"""`marketdata retention [--dry-run]`: create the partitions ahead and drop the expired ones now.

The aggregator does the same every AGGREGATOR_MAINTENANCE_SECONDS; this command runs one round by hand (or
from a CronJob) and, with --dry-run, only lists the partitions retention would drop. Both also report the rows
of each DEFAULT partition (rows of days or months without a partition, which retention never drops): in all,
and older than the table's retention.

Exit status: 0 when every partition due was created or dropped; 1 when some could not be (each is listed with
why: a lock a long query or transaction held on its table past 300 ms; run the command again once it ended),
when a table could not even be read (listing its partitions, counting its DEFAULT rows) because another session
held an ACCESS EXCLUSIVE lock on it for more than 3 s (one line names the table and the session), when the
database schema is older than this version of marketdata needs (run `marketdata migrate`), or when
PostgreSQL cannot be reached; 141 (128 + SIGPIPE, as a shell tool killed by SIGPIPE), without a message, when
its output was closed before it was all written (`marketdata retention --dry-run | head -1`): the round may not
have been completed."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timezone

import asyncpg

from marketdata.common.runner import command_settings, exit_if_database_unreachable
from marketdata.migrate.migrations import (MigrationError, latest_version, migrations_directory,
                                           schema_behind_message, schema_version)
from marketdata.retention import lifecycle


def default_line(d: lifecycle.DefaultRows) -> str:
    rows = f"~{d.rows:,} row(s) (estimated from pg_class.reltuples)" if d.rows_estimated else f"{d.rows:,} row(s)"
    if d.horizon is None:
        return f"{d.partition}: {rows}, kept for ever"
    older = f"~{d.older:,} (estimated from a sample)" if d.older_estimated else f"{d.older:,}"
    return (f"{d.partition}: {rows}, {older} older than its retention (before {d.horizon:%Y-%m-%d %H:%M} UTC); "
            "retention never drops DEFAULT rows")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="marketdata retention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="list the expired partitions, change nothing")
    args = parser.parse_args(argv)
    settings = command_settings("retention", database=True)
    dsn = settings.require_database_url()
    try:
        required = latest_version(migrations_directory(settings.migrations_dir))
    except MigrationError as exc:
        sys.exit(f"marketdata retention: {exc}")
    days = lifecycle.retention_days(settings)

    async def run() -> str | None:
        """The round; the line to exit with when it was not all done."""
        now = datetime.now(timezone.utc)
        conn = await asyncpg.connect(dsn)
        try:
            behind = schema_behind_message("retention", await schema_version(conn), required)
            if behind:
                return behind
            print("retention: " + ", ".join(f"{table} {n} days" if n else f"{table} for ever"
                                            for table, n in days.items())
                  + ", ohlc_15m, ohlc_30m, ohlc_1h, ohlc_2h, ohlc_4h, ohlc_6h and ohlc_1d for ever")
            if args.dry_run:
                done = lifecycle.Round()
                done.dropped = await lifecycle.expired(conn, settings, now, done)
                verb = "would drop"
            else:
                pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
                try:
                    done = await lifecycle.maintain(pool, settings, now)
                finally:
                    await pool.close()
                print(f"created {len(done.created)} partition(s) ahead")
                verb = "dropped"
            for p in done.dropped:
                print(f"{verb} {p.name}  [{p.lo:%Y-%m-%d %H:%M}, {p.hi:%Y-%m-%d %H:%M}) UTC  {p.bytes / 1e6:.1f} MB")
            print(f"{verb} {len(done.dropped)} partition(s), {sum(p.bytes for p in done.dropped) / 1e6:.1f} MB")
            for s in done.skipped:
                print(f"could not {s.action} {s.name}: {s.reason}")
            unlisted = [s for s in done.skipped if s.action == "list"]
            try:  # (not waiting twice for a table already found locked)
                defaults = await lifecycle.default_rows(
                    conn, settings, now, [t for t in lifecycle.PARTITIONED if t not in {s.table for s in unlisted}])
            except lifecycle.TableBusy as exc:
                return f"marketdata retention: {exc}; run it again once that session ended"
        finally:
            await conn.close()
        in_default = [d for d in defaults if d.rows or d.rows_estimated]
        for d in in_default:
            print(default_line(d))
        if not in_default and not unlisted:
            print("DEFAULT partitions: empty")
        if len(unlisted) == 1 and len(done.skipped) == 1:
            return f"marketdata retention: {unlisted[0].reason}; run it again once that session ended"
        if done.skipped:
            creates = sum(s.action == "create" for s in done.skipped)
            drops = sum(s.action == "drop" for s in done.skipped)
            listing = f" and list the partitions of {len(unlisted)} table(s)" if unlisted else ""
            return (f"marketdata retention: could not create {creates} and drop {drops} partition(s){listing}, "
                    "listed above: their tables were busy; run it again once the sessions holding them ended")
        return None

    with exit_if_database_unreachable("retention", dsn):
        failure = asyncio.run(run())
    if failure:
        sys.exit(failure)


if __name__ == "__main__":
    main()
