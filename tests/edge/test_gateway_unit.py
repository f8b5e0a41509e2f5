"""The generic translation's pieces, table-driven: status mapping, field paths, request building."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import json_format

from marketdata.edge import gateway
from marketdata.v1 import ingest_pb2, query_pb2

STATUS_TABLE = [
    (grpc.StatusCode.OK, 200),
    (grpc.StatusCode.INVALID_ARGUMENT, 400),
    (grpc.StatusCode.FAILED_PRECONDITION, 400),
    (grpc.StatusCode.OUT_OF_RANGE, 400),
    (grpc.StatusCode.UNAUTHENTICATED, 401),
    (grpc.StatusCode.PERMISSION_DENIED, 403),
    (grpc.StatusCode.NOT_FOUND, 404),
    (grpc.StatusCode.ALREADY_EXISTS, 409),
    (grpc.StatusCode.ABORTED, 409),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (grpc.StatusCode.CANCELLED, 499),
    (grpc.StatusCode.UNIMPLEMENTED, 501),
    (grpc.StatusCode.UNAVAILABLE, 503),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (grpc.StatusCode.UNKNOWN, 500),
    (grpc.StatusCode.INTERNAL, 500),
    (grpc.StatusCode.DATA_LOSS, 500),
]


@pytest.mark.parametrize(("code", "status"), STATUS_TABLE, ids=[code.name for code, _ in STATUS_TABLE])
def test_grpc_status_maps_to_http_status(code: grpc.StatusCode, status: int) -> None:
    assert gateway.http_status(code) == status


def test_the_table_covers_every_grpc_code() -> None:
    assert {code for code, _ in STATUS_TABLE} == set(grpc.StatusCode)


class FakeRpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(("code", "status"), STATUS_TABLE[1:], ids=[code.name for code, _ in STATUS_TABLE[1:]])
def test_rpc_errors_become_problems(code: grpc.StatusCode, status: int) -> None:
    response = gateway.rpc_error_response(FakeRpcError(code, "it went wrong"))
    assert response.status_code == status
    assert response.media_type == "application/problem+json"
    body = json.loads(response.body)
    assert body["status"] == status and body["grpcCode"] == code.name and body["detail"] == "it went wrong"
    assert body["title"] and body["type"] == "about:blank" and body["violations"] == []


def test_violations_are_named_in_the_json_field_names() -> None:
    request = ingest_pb2.PublishTicksRequest.DESCRIPTOR
    assert gateway.json_field_path(request, "items[3].price") == "items[3].price"
    assert gateway.json_field_path(request, "items[0].event_time") == "items[0].eventTime"
    assert gateway.json_field_path(request, "items[0].trade_id") == "items[0].tradeId"
    assert gateway.json_field_path(request, "unknown.thing") == "unknown.thing"
    assert gateway.json_field_path(query_pb2.GetHistoryRequest.DESCRIPTOR, "from_time") == "from"


@pytest.mark.parametrize(("body", "field"), [
    ({"items": [{"price": "abc"}]}, "items[0].price"),
    ({"items": [{}, {"eventTime": "yesterday"}]}, "items[1].eventTime"),
    ({"items": [{}, {}, {"side": "SIDE_SIDEWAYS"}]}, "items[2].side"),
    ({"items": [{"bogus": 1}]}, "items[0].bogus"),
])
def test_parse_errors_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(json_format.ParseError) as error:
        json_format.ParseDict(body, ingest_pb2.PublishTicksRequest())
    assert gateway.parse_error_violation(error.value)[0] == field


def test_field_path_formatting() -> None:
    assert gateway.field_path(["items", 3, "price"]) == "items[3].price"
    assert gateway.field_path([]) == ""


def test_build_request_from_path_query_and_body() -> None:
    document = json.loads(gateway_document())
    gw = gateway.Gateway(document, upstreams=None, timeout=1, request_headers=dict)  # type: ignore[arg-type]
    history = gw.operations["marketdata.v1.QueryService.GetHistory"]
    request = gw.build_request(history, {"symbol": "BTCUSDT", "view": "ohlc1m", "limit": 30,
                                         "from": "2024-01-01T00:00:00Z"})
    assert request == query_pb2.GetHistoryRequest(symbol="BTCUSDT", view="ohlc1m", limit=30,
                                                  from_time={"seconds": 1704067200})
    ticks = gw.operations["marketdata.v1.IngestService.PublishTicks"]
    request = gw.build_request(ticks, {"body": {"items": [{"symbol": "X", "price": 1.5, "size": 2}]}})
    assert request.items[0].price == 1.5
    with pytest.raises(gateway.EdgeProblem) as problem:
        gw.build_request(ticks, {"body": {"items": [{"symbol": "X", "eventTime": "not a time"}]}})
    assert problem.value.status == 400 and problem.value.violations[0][0] == "items[0].eventTime"


def gateway_document() -> str:
    from marketdata.edge.server import OPENAPI_PATH

    return OPENAPI_PATH.read_text()
