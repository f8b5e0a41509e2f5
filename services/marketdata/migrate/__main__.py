"""`marketdata migrate [--wait SECONDS]`: apply the pending migrations to DATABASE_URL.

A database that has migrations the directory does not know (migrated by a newer marketdata, e.g. after a
rollback of the code) gets a warning naming them on stderr; the exit code stays 0, as the services of this
version run on a newer schema (they need at least their own), and a rollback must not fail on it."""

from __future__ import annotations

import argparse
import asyncio
import sys

from marketdata.common.runner import command_settings, exit_if_database_unreachable
from marketdata.migrate.migrations import (Applied, MigrationError, apply, migrations_directory, unknown_message,
                                           wait_for_database)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="marketdata migrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                        help="wait up to this long for PostgreSQL to accept connections")
    args = parser.parse_args(argv)
    settings = command_settings("migrate", database=True)
    dsn = settings.require_database_url()

    async def run() -> None:
        if args.wait:
            await wait_for_database(dsn, args.wait)
        directory = migrations_directory(settings.migrations_dir)
        unknown: list[Applied] = []
        applied = await apply(dsn, directory, unknown)
        print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.name}" for m in applied))
        if unknown:
            print(f"marketdata migrate: warning: {unknown_message(unknown, directory)}", file=sys.stderr)

    try:
        with exit_if_database_unreachable("migrate", dsn):
            asyncio.run(run())
    except MigrationError as exc:
        sys.exit(f"marketdata migrate: {exc}")


if __name__ == "__main__":
    main()
