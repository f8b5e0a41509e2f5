"""Publishes validated ticks to JetStream and answers only once JetStream has acknowledged them; each message
carries the trace context of the `ingest.publish` span (traceparent header) to the aggregator."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError, TimeoutError
from nats.js.api import PubAck
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, TooManyStalledMsgsError

from marketdata.common.config import Settings
from marketdata.common.nats import ensure_streams
from marketdata.common.tracing import inject, tracer
from marketdata.ingest.validation import ValidatedBatch
from marketdata.v1 import events_pb2

# Ticks per JetStream message: large enough to amortise per-message cost, small enough for NATS' 1 MiB payload.
TICKS_PER_MESSAGE = 1000
PUBLISH_TIMEOUT_SECONDS = 5.0


class JetStreamUnavailable(Exception):
    """JetStream did not acknowledge: the client should retry (retries are deduplicated)."""


@dataclass
class PublishResult:
    accepted: int = 0
    duplicates: int = 0


def message_id(subject: str, payload: bytes) -> str:
    # Same batch content → same id, so JetStream drops a client's retry inside the duplicate window.
    return hashlib.blake2b(subject.encode() + b"\0" + payload, digest_size=16).hexdigest()


class TickPublisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # One JetStream context per connection: its async-publish reply subscription is made once.
        self._jetstream: tuple[NATS, JetStreamContext] | None = None

    def messages(self, batch: ValidatedBatch) -> list[tuple[str, bytes, int]]:
        """(subject, payload, tick count) per JetStream message, in a deterministic order."""
        out = []
        for symbol, ticks in batch.by_symbol.items():
            subject = self.settings.ticks_subject(symbol)
            for start in range(0, len(ticks), TICKS_PER_MESSAGE):
                chunk = ticks[start:start + TICKS_PER_MESSAGE]
                payload = events_pb2.TickBatch(items=chunk).SerializeToString(deterministic=True)
                out.append((subject, payload, len(chunk)))
        return out

    def _context(self, client: NATS) -> JetStreamContext:
        if self._jetstream is None or self._jetstream[0] is not client:
            self._jetstream = (client, client.jetstream())
        return self._jetstream[1]

    async def publish(self, client: NATS | None, batch: ValidatedBatch, timeout: float | None) -> PublishResult:
        if client is None or not client.is_connected:
            raise JetStreamUnavailable("NATS is not connected")
        messages = self.messages(batch)
        wait = min(PUBLISH_TIMEOUT_SECONDS, timeout) if timeout else PUBLISH_TIMEOUT_SECONDS
        with tracer.start_as_current_span("ingest.publish", attributes={
                "messaging.system": "nats", "messages": len(messages),
                "ticks": sum(count for _, _, count in messages)}):
            trace_headers = inject()  # the span's traceparent, the same for every message of the batch
            try:
                acks = await asyncio.wait_for(self._send(client, messages, trace_headers), wait)
            except (ConnectionClosedError, TimeoutError, asyncio.TimeoutError, NoRespondersError,
                    NoStreamResponseError, OutboundBufferLimitError, TooManyStalledMsgsError, APIError) as exc:
                raise JetStreamUnavailable(f"{type(exc).__name__}: {exc}") from exc
        result = PublishResult(duplicates=batch.duplicates)
        for (_, _, count), ack in zip(messages, acks):
            if ack.duplicate:
                result.duplicates += count
            else:
                result.accepted += count
        return result

    async def _send(self, client: NATS, messages: list[tuple[str, bytes, int]],
                    trace_headers: dict[str, str]) -> list[PubAck]:
        """Every message written at once and their acks awaited together (publish_async: no task or reply
        subscription per message)."""
        js = self._context(client)

        async def write(subject: str, payload: bytes) -> asyncio.Future[PubAck]:
            headers = {**trace_headers, "Nats-Msg-Id": message_id(subject, payload)}
            return await js.publish_async(subject, payload, headers=headers)

        pending = [await write(subject, payload) for subject, payload, _ in messages]
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        if any(isinstance(outcome, NoStreamResponseError) for outcome in outcomes):
            # The stream is gone (a NATS that lost its store): recreate it and send what it missed once more.
            await ensure_streams(client, self.settings)
            again = [await write(subject, payload) if isinstance(outcome, NoStreamResponseError) else None
                     for (subject, payload, _), outcome in zip(messages, outcomes)]
            outcomes = [await retry if retry is not None else outcome for retry, outcome in zip(again, outcomes)]
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]
