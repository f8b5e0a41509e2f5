"""The live hub in-process, with a fake NATS: ref-counted subscriptions, coalescing, replay ids, gaps."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from marketdata.edge.sse import HubFull, LiveHub
from marketdata.v1 import events_pb2


class FakeSubscription:
    def __init__(self, nats: FakeNats, subject: str, cb: Any) -> None:
        self.nats, self.subject, self.cb = nats, subject, cb

    async def unsubscribe(self) -> None:
        self.nats.subscriptions.remove(self)


class FakeNats:
    """Quacks like NatsConnection and its client, as far as the hub uses them."""

    def __init__(self) -> None:
        self.client = self
        self.subscriptions: list[FakeSubscription] = []
        self.stats = {"reconnects": 0}

    async def wait_connected(self, timeout: float | None = None) -> FakeNats:
        return self

    async def subscribe(self, subject: str, cb: Any) -> FakeSubscription:
        subscription = FakeSubscription(self, subject, cb)
        self.subscriptions.append(subscription)
        return subscription

    async def flush(self, timeout: float | None = None) -> None:
        pass

    async def deliver(self, symbol: str, price: float) -> None:
        data = events_pb2.LiveUpdate(symbol=symbol, last_tick={"symbol": symbol, "price": price}).SerializeToString()
        for subscription in list(self.subscriptions):
            if subscription.subject == f"live.{symbol}":
                await subscription.cb(type("Msg", (), {"data": data})())


def make_hub(**options: Any) -> tuple[LiveHub, FakeNats]:
    nats = FakeNats()
    hub = LiveHub(nats, lambda symbol: f"live.{symbol}", **{"max_streams": 10, **options})  # type: ignore[arg-type]
    return hub, nats


def frames_of(chunk: bytes) -> list[dict[str, str]]:
    events = []
    for block in chunk.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":")
                      and ": " in line)
        if "event" in fields:
            events.append(fields)
    return events


def prices(chunk: bytes) -> list[float]:
    return [json.loads(f["data"])["lastTick"]["price"] for f in frames_of(chunk) if f["event"] == "update"]


async def test_subscriptions_are_shared_and_released() -> None:
    hub, nats = make_hub()
    a, _ = await hub.open(["AAA", "BBB"])
    b, _ = await hub.open(["AAA"])
    assert sorted(s.subject for s in nats.subscriptions) == ["live.AAA", "live.BBB"]
    assert hub.nats_subscriptions == 2 and hub.stream_count == 2
    hub.remove(a)
    await asyncio.sleep(0)
    assert [s.subject for s in nats.subscriptions] == ["live.AAA"] and hub.nats_subscriptions == 1
    hub.remove(b)
    await asyncio.sleep(0)
    assert nats.subscriptions == [] and hub.nats_subscriptions == 0 and hub.stream_count == 0


async def test_one_frame_for_all_clients_and_a_cap() -> None:
    hub, nats = make_hub(max_streams=2)
    a, _ = await hub.open(["AAA"])
    b, _ = await hub.open(["AAA"])
    with pytest.raises(HubFull):
        await hub.open(["AAA"])
    await nats.deliver("AAA", 1.0)
    assert a.queue[0] is b.queue[0]  # serialized once, the same bytes for everyone
    assert frames_of(a.queue[0])[0]["id"] == f"{hub.boot_id}-1"


async def test_a_client_behind_gets_the_latest_per_symbol_then_is_dropped() -> None:
    hub, nats = make_hub(queue_size=3, max_behind_seconds=0.2)
    aborted = []
    client, first = await hub.open(["AAA", "BBB"])
    client.abort = lambda: aborted.append(True)
    for n in range(3):
        await nats.deliver("AAA", n)
    assert len(client.queue) == 3 and not client.behind
    for n in range(3, 8):
        await nats.deliver("AAA" if n % 2 else "BBB", n)
    assert client.behind and len(client.queue) == 3
    assert list(client.pending) == ["BBB", "AAA"] and client.coalesced == 5
    # Reading catches up: the queue, then the latest frame of each symbol.
    stream = client.frames(first)
    await stream.__anext__()
    assert prices(await stream.__anext__()) == [0, 1, 2]
    assert prices(await stream.__anext__()) == [6, 7]
    assert not client.behind
    # Behind again for longer than max_behind_seconds: dropped and its connection aborted.
    for n in range(10, 14):
        await nats.deliver("AAA", n)
    await asyncio.sleep(0.25)
    await nats.deliver("AAA", 20)
    assert client.closed and aborted == [True] and hub.stream_count == 0
    await stream.aclose()


async def test_replay_and_resync_by_last_event_id() -> None:
    hub, nats = make_hub(replay_size=4)
    keeper, _ = await hub.open(["AAA", "BBB"])
    await nats.deliver("AAA", 1)
    last = f"{hub.boot_id}-1"
    await nats.deliver("BBB", 2)
    await nats.deliver("AAA", 3)
    _, first = await hub.open(["AAA"], last)
    assert prices(first) == [3]  # only its symbol, only what it missed
    for bad in ("other-1", f"{hub.boot_id}-99", "nonsense", f"{hub.boot_id}-"):
        _, first = await hub.open(["AAA"], bad)
        assert [f["event"] for f in frames_of(first)] == ["resync"], bad
        assert frames_of(first)[0]["id"] == f"{hub.boot_id}-3"
    for n in range(5):
        await nats.deliver("AAA", 10 + n)
    _, first = await hub.open(["AAA"], last)  # older than the buffer
    assert [f["event"] for f in frames_of(first)] == ["resync"]
    hub.remove(keeper)


async def test_a_nats_reconnect_makes_every_stream_resync() -> None:
    hub, nats = make_hub()
    client, _ = await hub.open(["AAA"])
    await nats.deliver("AAA", 1)
    nats.stats["reconnects"] = 1
    await nats.deliver("AAA", 2)
    events = [frames_of(chunk)[0] for chunk in client.queue]
    assert [e["event"] for e in events] == ["update", "resync", "update"]
    # What happened before the gap cannot be replayed any more.
    _, first = await hub.open(["AAA"], events[0]["id"])
    assert [f["event"] for f in frames_of(first)] == ["resync"]
    _, first = await hub.open(["AAA"], events[1]["id"])
    assert prices(first) == [2]


async def test_close_ends_streams_and_unsubscribes() -> None:
    hub, nats = make_hub()
    client, first = await hub.open(["AAA"])
    stream = client.frames(first)
    await stream.__anext__()
    await hub.close()
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    assert nats.subscriptions == [] and hub.stream_count == 0
