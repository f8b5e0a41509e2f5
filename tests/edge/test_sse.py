"""The live stream: delivery, fan-out to many clients, slow clients, cleanup, reconnection, limits."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx

from tests.edge.conftest import (
    EdgeProcess,
    LivePublisher,
    SSEClient,
    metrics,
    unique_symbol,
    settle,
    stalled_socket,
    drained_to_end,
)
from tests.edge.test_rest import minute_ticks, post_ticks
from tests.support.processes import wait_for
from tests.support.stack import EdgeStack


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def test_a_committed_tick_reaches_the_stream(edge_stack: EdgeStack, symbol: str) -> None:
    client = await SSEClient.connect(edge_stack.base_url, f"/realtime/ticks?symbol={symbol}")
    try:
        assert client.status == 200 and client.headers["content-type"].startswith("text/event-stream")
        assert client.headers["cache-control"] == "no-store" and client.headers["x-request-id"]
        hello = await client.next_event(5, skip_comments=False)
        assert hello is not None and hello.retry == 2000
        ticks, _ = minute_ticks(symbol, 1)
        acknowledged = time.monotonic()
        response = await asyncio.to_thread(post_ticks, edge_stack.base_url, edge_stack.api_key, ticks)
        assert response.status_code == 200, response.text
        event = await client.next_event(15)
        assert event is not None and event.event == "update"
        boot, _, counter = (event.id or "").rpartition("-")
        assert boot and counter.isdigit()
        update = json.loads(event.data)
        assert set(update) == {"symbol", "lastTick", "candle", "commitTime"}
        assert update["symbol"] == symbol
        # Same field names and shapes as the REST API.
        latest = httpx.get(f"{edge_stack.base_url}/api/v1/ticks/{symbol}/latest").json()
        assert update["lastTick"] == latest["lastTick"]
        assert set(update["candle"]) == set(latest["candle"]) - {"sma10"}
        assert update["candle"]["trades"] == 3
        # The candle fields of history: volumes, closeTime and the closed flag (a minute still open).
        assert update["candle"]["closeTime"] == latest["candle"]["closeTime"]
        assert update["candle"]["quoteVolume"] == latest["candle"]["quoteVolume"] > 0
        assert update["candle"]["takerBuyVolume"] == latest["candle"]["takerBuyVolume"]
        print(f"ingest → SSE: {(event.received - acknowledged) * 1000:.1f} ms (incl. the REST call)")
    finally:
        client.close()


async def test_several_symbols_repeated_or_comma_separated(edge_stack: EdgeStack, live_publisher: LivePublisher) -> None:
    a, b, c, other = (unique_symbol(p) for p in "ABCO")
    client = await SSEClient.connect(edge_stack.base_url, f"/realtime/ticks?symbol={a}&symbol={b},{c}")
    try:
        assert client.status == 200
        # The head is sent once the subscriptions are in place on the NATS server.
        for name in (other, a, b, c):
            await live_publisher.publish(name)
        received = []
        while len(received) < 3:
            event = await client.next_event(5)
            assert event is not None
            received.append(json.loads(event.data)["symbol"])
        assert received == [a, b, c]
    finally:
        client.close()


async def test_every_minutes_final_candle_arrives_across_a_minute_boundary(edge_stack: EdgeStack,
                                                                          symbol: str) -> None:
    """Commits that end one minute and start the next, concurrently and in one batch: the SSE stream and
    WatchTicks both end up with each minute's final candle (not only the newest minute's)."""
    from datetime import datetime, timedelta, timezone

    import grpc

    from marketdata.v1 import query_pb2, query_pb2_grpc
    from tests.edge.test_rest import rfc3339

    minute = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=5)
    after = minute + timedelta(minutes=1)

    def tick(at: datetime, price: float, trade_id: str) -> dict:
        return {"symbol": symbol, "price": price, "size": 1.0, "side": "SIDE_SELL", "eventTime": rfc3339(at),
                "tradeId": f"{symbol}-{trade_id}", "source": "boundary"}

    def post(ticks: list[dict]) -> None:
        response = post_ticks(edge_stack.base_url, edge_stack.api_key, ticks)
        assert response.status_code == 200, response.text

    def wait_trades(trades: int) -> None:
        def committed() -> bool:
            candles = httpx.get(f"{edge_stack.base_url}/api/v1/ticks/{symbol}/history",
                                params={"view": "ohlc1m", "limit": 10}, timeout=5).json()["candles"]
            return any(c["time"] == rfc3339(minute) and c["trades"] == trades for c in candles)
        wait_for(committed, 30, interval=0.1, message=f"{trades} trades in the first minute")

    client = await SSEClient.connect(edge_stack.base_url, f"/realtime/ticks?symbol={symbol}")
    channel = grpc.aio.insecure_channel(edge_stack.stack.query.address)
    call = query_pb2_grpc.QueryServiceStub(channel).WatchTicks(query_pb2.WatchTicksRequest(symbols=[symbol]))
    try:
        await call.initial_metadata()
        await asyncio.to_thread(post, [tick(minute + timedelta(seconds=s), 100 + s, f"a{s}") for s in (10, 20, 30)])
        # Two concurrent commits at the boundary: the next minute's first trades, and a late last trade of
        # the first minute.
        await asyncio.gather(
            asyncio.to_thread(post, [tick(after + timedelta(seconds=s), 200 + s, f"b{s}") for s in (10, 20)]),
            asyncio.to_thread(post, [tick(minute + timedelta(seconds=59), 159, "c59")]))
        await asyncio.to_thread(wait_trades, 4)
        # One batch touching both minutes: its commit changes the first minute without being its newest.
        await asyncio.to_thread(post, [tick(minute + timedelta(seconds=45), 145, "d45"),
                                       tick(after + timedelta(seconds=40), 240, "d40")])
        expected = {rfc3339(minute): (5, 159.0), rfc3339(after): (3, 240.0)}

        latest: dict[str, tuple[int, float]] = {}
        while latest != expected:
            event = await client.next_event(15)
            assert event is not None, latest
            candle = json.loads(event.data)["candle"]
            latest[candle["time"]] = (int(candle["trades"]), candle["close"])
        watched: dict[str, tuple[int, float]] = {}
        while watched != expected:
            candle = (await asyncio.wait_for(call.read(), 15)).update.candle
            watched[rfc3339(candle.time.ToDatetime(timezone.utc))] = (candle.trades, candle.close)
    finally:
        client.close()
        call.cancel()
        await channel.close()


def test_invalid_and_unknown_symbols(edge_stack: EdgeStack) -> None:
    base = edge_stack.base_url
    for query in ("symbol=BTC*USDT", "symbol=btcusdt", "symbol=A..B", "symbol=BTC.", "symbol=-BTC", "symbol=OK1,BTC.",
                  "", "symbol=", "symbol=X", f"symbol={'A' * 21}"):
        response = httpx.get(f"{base}/realtime/ticks?{query}")
        assert response.status_code == 400, (query, response.text)
        body = response.json()
        assert body["grpcCode"] == "INVALID_ARGUMENT" and body["violations"][0]["field"] == "symbol", body
    many = ",".join(f"S{n:03d}" for n in range(51))
    assert httpx.get(f"{base}/realtime/ticks?symbol={many}").status_code == 400
    # A well-formed symbol nobody registered yet is accepted: its updates start once it trades.
    with httpx.stream("GET", f"{base}/realtime/ticks?symbol={unique_symbol('U')}", timeout=5) as stream:
        assert stream.status_code == 200


async def test_fan_out_to_200_concurrent_clients(edge_stack: EdgeStack, live_publisher: LivePublisher) -> None:
    base = edge_stack.base_url
    hot, cold = unique_symbol("H"), unique_symbol("K")
    # Subscriptions of earlier tests' streams linger a few seconds after their last client left.
    before = await settle(edge_stack.metrics_url, edge_sse_subscriptions=0, timeout=25)
    clients = await asyncio.gather(*(
        SSEClient.connect(base, f"/realtime/ticks?symbol={hot if n % 10 else cold}") for n in range(200)))
    try:
        assert all(c.status == 200 for c in clients)
        samples = metrics(edge_stack.metrics_url)
        assert samples["edge_sse_streams"] == before["edge_sse_streams"] + 200
        assert samples["edge_sse_subscriptions"] == before["edge_sse_subscriptions"] + 2  # one per subject
        hot_clients = [c for n, c in enumerate(clients) if n % 10]
        cold_clients = [c for n, c in enumerate(clients) if not n % 10]
        sent: list[float] = []

        async def publish() -> None:
            for n in range(20):
                sent.append(time.monotonic())
                await live_publisher.publish(hot, price=100 + n)
                await asyncio.sleep(0.02)
            await live_publisher.publish(cold, price=7)

        async def read(client: SSEClient, count: int) -> list:
            return [await client.next_event(15) for _ in range(count)]

        publisher = asyncio.create_task(publish())
        hot_events, cold_events = await asyncio.gather(
            asyncio.gather(*(read(c, 20) for c in hot_clients)), asyncio.gather(*(read(c, 1) for c in cold_clients)))
        await publisher
        ids = [e.id for e in hot_events[0]]
        latencies = []
        for events in hot_events:
            assert [e.id for e in events] == ids  # same frames, same order, for everyone
            assert [json.loads(e.data)["lastTick"]["price"] for e in events] == [100 + n for n in range(20)]
            latencies += [(e.received - s) * 1000 for e, s in zip(events, sent)]
        assert all(json.loads(events[0].data)["symbol"] == cold for events in cold_events)
        p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        print(f"NATS → 180 clients: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        assert p99 < 500
    finally:
        for client in clients:
            client.close()
    await settle(edge_stack.metrics_url, edge_sse_streams=before["edge_sse_streams"],
                edge_sse_subscriptions=before["edge_sse_subscriptions"], timeout=25)


async def test_a_stalled_client_is_coalesced_then_dropped(start_edge, live_publisher: LivePublisher) -> None:  # type: ignore[no-untyped-def]
    edge: EdgeProcess = start_edge(SSE_MAX_BEHIND_SECONDS="1")
    symbol = unique_symbol("S")
    path = f"/realtime/ticks?symbol={symbol}"
    stalled = stalled_socket(edge.base_url, path)  # a small receive buffer, never read
    readers = await asyncio.gather(*(SSEClient.connect(edge.base_url, path) for _ in range(3)))
    # Fat updates (8 KiB each) fill the kernel's buffers of the stalled connection quickly.
    padding, total = "x" * 8192, 1500
    sent: dict[float, float] = {}
    received: list[list[float]] = [[] for _ in readers]

    async def read(index: int, client: SSEClient) -> None:
        while len(received[index]) < total:
            event = await client.next_event(20)
            assert event is not None
            price = json.loads(event.data)["lastTick"]["price"]
            received[index].append((event.received - sent[price]) * 1000)

    try:
        tasks = [asyncio.create_task(read(i, c)) for i, c in enumerate(readers)]
        for n in range(total):
            price = 1000.0 + n
            sent[price] = time.monotonic()
            await live_publisher.publish(symbol, price=price, flush=n % 10 == 9, source=padding)
            if n % 10 == 9:
                await asyncio.sleep(0.03)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        samples = await asyncio.to_thread(metrics, edge.metrics_url)
        assert samples["edge_sse_coalesced_total"] > 0
        assert samples['edge_sse_dropped_total{reason="behind"}'] == 1
        assert samples["edge_sse_streams"] == 3
        # The edge closed the stalled connection: reading it now drains what was buffered, then ends.
        assert await asyncio.to_thread(drained_to_end, stalled, 10)
        latencies = [value for per_client in received for value in per_client]
        p99 = percentile(latencies, 0.99)
        print(f"readers beside a stalled client: p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms")
        assert p99 < 250
        assert all(len(r) == total for r in received)  # the readers lost nothing
    finally:
        stalled.close()
        for client in readers:
            client.close()
    await settle(edge.metrics_url, edge_sse_streams=0, edge_sse_subscriptions=0, timeout=25)


async def test_disconnects_leave_no_stream_subscription_or_task(start_edge) -> None:  # type: ignore[no-untyped-def]
    edge: EdgeProcess = start_edge()
    warm_up = await SSEClient.connect(edge.base_url, "/realtime/ticks?symbol=WARMUP")  # starts per-loop helpers
    warm_up.close()
    baseline = await settle(edge.metrics_url, edge_sse_streams=0, edge_sse_subscriptions=0, timeout=25)
    await asyncio.sleep(1)
    baseline_tasks = metrics(edge.metrics_url)["edge_event_loop_tasks"]
    symbols = [unique_symbol("D") for _ in range(5)]
    for round_ in range(3):
        clients = await asyncio.gather(*(
            SSEClient.connect(edge.base_url, f"/realtime/ticks?symbol={symbols[n % 5]},{symbols[(n + 1) % 5]}")
            for n in range(30)))
        samples = metrics(edge.metrics_url)
        assert samples["edge_sse_streams"] == 30 and samples["edge_sse_subscriptions"] == 5
        assert samples["edge_event_loop_tasks"] > baseline_tasks
        for client in clients:
            client.close()
        await settle(edge.metrics_url, edge_sse_streams=0, edge_sse_subscriptions=0, timeout=25)
    # HEAD answers the stream's headers and opens nothing that stays.
    head = await asyncio.to_thread(httpx.head, f"{edge.base_url}/realtime/ticks?symbol={symbols[0]}")
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
    await settle(edge.metrics_url, edge_sse_streams=0, edge_sse_subscriptions=0, timeout=25)
    await settle(edge.metrics_url, edge_event_loop_tasks=baseline_tasks)
    assert baseline["edge_sse_streams"] == 0


async def test_reconnect_with_last_event_id(start_edge, live_publisher: LivePublisher) -> None:  # type: ignore[no-untyped-def]
    edge: EdgeProcess = start_edge(SSE_REPLAY_SIZE="16")
    symbol, other = unique_symbol("R"), unique_symbol("Q")
    path = f"/realtime/ticks?symbol={symbol}"
    first = await SSEClient.connect(edge.base_url, path)
    keeper = await SSEClient.connect(edge.base_url, f"/realtime/ticks?symbol={symbol},{other}")  # keeps subs alive
    for n in range(3):
        await live_publisher.publish(symbol, price=1 + n)
    seen = [await first.next_event(5) for _ in range(3)]
    first.close()
    last_id = seen[-1].id
    assert last_id is not None
    # Missed while away: two of ours, one of another symbol.
    await live_publisher.publish(symbol, price=4)
    await live_publisher.publish(other, price=99)
    await live_publisher.publish(symbol, price=5)
    for _ in range(6):  # the keeper saw all six
        await keeper.next_event(5)
    again = await SSEClient.connect(edge.base_url, path, headers={"Last-Event-ID": last_id})
    try:
        replayed = [await again.next_event(5) for _ in range(2)]
        assert [json.loads(e.data)["lastTick"]["price"] for e in replayed] == [4, 5]
        assert all(e.event == "update" for e in replayed)
        await live_publisher.publish(symbol, price=6)
        live = await again.next_event(5)
        assert json.loads(live.data)["lastTick"]["price"] == 6
        ids = [e.id for e in (*seen, *replayed, live)]
        assert ids == sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1]))
    finally:
        again.close()

    # An id of another boot of the edge (or garbage): resync, with the current position as id.
    for stale in ("0badb00t-12", "garbage"):
        client = await SSEClient.connect(edge.base_url, path, headers={"Last-Event-ID": stale})
        event = await client.next_event(5)
        client.close()
        assert event.event == "resync" and event.id and event.id.startswith(last_id.rsplit("-", 1)[0])
        assert json.loads(event.data)["lastEventId"] == stale

    # An id older than the replay buffer: resync too.
    for n in range(20):
        await live_publisher.publish(symbol, price=100 + n)
    for _ in range(20):
        await keeper.next_event(5)
    client = await SSEClient.connect(edge.base_url, path, headers={"Last-Event-ID": last_id})
    event = await client.next_event(5)
    client.close()
    keeper.close()
    assert event.event == "resync"
    # The resync's id lets the next reconnection resume from there.
    resumed = await SSEClient.connect(edge.base_url, f"/realtime/ticks?symbol={symbol},{other}",
                                      headers={"Last-Event-ID": event.id})
    await live_publisher.publish(other, price=1)
    next_event = await resumed.next_event(5)
    resumed.close()
    assert next_event.event == "update" and json.loads(next_event.data)["symbol"] == other


async def test_stream_cap_and_pings(start_edge) -> None:  # type: ignore[no-untyped-def]
    edge: EdgeProcess = start_edge(SSE_MAX_STREAMS="3", SSE_PING_SECONDS="0.3")
    clients = [await SSEClient.connect(edge.base_url, "/realtime/ticks?symbol=CAPTEST") for _ in range(3)]
    try:
        refused = httpx.get(f"{edge.base_url}/realtime/ticks?symbol=CAPTEST")
        assert refused.status_code == 503
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["grpcCode"] == "UNAVAILABLE" and "3 live streams" in refused.json()["detail"]
        assert metrics(edge.metrics_url)['edge_sse_rejected_total{reason="full"}'] == 1
        # Keep-alive comments while nothing happens.
        await clients[0].next_event(5, skip_comments=False)  # retry + position
        ping = await clients[0].next_event(5, skip_comments=False)
        assert ping.comments and ping.comments[0].startswith("ping")
    finally:
        for client in clients:
            client.close()
    await settle(edge.metrics_url, edge_sse_streams=0)
    with httpx.stream("GET", f"{edge.base_url}/realtime/ticks?symbol=CAPTEST", timeout=5) as stream:
        assert stream.status_code == 200


def test_without_nats_the_stream_is_503_and_rest_still_works(start_edge) -> None:  # type: ignore[no-untyped-def]
    from marketdata.common.embedded import free_port

    edge: EdgeProcess = start_edge(wait_ready=True, NATS_URL=f"nats://127.0.0.1:{free_port()}")
    refused = httpx.get(f"{edge.base_url}/realtime/ticks?symbol=NONATS", timeout=10)
    assert refused.status_code == 503 and refused.json()["grpcCode"] == "UNAVAILABLE"
    assert "NATS" in refused.json()["detail"]
    assert httpx.get(f"{edge.base_url}/api/v1/symbols").status_code == 200
    assert metrics(edge.metrics_url)["edge_sse_streams"] == 0


def conforms(document: dict, schema: dict, instance: object) -> list[str]:
    """Errors of instance against a schema of the document (its refs resolved in the document)."""
    import jsonschema

    rooted = {"allOf": [schema], "components": document["components"]}
    return [error.message for error in jsonschema.Draft4Validator(rooted).iter_errors(instance)]


async def test_events_are_sent_as_the_document_declares_them(edge_stack: EdgeStack, symbol: str) -> None:
    """Every event (resync and update) matches the LiveEvent schema of the served document, and its data the
    schema the document names for that event."""
    document = httpx.get(f"{edge_stack.base_url}/openapi.json").json()
    event_schema = document["paths"]["/realtime/ticks"]["get"]["responses"]["200"]["content"][
        "text/event-stream"]["schema"]
    data_schemas = document["components"]["schemas"]["LiveEvent"]["x-data-schemas"]
    # An id the edge never issued: the stream opens with a resync.
    client = await SSEClient.connect(edge_stack.base_url, f"/realtime/ticks?symbol={symbol}",
                                     headers={"last-event-id": "0-1"})
    try:
        events = [await client.next_event(5)]
        response_ticks, _ = minute_ticks(symbol, 1)
        assert (await asyncio.to_thread(post_ticks, edge_stack.base_url, edge_stack.api_key,
                                        response_ticks)).status_code == 200
        events.append(await client.next_event(15))
    finally:
        client.close()
    assert [event.event for event in events if event] == ["resync", "update"]
    for event in events:
        assert event is not None
        sent = {"event": event.event, "data": event.data, **({"id": event.id} if event.id else {})}
        assert conforms(document, event_schema, sent) == [], sent
        payload = json.loads(event.data)
        assert conforms(document, data_schemas[event.event], payload) == [], (event.event, payload)
    # The check can fail: an update's data is not a Resync.
    assert conforms(document, data_schemas["resync"], json.loads(events[1].data))


async def test_the_sse_send_hook_is_still_sse_starlettes() -> None:
    """The edge's one override of a library internal (LiveStreamResponse._send_with_timeout): sse-starlette
    must still send every message of a stream through it, or the override silently stops applying."""
    from sse_starlette import EventSourceResponse

    from marketdata.edge.server import LiveStreamResponse

    assert LiveStreamResponse._send_with_timeout is not EventSourceResponse._send_with_timeout
    used: list[str] = []

    class Probe(EventSourceResponse):
        async def _send_with_timeout(self, send, message) -> None:  # type: ignore[no-untyped-def]
            used.append(message["type"])
            await send(message)

    async def body():  # type: ignore[no-untyped-def]
        yield b"data: 1\n\n"

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    await asyncio.wait_for(Probe(body(), sep="\n")(scope, receive, send), 5)
    bodies = [m for m in sent if m["type"] == "http.response.body" and m.get("body")]
    assert bodies and used.count("http.response.body") >= len(bodies), (used, sent)
