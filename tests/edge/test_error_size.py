"""Large INVALID_ARGUMENTs through the edge (a C-core gRPC client): a batch ingest refuses is a 400 naming the
bad fields, never a 429 with no violations (the error used to outgrow the client's metadata limit and arrive as
RESOURCE_EXHAUSTED, inviting retries of a batch that can never succeed). And the edge speaks JSON names over
HTTP where the services speak proto names over gRPC."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import grpc
import httpx
import pytest

from marketdata.common.errors import field_violations_of
from marketdata.v1 import query_pb2, query_pb2_grpc
from tests.edge.test_rest import problem, rfc3339
from tests.edge.test_webhook import TICKS
from tests.support.stack import EdgeStack


def lowercase_ticks(count: int, symbol: str = "sym{k}usdt") -> list[dict]:
    at = rfc3339(datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1))
    return [{"symbol": symbol.format(k=k), "price": 100.0, "size": 1.0, "eventTime": at, "tradeId": f"t{k}"}
            for k in range(count)]


@pytest.mark.parametrize("symbol", ["sym{k}usdt", "sym{k}" + "x" * 300])
def test_a_webhook_batch_of_100_bad_symbols_is_a_400_naming_them(edge_stack: EdgeStack, symbol: str) -> None:
    headers = {"x-api-key": edge_stack.api_key}
    for _ in range(5):  # the client refused oversized trailers by chance, more often the larger they were
        response = httpx.post(f"{edge_stack.base_url}{TICKS}", headers=headers,
                              json={"items": lowercase_ticks(100, symbol)}, timeout=30)
        body = problem(response, 400, "INVALID_ARGUMENT")
        fields = [v["field"] for v in body["violations"]]
        assert fields[:5] == [f"items[{k}].symbol" for k in range(5)], body["violations"][:6]


def test_history_range_errors_are_from_and_to_over_http_and_proto_names_over_grpc(edge_stack: EdgeStack,
                                                                                    symbol: str) -> None:
    later, earlier = datetime(2025, 1, 2, tzinfo=timezone.utc), datetime(2025, 1, 1, tzinfo=timezone.utc)
    body = problem(httpx.get(f"{edge_stack.base_url}/api/v1/ticks/{symbol}/history",
                             params={"from": rfc3339(later), "to": rfc3339(earlier)}), 400, "INVALID_ARGUMENT")
    assert [v["field"] for v in body["violations"]] == ["from"], body
    assert body["detail"].startswith("invalid argument: from: "), body["detail"]
    assert edge_stack.stack.query is not None
    request = query_pb2.GetHistoryRequest(symbol=symbol)
    request.from_time.FromDatetime(later)
    request.to_time.FromDatetime(earlier)
    with grpc.insecure_channel(edge_stack.stack.query.address) as channel:
        with pytest.raises(grpc.RpcError) as error:
            query_pb2_grpc.QueryServiceStub(channel).GetHistory(request, timeout=10)
    assert [field for field, _ in field_violations_of(error.value)] == ["from_time"]
    assert error.value.details().startswith("invalid argument: from_time: ")


def test_a_stream_of_a_very_long_symbol_is_refused_with_a_short_echo(edge_stack: EdgeStack) -> None:
    """A bad value is echoed cut short, with its length, as the services echo it."""
    response = httpx.get(f"{edge_stack.base_url}/realtime/ticks", params={"symbol": "S" * 9000}, timeout=10)
    body = problem(response, 400, "INVALID_ARGUMENT")
    [violation] = body["violations"]
    assert violation["field"] == "symbol" and "(9000 characters)" in violation["description"]
    assert len(response.content) < 1024, len(response.content)


def test_the_edges_own_checks_keep_to_the_error_budget(edge_stack: EdgeStack) -> None:
    """A body of 10,000 bad ticks, or of unknown fields with long names, fails the edge's schema check: a 400 of a
    few KiB naming the first fields and counting the rest, as an INVALID_ARGUMENT is (it was 9 MB)."""
    bad = {"symbol": "b" * 60, "price": -1, "size": "x", "eventTime": "nope", "tradeId": 5, "side": "SIDEWAYS"}
    unknown = {"z" * 9000: 1, **{f"x{k}": 1 for k in range(100)}}
    for body in ({"items": [bad] * 10_000}, {"items": [{**bad, "y" * 9000: 1}] * 100}):
        response = httpx.post(f"{edge_stack.base_url}{TICKS}", headers={"x-api-key": edge_stack.api_key},
                              json=body, timeout=60)
        problem(response, 400, "INVALID_ARGUMENT")
        assert len(response.content) < 8192, len(response.content)
        violations = response.json()["violations"]
        assert violations[-1]["description"].endswith("more problems not listed"), violations[-1]
        assert len(response.json()["detail"]) <= 1024
    response = httpx.post(f"{edge_stack.base_url}{TICKS}", headers={"x-api-key": edge_stack.api_key}, json=unknown,
                          timeout=10)
    assert [v["description"] for v in problem(response, 400, "INVALID_ARGUMENT")["violations"]] == [
        "'items' is a required property", "unknown field 'x0'"]
    assert len(response.content) < 1024, len(response.content)


@pytest.mark.parametrize(("path", "params", "expected"), [
    ("/api/v1/ticks/btc/latest", {}, "'btc' is not a symbol: "),
    ("/api/v1/ticker/24hr", {"symbol": "btc"}, "'btc' is not a symbol: "),
    ("/api/v1/ticker/24hr", {"symbol": "BTCUSDT,"}, "is empty: give symbols separated by single commas"),
    ("/realtime/ticker", {"symbol": "btc"}, "'btc' is not a symbol: "),
])
def test_a_bad_symbol_reads_the_same_over_http_as_over_grpc(edge_stack: EdgeStack, path: str, params: dict,
                                                            expected: str) -> None:
    body = problem(httpx.get(f"{edge_stack.base_url}{path}", params=params, timeout=10), 400, "INVALID_ARGUMENT")
    assert expected in body["violations"][0]["description"], body
    assert "does not match" not in body["detail"], body
