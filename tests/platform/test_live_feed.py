"""The live fan-out core in-process, with a fake NATS, and its SSE framing: shared subscriptions, per-(symbol,
minute) coalescing, stale snapshots, per-symbol replay, gaps."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest

from marketdata.common.live import LiveFeed, LiveFull, LiveMetrics
from marketdata.edge import sse
from marketdata.v1 import events_pb2

METRICS = LiveMetrics("test_live", "test streams")
MINUTE = 1_700_000_040  # a minute's start, in seconds since the epoch
_trades = itertools.count(1)


class FakeSubscription:
    def __init__(self, nats: FakeNats, subject: str, cb: Any) -> None:
        self.nats, self.subject, self.cb = nats, subject, cb

    async def unsubscribe(self) -> None:
        self.nats.subscriptions.remove(self)


class FakeNats:
    """Quacks like NatsConnection and its client, as far as the feed uses them."""

    def __init__(self) -> None:
        self.client = self
        self.is_closed = False
        self.subscriptions: list[FakeSubscription] = []
        self.reconnect_listeners: list[Any] = []

    def reconnect(self) -> None:
        for listener in self.reconnect_listeners:
            listener()

    async def wait_connected(self, timeout: float | None = None) -> FakeNats:
        return self

    async def subscribe(self, subject: str, cb: Any) -> FakeSubscription:
        subscription = FakeSubscription(self, subject, cb)
        self.subscriptions.append(subscription)
        return subscription

    async def flush(self, timeout: float | None = None) -> None:
        pass

    async def deliver(self, symbol: str, price: float, minute: int = 0, trades: int | None = None) -> None:
        """A LiveUpdate as the aggregator publishes it: the minute's candle (trades grow with each snapshot)."""
        update = events_pb2.LiveUpdate(symbol=symbol, last_tick={"symbol": symbol, "price": price},
                                       candle={"symbol": symbol, "close": price,
                                               "trades": next(_trades) if trades is None else trades})
        update.candle.time.FromSeconds(MINUTE + 60 * minute)
        for subscription in list(self.subscriptions):
            if subscription.subject == f"live.{symbol}":
                await subscription.cb(type("Msg", (), {"data": update.SerializeToString(), "headers": None})())


def make_feed(**options: Any) -> tuple[LiveFeed, FakeNats]:
    nats = FakeNats()
    options = {"max_streams": 10, "queue_size": 64, "max_behind_seconds": 5.0, "linger_seconds": 0.05, **options}
    feed = LiveFeed(nats, lambda symbol: f"live.{symbol}", METRICS, encode=sse.update_frame, **options)  # type: ignore[arg-type]
    return feed, nats


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


async def test_subscriptions_are_shared_and_released_after_lingering() -> None:
    feed, nats = make_feed(linger_seconds=0.5)  # far longer than a pause of the test's loop
    a, _ = await feed.open(["AAA", "BBB"])
    b, _ = await feed.open(["AAA"])
    assert sorted(s.subject for s in nats.subscriptions) == ["live.AAA", "live.BBB"]
    assert feed.nats_subscriptions == 2 and feed.stream_count == 2
    feed.remove(a)
    await asyncio.sleep(0.05)
    assert feed.nats_subscriptions == 2  # BBB lingers: a reconnecting client would find it
    await asyncio.sleep(0.8)
    assert [s.subject for s in nats.subscriptions] == ["live.AAA"] and feed.nats_subscriptions == 1
    feed.remove(b)
    c, _ = await feed.open(["AAA"])  # back within the linger: the same subscription
    await asyncio.sleep(0.8)
    assert [s.subject for s in nats.subscriptions] == ["live.AAA"]
    feed.remove(c)
    await asyncio.sleep(0.8)
    assert nats.subscriptions == [] and feed.nats_subscriptions == 0 and feed.stream_count == 0


async def test_one_frame_for_all_subscribers_and_a_cap() -> None:
    feed, nats = make_feed(max_streams=2)
    a, _ = await feed.open(["AAA"])
    b, _ = await feed.open(["AAA"])
    with pytest.raises(LiveFull):
        await feed.open(["AAA"])
    await nats.deliver("AAA", 1.0)
    assert a.queue[0].payload is b.queue[0].payload  # serialized once, the same bytes for everyone
    assert frames_of(a.queue[0].payload)[0]["id"] == f"{feed.boot_id}-1"


async def test_a_subscriber_behind_gets_every_minutes_final_snapshot_then_is_dropped() -> None:
    feed, nats = make_feed(queue_size=3, max_behind_seconds=0.2)
    aborted = []
    subscriber, first = await sse.open_stream(feed, ["AAA", "BBB"])
    subscriber.abort = lambda: aborted.append(True)
    for n in range(3):
        await nats.deliver("AAA", n)
    assert len(subscriber.queue) == 3 and subscriber.behind_since is None
    # Behind: minute 0 of AAA gets two more snapshots, then minute 1 starts; BBB's minute 0 in between.
    await nats.deliver("AAA", 3)
    await nats.deliver("BBB", 4)
    await nats.deliver("AAA", 5)
    await nats.deliver("AAA", 6, minute=1)
    await nats.deliver("AAA", 7, minute=1)
    assert subscriber.behind_since is not None and subscriber.coalesced == 2
    stream = sse.frames(subscriber, first)
    await stream.__anext__()
    # Catching up: the queue, then the latest snapshot of each (symbol, minute): AAA's minute 0 is not lost to
    # its minute 1.
    assert prices(await stream.__anext__()) == [0, 1, 2, 5, 4, 7]
    assert subscriber.behind_since is None
    # Behind again for longer than max_behind_seconds: dropped and its connection aborted.
    for n in range(10, 14):
        await nats.deliver("AAA", n)
    await asyncio.sleep(0.25)
    await nats.deliver("AAA", 20)
    assert subscriber.closed and subscriber.reason == "behind" and aborted == [True] and feed.stream_count == 0
    await stream.aclose()


async def test_a_stale_snapshot_is_never_delivered() -> None:
    feed, nats = make_feed()
    subscriber, _ = await feed.open(["AAA"])
    await nats.deliver("AAA", 1.0, trades=5)
    await nats.deliver("AAA", 0.5, trades=3)  # an older commit's snapshot of the same minute, published late
    await nats.deliver("AAA", 0.7, trades=5)  # the same snapshot again
    await nats.deliver("AAA", 2.0, minute=1, trades=1)
    await nats.deliver("AAA", 1.5, trades=6)  # a late trade of minute 0: newer, so delivered after minute 1
    _, updates = await subscriber.take()
    assert [(u.minute - MINUTE, u.message.candle.trades, u.message.candle.close) for u in updates] == [
        (0, 5, 1.0), (60, 1, 2.0), (0, 6, 1.5)]


async def test_replay_is_per_symbol_and_resync_when_incomplete() -> None:
    feed, nats = make_feed(replay_size=4)
    keeper, _ = await feed.open(["AAA", "BBB"])
    await nats.deliver("AAA", 1)
    last = f"{feed.boot_id}-1"
    await nats.deliver("BBB", 2)
    await nats.deliver("AAA", 3)
    _, first = await sse.open_stream(feed, ["AAA"], last)
    assert prices(first) == [3]  # only its symbol, only what it missed
    # A busy symbol does not push a quiet one's updates out of the replay.
    for n in range(50):
        await nats.deliver("AAA", 100 + n)
    _, first = await sse.open_stream(feed, ["BBB"], last)
    assert prices(first) == [2]
    _, first = await sse.open_stream(feed, ["AAA"], last)  # older than AAA's buffer
    assert [f["event"] for f in frames_of(first)] == ["resync"]
    for bad in ("other-1", f"{feed.boot_id}-999", "nonsense", f"{feed.boot_id}-"):
        _, first = await sse.open_stream(feed, ["AAA"], bad)
        assert [f["event"] for f in frames_of(first)] == ["resync"], bad
        assert frames_of(first)[0]["id"] == feed.position
    # A symbol nobody watched (no subscription then): its updates since the id were never received.
    _, first = await sse.open_stream(feed, ["CCC"], feed.position)
    assert [f["event"] for f in frames_of(first)] == ["resync"]
    feed.remove(keeper)


async def test_a_client_reconnecting_within_the_linger_resumes() -> None:
    feed, nats = make_feed(linger_seconds=5)
    subscriber, _ = await feed.open(["AAA"])
    await nats.deliver("AAA", 1)
    last = feed.position
    feed.remove(subscriber)  # the only client leaves; its browser retries after 2 s
    await nats.deliver("AAA", 2)
    await nats.deliver("AAA", 3, minute=1)
    await nats.deliver("AAA", 4, minute=1)
    _, first = await sse.open_stream(feed, ["AAA"], last)
    assert prices(first) == [2, 3, 4]


async def test_a_nats_reconnect_makes_every_stream_resync() -> None:
    feed, nats = make_feed()
    subscriber, first = await sse.open_stream(feed, ["AAA"])
    stream = sse.frames(subscriber, first)
    await stream.__anext__()
    await nats.deliver("AAA", 1)
    before = frames_of(await stream.__anext__())
    nats.reconnect()
    told = frames_of(await asyncio.wait_for(stream.__anext__(), 1))  # at once, not with the next update
    await nats.deliver("AAA", 2)
    after = frames_of(await stream.__anext__())
    assert [e["event"] for e in before + told + after] == ["update", "resync", "update"]
    # What happened before the gap cannot be replayed any more.
    _, replay = await sse.open_stream(feed, ["AAA"], before[0]["id"])
    assert [f["event"] for f in frames_of(replay)] == ["resync"]
    _, replay = await sse.open_stream(feed, ["AAA"], told[0]["id"])
    assert prices(replay) == [2]
    await stream.aclose()


async def test_close_ends_streams_and_unsubscribes() -> None:
    feed, nats = make_feed()
    subscriber, first = await sse.open_stream(feed, ["AAA"])
    stream = sse.frames(subscriber, first)
    await stream.__anext__()
    await feed.close()
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    assert nats.subscriptions == [] and feed.stream_count == 0
