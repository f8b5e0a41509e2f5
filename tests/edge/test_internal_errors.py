"""An unexpected exception anywhere in the edge: a 500 problem naming the request id, never the exception's
text, and the exception logged with that same id."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from marketdata.common.config import load_settings
from marketdata.common.nats import NatsConnection
from marketdata.edge import server
from marketdata.edge.gateway import PROBLEM_MEDIA_TYPE
from marketdata.edge.sse import create_feed
from marketdata.edge.webhook import TickWebhook

SECRET = "password=hunter2 at db.internal:5432"


async def boom(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError(SECRET)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings({})
    upstreams = server.Upstreams(server.upstream_addresses(settings))
    edge = server.Edge(settings, server.load_document(), upstreams,
                       create_feed(NatsConnection("nats://127.0.0.1:1", "test"), settings))
    edge.liveness = boom  # type: ignore[method-assign]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server.create_app(edge)),
                                 base_url="http://edge") as http:
        yield http
    await upstreams.close()


def assert_internal_error(response: httpx.Response, request_id: str, caplog: pytest.LogCaptureFixture) -> None:
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.headers["x-request-id"] == request_id
    body = response.json()
    assert body["requestId"] == request_id and request_id in body["detail"]
    assert body["grpcCode"] == "INTERNAL"
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    [record] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert record.request_id == request_id  # type: ignore[attr-defined]
    assert record.exc_info is not None and str(record.exc_info[1]) == SECRET


async def test_an_exception_in_a_route_is_a_500_naming_the_request_id(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        response = await client.get("/api/v1/health/liveness", headers={"x-request-id": "req-500"})
    assert_internal_error(response, "req-500", caplog)


async def test_an_exception_on_the_webhook_hot_path_is_a_500_naming_the_request_id(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TickWebhook, "_answer", boom)  # the fast path, outside connexion's error handlers
    with caplog.at_level(logging.ERROR):
        response = await client.post("/api/v1/webhooks/ticks", content=b"[]",
                                     headers={"x-api-key": "key", "content-type": "application/json"})
    assert_internal_error(response, response.headers["x-request-id"], caplog)
