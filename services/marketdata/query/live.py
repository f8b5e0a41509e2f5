"""WatchTicks fan-out: core NATS subjects <prefix>.live.<SYMBOL> to gRPC streams.

One NATS subscription per subject, shared by every stream watching that symbol (created with the first,
removed with the last). Each stream has a bounded queue: a slow client never makes memory grow, because when
its queue is full the queue is coalesced to the latest update per symbol (older updates of a symbol are
superseded by newer ones anyway: each carries the symbol's latest tick and current candle).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter, Gauge

from marketdata.common.config import Settings
from marketdata.common.nats import NatsConnection
from marketdata.v1 import events_pb2

log = logging.getLogger(__name__)

# Per-stream queue bound; above MAX_WATCH_SYMBOLS so a coalesced queue (one item per symbol) has room.
QUEUE_SIZE = 256
MAX_WATCH_SYMBOLS = 100
FLUSH_TIMEOUT_SECONDS = 2

WATCH_STREAMS = Gauge("query_watch_streams", "WatchTicks streams open")
LIVE_SUBSCRIPTIONS = Gauge("query_live_subscriptions", "NATS subscriptions to live subjects held")
LIVE_RECEIVED = Counter("query_live_updates_received_total", "LiveUpdate messages received from NATS")
LIVE_COALESCED = Counter("query_watch_coalesced_total", "Live updates dropped by coalescing for slow streams")


class UnavailableError(RuntimeError):
    """NATS is not reachable, or the service is shutting down."""


class UpdateQueue:
    """A bounded FIFO of (symbol, update) for one stream; when full it keeps the latest update per symbol."""

    def __init__(self, maxsize: int = QUEUE_SIZE) -> None:
        self.maxsize = maxsize
        self.coalesced = 0
        self.closed = False
        self._items: deque[tuple[str, events_pb2.LiveUpdate]] = deque()
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, symbol: str, update: events_pb2.LiveUpdate) -> None:
        if self.closed:
            return
        if len(self._items) >= self.maxsize:
            latest: dict[str, events_pb2.LiveUpdate] = {}
            for item_symbol, item in self._items:
                latest.pop(item_symbol, None)
                latest[item_symbol] = item
            latest.pop(symbol, None)
            latest[symbol] = update
            dropped = len(self._items) + 1 - len(latest)
            self.coalesced += dropped
            LIVE_COALESCED.inc(dropped)
            self._items = deque(latest.items())
        else:
            self._items.append((symbol, update))
        self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    async def get(self) -> tuple[str, events_pb2.LiveUpdate] | None:
        """The next update, or None once the queue is closed."""
        while True:
            if self.closed:
                return None
            if self._items:
                return self._items.popleft()
            self._wakeup.clear()
            await self._wakeup.wait()


class _Subject:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.queues: set[UpdateQueue] = set()
        self.subscription: Subscription | None = None

    async def deliver(self, msg: Msg) -> None:
        LIVE_RECEIVED.inc()
        try:
            update = events_pb2.LiveUpdate.FromString(msg.data)
        except DecodeError:
            log.warning("undecodable live update", extra={"subject": msg.subject, "bytes": len(msg.data)})
            return
        for queue in list(self.queues):
            queue.put(self.symbol, update)


class LiveHub:
    """Shares one NATS subscription per live subject among the streams watching it."""

    def __init__(self, nats: NatsConnection, settings: Settings) -> None:
        self.nats = nats
        self.settings = settings
        self._subjects: dict[str, _Subject] = {}
        self._queues: set[UpdateQueue] = set()
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def subscriptions(self) -> int:
        return len(self._subjects)

    @property
    def streams(self) -> int:
        return len(self._queues)

    def close(self) -> None:
        """Ends every stream (server shutdown)."""
        self._closed = True
        for queue in list(self._queues):
            queue.close()

    @asynccontextmanager
    async def watch(self, symbols: list[str]) -> AsyncIterator[UpdateQueue]:
        """Subscribes a new queue to the symbols' live subjects for the duration of the block."""
        if self._closed:
            raise UnavailableError("the service is shutting down")
        client = self.nats.client
        if client is None or client.is_closed:
            raise UnavailableError("NATS is not connected")
        queue = UpdateQueue()
        self._queues.add(queue)
        WATCH_STREAMS.set(len(self._queues))
        try:
            for symbol in symbols:
                await self._attach(symbol, queue)
            try:
                await client.flush(FLUSH_TIMEOUT_SECONDS)
            except Exception as exc:  # noqa: BLE001 - the subscription is re-sent on reconnect anyway
                log.warning("NATS flush failed after subscribing", extra={"error": str(exc) or type(exc).__name__})
            log.info("watch started", extra={"symbols": symbols, "streams": len(self._queues),
                                             "subscriptions": len(self._subjects)})
            yield queue
        finally:
            queue.close()
            for symbol in symbols:
                await self._detach(symbol, queue)
            self._queues.discard(queue)
            WATCH_STREAMS.set(len(self._queues))
            log.info("watch ended", extra={"symbols": symbols, "streams": len(self._queues),
                                           "subscriptions": len(self._subjects), "coalesced": queue.coalesced})

    async def _attach(self, symbol: str, queue: UpdateQueue) -> None:
        subject = self.settings.live_subject(symbol)
        async with self._lock:
            entry = self._subjects.get(subject)
            if entry is None:
                client = self.nats.client
                if client is None or client.is_closed:
                    raise UnavailableError("NATS is not connected")
                entry = _Subject(symbol)
                entry.queues.add(queue)
                self._subjects[subject] = entry
                LIVE_SUBSCRIPTIONS.set(len(self._subjects))
                entry.subscription = await client.subscribe(subject, cb=entry.deliver)
            else:
                entry.queues.add(queue)

    async def _detach(self, symbol: str, queue: UpdateQueue) -> None:
        subject = self.settings.live_subject(symbol)
        async with self._lock:
            entry = self._subjects.get(subject)
            if entry is None:
                return
            entry.queues.discard(queue)
            if entry.queues:
                return
            del self._subjects[subject]
            LIVE_SUBSCRIPTIONS.set(len(self._subjects))
            if entry.subscription is not None:
                try:
                    await entry.subscription.unsubscribe()
                except Exception as exc:  # noqa: BLE001 - a closed connection has no subscriptions left anyway
                    log.debug("unsubscribe failed", extra={"subject": subject, "error": str(exc)})
