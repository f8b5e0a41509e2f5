"""Transport at the edge over real HTTP: gzip, CORS preflight, ETag / Cache-Control, the `next` link, and the
ticker and candle fields as REST clients see them."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.edge.conftest import SSEClient
from tests.edge.test_rest import minute_ticks, post_ticks, rfc3339
from tests.edge.test_sse import conforms
from tests.support.processes import wait_for
from tests.support.stack import EdgeStack

MINUTES = 40


@pytest.fixture
def traded(edge_stack: EdgeStack, symbol: str) -> str:
    ticks, _ = minute_ticks(symbol, MINUTES)
    assert post_ticks(edge_stack.base_url, edge_stack.api_key, ticks).status_code == 200

    def folded() -> bool:
        response = httpx.get(f"{edge_stack.base_url}/api/v1/ticks/{symbol}/history", params={"limit": 100})
        return len(response.json()["candles"]) == MINUTES

    wait_for(folded, 60, interval=0.2, message=f"{MINUTES} candles of {symbol}")
    return symbol


def raw_get(port: int, target: str, headers: dict[str, str]) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP/1.1 GET on a plain socket: the status line, the headers and the body exactly as sent."""
    lines = [f"GET {target} HTTP/1.1", "host: 127.0.0.1", "connection: close",
             *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(lines).encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *header_lines = head.split(b"\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (line.decode().partition(":") for line in header_lines)}
    if parsed.get("transfer-encoding") == "chunked":
        unchunked, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            unchunked, rest = unchunked + rest[:size], rest[size + 2:]
        body = unchunked
    return status, parsed, body


def test_large_json_is_gzipped_small_json_is_not(edge_stack: EdgeStack, traded: str) -> None:
    port = int(edge_stack.base_url.rsplit(":", 1)[1])
    target = f"/api/v1/ticks/{traded}/history?view=ohlc1m&limit=100"
    status, headers, body = raw_get(port, target, {"accept-encoding": "gzip"})
    assert b"200" in status and headers["content-encoding"] == "gzip"
    plain = httpx.get(f"{edge_stack.base_url}{target}", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert gzip.decompress(body) == plain.content
    assert len(body) * 3 < len(plain.content), "candle JSON compresses well"
    status, headers, _ = raw_get(port, "/api/v1/health/liveness", {"accept-encoding": "gzip"})
    assert b"200" in status and "content-encoding" not in headers  # under the threshold


@pytest.mark.parametrize(("accept", "gzipped"), [
    ("gzip;q=0, identity", False), ("identity", False), ("*;q=0", False), ("br, gzip;q=0.5", True),
    ("GZIP", True), ("*", True), ("*, gzip;q=0", False),
])
def test_gzip_follows_the_accept_encoding_weights(edge_stack: EdgeStack, traded: str, accept: str,
                                                  gzipped: bool) -> None:
    port = int(edge_stack.base_url.rsplit(":", 1)[1])
    _, headers, _ = raw_get(port, f"/api/v1/ticks/{traded}/history?view=ohlc1m&limit=100", {"accept-encoding": accept})
    assert (headers.get("content-encoding") == "gzip") is gzipped, headers


def test_event_streams_are_never_gzipped(edge_stack: EdgeStack, symbol: str) -> None:
    with httpx.stream("GET", f"{edge_stack.base_url}/realtime/ticks", params={"symbol": symbol},
                      headers={"accept-encoding": "gzip"}, timeout=10) as response:
        assert response.status_code == 200
        assert "content-encoding" not in response.headers


def test_cors_preflight_of_a_read_route(edge_stack: EdgeStack, start_edge) -> None:  # type: ignore[no-untyped-def]
    edge = start_edge(CORS_ORIGINS="http://app.example")
    preflight = httpx.options(f"{edge.base_url}/api/v1/ticker/24hr", headers={
        "origin": "http://app.example", "access-control-request-method": "GET",
        "access-control-request-headers": "if-none-match"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://app.example"
    assert "GET" in preflight.headers["access-control-allow-methods"]
    assert "if-none-match" in preflight.headers["access-control-allow-headers"]
    actual = httpx.get(f"{edge.base_url}/api/v1/ticker/24hr", headers={"origin": "http://app.example"})
    assert actual.headers["access-control-allow-origin"] == "http://app.example"
    assert "link" in actual.headers["access-control-expose-headers"]


def test_closed_pages_are_cacheable_and_revalidate_with_etag(edge_stack: EdgeStack, traded: str) -> None:
    base = edge_stack.base_url
    past = rfc3339(datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=5))
    closed = httpx.get(f"{base}/api/v1/ticks/{traded}/history", params={"interval": "5m", "to": past})
    assert closed.status_code == 200 and closed.json()["candles"]
    assert all(c["closed"] for c in closed.json()["candles"])
    assert closed.headers["cache-control"] == "public, max-age=60"
    again = httpx.get(f"{base}/api/v1/ticks/{traded}/history", params={"interval": "5m", "to": past},
                      headers={"if-none-match": closed.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == closed.headers["etag"]
    # Weak: the page is the same whether it travels gzip-compressed or not, so the tag is the same too.
    port = int(base.rsplit(":", 1)[1])
    _, zipped, _ = raw_get(port, str(closed.request.url).removeprefix(base), {"accept-encoding": "gzip"})
    assert zipped["content-encoding"] == "gzip" and zipped["etag"] == closed.headers["etag"]
    assert closed.headers["etag"].startswith('W/"')
    anything = httpx.get(f"{base}/api/v1/ticks/{traded}/history", params={"interval": "5m", "to": past},
                         headers={"if-none-match": "*"})
    assert anything.status_code == 304
    latest = httpx.get(f"{base}/api/v1/ticks/{traded}/history", params={"interval": "1m"})
    assert latest.headers["cache-control"] == "no-cache" and latest.headers["etag"]


def test_next_link_walks_the_pages(edge_stack: EdgeStack, traded: str) -> None:
    base = edge_stack.base_url
    url = f"{base}/api/v1/ticks/{traded}/history?interval=1m&limit=7&order=asc"
    seen: list[str] = []
    while True:
        response = httpx.get(url)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [c["time"] for c in body["candles"]]
        link = response.headers.get("link")
        if not link:
            assert not body["nextPageToken"]
            break
        assert body["nextPageToken"] and link.endswith('>; rel="next"')
        url = base + link[1:link.index(">")]
    assert len(seen) == MINUTES and seen == sorted(set(seen))


def test_ticker_and_candle_fields_over_rest(edge_stack: EdgeStack, traded: str) -> None:
    base = edge_stack.base_url
    ticker = httpx.get(f"{base}/api/v1/ticker/24hr", params={"symbol": traded})
    assert ticker.status_code == 200, ticker.text
    [item] = ticker.json()["items"]
    assert item["symbol"] == traded and item["windowSize"] == "1d"
    assert item["trades"] == MINUTES * 3  # a JSON number, not an int64 string
    assert item["open"] == 100.0 and item["last"] == 100.0 + MINUTES - 1 + 0.2
    assert item["changePercent"] == pytest.approx((item["last"] - 100.0))
    short = httpx.get(f"{base}/api/v1/ticker/24hr", params={"symbol": traded, "windowSize": "1m"}).json()
    assert short["items"][0]["trades"] <= 3
    bad = httpx.get(f"{base}/api/v1/ticker/24hr", params={"symbol": traded, "windowSize": "9d"})
    assert bad.status_code == 400 and bad.json()["violations"][0]["field"] == "windowSize"
    candle = httpx.get(f"{base}/api/v1/ticks/{traded}/history",
                       params={"interval": "1h", "timeZone": "Asia/Kolkata"}).json()
    assert candle["timeZone"] == "Asia/Kolkata"
    first = candle["candles"][0]
    assert isinstance(first["trades"], int)
    # every tick of minute_ticks is a buy: taker-buy volumes equal the volumes
    assert first["takerBuyVolume"] == first["volume"]
    assert first["takerBuyQuoteVolume"] == pytest.approx(first["quoteVolume"])
    assert first["time"].endswith(":30:00Z")  # an hour of +05:30 starts at half past in UTC


def test_live_ticker_stream_sends_the_watchlist_then_updates(edge_stack: EdgeStack, traded: str) -> None:
    def events(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
        event = ""
        for line in lines:
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "ticker":
                yield event, json.loads(line[6:])

    with httpx.stream("GET", f"{edge_stack.base_url}/realtime/ticker", params={"symbol": traded},
                      timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = events(response.iter_lines())
        _, first = next(stream)
        [item] = first["items"]
        assert item["symbol"] == traded and item["trades"] == MINUTES * 3
        tick = {"symbol": traded, "price": 150.0, "size": 1.0, "side": "SIDE_SELL",
                "eventTime": rfc3339(datetime.now(timezone.utc)), "tradeId": f"{traded}-late", "source": "edge-test"}
        assert post_ticks(edge_stack.base_url, edge_stack.api_key, [tick]).status_code == 200
        _, second = next(stream)
        [item] = second["items"]
        assert item["trades"] == MINUTES * 3 + 1 and item["last"] == 150.0 and item["high"] == 150.0
    # Both events are sent as the served document declares them.
    document = httpx.get(f"{edge_stack.base_url}/openapi.json").json()
    event_schema = document["paths"]["/realtime/ticker"]["get"]["responses"]["200"]["content"][
        "text/event-stream"]["schema"]
    data_schema = document["components"]["schemas"]["TickerEvent"]["x-data-schemas"]["ticker"]
    for payload in (first, second):
        assert conforms(document, event_schema, {"event": "ticker", "data": json.dumps(payload)}) == []
        assert conforms(document, data_schema, payload) == [], payload


def test_live_ticker_stream_refuses_an_unknown_symbol(edge_stack: EdgeStack) -> None:
    response = httpx.get(f"{edge_stack.base_url}/realtime/ticker", params={"symbol": "NOPE0000X"}, timeout=10)
    assert response.status_code == 404 and response.json()["grpcCode"] == "NOT_FOUND"


async def test_live_candle_carries_sma10_and_closing(edge_stack: EdgeStack, traded: str) -> None:
    client = await SSEClient.connect(edge_stack.base_url, f"/realtime/ticks?symbol={traded}")
    try:
        await client.next_event(5, skip_comments=False)  # the stream's head
        tick = {"symbol": traded, "price": 111.5, "size": 2.0, "side": "SIDE_BUY",
                "eventTime": rfc3339(datetime.now(timezone.utc)), "tradeId": f"{traded}-now", "source": "edge-test"}
        assert (await asyncio.to_thread(post_ticks, edge_stack.base_url, edge_stack.api_key, [tick])).status_code == 200
        event = await client.next_event(15)
        assert event is not None and event.event == "update"
        candle = json.loads(event.data)["candle"]
    finally:
        client.close()
    history = httpx.get(f"{edge_stack.base_url}/api/v1/ticks/{traded}/history", params={"limit": 10}).json()
    closes = [c["close"] for c in history["candles"]]
    assert history["candles"][-1]["time"] == candle["time"]
    assert candle["sma10"] == pytest.approx(sum(closes) / 10) == history["candles"][-1]["sma10"]
    assert candle["closed"] is False and candle["closeTime"] == history["candles"][-1]["closeTime"]
    assert candle["takerBuyVolume"] == 2.0 and candle["quoteVolume"] == pytest.approx(223.0)
