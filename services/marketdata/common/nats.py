"""NATS connection that survives outages, and the JetStream streams the platform relies on."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError

from marketdata.common.config import Settings

log = logging.getLogger(__name__)

# How long JetStream remembers a Nats-Msg-Id: a client retrying a batch within this window is not stored twice.
DUPLICATE_WINDOW_SECONDS = 120.0
DEADLETTER_MAX_AGE_SECONDS = 30 * 24 * 3600.0

# What a NATS or JetStream call raises when NATS is away, JetStream refuses or a call times out: nats.errors.Error
# (nats.js.errors.Error derives from it), OSError from the socket, asyncio.TimeoutError from wait_connected.
NATS_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, OSError, asyncio.TimeoutError)


class NatsConnection:
    """Keeps one connection to NATS: connects in the background until it succeeds, then reconnects forever."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.client: NATS | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Called after each reconnect: what was published to core subjects meanwhile is lost.
        self.reconnect_listeners: list[Callable[[], None]] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_until_done(), name=f"nats-connect-{self.name}")

    async def _connect_until_done(self) -> None:
        # With max_reconnect_attempts=-1, connect() itself retries the first connection for ever (reporting each
        # failure to error_cb, see _on_error) and only returns connected.
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

    async def _on_error(self, exc: Exception) -> None:
        if self.is_connected:
            log.debug("NATS error", extra={"error": str(exc) or type(exc).__name__})
        else:  # a failed (re)connection attempt; the log's repeat filter keeps this to one line per interval
            log.warning("NATS unreachable, retrying", extra={"url": self.url, "error": str(exc) or type(exc).__name__})

    async def _on_disconnected(self) -> None:
        log.warning("disconnected from NATS")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        for listener in self.reconnect_listeners:
            listener()

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
            with contextlib.suppress(NATS_ERRORS):  # connection lost or flush timed out: closing anyway
                if self.client.is_connected:
                    await self.client.flush(timeout=2)
            await self.client.close()


def wanted_streams(settings: Settings) -> list[api.StreamConfig]:
    """The ticks stream (file storage, per-symbol subjects, publish dedup) and the dead-letter stream, as the
    settings describe them (MD_STREAM_REPLICAS, MD_STREAM_MAX_BYTES, MD_STREAM_MAX_AGE_SECONDS, ...)."""
    return [
        api.StreamConfig(
            name=settings.stream,
            subjects=[f"{settings.ticks_subject_prefix}.>"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_age=settings.stream_max_age_seconds,
            max_bytes=settings.stream_max_bytes,
            num_replicas=settings.stream_replicas,
            discard=api.DiscardPolicy.OLD,
        ),
        api.StreamConfig(
            name=settings.deadletter_stream,
            subjects=[settings.deadletter_subject],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=DEADLETTER_MAX_AGE_SECONDS,
            max_bytes=settings.deadletter_max_bytes,
            num_replicas=settings.stream_replicas,
        ),
    ]


def _unlimited(value: float | int | None) -> bool:
    return value is None or value <= 0


def reconcile(existing: api.StreamConfig, wanted: api.StreamConfig) -> tuple[dict[str, object], list[str]]:
    """What the services may change on an existing stream, and the differences they leave alone.

    Only what makes the stream work or safer: subjects it lacks, more replicas, a byte or age limit where
    there is none. Anything an operator chose otherwise (more replicas than the setting, other limits, another
    dedup window, storage) is kept: a service restart never reverts `nats stream edit`.
    """
    changes: dict[str, object] = {}
    kept: list[str] = []
    subjects = list(existing.subjects or [])
    missing = [subject for subject in wanted.subjects or [] if subject not in subjects]
    if missing:
        changes["subjects"] = subjects + missing
    if (existing.num_replicas or 1) < (wanted.num_replicas or 1):
        changes["num_replicas"] = wanted.num_replicas
    elif (existing.num_replicas or 1) != (wanted.num_replicas or 1):
        kept.append(f"replicas {existing.num_replicas} (setting {wanted.num_replicas})")
    for field, label in (("max_bytes", "max bytes"), ("max_age", "max age")):
        have, want = getattr(existing, field), getattr(wanted, field)
        if _unlimited(have) and not _unlimited(want):
            changes[field] = want
        elif not (_unlimited(have) and _unlimited(want)) and have != want:
            kept.append(f"{label} {have} (setting {'none' if _unlimited(want) else want})")
    if wanted.duplicate_window and existing.duplicate_window != wanted.duplicate_window:
        kept.append(f"duplicate window {existing.duplicate_window}s (setting {wanted.duplicate_window}s)")
    if existing.storage != wanted.storage:
        kept.append(f"storage {existing.storage} (setting {wanted.storage})")
    return changes, kept


async def ensure_streams(client: NATS, settings: Settings) -> None:
    """Creates a missing stream as the settings say; an existing one is only ever upgraded (see reconcile)."""
    js = client.jetstream()
    for config in wanted_streams(settings):
        try:
            info = await js.stream_info(config.name)  # type: ignore[arg-type]
        except NotFoundError:
            try:
                await js.add_stream(config)
                log.info("created stream", extra={"stream": config.name, "replicas": config.num_replicas,
                                                  "max_bytes": config.max_bytes, "max_age": config.max_age})
                continue
            except BadRequestError:
                # Another replica created it between our look and our add.
                info = await js.stream_info(config.name)  # type: ignore[arg-type]
        changes, kept = reconcile(info.config, config)
        if kept:
            log.warning("stream %s differs from the settings; kept as configured: %s", config.name, "; ".join(kept),
                        extra={"stream": config.name, "kept": kept})
        if changes:
            await js.update_stream(dataclasses.replace(info.config, **changes))
            log.info("upgraded stream %s: %s", config.name, ", ".join(f"{k}={v}" for k, v in changes.items()),
                     extra={"stream": config.name})
