"""Publishes validated ticks to JetStream and answers only once JetStream has acknowledged them; each message
carries the trace context of the `ingest.publish` span (traceparent header) to the aggregator."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from dataclasses import dataclass

from nats.aio.client import NO_RESPONDERS_STATUS
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError, TimeoutError
from nats.js.api import Header, PubAck
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


class AckInbox:
    """The acknowledgements of JetStream publishes, on one reply subscription per connection: a batch's messages
    are written at once and their acks awaited together, with no task and no wait_for per message. This is what
    nats-py's `publish_async` does, except that an error ack fails its future here; nats-py 2.16 leaves that
    future pending (nats-io/nats.py#985), which would turn a JetStream 503 into a wait for the deadline."""

    def __init__(self, client: NATS) -> None:
        self.client = client
        self.prefix = client.new_inbox()
        self.waiting: dict[str, asyncio.Future[PubAck]] = {}
        self.tokens = itertools.count()

    async def subscribe(self) -> None:
        await self.client.subscribe(f"{self.prefix}.*", cb=self._answer)

    async def _answer(self, msg: Msg) -> None:
        future = self.waiting.pop(msg.subject[len(self.prefix) + 1:], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS_STATUS:
            future.set_exception(NoStreamResponseError())
            return
        answer = json.loads(msg.data)
        if "error" in answer:
            future.set_exception(APIError(**answer["error"]))
        else:
            future.set_result(PubAck.from_response(answer))

    async def publish(self, subject: str, payload: bytes,
                      headers: dict[str, str]) -> tuple[str, asyncio.Future[PubAck]]:
        token = str(next(self.tokens))
        future = self.waiting[token] = asyncio.get_running_loop().create_future()
        try:
            await self.client.publish(subject, payload, reply=f"{self.prefix}.{token}", headers=headers)
        except BaseException:
            del self.waiting[token]
            raise
        return token, future

    def forget(self, tokens: list[str]) -> None:
        """Stops waiting for these acks (a publish that ended early: an error or its deadline)."""
        for token in tokens:
            future = self.waiting.pop(token, None)
            if future is not None:
                future.cancel()


class TickPublisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._acks: AckInbox | None = None
        self._acks_lock = asyncio.Lock()

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

    async def ack_inbox(self, client: NATS) -> AckInbox:
        async with self._acks_lock:  # subscribed before any publish names it as the reply subject
            if self._acks is None or self._acks.client is not client:
                acks = AckInbox(client)
                await acks.subscribe()
                self._acks = acks
            return self._acks

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
                    NoStreamResponseError, OutboundBufferLimitError, APIError) as exc:
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
        inbox = await self.ack_inbox(client)
        sent: list[str] = []

        async def write(subject: str, payload: bytes) -> asyncio.Future[PubAck]:
            token, future = await inbox.publish(subject, payload, {**trace_headers,
                                                                   "Nats-Msg-Id": message_id(subject, payload)})
            sent.append(token)
            return future

        try:
            pending = [await write(subject, payload) for subject, payload, _ in messages]
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            if any(isinstance(outcome, NoStreamResponseError) for outcome in outcomes):
                # The stream is gone (a NATS that lost its store): recreate it and send what it missed once more.
                await ensure_streams(client, self.settings)
                resent = {index: await write(subject, payload)
                          for index, ((subject, payload, _), outcome) in enumerate(zip(messages, outcomes))
                          if isinstance(outcome, NoStreamResponseError)}
                again = await asyncio.gather(*resent.values(), return_exceptions=True)
                for index, outcome in zip(resent, again):
                    outcomes[index] = outcome
        finally:
            inbox.forget(sent)  # the acks still awaited when a write or the deadline ended this early
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]
