"""The symbol registry, cached in memory: reloaded on PostgreSQL NOTIFY (any replica's upsert) and periodically."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from marketdata.common.database import DATABASE_ERRORS
from marketdata.common.runner import sleep_unless

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "marketdata_symbols"
# The periodic reload also covers notifications missed while the listening connection was down.
REFRESH_SECONDS = 30.0


class SymbolRegistry:
    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn
        self._active: dict[str, bool] = {}
        self._changed = asyncio.Event()
        self.loaded = False

    def status(self, symbol: str) -> bool | None:
        """True if active, False if inactive, None if unknown."""
        return self._active.get(symbol)

    async def reload(self) -> None:
        rows = await self.pool.fetch("SELECT symbol, active FROM symbols")
        self._active = {row["symbol"]: row["active"] for row in rows}
        self.loaded = True

    async def run(self) -> None:
        """Keeps the cache fresh for the life of the service."""
        while True:
            listener: asyncpg.Connection | None = None
            try:
                listener = await asyncpg.connect(self.dsn, timeout=5,
                                                 server_settings={"application_name": "marketdata-ingest-listen"})
                await listener.add_listener(NOTIFY_CHANNEL, lambda *_: self._changed.set())
                await self.reload()
                while not listener.is_closed():
                    await sleep_unless(self._changed, REFRESH_SECONDS)
                    self._changed.clear()
                    await self.reload()
            except DATABASE_ERRORS as exc:  # PostgreSQL away or not migrated yet: keep the cache, try again
                log.warning("symbol registry refresh failed", extra={"error": str(exc) or type(exc).__name__})
                await asyncio.sleep(1)
            finally:
                if listener is not None:
                    listener.terminate()
