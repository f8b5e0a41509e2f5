"""The shared channel factory (marketdata.common.channels) against real gRPC servers: calls spread over
every resolved address, UNAVAILABLE retried on idempotent methods only, and servers closing connections
by age (GRPC_MAX_CONNECTION_AGE_SECONDS) without failing calls."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from marketdata.common.channels import channel_target, open_channel
from marketdata.common.config import load_settings
from marketdata.common.embedded import free_port
from marketdata.common.grpc_server import GrpcServiceHost
from marketdata.v1 import aggregator_pb2, market_pb2, query_pb2


LIST_SYMBOLS = "/marketdata.v1.QueryService/ListSymbols"
REBUILD = "/marketdata.v1.AggregatorService/Rebuild"


class Replica:
    """A fake query/aggregator replica that counts the calls it served and can refuse them."""

    def __init__(self, name: str, refuse: bool = False) -> None:
        self.name = name
        self.refuse = refuse
        self.calls: Counter[str] = Counter()
        self.peers: set[str] = set()

    async def list_symbols(self, request: Any, context: grpc.aio.ServicerContext) -> query_pb2.ListSymbolsResponse:
        self.calls["ListSymbols"] += 1
        self.peers.add(context.peer())
        if self.refuse:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is draining")
        return query_pb2.ListSymbolsResponse(items=[market_pb2.Symbol(symbol=self.name)])

    async def rebuild(self, request: Any, context: grpc.aio.ServicerContext) -> aggregator_pb2.RebuildResponse:
        self.calls["Rebuild"] += 1
        if self.refuse:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is draining")
        return aggregator_pb2.RebuildResponse()

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        return [
            grpc.method_handlers_generic_handler("marketdata.v1.QueryService", {
                "ListSymbols": grpc.unary_unary_rpc_method_handler(
                    self.list_symbols, query_pb2.ListSymbolsRequest.FromString,
                    query_pb2.ListSymbolsResponse.SerializeToString)}),
            grpc.method_handlers_generic_handler("marketdata.v1.AggregatorService", {
                "Rebuild": grpc.unary_unary_rpc_method_handler(
                    self.rebuild, aggregator_pb2.RebuildRequest.FromString,
                    aggregator_pb2.RebuildResponse.SerializeToString)}),
        ]


async def start(replica: Replica, options: list[tuple[str, Any]] | None = None) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers(replica.handlers())
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


@pytest.fixture
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[tuple[list[Replica], str]]:
    """Two replicas behind one target that resolves to both (what a headless Service's name does)."""
    refuse_first = getattr(request, "param", False)
    pair = [Replica("A", refuse=refuse_first), Replica("B")]
    started = [await start(replica) for replica in pair]
    yield pair, "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port in started)
    for server, _ in started:
        await server.stop(0)


async def call(channel: grpc.aio.Channel, method: str, request: Any, response_class: Any) -> Any:
    return await channel.unary_unary(method, request_serializer=type(request).SerializeToString,
                                     response_deserializer=response_class.FromString)(request, timeout=5)


def test_host_port_addresses_are_resolved_by_dns() -> None:
    assert channel_target("md-ingest-headless:50051") == "dns:///md-ingest-headless:50051"
    assert channel_target("127.0.0.1:50051") == "dns:///127.0.0.1:50051"
    assert channel_target("dns:///x:1") == "dns:///x:1"
    assert channel_target("ipv4:10.0.0.1:1,10.0.0.2:1") == "ipv4:10.0.0.1:1,10.0.0.2:1"
    assert channel_target("unix:///tmp/s") == "unix:///tmp/s"


async def test_calls_are_spread_over_every_replica(replicas: tuple[list[Replica], str]) -> None:
    """A plain channel (pick_first) sends every call to one replica; the factory's channel alternates."""
    pair, target = replicas
    async with grpc.aio.insecure_channel(target) as plain:
        for _ in range(40):
            await call(plain, LIST_SYMBOLS, query_pb2.ListSymbolsRequest(), query_pb2.ListSymbolsResponse)
    assert sorted(r.calls["ListSymbols"] for r in pair) == [0, 40], "a plain channel pins to one replica"
    for replica in pair:
        replica.calls.clear()
    async with open_channel(target) as balanced:
        for _ in range(40):
            await call(balanced, LIST_SYMBOLS, query_pb2.ListSymbolsRequest(), query_pb2.ListSymbolsResponse)
    # Alternating once both connections are up (the first call may go out while only one is).
    assert min(r.calls["ListSymbols"] for r in pair) >= 16, [r.calls["ListSymbols"] for r in pair]


@pytest.mark.parametrize("replicas", [True], indirect=True)
async def test_unavailable_is_retried_on_idempotent_methods_only(replicas: tuple[list[Replica], str]) -> None:
    """Replica A answers UNAVAILABLE (as a draining server does): reads are retried on B and all succeed;
    Rebuild (not idempotent) is not sent twice."""
    (refusing, healthy), target = replicas
    async with open_channel(target) as channel:
        answers = [await call(channel, LIST_SYMBOLS, query_pb2.ListSymbolsRequest(), query_pb2.ListSymbolsResponse)
                   for _ in range(20)]
        assert {a.items[0].symbol for a in answers} == {"B"}
        assert refusing.calls["ListSymbols"] > 0, "the refusing replica was tried"
        failures = 0
        for _ in range(20):
            try:
                await call(channel, REBUILD, aggregator_pb2.RebuildRequest(), aggregator_pb2.RebuildResponse)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                failures += 1
    assert failures == refusing.calls["Rebuild"] > 0
    assert refusing.calls["Rebuild"] + healthy.calls["Rebuild"] == 20


async def test_servers_close_connections_by_age_and_calls_carry_on() -> None:
    """GrpcServiceHost's options (from GRPC_MAX_CONNECTION_AGE_SECONDS): a connection older than the age is
    closed with a GOAWAY; the client reconnects (resolving the name again) and no call fails."""
    settings = load_settings({"GRPC_MAX_CONNECTION_AGE_SECONDS": "1", "GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS": "1",
                              "METRICS_PORT": "0", "BIND_HOST": "127.0.0.1"})
    host = GrpcServiceHost(settings=settings, port=free_port(), port_setting="QUERY_PORT")
    replica = Replica("A")
    host.server.add_generic_rpc_handlers(replica.handlers())
    host.server.add_insecure_port(f"127.0.0.1:{host.port}")
    await host.server.start()
    try:
        async with open_channel(f"127.0.0.1:{host.port}") as channel:
            for _ in range(35):
                await call(channel, LIST_SYMBOLS, query_pb2.ListSymbolsRequest(), query_pb2.ListSymbolsResponse)
                await asyncio.sleep(0.1)
    finally:
        await host.server.stop(0)
    assert replica.calls["ListSymbols"] == 35
    assert len(replica.peers) >= 2, f"one connection for 3.5 s despite a 1 s maximum age: {replica.peers}"
