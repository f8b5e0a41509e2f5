"""The tick webhook's hot path over real HTTP: gzip bodies, NDJSON streams onto StreamTicks, body and batch
limits, the API key before any parsing, and the fast conversion never accepting what the generic path refuses."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import msgspec
import pytest
from google.protobuf import json_format

from marketdata.edge import server
from marketdata.edge.webhook import NOT_DECODED, TICKS_BODY, NotFast, TickInput, add_ticks, tick_schema_validator
from marketdata.v1 import ingest_pb2, market_pb2
from tests.edge.test_rest import minute_ticks, problem, rfc3339, wait_candles
from tests.support.stack import EdgeStack

TICKS = "/api/v1/webhooks/ticks"


def ticks_for(symbol: str, count: int) -> list[dict]:
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    return [{"symbol": symbol, "price": 100.0 + n % 7, "size": 1.5, "side": "SIDE_SELL", "source": "webhook-test",
             "eventTime": rfc3339(start + timedelta(milliseconds=n)), "tradeId": f"{symbol}-{n}"}
            for n in range(count)]


def ndjson(ticks: list[dict]) -> bytes:
    return b"".join(msgspec.json.encode(tick) + b"\n" for tick in ticks)


def test_gzip_json_body_is_accepted_and_committed(edge_stack: EdgeStack, symbol: str) -> None:
    ticks, closes = minute_ticks(symbol, 2)
    body = gzip.compress(json.dumps({"items": ticks}).encode())
    response = httpx.post(f"{edge_stack.base_url}{TICKS}", content=body, timeout=10, headers={
        "x-api-key": edge_stack.api_key, "content-type": "application/json", "content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": len(ticks), "duplicates": 0}
    assert [c["close"] for c in wait_candles(edge_stack.base_url, symbol, 2)][-2:] == closes


def test_gzip_body_with_a_bad_field_names_it_like_plain_json(edge_stack: EdgeStack, symbol: str) -> None:
    ticks, _ = minute_ticks(symbol, 1)
    ticks[1]["price"] = "cheap"
    ticks[2]["symbol"] = "btc"
    body = gzip.compress(json.dumps({"items": ticks}).encode())
    headers = {"x-api-key": edge_stack.api_key, "content-type": "application/json"}
    zipped = problem(httpx.post(f"{edge_stack.base_url}{TICKS}", content=body,
                                headers={**headers, "content-encoding": "gzip"}), 400, "INVALID_ARGUMENT")
    plain = problem(httpx.post(f"{edge_stack.base_url}{TICKS}", json={"items": ticks}, headers=headers),
                    400, "INVALID_ARGUMENT")
    assert zipped["violations"] == plain["violations"]
    assert [v["field"] for v in zipped["violations"]] == ["items[1].price", "items[2].symbol"]


def test_a_bad_tick_on_the_fast_path_gets_the_generic_paths_body(edge_stack: EdgeStack, symbol: str) -> None:
    """Well-formed JSON with a bad value goes to ingest fast, and is answered with every bad field named."""
    ticks = ticks_for(symbol, 20)
    ticks[3]["price"] = -1.0
    ticks[7]["tradeId"] = "a\u0000b"
    ticks[9]["symbol"] = "BTC."
    body = problem(httpx.post(f"{edge_stack.base_url}{TICKS}", json={"items": ticks},
                              headers={"x-api-key": edge_stack.api_key}), 400, "INVALID_ARGUMENT")
    assert [v["field"] for v in body["violations"]] == ["items[3].price", "items[7].tradeId", "items[9].symbol"]


def test_ndjson_stream_is_streamed_to_ingest(edge_stack: EdgeStack, symbol: str) -> None:
    ticks = ticks_for(symbol, 2_500)
    payload = ndjson(ticks)

    def chunks() -> Iterator[bytes]:  # a producer writing as it goes: several batches on one stream
        for start in range(0, len(payload), 40_000):
            yield payload[start:start + 40_000]
            time.sleep(0.02)

    response = httpx.post(f"{edge_stack.base_url}{TICKS}", content=chunks(), timeout=30, headers={
        "x-api-key": edge_stack.api_key, "content-type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["accepted"] == 2_500 and reply["duplicates"] == 0 and reply["batches"] > 1, reply

    again = httpx.post(f"{edge_stack.base_url}{TICKS}", content=gzip.compress(payload), timeout=30, headers={
        "x-api-key": edge_stack.api_key, "content-type": "application/x-ndjson", "content-encoding": "gzip"})
    assert again.status_code == 200, again.text  # the same batch again: deduplicated at ingest
    assert again.json()["accepted"] + again.json()["duplicates"] == 2_500


def test_ndjson_bad_line_is_named_at_its_stream_position(edge_stack: EdgeStack, symbol: str) -> None:
    ticks = ticks_for(symbol, 30)
    lines = ndjson(ticks).split(b"\n")
    lines[12] = b'{"symbol": "btc", "price": "cheap", "eventTime": "2024-01-01T00:00:00Z"}'
    response = httpx.post(f"{edge_stack.base_url}{TICKS}", content=b"\n".join(lines), headers={
        "x-api-key": edge_stack.api_key, "content-type": "application/x-ndjson"})
    body = problem(response, 400, "INVALID_ARGUMENT")
    assert sorted(v["field"] for v in body["violations"]) == ["items[12].price", "items[12].symbol"], body
    assert "the 12 ticks before it were accepted" in body["detail"]

    # A value only ingest judges, in the second of two batches: named by its position in the stream.
    ticks = ticks_for(symbol, 40)
    ticks[25]["price"] = -3.0
    payload = ndjson(ticks)
    cut = payload.index(msgspec.json.encode(ticks[20]))

    def two_chunks() -> Iterator[bytes]:
        yield payload[:cut]
        time.sleep(0.2)
        yield payload[cut:]

    body = problem(httpx.post(f"{edge_stack.base_url}{TICKS}", content=two_chunks(), headers={
        "x-api-key": edge_stack.api_key, "content-type": "application/x-ndjson"}), 400, "INVALID_ARGUMENT")
    assert [v["field"] for v in body["violations"]] == ["items[25].price"], body
    # The detail too: the batches are the edge's cut, not the client's.
    assert body["detail"].startswith("invalid argument: items[25].price:"), body
    assert body["detail"].endswith("; the 20 ticks before it were accepted"), body


@pytest.mark.parametrize(("line", "fields"), [
    # Beyond a double: read as the generic path reads a JSON body (inf), so the bad field is named.
    (b'{"symbol": "BTCUSDT", "price": 1e400, "eventTime": "2024-01-01T00:00:00Z"}', ["items[3].price"]),
    (b'{"symbol": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", ["items[3]"]),  # deeper than Python's stack
    (b'{"symbol": "BTCUSDT", "colour": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", ["items[3]"]),
], ids=["huge-number", "deep-nesting", "deep-unknown-field"])
def test_ndjson_hostile_line_is_a_400_naming_it(edge_stack: EdgeStack, symbol: str, line: bytes,
                                                fields: list[str]) -> None:
    lines = ndjson(ticks_for(symbol, 5)).split(b"\n")
    lines[3] = line
    response = httpx.post(f"{edge_stack.base_url}{TICKS}", content=b"\n".join(lines), timeout=30, headers={
        "x-api-key": edge_stack.api_key, "content-type": "application/x-ndjson"})
    body = problem(response, 400, "INVALID_ARGUMENT")
    assert [v["field"] for v in body["violations"]] == fields, body
    assert "the 3 ticks before it were accepted" in body["detail"]


@pytest.mark.parametrize("path", [TICKS, "/api/v1/webhooks/symbols"])
def test_deeply_nested_json_body_is_a_400(edge_stack: EdgeStack, path: str) -> None:
    nested = b'{"items": [{"symbol": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    response = httpx.post(f"{edge_stack.base_url}{path}", content=nested, timeout=30, headers={
        "x-api-key": edge_stack.api_key, "content-type": "application/json"})
    assert "nested too deeply" in problem(response, 400, "INVALID_ARGUMENT")["detail"]


def test_a_batch_over_the_limit_is_400_naming_it(edge_stack: EdgeStack, symbol: str, start_edge) -> None:  # type: ignore[no-untyped-def]
    body = problem(httpx.post(f"{edge_stack.base_url}{TICKS}", json={"items": ticks_for(symbol, 10_001)},
                              headers={"x-api-key": edge_stack.api_key}, timeout=30), 400, "INVALID_ARGUMENT")
    assert body["violations"] == [{"field": "items",
                                   "description": "10001 ticks in one batch; at most 10000 are allowed"}]
    assert "INGEST_MAX_BATCH_TICKS" in body["detail"] and len(body["detail"]) < 300

    edge = start_edge(INGEST_MAX_BATCH_TICKS="5")
    body = problem(httpx.post(f"{edge.base_url}{TICKS}", json={"items": ticks_for(symbol, 6)},
                              headers={"x-api-key": edge_stack.api_key}), 400, "INVALID_ARGUMENT")
    assert body["violations"][0]["description"] == "6 ticks in one batch; at most 5 are allowed"


def test_bodies_over_the_limit_are_413(edge_stack: EdgeStack, symbol: str, start_edge) -> None:  # type: ignore[no-untyped-def]
    edge = start_edge(EDGE_MAX_BODY_BYTES="4096")
    url = f"{edge.base_url}{TICKS}"
    headers = {"x-api-key": edge_stack.api_key, "content-type": "application/json"}
    small = httpx.post(url, json={"items": ticks_for(symbol, 3)}, headers=headers)
    assert small.status_code == 200, small.text

    for response in (
        httpx.post(url, content=json.dumps({"items": ticks_for(symbol, 100)}).encode(), headers=headers),
        # a gzip bomb: 40 KiB decoded from a few hundred bytes
        httpx.post(url, content=gzip.compress(b" " * 40_960), headers={**headers, "content-encoding": "gzip"}),
        # chunked, no Content-Length: counted while read
        httpx.post(url, content=iter([b'{"items": [', b" " * 5_000, b"]}"]), headers=headers),
        # one NDJSON line longer than the limit
        httpx.post(url, content=b'{"symbol": "' + b"A" * 5_000 + b'"}\n',
                   headers={**headers, "content-type": "application/x-ndjson"}),
    ):
        body = problem(response, 413, "INVALID_ARGUMENT")
        assert "4096 bytes" in body["detail"] and "EDGE_MAX_BODY_BYTES" in body["detail"]


def test_the_api_key_is_checked_before_the_body(edge_stack: EdgeStack) -> None:
    url = f"{edge_stack.base_url}{TICKS}"
    garbage = b"\x1f\x8b not even gzip"
    for key in ("not-a-key", "not-a-key"):  # the second from the edge's remembered verdict
        response = httpx.post(url, content=garbage, headers={
            "x-api-key": key, "content-type": "application/json", "content-encoding": "gzip"})
        body = problem(response, 401, "UNAUTHENTICATED")
        assert body["detail"] == "invalid API key"
    body = problem(httpx.post(url, content=garbage, headers={"content-type": "application/json"}),
                   401, "UNAUTHENTICATED")
    assert "x-api-key" in body["detail"]
    body = problem(httpx.post(url, content=garbage, headers={
        "x-api-key": edge_stack.api_key, "content-type": "application/json", "content-encoding": "gzip"}),
        400, "INVALID_ARGUMENT")
    assert "gzip" in body["detail"]
    body = problem(httpx.post(url, content=b"{}", headers={
        "x-api-key": edge_stack.api_key, "content-type": "application/json", "content-encoding": "br"}),
        415, "INVALID_ARGUMENT")
    assert "Content-Encoding" in body["detail"]


def test_unknown_query_parameters_are_still_refused(edge_stack: EdgeStack, symbol: str) -> None:
    response = httpx.post(f"{edge_stack.base_url}{TICKS}?dryRun=true", json={"items": ticks_for(symbol, 2)},
                          headers={"x-api-key": edge_stack.api_key})
    body = problem(response, 400, "INVALID_ARGUMENT")
    assert body["violations"][0]["field"] == "dryRun"


def test_cors_headers_on_the_webhook(edge_stack: EdgeStack, symbol: str, start_edge) -> None:  # type: ignore[no-untyped-def]
    edge = start_edge(CORS_ORIGINS="http://elsewhere.example")
    response = httpx.post(f"{edge.base_url}{TICKS}", json={"items": ticks_for(symbol, 2)}, headers={
        "x-api-key": edge_stack.api_key, "origin": "http://elsewhere.example"})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "http://elsewhere.example"


# ---- the fast conversion against the generic one (no services) -------------------------------------------------

VALUE_RULES = {"pattern", "minimum", "maximum", "minLength", "maxLength", "exclusiveMinimum", "exclusiveMaximum"}


def tick_variants() -> Iterator[dict]:
    good = {"symbol": "BTCUSDT", "price": 101.25, "size": 2, "eventTime": "2026-03-01T10:20:30.123456789Z",
            "tradeId": "t-1", "side": "SIDE_BUY", "source": "s"}
    yield good
    yield {"symbol": "ETHUSDT", "price": 5, "eventTime": "2026-03-01T10:20:30Z"}
    odd_values: list[tuple[str, object]] = [
        ("price", "1"), ("price", True), ("price", None), ("price", 1e308), ("price", -1), ("price", 10**20),
        ("price", 0.1), ("price", 43000.123456789012345), ("price", 5e-324), ("price", 2**63), ("price", 10**400),
        ("size", "2"), ("size", False), ("size", None), ("size", [1]),
        ("symbol", 5), ("symbol", None), ("symbol", "btc"), ("symbol", "A" * 40), ("symbol", ""),
        ("tradeId", 7), ("tradeId", None), ("tradeId", "x" * 65), ("tradeId", "a\u0000"),
        ("source", {}), ("source", "\u0085"),
        ("side", "SIDE_UP"), ("side", 1), ("side", None), ("side", "SIDE_SELL"),
        ("eventTime", "2026-03-01T10:20:30+00:00"), ("eventTime", "2026-03-01 10:20:30Z"),
        ("eventTime", "2026-02-30T10:20:30Z"), ("eventTime", "2026-03-01T24:00:00Z"),
        ("eventTime", "2026-03-01T10:20:60Z"), ("eventTime", "2026-03-01T10:20:30.1234567890Z"),
        ("eventTime", "1970-01-01T00:00:01Z"), ("eventTime", "0001-01-01T00:00:00Z"), ("eventTime", 1700000000),
        ("eventTime", "2026-03-01T10:20:30.Z"), ("eventTime", "\uff12026-03-01T10:20:30Z"),
        ("eventTime", None), ("colour", "red"),
    ]
    for name, value in odd_values:
        yield {**good, name: value}
    for name in good:
        yield {key: value for key, value in good.items() if key != name}


def test_the_fast_decoder_knows_every_field_of_a_tick() -> None:
    names = {field.encode_name for field in msgspec.structs.fields(TickInput)}
    assert names == {field.json_name for field in market_pb2.Tick.DESCRIPTOR.fields}


@pytest.mark.parametrize("tick", list(tick_variants()), ids=lambda tick: json.dumps(tick)[:70])
def test_the_fast_conversion_takes_only_what_the_generic_path_takes(tick: dict) -> None:
    errors = list(tick_schema_validator(server.load_document()).iter_errors(tick))
    fast = ingest_pb2.PublishTicksRequest()
    try:
        add_ticks(fast.items, TICKS_BODY.decode(json.dumps({"items": [tick]})).items)
    except (*NOT_DECODED, NotFast):
        return  # the generic path answers: the same as before by construction
    # Only value rules may remain: ingest enforces each of them (tests/ingest) and refuses the batch, which
    # the generic path then answers.
    assert {error.validator for error in errors} <= VALUE_RULES, [error.message for error in errors]
    generic = ingest_pb2.PublishTicksRequest()
    json_format.ParseDict({"items": [tick]}, generic)
    assert fast == generic
