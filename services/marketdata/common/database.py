"""PostgreSQL pool, health check (reachable and migrated) and the mapping of connection failures to UNAVAILABLE."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

log = logging.getLogger(__name__)

# Errors that mean "PostgreSQL is not there right now", as opposed to a bad query.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)
# Any failure PostgreSQL causes, for checks and loops that retry: it is away, or it refused the statement (not
# migrated yet, a lock, a permission).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


async def create_pool(dsn: str, *, max_size: int, application_name: str,
                      server_settings: dict[str, str] | None = None, **kwargs: object) -> asyncpg.Pool:
    """A pool that connects lazily, so a service starts (NOT_SERVING) while PostgreSQL is still down.

    At most max_size connections (the service's share of the connection budget, DB_POOL_SIZE), each named
    application_name in pg_stat_activity so an operator can count them."""
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        max_inactive_connection_lifetime=60,
        command_timeout=30,
        server_settings={"application_name": application_name, **(server_settings or {})},
        **kwargs,  # type: ignore[arg-type]
    )


class SchemaCheck:
    """Answers whether PostgreSQL is reachable and has every migration this code knows of applied."""

    def __init__(self, pool: asyncpg.Pool, required_version: int) -> None:
        self.pool = pool
        self.required_version = required_version
        # Whether the schema was ever found current: enough for a process that only needs it at start.
        self.passed_once = False

    async def __call__(self) -> bool:
        try:
            async with asyncio.timeout(2):
                async with self.pool.acquire() as conn:
                    version = await conn.fetchval(
                        "SELECT coalesce(max(version), 0) FROM schema_migrations")
        except asyncpg.exceptions.UndefinedTableError:
            log.warning("database has no schema yet: run `marketdata migrate`")
            return False
        except DATABASE_ERRORS as exc:  # not ready
            log.warning("PostgreSQL unreachable", extra={"error": str(exc) or type(exc).__name__})
            return False
        if version < self.required_version:
            log.warning("database schema is behind", extra={"applied": version, "required": self.required_version})
            return False
        self.passed_once = True
        return True
