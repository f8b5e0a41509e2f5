"""Publishes validated ticks to JetStream and answers only once JetStream has acknowledged them; each message
carries the trace context of the `ingest.publish` span (traceparent header) to the aggregator."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError, TimeoutError
from nats.js.errors import APIError, NoStreamResponseError

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

    async def publish(self, client: NATS | None, batch: ValidatedBatch, timeout: float | None) -> PublishResult:
        if client is None or not client.is_connected:
            raise JetStreamUnavailable("NATS is not connected")
        js = client.jetstream()
        messages = self.messages(batch)
        wait = min(PUBLISH_TIMEOUT_SECONDS, timeout) if timeout else PUBLISH_TIMEOUT_SECONDS

        async def send(subject: str, payload: bytes, trace_headers: dict[str, str]) -> bool:
            headers = {**trace_headers, "Nats-Msg-Id": message_id(subject, payload)}
            try:
                ack = await js.publish(subject, payload, timeout=wait, headers=headers)
            except (NoStreamResponseError, NoRespondersError):
                # The stream is gone (a NATS that lost its store): recreate it and try once more.
                await ensure_streams(client, self.settings)
                ack = await js.publish(subject, payload, timeout=wait, headers=headers)
            return bool(ack.duplicate)

        with tracer.start_as_current_span("ingest.publish", attributes={
                "messaging.system": "nats", "messages": len(messages),
                "ticks": sum(count for _, _, count in messages)}):
            trace_headers = inject()  # the span's traceparent, the same for every message of the batch
            try:
                duplicates = await asyncio.gather(*(send(subject, payload, trace_headers)
                                                    for subject, payload, _ in messages))
            except (ConnectionClosedError, TimeoutError, asyncio.TimeoutError, NoRespondersError,
                    NoStreamResponseError, OutboundBufferLimitError, APIError) as exc:
                raise JetStreamUnavailable(f"{type(exc).__name__}: {exc}") from exc
        result = PublishResult(duplicates=batch.duplicates)
        for (_, _, count), duplicate in zip(messages, duplicates):
            if duplicate:
                result.duplicates += count
            else:
                result.accepted += count
        return result

