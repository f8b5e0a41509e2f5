"""NATS connection that survives outages, and the JetStream streams the platform relies on."""

from __future__ import annotations

import asyncio
import logging

import nats
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError

from marketdata.common.config import Settings

log = logging.getLogger(__name__)

# How long JetStream remembers a Nats-Msg-Id: a client retrying a batch within this window is not stored twice.
DUPLICATE_WINDOW_SECONDS = 120.0
TICKS_MAX_AGE_SECONDS = 7 * 24 * 3600.0


class NatsConnection:
    """Keeps one connection to NATS: connects in the background until it succeeds, then reconnects forever."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.client: NATS | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_until_done(), name=f"nats-connect-{self.name}")

    async def _connect_until_done(self) -> None:
        delay = 0.2
        while True:
            try:
                self.client = await nats.connect(
                    self.url,
                    name=self.name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                self._connected.set()
                log.info("connected to NATS", extra={"url": self.url})
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "try again"
                log.warning("NATS unreachable, retrying", extra={"url": self.url, "error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS error", extra={"error": str(exc)})

    async def _on_disconnected(self) -> None:
        log.warning("disconnected from NATS")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")

    @property
    def is_connected(self) -> bool:
        return self.client is not None and self.client.is_connected

    async def wait_connected(self, timeout: float | None = None) -> NATS:
        await asyncio.wait_for(self._connected.wait(), timeout)
        assert self.client is not None
        return self.client

    async def close(self) -> None:
        """Flushes what was published and closes. Called after the server drained its calls, so no
        subscription has work left; draining them (a pull subscription never drains) would only wait."""
        if self._task and not self._task.done():
            self._task.cancel()
        if self.client is not None and not self.client.is_closed:
            try:
                if self.client.is_connected:
                    await self.client.flush(timeout=2)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            await self.client.close()


async def ensure_streams(client: NATS, settings: Settings) -> None:
    """Creates or updates the ticks stream (file storage, per-symbol subjects, publish dedup) and the dead-letter stream."""
    js = client.jetstream()
    wanted = [
        api.StreamConfig(
            name=settings.stream,
            subjects=[f"{settings.ticks_subject_prefix}.>"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_age=TICKS_MAX_AGE_SECONDS,
            discard=api.DiscardPolicy.OLD,
        ),
        api.StreamConfig(
            name=settings.deadletter_stream,
            subjects=[settings.deadletter_subject],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=30 * 24 * 3600.0,
        ),
    ]
    for config in wanted:
        try:
            await js.stream_info(config.name)  # type: ignore[arg-type]
            await js.update_stream(config)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:
                # Another replica created it between our look and our add.
                await js.update_stream(config)
