"""The generic handler in-process against a small fake QueryService: metadata forwarding, deadlines, and
every gRPC status through the real translation path (the real services produce only some of them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from marketdata.common.config import load_settings
from marketdata.common.embedded import free_port
from marketdata.common.errors import invalid_argument_status
from marketdata.common.nats import NatsConnection
from marketdata.edge import server
from marketdata.edge.sse import create_feed
from marketdata.v1 import market_pb2, query_pb2
from tests.edge.test_gateway_unit import STATUS_TABLE


class FakeQuery:
    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def list_symbols(self, request: query_pb2.ListSymbolsRequest, context: Any) -> query_pb2.ListSymbolsResponse:
        self.metadata.append(dict(context.invocation_metadata()))
        return query_pb2.ListSymbolsResponse(items=[market_pb2.Symbol(symbol="FAKEUSDT", base="FAKE", quote="USDT", active=True)])

    async def get_latest(self, request: query_pb2.GetLatestRequest, context: Any) -> query_pb2.GetLatestResponse:
        command, _, argument = request.symbol.partition("-")
        if command == "SLOW":
            await asyncio.sleep(30)  # cancelled by the edge's deadline, or by the server's stop
        elif command == "CODE":  # the code's number: symbols are at most 20 characters
            code = next(c for c in grpc.StatusCode if str(c.value[0]) == argument)
            await context.abort(code, f"fake {code.name}")
        elif command == "BAD":
            await context.abort_with_status(rpc_status.to_status(invalid_argument_status([("symbol", "is bad")])))
        elif command == "NUMERIC":  # a code number outside the enum, as a broken server might send
            await context.abort_with_status(rpc_status.to_status(status_pb2.Status(code=code_pb2.DATA_LOSS,
                                                                                   message="lost")))
        return query_pb2.GetLatestResponse(symbol=request.symbol)


@pytest.fixture
async def fake_edge() -> AsyncIterator[tuple[httpx.AsyncClient, FakeQuery]]:
    fake = FakeQuery()
    grpc_server = grpc.aio.server()
    grpc_server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("marketdata.v1.QueryService", {
        "ListSymbols": grpc.unary_unary_rpc_method_handler(
            fake.list_symbols, query_pb2.ListSymbolsRequest.FromString,
            query_pb2.ListSymbolsResponse.SerializeToString),
        "GetLatest": grpc.unary_unary_rpc_method_handler(
            fake.get_latest, query_pb2.GetLatestRequest.FromString, query_pb2.GetLatestResponse.SerializeToString),
    })])
    port = free_port()
    grpc_server.add_insecure_port(f"127.0.0.1:{port}")
    await grpc_server.start()
    # A deadline that leaves the channel's retries of UNAVAILABLE (three attempts) room on a loaded machine.
    settings = load_settings({"QUERY_ADDR": f"127.0.0.1:{port}", "REQUEST_TIMEOUT_SECONDS": "2"})
    feed = create_feed(NatsConnection("nats://127.0.0.1:1", "test"), settings)
    upstreams = server.Upstreams(server.upstream_addresses(settings))
    app = server.create_app(server.Edge(settings, server.load_document(), upstreams, feed))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        yield client, fake
    await upstreams.close()
    await grpc_server.stop(0)


async def test_api_key_and_request_id_are_forwarded(fake_edge: tuple[httpx.AsyncClient, FakeQuery]) -> None:
    client, fake = fake_edge
    response = await client.get("/api/v1/symbols", headers={"x-api-key": "k-1", "x-request-id": "r-1"})
    assert response.status_code == 200
    assert response.json() == {"items": [{"symbol": "FAKEUSDT", "base": "FAKE", "quote": "USDT", "active": True}]}
    assert fake.metadata[-1]["x-api-key"] == "k-1" and fake.metadata[-1]["x-request-id"] == "r-1"
    response = await client.get("/api/v1/symbols")
    generated = response.headers["x-request-id"]
    assert fake.metadata[-1]["x-request-id"] == generated and "x-api-key" not in fake.metadata[-1]


async def test_the_request_deadline_gives_504(fake_edge: tuple[httpx.AsyncClient, FakeQuery]) -> None:
    client, _ = fake_edge
    response = await client.get("/api/v1/ticks/SLOW/latest")
    assert response.status_code == 504
    assert response.json()["grpcCode"] == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize(("code", "status"), STATUS_TABLE[1:], ids=[code.name for code, _ in STATUS_TABLE[1:]])
async def test_every_grpc_status_through_the_handler(fake_edge: tuple[httpx.AsyncClient, FakeQuery],
                                                     code: grpc.StatusCode, status: int) -> None:
    client, _ = fake_edge
    response = await client.get(f"/api/v1/ticks/CODE-{code.value[0]}/latest")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["grpcCode"] == code.name and body["status"] == status and body["detail"] == f"fake {code.name}"


async def test_bad_request_details_become_violations(fake_edge: tuple[httpx.AsyncClient, FakeQuery]) -> None:
    client, _ = fake_edge
    body = (await client.get("/api/v1/ticks/BAD/latest")).json()
    assert body["violations"] == [{"field": "symbol", "description": "is bad"}]
    body = (await client.get("/api/v1/ticks/NUMERIC/latest")).json()
    assert body["status"] == 500 and body["grpcCode"] == "DATA_LOSS"
