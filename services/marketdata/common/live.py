"""The live fan-out core, shared by the query service's WatchTicks/WatchTicker and the edge's Server-Sent Events.

* One core-NATS subscription per live subject, shared by every subscriber of the symbol: created with the
  first, kept for `linger_seconds` after the last leaves (a reconnecting client finds it still there), then
  unsubscribed.
* Every LiveUpdate carries the complete candle of one (symbol, minute). A subscriber that keeps up gets every
  update in order. One that falls `queue_size` updates behind keeps only the latest snapshot of each
  (symbol, minute) until it catches up: it skips intermediate snapshots, but every minute's final candle
  still reaches it. One still behind after `max_behind_seconds` is disconnected, so a stalled reader can
  never make memory grow.
* A snapshot with no more trades than one already received for its minute is stale (published later by a
  concurrent commit or another aggregator replica) and is dropped.
* Updates are numbered `<boot id>-<sequence>`. Each symbol keeps its last `replay_size` updates, so a client
  resuming after a given id gets what it missed (per symbol, hence independent of other symbols' rates), or
  is told to resync when that is no longer complete.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

from google.protobuf.message import DecodeError
from nats.errors import Error as NatsError
from opentelemetry.context import Context
from prometheus_client import Counter, Gauge, Histogram

from marketdata.common import tracing
from marketdata.common.nats import NatsConnection
from marketdata.v1 import events_pb2

log = logging.getLogger(__name__)

# Minutes per symbol whose trade counts are remembered to recognise stale snapshots.
REMEMBERED_MINUTES = 16


class LiveFull(Exception):
    """max_streams subscribers are open."""


class LiveUnavailable(Exception):
    """NATS cannot be reached, or the service is shutting down."""


class LiveMetrics:
    """The metrics of one service's feed, named `<prefix>_...` (edge_sse_..., query_watch_...)."""

    def __init__(self, prefix: str, what: str) -> None:
        self.streams = Gauge(f"{prefix}_streams", f"Open {what}")
        self.subscriptions = Gauge(f"{prefix}_subscriptions", f"NATS subscriptions held for {what}")
        self.updates = Counter(f"{prefix}_updates_total", "Live updates received from NATS")
        self.coalesced = Counter(f"{prefix}_coalesced_total",
                                 "Pending updates replaced by a newer snapshot of the same minute")
        self.stale = Counter(f"{prefix}_stale_total", "Live updates older than one already received")
        self.dropped = Counter(f"{prefix}_dropped_total", f"{what} disconnected by the service", ["reason"])
        self.rejected = Counter(f"{prefix}_rejected_total", f"{what} refused", ["reason"])
        self.commit_lag = Histogram(
            f"{prefix}_commit_to_fanout_seconds", "From the aggregator's commit to the fan-out of a live update",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))


@dataclass(slots=True)
class Update:
    sequence: int
    symbol: str
    minute: int | None  # the candle's start, in seconds since the epoch
    message: events_pb2.LiveUpdate
    payload: Any  # what the service sends, made once for every subscriber
    context: Context  # the trace of the aggregator's commit that published it (from the NATS headers)

    @property
    def key(self) -> tuple[str, int | None]:
        return self.symbol, self.minute


class Subscriber:
    """One stream's updates: a FIFO while it keeps up; once `queue_size` are waiting it is behind, and from then
    until it catches up only the latest snapshot of each (symbol, minute) is kept."""

    def __init__(self, feed: LiveFeed, symbols: tuple[str, ...]) -> None:
        self.feed = feed
        self.symbols = symbols
        self.queue: deque[Update] = deque()
        self.pending: dict[tuple[str, int | None], Update] = {}  # while behind
        self.behind_since: float | None = None
        self.resync: int | None = None  # the sequence of a gap in the feed: what was missed is lost
        self.wake = asyncio.Event()
        self.closed = False
        self.reason = ""
        self.coalesced = 0
        # Disconnects the client at once (the edge aborts the HTTP connection); set by the service.
        self.abort: Callable[[], None] | None = None

    def offer(self, update: Update, now: float) -> None:
        if self.closed:
            return
        if self.behind_since is None and len(self.queue) < self.feed.queue_size:
            self.queue.append(update)
        else:
            if self.behind_since is None:
                self.behind_since = now
            if update.key in self.pending:
                self.coalesced += 1
                self.feed.metrics.coalesced.inc()
            self.pending[update.key] = update
            if now - self.behind_since > self.feed.max_behind_seconds or len(self.pending) > self.feed.queue_size:
                self.feed.drop(self, "behind")
                return
        self.wake.set()

    def interrupt(self, sequence: int) -> None:
        # What is waiting predates the gap: the client's reload covers it.
        self.queue.clear()
        self.pending.clear()
        self.behind_since = None
        self.resync = sequence
        self.wake.set()

    async def take(self) -> tuple[int | None, list[Update]] | None:
        """Waits for updates, then drains them; None once closed with nothing left to send."""
        while not self.queue and not self.pending and self.resync is None:
            if self.closed:
                return None
            self.wake.clear()
            await self.wake.wait()
        return self.drain()

    def drain(self) -> tuple[int | None, list[Update]]:
        """(the sequence of a gap since the last drain, or None; the waiting updates in arrival order)."""
        taken = self.resync, [*self.queue, *self.pending.values()]
        self.queue.clear()
        self.pending.clear()
        self.behind_since = None
        self.resync = None
        return taken


@dataclass(eq=False)
class _Subject:
    symbol: str
    subject: str
    subscribers: set[Subscriber] = field(default_factory=set)
    subscription: Any = None
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    # Every update of this symbol from this sequence on was received (the subscription's start, or a gap).
    complete_since: int = 0
    replay: deque[Update] = field(default_factory=deque)
    evicted: int = 0  # the sequence of the newest update gone from `replay`
    trades: dict[int, int] = field(default_factory=dict)  # minute -> most trades seen
    linger: asyncio.TimerHandle | None = None


class LiveFeed:
    """NATS live subjects fanned out to subscribers; see the module's docstring."""

    def __init__(self, nats: NatsConnection, subject_of: Callable[[str], str], metrics: LiveMetrics, *,
                 encode: Callable[[str, events_pb2.LiveUpdate], Any] = lambda _, message: message,
                 max_streams: int = 10_000, queue_size: int = 256, max_behind_seconds: float = 30.0,
                 replay_size: int = 64, linger_seconds: float = 5.0, connect_timeout: float = 3.0) -> None:
        self.nats = nats
        self.subject_of = subject_of
        self.metrics = metrics
        self.encode = encode
        self.max_streams = max_streams
        self.queue_size = queue_size
        self.max_behind_seconds = max_behind_seconds
        self.replay_size = replay_size
        self.linger_seconds = linger_seconds
        self.connect_timeout = connect_timeout
        self.boot_id = secrets.token_hex(4)
        self.sequence = 0
        self.subscribers: set[Subscriber] = set()
        self.subjects: dict[str, _Subject] = {}
        self.nats_subscriptions = 0
        self.closing = False
        self._background: set[asyncio.Task[None]] = set()
        nats.reconnect_listeners.append(self._gap)

    @property
    def stream_count(self) -> int:
        return len(self.subscribers)

    @property
    def position(self) -> str:
        """The id of the latest update (or gap)."""
        return f"{self.boot_id}-{self.sequence}"

    # -- subscribers -----------------------------------------------------------------------------------------
    async def open(self, symbols: Iterable[str], last_event_id: str | None = None) -> tuple[Subscriber,
                                                                                          list[Update] | None]:
        """Registers a subscriber once its symbols' subscriptions are in place (every update published from
        then on reaches it). With last_event_id, also returns what it missed since then, or None when that
        cannot be given completely (the client must reload instead)."""
        if self.closing:
            self._reject("shutdown", LiveUnavailable("the service is shutting down"))
        self._check_capacity()
        if self.nats.client is None or self.nats.client.is_closed:
            try:
                await self.nats.wait_connected(self.connect_timeout)
            except asyncio.TimeoutError:
                self._reject("nats", LiveUnavailable("the live feed (NATS) is unreachable"))
            self._check_capacity()  # others may have opened meanwhile
        subscriber = Subscriber(self, tuple(dict.fromkeys(symbols)))
        self.subscribers.add(subscriber)
        self.metrics.streams.set(len(self.subscribers))
        waits = [self._attach(symbol, subscriber).ready for symbol in subscriber.symbols]
        # Decide what to replay now, before any await, so no update falls between replay and live.
        missed = self._missed(subscriber, last_event_id) if last_event_id is not None else []
        try:
            await asyncio.wait_for(asyncio.gather(*(asyncio.shield(w) for w in waits)), self.connect_timeout)
        except asyncio.CancelledError:
            self.remove(subscriber)
            raise
        except (LiveUnavailable, asyncio.TimeoutError):
            self.remove(subscriber)
            self._reject("nats", LiveUnavailable("could not subscribe to the live feed"))
        return subscriber, missed

    def _check_capacity(self) -> None:
        if len(self.subscribers) >= self.max_streams:
            self._reject("full", LiveFull(f"{self.max_streams} live streams are open, the most this service serves"))

    def _reject(self, reason: str, error: Exception) -> NoReturn:
        self.metrics.rejected.labels(reason).inc()
        raise error

    @asynccontextmanager
    async def watch(self, symbols: Iterable[str]) -> AsyncIterator[Subscriber]:
        """A subscriber for the duration of the block."""
        subscriber, _ = await self.open(symbols)
        try:
            yield subscriber
        finally:
            self.remove(subscriber)

    def _missed(self, subscriber: Subscriber, last_event_id: str) -> list[Update] | None:
        boot, _, counter = last_event_id.strip().rpartition("-")
        if boot != self.boot_id or not counter.isdigit() or int(counter) > self.sequence:
            return None
        last = int(counter)
        missed: list[Update] = []
        for symbol in subscriber.symbols:
            entry = self.subjects[symbol]
            if not entry.ready.done() or entry.complete_since > last or entry.evicted > last:
                return None
            missed.extend(update for update in entry.replay if update.sequence > last)
        if len(missed) > self.queue_size:
            return None
        return sorted(missed, key=lambda update: update.sequence)

    def remove(self, subscriber: Subscriber) -> None:
        if subscriber not in self.subscribers:
            return
        self.subscribers.discard(subscriber)
        self.metrics.streams.set(len(self.subscribers))
        subscriber.closed = True
        subscriber.wake.set()
        for symbol in subscriber.symbols:
            entry = self.subjects.get(symbol)
            if entry is not None:
                entry.subscribers.discard(subscriber)
                if not entry.subscribers and entry.linger is None:
                    entry.linger = asyncio.get_running_loop().call_later(self.linger_seconds, self._expire, entry)

    def drop(self, subscriber: Subscriber, reason: str) -> None:
        """Disconnects a subscriber (it fell behind, or the service shuts down)."""
        if subscriber.closed:
            return
        subscriber.reason = reason
        self.metrics.dropped.labels(reason).inc()
        subscriber.queue.clear()
        subscriber.pending.clear()
        log.info("dropping live stream", extra={"reason": reason, "symbols": list(subscriber.symbols),
                                                 "coalesced": subscriber.coalesced})
        self.remove(subscriber)
        if subscriber.abort is not None:
            subscriber.abort()

    # -- NATS ------------------------------------------------------------------------------------------------
    def _attach(self, symbol: str, subscriber: Subscriber) -> _Subject:
        entry = self.subjects.get(symbol)
        if entry is None:
            entry = self.subjects[symbol] = _Subject(symbol, self.subject_of(symbol))
            self._spawn(self._subscribe(entry))
        elif entry.linger is not None:
            entry.linger.cancel()
            entry.linger = None
        entry.subscribers.add(subscriber)
        return entry

    def _expire(self, entry: _Subject) -> None:
        entry.linger = None
        if not entry.subscribers and self.subjects.get(entry.symbol) is entry:
            del self.subjects[entry.symbol]
            self._spawn(self._unsubscribe(entry))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _subscribe(self, entry: _Subject) -> None:
        try:
            client = await self.nats.wait_connected(self.connect_timeout)

            async def on_message(msg: Any) -> None:
                if self.subjects.get(entry.symbol) is entry:
                    self._receive(entry, msg.data, msg.headers)

            entry.subscription = await client.subscribe(entry.subject, cb=on_message)
            self.nats_subscriptions += 1
            self.metrics.subscriptions.set(self.nats_subscriptions)
            await client.flush(self.connect_timeout)  # the server has the subscription before the stream starts
        except (NatsError, asyncio.TimeoutError, OSError) as exc:
            entry.ready.set_exception(LiveUnavailable(str(exc) or type(exc).__name__))
            entry.ready.exception()  # retrieved: no "never retrieved" warning
            if self.subjects.get(entry.symbol) is entry:
                del self.subjects[entry.symbol]
                for subscriber in list(entry.subscribers):
                    self.drop(subscriber, "nats")
            await self._unsubscribe(entry)
            return
        entry.complete_since = self.sequence
        entry.ready.set_result(None)

    async def _unsubscribe(self, entry: _Subject) -> None:
        subscription, entry.subscription = entry.subscription, None
        if subscription is None:
            return
        self.nats_subscriptions -= 1
        self.metrics.subscriptions.set(self.nats_subscriptions)
        try:
            await subscription.unsubscribe()
        except NatsError:  # connection closing or closed: the subscription is gone anyway
            log.debug("unsubscribe failed", exc_info=True)

    def _receive(self, entry: _Subject, data: bytes, headers: dict[str, str] | None) -> None:
        try:
            message = events_pb2.LiveUpdate.FromString(data)
        except DecodeError:  # a bad message must not stop the feed
            log.warning("undecodable live update", extra={"subject": entry.subject, "bytes": len(data)})
            return
        self.metrics.updates.inc()
        now = time.monotonic()
        minute = None
        if message.HasField("candle"):
            minute = message.candle.time.seconds
            if message.candle.trades <= entry.trades.get(minute, -1):
                self.metrics.stale.inc()
                return
            entry.trades[minute] = message.candle.trades
            if len(entry.trades) > REMEMBERED_MINUTES:
                del entry.trades[min(entry.trades)]
        if message.HasField("commit_time"):
            self.metrics.commit_lag.observe(max(0.0, time.time() - message.commit_time.ToNanoseconds() / 1e9))
        self.sequence += 1
        update = Update(self.sequence, entry.symbol, minute, message, self.encode(self.position, message),
                        tracing.extract(headers))
        if self.replay_size:
            if len(entry.replay) == self.replay_size:
                entry.evicted = entry.replay.popleft().sequence
            entry.replay.append(update)
        for subscriber in tuple(entry.subscribers):
            subscriber.offer(update, now)

    def _gap(self) -> None:
        """NATS reconnected: updates may have been lost meanwhile. Nothing before now can be replayed, and
        every open stream is told to resync."""
        self.sequence += 1  # the id of the gap: ids before it can never be replayed
        for entry in self.subjects.values():
            entry.replay.clear()
            entry.complete_since = self.sequence
        log.warning("live feed reconnected: streams told to resync", extra={"streams": len(self.subscribers)})
        for subscriber in tuple(self.subscribers):
            subscriber.interrupt(self.sequence)

    # -- shutdown --------------------------------------------------------------------------------------------
    def close_streams(self) -> None:
        """Ends every stream: readers get what is pending and then the end; stalled ones are aborted."""
        self.closing = True
        for subscriber in list(self.subscribers):
            if subscriber.behind_since is not None:
                self.drop(subscriber, "shutdown")
            else:
                self.remove(subscriber)

    async def wait_streams_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.subscribers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for subscriber in list(self.subscribers):
            self.drop(subscriber, "shutdown")
        return not self.subscribers

    async def close(self) -> None:
        self.close_streams()
        for entry in list(self.subjects.values()):
            if entry.linger is not None:
                entry.linger.cancel()
            await self._unsubscribe(entry)
        self.subjects.clear()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
