"""The publisher against a real JetStream: a batch's acknowledgements are awaited together, an error ack fails
the publish at once (not at its deadline), and a publish that ends early leaves nothing awaited behind."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest
from nats.aio.client import Client as NATS
from nats.errors import MaxPayloadError

from marketdata.common.config import Settings, load_settings
from marketdata.common.nats import NatsConnection, ensure_streams
from marketdata.ingest.publisher import JetStreamUnavailable, TickPublisher
from marketdata.ingest.validation import ValidatedBatch
from marketdata.v1 import market_pb2


def ticks(symbol: str, count: int, trade_id_bytes: int = 8) -> list[market_pb2.Tick]:
    moment = datetime.now(timezone.utc) - timedelta(seconds=30)
    out = []
    for n in range(count):
        tick = market_pb2.Tick(symbol=symbol, trade_id=f"{n:0{trade_id_bytes}d}", price=100.0 + n, size=1.0)
        tick.event_time.FromDatetime(moment)
        out.append(tick)
    return out


@pytest.fixture
async def jetstream(nats_url: str) -> AsyncIterator[tuple[Settings, NATS]]:
    run = uuid.uuid4().hex[:8]
    settings = load_settings({"NATS_URL": nats_url, "MD_STREAM": f"PUB{run}", "MD_SUBJECT_PREFIX": f"pub{run}"})
    nats = NatsConnection(settings.nats_url, "test-publisher")
    nats.start()
    client = await nats.wait_connected(timeout=10)
    await ensure_streams(client, settings)
    try:
        yield settings, client
    finally:
        for stream in (settings.stream, settings.deadletter_stream):
            await client.jetstream().delete_stream(stream)
        await nats.close()


async def test_a_batch_of_many_symbols_is_acknowledged_and_counted(jetstream: tuple[Settings, NATS]) -> None:
    settings, client = jetstream
    publisher = TickPublisher(settings)
    batch = ValidatedBatch(by_symbol={f"PUBS{n}": ticks(f"PUBS{n}", 3) for n in range(20)})
    first = await publisher.publish(client, batch, 5.0)
    again = await publisher.publish(client, batch, 5.0)
    assert (first.accepted, first.duplicates) == (60, 0)
    assert (again.accepted, again.duplicates) == (0, 60)  # a retried batch: stored once
    info = await client.jetstream().stream_info(settings.stream)
    assert info.state.messages == 20  # one message per symbol


async def test_a_publish_that_fails_midway_leaves_no_acknowledgement_pending(
        jetstream: tuple[Settings, NATS]) -> None:
    settings, client = jetstream
    publisher = TickPublisher(settings)
    # The second symbol's message is beyond NATS' payload limit: the client refuses it after the first was sent.
    batch = ValidatedBatch(by_symbol={"PUBOK": ticks("PUBOK", 1),
                                      "PUBHUGE": ticks("PUBHUGE", 1000, trade_id_bytes=client.max_payload // 900)})
    with pytest.raises(MaxPayloadError):
        await publisher.publish(client, batch, 5.0)
    assert not (await publisher.ack_inbox(client)).waiting
    after = await publisher.publish(client, ValidatedBatch(by_symbol={"PUBNEXT": ticks("PUBNEXT", 2)}), 5.0)
    assert after.accepted == 2


async def test_an_error_ack_fails_the_publish_at_once(jetstream: tuple[Settings, NATS]) -> None:
    settings, client = jetstream
    publisher = TickPublisher(settings)
    # JetStream refuses a message of a sealed stream with an error ack (as it answers 503 while a clustered
    # stream has no leader): the client learns why at once.
    info = await client.jetstream().stream_info(settings.stream)
    info.config.sealed = True
    await client.jetstream().update_stream(info.config)
    started = time.monotonic()
    with pytest.raises(JetStreamUnavailable, match="APIError"):
        await publisher.publish(client, ValidatedBatch(by_symbol={"PUBSEALED": ticks("PUBSEALED", 1)}), 5.0)
    assert time.monotonic() - started < 2.0
    assert not (await publisher.ack_inbox(client)).waiting
