"""The feeder's delivery against a fake ingest that fails on purpose: retried batches are the same batches
(same trade ids), nothing acknowledged is lost, and only lost acknowledgements cause duplicates."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import grpc
import httpx
import pytest

from marketdata.common.embedded import free_port
from marketdata.feeder.feeder import Feeder, FeederOptions, RestTransport
from marketdata.feeder.generator import spec_for
from marketdata.v1 import ingest_pb2, ingest_pb2_grpc

API_KEY = "k1"


class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    """Stores every tick it receives; fails chosen calls with UNAVAILABLE, before or after storing them."""

    def __init__(self, fail_before: set[int] = frozenset(), fail_after: set[int] = frozenset()) -> None:
        self.calls = 0
        self.fail_before = set(fail_before)
        self.fail_after = set(fail_after)  # stored, then the answer is "lost"
        self.stored: list[str] = []
        self.batches: list[list[str]] = []
        self.lost: list[list[str]] = []  # batches stored whose answer was lost
        self.symbols: list[str] = []
        self.keys: set[str] = set()

    def _key(self, context: grpc.aio.ServicerContext) -> None:
        self.keys.add(dict(context.invocation_metadata()).get("x-api-key", ""))

    async def UpsertSymbols(self, request, context):  # noqa: N802
        self._key(context)
        self.symbols += [s.symbol for s in request.items if s.active]
        return ingest_pb2.UpsertSymbolsResponse(upserted=len(request.items))

    async def _store(self, items, context) -> int:
        self.calls += 1
        call = self.calls
        if call in self.fail_before:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "JetStream unavailable")
        ids = [t.trade_id for t in items]
        self.batches.append(ids)
        self.stored += ids
        if call in self.fail_after:
            self.lost.append(ids)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection lost before the answer")
        return len(ids)

    async def PublishTicks(self, request, context):  # noqa: N802
        self._key(context)
        return ingest_pb2.PublishTicksResponse(accepted=await self._store(request.items, context))

    async def StreamTicks(self, request_iterator, context):  # noqa: N802
        self._key(context)
        accepted = batches = 0
        async for request in request_iterator:
            accepted += await self._store(request.items, context)
            batches += 1
        return ingest_pb2.StreamTicksResponse(accepted=accepted, batches=batches)


async def serve(fake: FakeIngest) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(fake, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, f"127.0.0.1:{port}"


def options(address: str, transport: str, duration: float = 2.0) -> FeederOptions:
    return FeederOptions(specs=[spec_for(s) for s in ("BTCUSDT", "ETHUSDT")], rate=200, duration=duration,
                         seed=11, batch_interval=0.05, transport=transport, api_key=API_KEY,
                         ingest_addr=address, progress=False)


def assert_in_order_per_symbol(ids: list[str]) -> None:
    seen: dict[str, list[str]] = {}
    for trade_id in ids:
        seen.setdefault(trade_id.split("-")[0], []).append(trade_id)
    for symbol_ids in seen.values():
        assert symbol_ids == sorted(symbol_ids)


@pytest.mark.parametrize("transport", ["grpc", "stream"])
async def test_everything_arrives_and_retries_resend_the_same_batch(transport: str) -> None:
    # Calls 3-5 fail: more than the channel's own attempts (common.channels retries UNAVAILABLE on
    # PublishTicks), so the feeder's retry is exercised too.
    fake = FakeIngest(fail_before={3, 4, 5, 9}, fail_after={6, 12})
    server, address = await serve(fake)
    try:
        feeder = Feeder(options(address, transport))
        stats = await feeder.run()
    finally:
        await server.stop(None)
    assert fake.symbols == ["BTCUSDT", "ETHUSDT"]
    assert fake.keys == {API_KEY}
    unique = set(fake.stored)
    generated = feeder.generator.clock
    assert 200 < len(unique) and generated >= 1.9
    # Every trade the generator produced up to the end arrived: per symbol the sequence has no hole.
    per_symbol = Counter(trade_id.split("-")[0] for trade_id in unique)
    for trade_id in unique:
        symbol, _, seq = trade_id.split("-")
        assert int(seq) <= per_symbol[symbol]
    assert stats.sent == len(unique), "acknowledged ticks are counted once"
    # gRPC retries single UNAVAILABLE answers of the unary call itself; the feeder sees the rest.
    assert stats.errors >= (1 if transport == "grpc" else 4)
    # Duplicates come only from the batches whose answer was lost, sent again whole.
    copies = Counter(fake.stored)
    duplicated = {i for i, n in copies.items() if n > 1}
    assert duplicated, "the lost answers caused a resend"
    if transport == "grpc":
        assert all(n == 2 for n in copies.values() if n > 1)
        assert len(fake.lost) == 2
        assert duplicated == set().union(*map(set, fake.lost))
        # The batch sent after a lost answer is exactly the same batch (same ids, same order).
        for batch in fake.lost:
            assert fake.batches[fake.batches.index(batch) + 1] == batch
    else:
        # A broken stream is not acknowledged at all: every batch it carried is written again on the next.
        assert fake.lost and all(set(batch) <= duplicated for batch in fake.lost)
    assert_in_order_per_symbol(list(dict.fromkeys(fake.stored)))


async def test_a_stop_finishes_the_in_flight_batch() -> None:
    fake = FakeIngest()
    server, address = await serve(fake)
    try:
        feeder = Feeder(options(address, "grpc", duration=None))  # type: ignore[arg-type]
        task = asyncio.create_task(feeder.run())
        await asyncio.sleep(1.0)
        feeder.stop.set()
        stats = await asyncio.wait_for(task, 10)
    finally:
        await server.stop(None)
    assert stats.sent == len(fake.stored) == len(set(fake.stored)) > 50


async def test_waits_for_ingest_to_come_up() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    feeder = Feeder(options(address, "grpc", duration=1.5))
    task = asyncio.create_task(feeder.run())
    await asyncio.sleep(1.0)
    assert feeder.stats.errors >= 1 and feeder.stats.sent == 0
    fake = FakeIngest()
    server = grpc.aio.server()
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(fake, server)
    server.add_insecure_port(address)
    await server.start()
    try:
        stats = await asyncio.wait_for(task, 20)
    finally:
        await server.stop(None)
    assert fake.symbols == ["BTCUSDT", "ETHUSDT"]
    assert stats.sent == len(set(fake.stored)) > 100


async def test_rest_webhook_body_and_retries() -> None:
    requests: list[dict] = []
    answers = iter([503, 200, 200, 502] + [200] * 1000)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["x-api-key"] == API_KEY
        body = json.loads(request.content)
        if request.url.path == "/api/v1/webhooks/symbols":
            return httpx.Response(200, json={"upserted": len(body["items"])})
        assert request.url.path == "/api/v1/webhooks/ticks"
        status = next(answers)
        requests.append({"status": status, "body": body})
        return httpx.Response(status, json={"accepted": len(body["items"])} if status == 200 else {})

    opts = options("unused:1", "rest", duration=1.0)
    feeder = Feeder(opts, transport=RestTransport("http://edge.test", API_KEY, httpx.MockTransport(handler)))
    stats = await feeder.run()
    first = requests[0]["body"]["items"][0]
    assert set(first) == {"symbol", "price", "size", "eventTime", "tradeId", "side", "source"}
    assert first["side"] in ("SIDE_BUY", "SIDE_SELL") and first["eventTime"].endswith("Z")
    # The failed requests were sent again with the same trades.
    assert requests[0]["body"] == requests[1]["body"]
    assert requests[3]["body"] == requests[4]["body"]
    acked = [i["tradeId"] for r in requests if r["status"] == 200 for i in r["body"]["items"]]
    assert stats.sent == len(acked) == len(set(acked))


async def test_wrong_api_key_stops_the_feeder() -> None:
    class Refusing(FakeIngest):
        async def UpsertSymbols(self, request, context):  # noqa: N802
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown x-api-key")

    server, address = await serve(Refusing())
    try:
        from marketdata.feeder.feeder import FatalSendError

        with pytest.raises(FatalSendError, match="UNAUTHENTICATED"):
            await Feeder(options(address, "grpc")).run()
    finally:
        await server.stop(None)


async def test_a_stop_while_ingest_is_down_ends_within_the_grace() -> None:
    # Never reachable: stops while registering.
    feeder = Feeder(options(f"127.0.0.1:{free_port()}", "grpc", duration=None))  # type: ignore[arg-type]
    task = asyncio.create_task(feeder.run())
    await asyncio.sleep(0.5)
    feeder.stop.set()
    stats = await asyncio.wait_for(task, 5)
    assert stats.sent == 0 and stats.errors >= 1

    # Reachable, then every batch fails: the in-flight batch is tried for the grace period, then given up.
    fake = FakeIngest(fail_before=set(range(1, 10_000)))
    server, address = await serve(fake)
    try:
        feeder = Feeder(options(address, "grpc", duration=None))  # type: ignore[arg-type]
        task = asyncio.create_task(feeder.run())
        await asyncio.sleep(0.5)
        stopped = asyncio.get_running_loop().time()
        feeder.stop.set()
        stats = await asyncio.wait_for(task, 15)
        assert asyncio.get_running_loop().time() - stopped < 8
    finally:
        await server.stop(None)
    assert stats.sent == 0 and stats.retrying
