"""The live hub: NATS live updates fanned out to Server-Sent Events clients.

* One core-NATS subscription per subject (`settings.live_subject(SYMBOL)`), shared by every client that
  watches the symbol: created for the first, unsubscribed when the last one leaves.
* Each LiveUpdate is turned into one SSE frame (`id`, `event: update`, JSON `data`) once, and the same bytes
  go to every client.
* Each client has a bounded queue. A client whose queue is full is *behind*: from then on it keeps only the
  latest frame per symbol (coalesced), and if it is still behind after `max_behind_seconds` it is
  disconnected (its connection aborted), so a stalled reader can never make the edge's memory grow.
* Event ids are `<boot id>-<sequence>`. A small replay buffer keeps the last frames: a client reconnecting
  with a `Last-Event-ID` of this boot that the buffer still covers gets what it missed, any other gets
  `event: resync` (reload history, then continue).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from google.protobuf import json_format
from prometheus_client import Counter, Histogram

from marketdata.common.nats import NatsConnection
from marketdata.v1 import events_pb2

log = logging.getLogger(__name__)

SSE_EVENTS = Counter("edge_sse_updates_total", "Live updates received from NATS")
SSE_COALESCED = Counter("edge_sse_coalesced_total", "Frames coalesced for clients that were behind")
SSE_DROPPED = Counter("edge_sse_dropped_total", "SSE clients disconnected by the edge", ["reason"])
SSE_REJECTED = Counter("edge_sse_rejected_total", "SSE streams refused", ["reason"])
SSE_COMMIT_LAG = Histogram(
    "edge_sse_commit_to_fanout_seconds", "From the aggregator's commit to the edge's fan-out of a live update",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

RETRY_MILLISECONDS = 2000


class HubFull(Exception):
    """sse_max_streams streams are open."""


class HubUnavailable(Exception):
    """NATS cannot be reached, or the edge is shutting down."""


def encode_frame(event: str, data: bytes | str, event_id: str | None = None) -> bytes:
    payload = data if isinstance(data, bytes) else data.encode()
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\n".encode() + b"data: " + payload + b"\n\n"


class Client:
    """One SSE stream: a bounded queue of frames, coalesced per symbol once behind."""

    __slots__ = ("hub", "symbols", "queue", "pending", "wake", "behind_since", "closed", "abort",
                 "opened", "coalesced", "reason")

    def __init__(self, hub: LiveHub, symbols: tuple[str, ...]) -> None:
        self.hub = hub
        self.symbols = symbols
        self.queue: deque[bytes] = deque()
        self.pending: dict[str, bytes] = {}
        self.wake = asyncio.Event()
        self.behind_since: float | None = None
        self.closed = False
        self.abort: Callable[[], None] | None = None
        self.opened = time.monotonic()
        self.coalesced = 0
        self.reason = ""

    @property
    def behind(self) -> bool:
        return self.behind_since is not None

    def offer(self, symbol: str, frame: bytes, now: float) -> None:
        if self.closed:
            return
        if self.behind_since is None and len(self.queue) < self.hub.queue_size:
            self.queue.append(frame)
        else:
            if self.behind_since is None:
                self.behind_since = now
            elif now - self.behind_since > self.hub.max_behind_seconds:
                self.hub.drop(self, "behind")
                return
            self.pending.pop(symbol, None)
            self.pending[symbol] = frame
            self.coalesced += 1
            SSE_COALESCED.inc()
        self.wake.set()

    async def frames(self, first: bytes) -> AsyncIterator[bytes]:
        """The body of the stream: what sse-starlette sends, chunk by chunk."""
        try:
            yield first
            while True:
                if self.queue:
                    chunk = b"".join(self.queue) if len(self.queue) > 1 else self.queue[0]
                    self.queue.clear()
                    yield chunk
                elif self.pending:
                    chunk = b"".join(self.pending.values())
                    self.pending.clear()
                    self.behind_since = None
                    yield chunk
                elif self.closed:
                    return
                else:
                    self.wake.clear()
                    await self.wake.wait()
        finally:
            self.hub.remove(self)


class _Subject:
    __slots__ = ("symbol", "subject", "clients", "subscription", "ready")

    def __init__(self, symbol: str, subject: str) -> None:
        self.symbol = symbol
        self.subject = subject
        self.clients: set[Client] = set()
        self.subscription: Any = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class LiveHub:
    def __init__(self, nats: NatsConnection, subject_of: Callable[[str], str], *, max_streams: int,
                 queue_size: int = 64, max_behind_seconds: float = 5.0, replay_size: int = 1024,
                 connect_timeout: float = 3.0) -> None:
        self.nats = nats
        self.subject_of = subject_of
        self.max_streams = max_streams
        self.queue_size = queue_size
        self.max_behind_seconds = max_behind_seconds
        self.connect_timeout = connect_timeout
        self.boot_id = secrets.token_hex(4)
        self.sequence = 0
        self.replay: deque[tuple[int, str, bytes]] = deque(maxlen=replay_size)
        self.clients: set[Client] = set()
        self.subjects: dict[str, _Subject] = {}
        self.nats_subscriptions = 0
        self._reconnects = 0
        self.closing = False
        self._background: set[asyncio.Task[None]] = set()

    # -- metrics ---------------------------------------------------------------------------------------------
    @property
    def stream_count(self) -> int:
        return len(self.clients)

    # -- ids -------------------------------------------------------------------------------------------------
    @property
    def position(self) -> str:
        return f"{self.boot_id}-{self.sequence}"

    def _missed(self, client: Client, last_event_id: str | None) -> list[bytes] | None:
        """Frames the client missed since last_event_id, or None when it must resync."""
        boot, _, counter = (last_event_id or "").strip().rpartition("-")
        if boot != self.boot_id or not counter.isdigit():
            return None
        last = int(counter)
        if last > self.sequence:
            return None
        oldest = self.replay[0][0] if self.replay else self.sequence + 1
        if last + 1 < oldest:
            return None  # some of what it missed is gone from the buffer
        wanted = set(client.symbols)
        missed = [frame for sequence, symbol, frame in self.replay if sequence > last and symbol in wanted]
        return missed if len(missed) <= self.queue_size else None

    # -- clients ---------------------------------------------------------------------------------------------
    async def open(self, symbols: Iterable[str], last_event_id: str | None = None) -> tuple[Client, bytes]:
        """Registers a client; returns it and the first chunk of its stream (retry, and replay or resync)."""
        if self.closing:
            SSE_REJECTED.labels("shutdown").inc()
            raise HubUnavailable("the edge is shutting down")
        if len(self.clients) >= self.max_streams:
            SSE_REJECTED.labels("full").inc()
            raise HubFull(f"{self.max_streams} live streams are open, the most this edge serves")
        if self.nats.client is None:
            try:
                await self.nats.wait_connected(self.connect_timeout)
            except asyncio.TimeoutError:
                SSE_REJECTED.labels("nats").inc()
                raise HubUnavailable("the live feed (NATS) is unreachable") from None
            if len(self.clients) >= self.max_streams:
                SSE_REJECTED.labels("full").inc()
                raise HubFull(f"{self.max_streams} live streams are open, the most this edge serves")
        client = Client(self, tuple(dict.fromkeys(symbols)))
        self.clients.add(client)
        waits = []
        for symbol in client.symbols:
            entry = self.subjects.get(symbol)
            if entry is None:
                entry = self.subjects[symbol] = _Subject(symbol, self.subject_of(symbol))
                self._spawn(self._subscribe(entry))
            entry.clients.add(client)
            waits.append(entry.ready)
        # Decide replay or resync now, before any await, so no frame falls between the two.
        first = f"retry: {RETRY_MILLISECONDS}\n: stream {self.position}\n\n".encode()
        if last_event_id:
            missed = self._missed(client, last_event_id)
            if missed is None:
                data = json.dumps({"reason": "updates since Last-Event-ID are not available; reload history",
                                   "lastEventId": last_event_id})
                first += encode_frame("resync", data, self.position)
            else:
                first += b"".join(missed)
        try:
            await asyncio.wait_for(asyncio.gather(*(asyncio.shield(w) for w in waits)), self.connect_timeout)
        except asyncio.CancelledError:
            self.remove(client)
            raise
        except Exception:
            self.remove(client)
            SSE_REJECTED.labels("nats").inc()
            raise HubUnavailable("could not subscribe to the live feed") from None
        return client, first

    def remove(self, client: Client) -> None:
        if client not in self.clients:
            return
        self.clients.discard(client)
        client.closed = True
        for symbol in client.symbols:
            entry = self.subjects.get(symbol)
            if entry is None:
                continue
            entry.clients.discard(client)
            if not entry.clients:
                del self.subjects[symbol]
                self._spawn(self._unsubscribe(entry))

    def drop(self, client: Client, reason: str) -> None:
        """Disconnects a client (it stays behind, or the edge shuts down)."""
        if client.closed:
            return
        client.closed = True
        client.reason = reason
        SSE_DROPPED.labels(reason).inc()
        log.info("dropping live stream", extra={"reason": reason, "symbols": list(client.symbols),
                                                 "coalesced": client.coalesced})
        client.wake.set()
        if client.abort is not None:
            try:
                client.abort()
            except Exception:  # noqa: BLE001 - the connection may already be gone
                log.debug("abort failed", exc_info=True)
        self.remove(client)

    # -- NATS ------------------------------------------------------------------------------------------------
    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _subscribe(self, entry: _Subject) -> None:
        try:
            client = await self.nats.wait_connected(self.connect_timeout)

            async def on_message(msg: Any) -> None:
                if self.subjects.get(entry.symbol) is entry:
                    self.publish(entry, msg.data)

            entry.subscription = await client.subscribe(entry.subject, cb=on_message)
            self.nats_subscriptions += 1
            await client.flush(self.connect_timeout)  # the server has the subscription before the stream starts
            if not entry.ready.done():
                entry.ready.set_result(None)
        except BaseException as exc:
            if not entry.ready.done():
                entry.ready.set_exception(HubUnavailable(str(exc) or type(exc).__name__))
                entry.ready.exception()  # retrieved: no "never retrieved" warning
            if self.subjects.get(entry.symbol) is entry:
                for client in list(entry.clients):
                    self.drop(client, "nats")
            if not isinstance(exc, Exception):
                raise
            return
        if self.subjects.get(entry.symbol) is not entry:
            # Everyone left while we were subscribing.
            await self._unsubscribe(entry)

    async def _unsubscribe(self, entry: _Subject) -> None:
        subscription, entry.subscription = entry.subscription, None
        if subscription is None:
            return
        self.nats_subscriptions -= 1
        try:
            await subscription.unsubscribe()
        except Exception:  # noqa: BLE001 - connection closing or closed: the subscription is gone anyway
            log.debug("unsubscribe failed", exc_info=True)

    def publish(self, entry: _Subject, data: bytes) -> None:
        """Fans one serialized LiveUpdate out to the clients of its symbol (serialized to JSON once)."""
        try:
            update = events_pb2.LiveUpdate.FromString(data)
        except Exception:  # noqa: BLE001 - a bad message must not stop the feed
            log.warning("undecodable live update", extra={"subject": entry.subject})
            return
        SSE_EVENTS.inc()
        now = time.monotonic()
        client = self.nats.client
        reconnects = client.stats.get("reconnects", 0) if client is not None else 0
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._gap(now)
        if update.HasField("commit_time"):
            SSE_COMMIT_LAG.observe(max(0.0, time.time() - update.commit_time.ToNanoseconds() / 1e9))
        body = json.dumps(json_format.MessageToDict(update, always_print_fields_with_no_presence=True),
                          separators=(",", ":"))
        self.sequence += 1
        frame = encode_frame("update", body, f"{self.boot_id}-{self.sequence}")
        self.replay.append((self.sequence, entry.symbol, frame))
        for client in tuple(entry.clients):
            client.offer(entry.symbol, frame, now)

    def _gap(self, now: float) -> None:
        """NATS reconnected: updates may have been lost meanwhile. Nothing before now can be replayed, and
        every open stream is told to resync."""
        self.replay.clear()
        self.sequence += 1  # the id of the gap: ids before it can never be replayed
        log.warning("live feed reconnected: streams told to resync", extra={"streams": len(self.clients)})
        data = json.dumps({"reason": "the live feed was interrupted; reload history"})
        frame = encode_frame("resync", data, self.position)
        for client in tuple(self.clients):
            client.offer("\0resync", frame, now)

    # -- shutdown --------------------------------------------------------------------------------------------
    def close_streams(self) -> None:
        """Ends every stream: readers get the end of the response, stalled ones are aborted."""
        self.closing = True
        for client in list(self.clients):
            if client.behind:
                self.drop(client, "shutdown")
            else:
                client.closed = True
                client.wake.set()

    async def wait_streams_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.clients and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for client in list(self.clients):
            self.drop(client, "shutdown")
        return not self.clients

    async def close(self) -> None:
        self.close_streams()
        for entry in list(self.subjects.values()):
            await self._unsubscribe(entry)
        self.subjects.clear()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
