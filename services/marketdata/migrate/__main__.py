"""`marketdata migrate [--wait SECONDS]`: apply the pending migrations to DATABASE_URL."""

from __future__ import annotations

import argparse
import asyncio
import sys

from marketdata.common.runner import command_settings, exit_if_database_unreachable
from marketdata.migrate.migrations import MigrationError, apply, migrations_directory, wait_for_database


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="marketdata migrate", description=__doc__)
    parser.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                        help="wait up to this long for PostgreSQL to accept connections")
    args = parser.parse_args(argv)
    settings = command_settings("migrate", database=True)
    dsn = settings.require_database_url()

    async def run() -> None:
        if args.wait:
            await wait_for_database(dsn, args.wait)
        applied = await apply(dsn, migrations_directory(settings.migrations_dir))
        print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.name}" for m in applied))

    try:
        with exit_if_database_unreachable("migrate", dsn):
            asyncio.run(run())
    except MigrationError as exc:
        sys.exit(f"marketdata migrate: {exc}")


if __name__ == "__main__":
    main()
