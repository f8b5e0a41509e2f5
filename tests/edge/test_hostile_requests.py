"""Requests a careless or hostile client sends, over real HTTP: each is answered with a 4xx problem naming what is
wrong in the client's own terms (JSON names, stream positions), never a 500, a Python message or a hang."""

from __future__ import annotations

import gzip
import json
import socket
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.edge.conftest import EdgeProcess, unique_symbol
from tests.edge.test_rest import minute_ticks, problem, rfc3339, wait_candles
from tests.edge.test_webhook import TICKS, ndjson, ticks_for
from tests.support.stack import EdgeStack

SYMBOLS = "/api/v1/webhooks/symbols"


def symbol_body(name: str) -> dict:
    return {"items": [{"symbol": name, "base": name[:-4], "quote": "USDT", "active": True}]}


def test_a_body_without_a_media_type_is_read_as_json(edge_stack: EdgeStack) -> None:
    """grpc-gateway reads a body without Content-Type as JSON; so does the edge (it was a 500)."""
    name = unique_symbol("CT")
    headers = {"x-api-key": edge_stack.api_key}
    registered = httpx.post(f"{edge_stack.base_url}{SYMBOLS}", content=json.dumps(symbol_body(name)), headers=headers)
    assert "content-type" not in registered.request.headers
    assert registered.status_code == 200, registered.text
    ticks, closes = minute_ticks(name, 1)
    sent = httpx.post(f"{edge_stack.base_url}{TICKS}", content=json.dumps({"items": ticks}), headers=headers)
    assert sent.status_code == 200 and sent.json()["accepted"] == len(ticks), sent.text
    assert [c["close"] for c in wait_candles(edge_stack.base_url, name, 1)] == closes
    bad = problem(httpx.post(f"{edge_stack.base_url}{SYMBOLS}", content=b"symbol=X", headers=headers),
                  400, "INVALID_ARGUMENT")
    assert "not valid JSON" in bad["detail"]


def test_a_repeated_parameter_is_refused_and_every_bad_parameter_is_named(edge_stack: EdgeStack, symbol: str) -> None:
    history = f"{edge_stack.base_url}/api/v1/ticks/{symbol}/history"
    for query in ("limit=99999&limit=10", "limit=abc&limit=10", "interval=7m&interval=1h", "view=foo&view=ticks"):
        body = problem(httpx.get(f"{history}?{query}"), 400, "INVALID_ARGUMENT")
        name = query.split("=", 1)[0]
        assert body["violations"] == [{"field": name, "description": "given more than once; this parameter "
                                                                      "takes one value"}], body
    body = problem(httpx.get(f"{edge_stack.base_url}/api/v1/symbols?active=true&active=false"), 400, "INVALID_ARGUMENT")
    assert [v["field"] for v in body["violations"]] == ["active"]
    # Repeatable parameters still repeat.
    assert httpx.get(f"{edge_stack.base_url}/api/v1/ticker/24hr?symbol={symbol}&symbol={symbol}").status_code == 200
    # Every bad parameter at once, as gRPC names them.
    body = problem(httpx.get(f"{history}?view=foo&order=x&fill=y&numbers=z"), 400, "INVALID_ARGUMENT")
    assert sorted(v["field"] for v in body["violations"]) == ["fill", "numbers", "order", "view"], body
    assert "(and 3 more)" in body["detail"]


@pytest.mark.parametrize("value", ["2026-13-01T00:00:00Z", "2026-12-05T23:00:00 01:00", "yesterday",
                                   "2026-12-05T23:00:00+25:00", "2026-12-05T23:00:00-05:60"])
def test_a_bad_date_time_parameter_is_named_without_python_text(edge_stack: EdgeStack, symbol: str,
                                                                value: str) -> None:
    body = problem(httpx.get(f"{edge_stack.base_url}/api/v1/ticks/{symbol}/history", params={"from": value}),
                   400, "INVALID_ARGUMENT")
    assert body["violations"] == [{"field": "from", "description": f"{value!r} is not a 'date-time'"}], body
    assert "strptime" not in body["detail"] and "does not match format" not in body["detail"]


def test_body_errors_speak_json(edge_stack: EdgeStack, symbol: str) -> None:
    headers = {"x-api-key": edge_stack.api_key, "content-type": "application/json"}
    tick = {"symbol": symbol, "price": 1.5, "eventTime": rfc3339(datetime.now(timezone.utc))}
    body = problem(httpx.post(f"{edge_stack.base_url}{TICKS}", headers=headers,
                              json={"items": [{**tick, "tradeId": None, "price": True}]}), 400, "INVALID_ARGUMENT")
    assert {v["field"]: v["description"] for v in body["violations"]} == {
        "items[0].price": "true is not of type 'number'", "items[0].tradeId": "null is not of type 'string'"}
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = json.dumps({"items": [tick]}).replace("1.5", literal)
        body = problem(httpx.post(f"{edge_stack.base_url}{TICKS}", headers=headers, content=raw),
                       400, "INVALID_ARGUMENT")
        assert body["detail"] == f"request body is not valid JSON: {literal} is not a JSON value", body


def test_the_detail_names_the_fields_as_the_violations_do(edge_stack: EdgeStack, symbol: str) -> None:
    """A service's summary names proto fields (event_time); the client sent JSON names (eventTime)."""
    future = rfc3339(datetime.now(timezone.utc) + timedelta(hours=1))
    body = problem(httpx.post(f"{edge_stack.base_url}{TICKS}", headers={"x-api-key": edge_stack.api_key}, json={
        "items": [{"symbol": symbol, "price": 1, "eventTime": future, "tradeId": "f-1"}]}), 400, "INVALID_ARGUMENT")
    assert [v["field"] for v in body["violations"]] == ["items[0].eventTime"]
    assert "items[0].eventTime:" in body["detail"] and "event_time" not in body["detail"], body
    body = problem(httpx.get(f"{edge_stack.base_url}/api/v1/ticks/{symbol}/history",
                             params={"pageToken": "not-a-token"}), 400, "INVALID_ARGUMENT")
    assert [v["field"] for v in body["violations"]] == ["pageToken"]
    assert "pageToken:" in body["detail"] and "page_token" not in body["detail"], body


def test_ndjson_takes_every_form_a_json_body_takes(edge_stack: EdgeStack, symbol: str) -> None:
    """An offset instead of Z, or a date in 1970, is a valid event time on either media type: read as the same
    instant (a 1970 one then meets ingest's rule of the ticks kept, RETENTION_TICKS_DAYS, not a parse error)."""
    ticks = ticks_for(symbol, 4)
    ticks[1]["eventTime"] = ticks[1]["eventTime"].replace("Z", "+00:00")
    an_hour_ago = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    ticks[2]["eventTime"] = (an_hour_ago - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S-05:00")
    ticks[3]["eventTime"] = (an_hour_ago + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S+05:30")
    response = httpx.post(f"{edge_stack.base_url}{TICKS}", content=ndjson(ticks), headers={
        "x-api-key": edge_stack.api_key, "content-type": "application/x-ndjson"})
    assert response.status_code == 200 and response.json()["accepted"] == 4, response.text
    stored = httpx.get(f"{edge_stack.base_url}/api/v1/ticks/{symbol}/history", params={
        "view": "ticks", "from": an_hour_ago.strftime("%Y-%m-%dT%H:%M:%SZ"), "limit": 10}).json()["ticks"]
    def instant(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    stored_at = {t["tradeId"]: instant(t["eventTime"]) for t in stored}
    assert {t["tradeId"]: stored_at.get(t["tradeId"]) for t in ticks} == {t["tradeId"]: instant(t["eventTime"]) for t in ticks}
    assert stored_at[ticks[3]["tradeId"]] == stored_at[ticks[2]["tradeId"]] == an_hour_ago
    old = httpx.post(f"{edge_stack.base_url}{TICKS}", content=ndjson([{**ticks[0], "eventTime": "1970-01-15T08:00:00-05:00"}]),
                     headers={"x-api-key": edge_stack.api_key, "content-type": "application/x-ndjson"})
    assert old.status_code == 400
    assert [(v["field"], "RETENTION_TICKS_DAYS" in v["description"]) for v in old.json()["violations"]] == [
        ("items[0].eventTime", True)]


@pytest.fixture
def strict_edge(start_edge) -> EdgeProcess:  # type: ignore[no-untyped-def]
    return start_edge(REQUEST_TIMEOUT_SECONDS="1", EDGE_MAX_BODY_BYTES="4096")


def stalled(port: int, path: str, api_key: str) -> tuple[float, bytes]:
    """Sends the head and part of a body, then nothing: how long until the edge answers, and its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\nx-api-key: {api_key}\r\ncontent-type: application/json\r\n"
                     "content-length: 100\r\n\r\n{\"items\": [".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return time.monotonic() - started, data


@pytest.mark.parametrize("path", [TICKS, SYMBOLS])
def test_a_stalled_body_is_answered_408_and_the_connection_closed(edge_stack: EdgeStack, strict_edge: EdgeProcess,
                                                                 path: str) -> None:
    waited, answer = stalled(strict_edge.port, path, edge_stack.api_key)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"REQUEST_TIMEOUT_SECONDS" in answer and b"DEADLINE_EXCEEDED" in answer
    assert 0.9 < waited < 5, waited  # the idle limit (1 s), then the connection is closed (recv returned b"")


def test_every_body_has_the_size_limit_and_may_be_gzipped(edge_stack: EdgeStack, strict_edge: EdgeProcess) -> None:
    base, headers = strict_edge.base_url, {"x-api-key": edge_stack.api_key, "content-type": "application/json"}
    many = {"items": [symbol_body(unique_symbol("BIG"))["items"][0] for _ in range(60)]}
    body = problem(httpx.post(f"{base}{SYMBOLS}", content=json.dumps(many), headers=headers), 413, "INVALID_ARGUMENT")
    assert "EDGE_MAX_BODY_BYTES" in body["detail"]
    name = unique_symbol("GZ")
    zipped = httpx.post(f"{base}{SYMBOLS}", content=gzip.compress(json.dumps(symbol_body(name)).encode()),
                        headers={**headers, "content-encoding": "gzip"})
    assert zipped.status_code == 200 and zipped.json() == {"upserted": 1}, zipped.text
    assert name in [s["symbol"] for s in httpx.get(f"{base}/api/v1/symbols").json()["items"]]
    body = problem(httpx.post(f"{base}{SYMBOLS}", content=b"x", headers={**headers, "content-encoding": "br"}),
                   415, "INVALID_ARGUMENT")
    assert "gzip or identity" in body["detail"]
