"""WatchTicks with LiveUpdates published on NATS by the test itself (as the aggregator does after a commit).

test_end_to_end.py checks the same feed with ticks going through ingest and the aggregator.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from marketdata.v1 import events_pb2, market_pb2, query_pb2, query_pb2_grpc
from tests.query.conftest import QueryProcess
from tests.query.helpers import insert_symbol, new_symbol


def live_subject(service_env: dict[str, str], symbol: str) -> str:
    return f"{service_env['MD_SUBJECT_PREFIX']}.live.{symbol}"


def update(symbol: str, n: int, padding: int = 0) -> events_pb2.LiveUpdate:
    return events_pb2.LiveUpdate(
        symbol=symbol,
        last_tick=market_pb2.Tick(symbol=symbol, price=100 + n, size=1, trade_id=f"t{n}", source="x" * padding),
        candle=market_pb2.Candle(symbol=symbol, close=100 + n, trades=n))


async def wait_metric(service: QueryProcess, name: str, expected: float, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (value := await asyncio.to_thread(service.metric, name)) != expected:
        assert time.monotonic() < deadline, f"{name} is {value}, expected {expected}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def idle(query_service: QueryProcess) -> QueryProcess:
    """The query service with no stream open (streams of earlier tests have been released)."""
    await wait_metric(query_service, "query_watch_streams", 0)
    await wait_metric(query_service, "query_watch_subscriptions", 0, timeout=20)
    return query_service


async def test_stream_relays_updates_and_cancel_frees_the_subscription(
        query_stub, idle, db, nats_client, service_env) -> None:
    btc, eth = new_symbol(), new_symbol()
    await insert_symbol(db, btc)
    await insert_symbol(db, eth)
    call = query_stub.WatchTicks(query_pb2.WatchTicksRequest(symbols=[btc, eth, btc]))
    await call.initial_metadata()  # sent once the NATS subscriptions are in place
    await wait_metric(idle, "query_watch_streams", 1)
    await wait_metric(idle, "query_watch_subscriptions", 2)  # duplicates in the request are watched once

    other = new_symbol()
    await nats_client.publish(live_subject(service_env, other), update(other, 0).SerializeToString())
    for i, symbol in enumerate([btc, eth, btc]):
        await nats_client.publish(live_subject(service_env, symbol), update(symbol, i).SerializeToString())
    received = [await asyncio.wait_for(call.read(), 2) for _ in range(3)]
    # In order per symbol (each subject has its own subscription, so symbols may interleave differently).
    got = [(r.update.symbol, r.update.last_tick.trade_id) for r in received]
    assert [g for g in got if g[0] == btc] == [(btc, "t0"), (btc, "t2")]
    assert [g for g in got if g[0] == eth] == [(eth, "t1")]

    call.cancel()
    assert await call.code() == grpc.StatusCode.CANCELLED
    await wait_metric(idle, "query_watch_streams", 0)
    await wait_metric(idle, "query_watch_subscriptions", 0, timeout=20)  # after lingering


async def test_streams_share_one_subscription_per_symbol(query_stub, idle, db, nats_client, service_env) -> None:
    symbol = new_symbol()
    await insert_symbol(db, symbol)
    calls = [query_stub.WatchTicks(query_pb2.WatchTicksRequest(symbols=[symbol])) for _ in range(3)]
    for call in calls:
        await call.initial_metadata()
    await wait_metric(idle, "query_watch_streams", 3)
    await wait_metric(idle, "query_watch_subscriptions", 1)
    await nats_client.publish(live_subject(service_env, symbol), update(symbol, 7).SerializeToString())
    for call in calls:
        assert (await asyncio.wait_for(call.read(), 2)).update.last_tick.trade_id == "t7"
    calls[0].cancel()
    await wait_metric(idle, "query_watch_streams", 2)
    await wait_metric(idle, "query_watch_subscriptions", 1)  # still needed by the other two
    await nats_client.publish(live_subject(service_env, symbol), update(symbol, 8).SerializeToString())
    for call in calls[1:]:
        assert (await asyncio.wait_for(call.read(), 2)).update.last_tick.trade_id == "t8"
        call.cancel()
    await wait_metric(idle, "query_watch_streams", 0)
    await wait_metric(idle, "query_watch_subscriptions", 0, timeout=20)  # after lingering


async def test_slow_client_gets_coalesced_updates(query_stub, idle, db, nats_client, service_env) -> None:
    """A client that does not read: the server's queue stays bounded by coalescing to the latest update per
    symbol; once the client reads, the latest update of every symbol arrives."""
    a, b = new_symbol(), new_symbol()
    await insert_symbol(db, a)
    await insert_symbol(db, b)
    coalesced_before = idle.metric("query_watch_coalesced_total")
    received_before = idle.metric("query_watch_updates_total")
    call = query_stub.WatchTicks(query_pb2.WatchTicksRequest(symbols=[a, b]))
    await call.initial_metadata()
    count = 3000  # ~12 MB of updates: far more than gRPC's flow-control windows hold
    for n in range(count):
        symbol = a if n % 2 == 0 else b
        await nats_client.publish(live_subject(service_env, symbol), update(symbol, n, padding=4000).SerializeToString())
    await nats_client.flush()
    await wait_metric(idle, "query_watch_updates_total", received_before + count, timeout=20)
    assert idle.metric("query_watch_coalesced_total") > coalesced_before

    latest: dict[str, int] = {}
    seen = 0
    while latest.get(a) != count - 2 or latest.get(b) != count - 1:
        response = await asyncio.wait_for(call.read(), 5)
        n = int(response.update.last_tick.trade_id[1:])
        assert n > latest.get(response.update.symbol, -1), "updates of a symbol stay in order"
        latest[response.update.symbol] = n
        seen += 1
    assert seen < count
    call.cancel()


async def test_a_client_that_stops_reading_is_told_to_watch_again(query_stub, idle, db, nats_client,
                                                                   service_env) -> None:
    """Updates of ever new minutes cannot be coalesced: a client that stops reading falls more than a queue
    behind, gets what was already on its way, then RESOURCE_EXHAUSTED (not a silent end, not an endless
    buffer), and the stream's subscription is released."""
    symbol = new_symbol()
    await insert_symbol(db, symbol)

    def dropped_behind() -> float:
        try:
            return idle.metric('query_watch_dropped_total{reason="behind"}')
        except AssertionError:  # not exported before the first drop
            return 0.0

    dropped_before = await asyncio.to_thread(dropped_behind)
    call = query_stub.WatchTicks(query_pb2.WatchTicksRequest(symbols=[symbol]))
    await call.initial_metadata()
    count = 1500  # each a new minute, ~6 MB: beyond gRPC's flow-control windows and the 256 + 256 kept
    for n in range(count):
        message = update(symbol, n, padding=4000)
        message.candle.time.seconds = 1_700_000_000 + 60 * n
        await nats_client.publish(live_subject(service_env, symbol), message.SerializeToString())
    await nats_client.flush()
    deadline = time.monotonic() + 20
    while await asyncio.to_thread(dropped_behind) == dropped_before:
        assert time.monotonic() < deadline, "the stream was never dropped"
        await asyncio.sleep(0.1)

    received = []
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for response in call:
            received.append(int(response.update.last_tick.trade_id[1:]))
    assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "fell too far behind" in ended.value.details() and "watch again" in ended.value.details()
    assert received == sorted(received) and 0 < len(received) < count
    await wait_metric(idle, "query_watch_streams", 0)


async def test_shutdown_ends_streams(start_service, db) -> None:
    symbol = new_symbol()
    await insert_symbol(db, symbol)
    service = start_service("query")
    async with grpc.aio.insecure_channel(service.address) as channel:
        call = query_pb2_grpc.QueryServiceStub(channel).WatchTicks(query_pb2.WatchTicksRequest(symbols=[symbol]))
        await call.initial_metadata()
        started = time.monotonic()
        service.signal(15)  # SIGTERM
        responses = [r async for r in call]  # ends cleanly, without an error
        assert responses == []
        assert await call.code() == grpc.StatusCode.OK
        assert time.monotonic() - started < 3
    assert await asyncio.to_thread(service.stop) == 0
