"""The live feed (common/live.py) as Server-Sent Events.

Each LiveUpdate becomes one frame (`id: <boot id>-<sequence>`, `event: update`, JSON `data`) once, and the
same bytes go to every client. A client reconnecting with a `Last-Event-ID` gets what it missed, or
`event: resync` (reload history, then continue) when that is no longer complete; so does every open stream
after the feed was interrupted.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable

from opentelemetry.trace import Link

from marketdata.common import tracing
from marketdata.common.config import Settings
from marketdata.common.live import LiveFeed, LiveMetrics, Subscriber
from marketdata.common.nats import NatsConnection
from marketdata.edge.gateway import to_json_bytes
from marketdata.v1 import events_pb2

RETRY_MILLISECONDS = 2000

METRICS = LiveMetrics("edge_sse", "Server-Sent Events streams")


def encode_frame(event: str, data: bytes | str, event_id: str | None = None) -> bytes:
    payload = data if isinstance(data, bytes) else data.encode()
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\n".encode() + b"data: " + payload + b"\n\n"


def update_frame(event_id: str, update: events_pb2.LiveUpdate) -> bytes:
    return encode_frame("update", to_json_bytes(update), event_id)


def resync_frame(event_id: str, reason: str, **fields: str) -> bytes:
    return encode_frame("resync", json.dumps({"reason": reason, **fields}), event_id)


def create_feed(nats: NatsConnection, settings: Settings) -> LiveFeed:
    return LiveFeed(nats, settings.live_subject, METRICS, encode=update_frame, max_streams=settings.sse_max_streams,
                    queue_size=settings.sse_queue_size, max_behind_seconds=settings.sse_max_behind_seconds,
                    replay_size=settings.sse_replay_size)


async def open_stream(feed: LiveFeed, symbols: Iterable[str],
                      last_event_id: str | None = None) -> tuple[Subscriber, bytes]:
    """Subscribes a client; returns it and the first chunk of its stream (retry, and replay or resync)."""
    subscriber, missed = await feed.open(symbols, last_event_id or None)
    first = f"retry: {RETRY_MILLISECONDS}\n: stream {feed.position}\n\n".encode()
    if missed is None:
        first += resync_frame(feed.position, "updates since Last-Event-ID are not available; reload history",
                              lastEventId=str(last_event_id))
    else:
        first += b"".join(update.payload for update in missed)
    return subscriber, first


async def frames(subscriber: Subscriber, first: bytes) -> AsyncIterator[bytes]:
    """The body of one stream: what sse-starlette sends, chunk by chunk."""
    feed = subscriber.feed
    traced = tracing.enabled()  # decided at start-up; a span per chunk and client costs CPU even when no-op
    try:
        yield first
        while (taken := await subscriber.take()) is not None:
            gap, updates = taken
            chunk = b"".join(update.payload for update in updates)
            if gap is not None:
                chunk = resync_frame(f"{feed.boot_id}-{gap}", "the live feed was interrupted; reload history") + chunk
            if not traced:
                yield chunk
                continue
            # The write joins the trace of the commit that published the (first) update; yielding returns once
            # sse-starlette has sent the chunk.
            span = tracing.tracer.start_span(
                "edge.sse.write", context=updates[0].context if updates else None,
                links=[Link(tracing.span_context_of(update.context)) for update in updates[1:]],
                attributes={"updates": len(updates)})
            try:
                yield chunk
            finally:
                span.end()
    finally:
        feed.remove(subscriber)
