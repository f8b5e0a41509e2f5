"""Every REST endpoint of the edge over real HTTP, against the real gRPC services, NATS and PostgreSQL."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from marketdata.common import rules
from marketdata.common.embedded import free_port
from tests.edge.conftest import EdgeProcess, metrics, unique_symbol
from tests.support.processes import ServiceProcess, wait_for
from tests.support.stack import EdgeStack


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def minute_ticks(symbol: str, minutes: int, per_minute: int = 3) -> tuple[list[dict], list[float]]:
    """Ticks in each of the `minutes` whole minutes before the current one; returns them and each minute's close."""
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=minutes)
    ticks, closes = [], []
    for m in range(minutes):
        for n in range(per_minute):
            price = 100.0 + m + n / 10
            ticks.append({"symbol": symbol, "price": price, "size": 1.0 + n, "side": "SIDE_BUY",
                          "eventTime": rfc3339(start + timedelta(minutes=m, seconds=10 * n + 1)),
                          "tradeId": f"{symbol}-{m}-{n}", "source": "edge-test"})
        closes.append(100.0 + m + (per_minute - 1) / 10)
    return ticks, closes


def post_ticks(base_url: str, api_key: str, ticks: list[dict]) -> httpx.Response:
    return httpx.post(f"{base_url}/api/v1/webhooks/ticks", headers={"x-api-key": api_key},
                      json={"items": ticks}, timeout=10)


def wait_candles(base_url: str, symbol: str, count: int, timeout: float = 30) -> list[dict]:
    def ready() -> list[dict] | None:
        response = httpx.get(f"{base_url}/api/v1/ticks/{symbol}/history?view=ohlc1m&limit=30", timeout=5)
        assert response.status_code == 200, response.text
        candles = response.json()["candles"]
        return candles if len(candles) >= count else None

    return wait_for(ready, timeout, interval=0.2, message=f"{count} candles of {symbol}")


def problem(response: httpx.Response, status: int, grpc_code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["grpcCode"] == grpc_code, body
    assert body["title"] and body["detail"] and body["type"] == "about:blank"
    assert body["requestId"] == response.headers["x-request-id"]
    assert isinstance(body["violations"], list)
    assert all(set(v) == {"field", "description"} for v in body["violations"])
    return body


# ---- the original design's curl flow ---------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_the_documented_curl_flow(edge_stack: EdgeStack) -> None:
    base, symbol = edge_stack.base_url, unique_symbol("C")

    def curl(*args: str) -> str:
        return subprocess.run(["curl", "-sS", *args], check=True, capture_output=True, text=True, timeout=30).stdout

    assert '"status":"alive"' in curl(f"{base}/api/v1/health/liveness")
    assert '"status":"ready"' in curl(f"{base}/api/v1/health/readiness")
    body = ('{"items":[{"symbol":"%s","base":"%s","quote":"USDT","active":true}]}' % (symbol, symbol[:-4]))
    assert curl("-X", "POST", f"{base}/api/v1/webhooks/symbols", "-H", f"x-api-key: {edge_stack.api_key}",
                "-H", "content-type: application/json", "-d", body) == '{"upserted":1}'
    # Watch the live stream while ticks arrive.
    watcher = subprocess.Popen(["curl", "-sS", "-N", "--max-time", "20", f"{base}/realtime/ticks?symbol={symbol}"],
                               stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        ticks, closes = minute_ticks(symbol, 12)
        response = post_ticks(base, edge_stack.api_key, ticks)
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": len(ticks), "duplicates": 0}
        lines, updates = [], []
        assert watcher.stdout is not None
        for line in watcher.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("data: "):
                updates.append(httpx.Response(200, content=line.removeprefix("data: ")).json())
                if updates[-1]["lastTick"]["tradeId"] == f"{symbol}-11-2":
                    break
    finally:
        watcher.kill()
        watcher.wait()
    assert "event: update" in lines and any(line.startswith("id: ") for line in lines), lines
    assert all(u["symbol"] == symbol and set(u) >= {"symbol", "lastTick", "candle", "commitTime"} for u in updates)
    # An update for every minute the batch touched, in time order, each with the minute's final candle.
    final = {u["candle"]["time"]: u["lastTick"]["tradeId"] for u in updates}
    assert list(final.values()) == [f"{symbol}-{m}-2" for m in range(12)], final
    # Candles with SMA10, as the dashboard reads them.
    wait_candles(base, symbol, 12)
    history = httpx.get(f"{base}/api/v1/ticks/{symbol}/history?view=ohlc1m&limit=30").json()
    candles = history["candles"]
    assert history["view"] == "ohlc1m" and history["interval"] == "1m"
    assert [c["close"] for c in candles] == closes
    assert "sma10" not in candles[8] and candles[9]["sma10"] == pytest.approx(sum(closes[:10]) / 10)
    assert candles[11]["sma10"] == pytest.approx(sum(closes[2:12]) / 10)
    assert candles[0]["trades"] == 3  # a JSON number
    assert candles[0]["time"].endswith("Z")


# ---- each endpoint ----------------------------------------------------------------------------------------------

def test_health(edge_stack: EdgeStack) -> None:
    live = httpx.get(f"{edge_stack.base_url}/api/v1/health/liveness")
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    ready = httpx.get(f"{edge_stack.base_url}/api/v1/health/readiness")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "dependencies": {
        "marketdata.v1.IngestService": "SERVING", "marketdata.v1.QueryService": "SERVING", "nats": "CONNECTED"}}


def test_symbols_list_and_filter(edge_stack: EdgeStack) -> None:
    active, inactive = unique_symbol("A"), unique_symbol("I")
    response = httpx.post(f"{edge_stack.base_url}/api/v1/webhooks/symbols", headers={"x-api-key": edge_stack.api_key},
                          json={"items": [{"symbol": active, "base": "AAA", "quote": "USDT", "active": True},
                                          {"symbol": inactive, "base": "III", "quote": "USDT", "active": False}]})
    assert response.status_code == 200 and response.json() == {"upserted": 2}

    def names(query: str) -> set[str]:
        response = httpx.get(f"{edge_stack.base_url}/api/v1/symbols{query}")
        assert response.status_code == 200, response.text
        return {item["symbol"] for item in response.json()["items"]}

    assert {active, inactive} <= names("")
    assert active in names("?active=true") and inactive not in names("?active=true")
    assert inactive in names("?active=false") and active not in names("?active=false")
    item = next(i for i in httpx.get(f"{edge_stack.base_url}/api/v1/symbols").json()["items"] if i["symbol"] == inactive)
    assert item == {"symbol": inactive, "base": "III", "quote": "USDT", "active": False}  # defaults printed


def test_latest_and_history_views(edge_stack: EdgeStack, symbol: str) -> None:
    base = edge_stack.base_url
    ticks, _ = minute_ticks(symbol, 3)
    assert post_ticks(base, edge_stack.api_key, ticks).status_code == 200
    wait_candles(base, symbol, 3)
    latest = httpx.get(f"{base}/api/v1/ticks/{symbol}/latest").json()
    assert latest["symbol"] == symbol
    assert latest["lastTick"]["tradeId"] == f"{symbol}-2-2" and latest["lastTick"]["side"] == "SIDE_BUY"
    assert latest["candle"]["close"] == latest["lastTick"]["price"]
    assert latest["metrics"]["last"] == latest["lastTick"]["price"]
    raw = httpx.get(f"{base}/api/v1/ticks/{symbol}/history", params={"view": "ticks", "limit": 100}).json()
    assert [t["tradeId"] for t in raw["ticks"]] == [t["tradeId"] for t in ticks]
    minutes = httpx.get(f"{base}/api/v1/ticks/{symbol}/history", params={"view": "metrics1m"}).json()["metrics"]
    assert len(minutes) == 3 and minutes[0]["trades"] == 3  # a JSON number
    # from / to (json_name of from_time / to_time) select a range.
    second = raw["ticks"][3]["eventTime"]
    ranged = httpx.get(f"{base}/api/v1/ticks/{symbol}/history",
                       params={"view": "ticks", "from": second}).json()["ticks"]
    assert [t["tradeId"] for t in ranged] == [t["tradeId"] for t in ticks[3:]]
    limited = httpx.get(f"{base}/api/v1/ticks/{symbol}/history", params={"view": "ticks", "limit": 2}).json()
    assert [t["tradeId"] for t in limited["ticks"]] == [t["tradeId"] for t in ticks[-2:]]
    # "+08:00" typed into a link arrives as " 08:00" (form encoding): the same zone as "%2B08:00".
    typed = httpx.get(f"{base}/api/v1/ticks/{symbol}/history?interval=1h&timeZone=+08:00")
    assert typed.status_code == 200, typed.text
    assert typed.json() == httpx.get(f"{base}/api/v1/ticks/{symbol}/history",
                                     params={"interval": "1h", "timeZone": "+08:00"}).json()


# ---- errors: the real paths that produce 400 / 401 / 404 / 503 ----------------------------------------------------

def test_missing_api_key_is_401_from_the_edge(edge_stack: EdgeStack) -> None:
    response = httpx.post(f"{edge_stack.base_url}/api/v1/webhooks/ticks", json={"items": []})
    body = problem(response, 401, "UNAUTHENTICATED")
    assert "x-api-key" in body["detail"] and body["violations"] == []


def test_wrong_api_key_is_401_from_ingest(edge_stack: EdgeStack, symbol: str) -> None:
    ticks, _ = minute_ticks(symbol, 1)
    response = post_ticks(edge_stack.base_url, "not-a-key", ticks)
    problem(response, 401, "UNAUTHENTICATED")


def test_a_bad_json_type_is_400_naming_the_field(edge_stack: EdgeStack, symbol: str) -> None:
    ticks, _ = minute_ticks(symbol, 1)
    ticks[0]["price"] = "cheap"
    body = problem(post_ticks(edge_stack.base_url, edge_stack.api_key, ticks), 400, "INVALID_ARGUMENT")
    assert body["violations"] == [{"field": "items[0].price", "description": "'cheap' is not of type 'number'"}]


def test_a_bad_tick_is_400_with_the_services_field_violations(edge_stack: EdgeStack, symbol: str) -> None:
    ticks, _ = minute_ticks(symbol, 2)
    ticks[0]["price"] = -5
    del ticks[3]["eventTime"]
    body = problem(post_ticks(edge_stack.base_url, edge_stack.api_key, ticks), 400, "INVALID_ARGUMENT")
    fields = [v["field"] for v in body["violations"]]
    assert fields == ["items[0].price", "items[3].eventTime"], body  # JSON names, as the client sent them
    assert all(v["description"] for v in body["violations"])


def test_other_validation_errors(edge_stack: EdgeStack, symbol: str) -> None:
    base = edge_stack.base_url
    headers = {"x-api-key": edge_stack.api_key, "content-type": "application/json"}
    body = problem(httpx.post(f"{base}/api/v1/webhooks/ticks", headers=headers, content=b"{not json"),
                   400, "INVALID_ARGUMENT")
    assert "JSON" in body["detail"]
    body = problem(httpx.post(f"{base}/api/v1/webhooks/ticks", headers=headers,
                              json={"items": [{"symbol": symbol, "colour": "red"}]}), 400, "INVALID_ARGUMENT")
    assert "items[0].colour" in [v["field"] for v in body["violations"]]
    body = problem(httpx.post(f"{base}/api/v1/webhooks/ticks", headers=headers,
                              json={"items": [{"symbol": symbol, "side": "SIDE_UP"}]}), 400, "INVALID_ARGUMENT")
    assert "items[0].side" in [v["field"] for v in body["violations"]]
    body = problem(httpx.post(f"{base}/api/v1/webhooks/ticks", headers=headers,
                              json={"items": [{"symbol": symbol, "eventTime": "last tuesday"}]}), 400, "INVALID_ARGUMENT")
    assert "items[0].eventTime" in [v["field"] for v in body["violations"]]
    body = problem(httpx.get(f"{base}/api/v1/ticks/{symbol}/history?limit=many"), 400, "INVALID_ARGUMENT")
    assert body["violations"][0]["field"] == "limit"
    body = problem(httpx.get(f"{base}/api/v1/ticks/{symbol}/history?colour=red"), 400, "INVALID_ARGUMENT")
    assert body["violations"][0]["field"] == "colour"
    body = problem(httpx.get(f"{base}/api/v1/symbols?active=perhaps"), 400, "INVALID_ARGUMENT")
    assert body["violations"][0]["field"] == "active"
    # A value only the service can judge: its INVALID_ARGUMENT passes through.
    problem(httpx.get(f"{base}/api/v1/ticks/{symbol}/history?view=weekly"), 400, "INVALID_ARGUMENT")
    # An interval or a window the edge refuses reads as the query service words it over gRPC, not as a regex.
    body = problem(httpx.get(f"{base}/api/v1/ticks/{symbol}/history?interval=7m"), 400, "INVALID_ARGUMENT")
    assert [(v["field"], v["description"]) for v in body["violations"]] == [("interval", rules.INTERVAL_RULE)]
    body = problem(httpx.get(f"{base}/api/v1/ticker/24hr?symbol={symbol}&windowSize=60m"), 400, "INVALID_ARGUMENT")
    assert [(v["field"], v["description"]) for v in body["violations"]] == [("windowSize", rules.WINDOW_RULE)]


def test_unknown_symbol_and_route_are_404(edge_stack: EdgeStack) -> None:
    body = problem(httpx.get(f"{edge_stack.base_url}/api/v1/ticks/NOSUCHSYMBOL/latest"), 404, "NOT_FOUND")
    assert "NOSUCHSYMBOL" in body["detail"]
    problem(httpx.get(f"{edge_stack.base_url}/api/v1/nothing-here"), 404, "NOT_FOUND")
    response = httpx.delete(f"{edge_stack.base_url}/api/v1/symbols")
    assert response.status_code == 405 and response.json()["grpcCode"] == "UNIMPLEMENTED"


def test_unavailable_upstream_is_503_and_not_ready(start_edge) -> None:  # type: ignore[no-untyped-def]
    edge: EdgeProcess = start_edge(QUERY_ADDR=f"127.0.0.1:{free_port()}")
    body = problem(httpx.get(f"{edge.base_url}/api/v1/health/readiness"), 503, "UNAVAILABLE")
    assert "marketdata.v1.QueryService is UNREACHABLE" in body["detail"]
    assert "IngestService" not in body["detail"]
    problem(httpx.get(f"{edge.base_url}/api/v1/symbols"), 503, "UNAVAILABLE")
    # The ingest side still works through this edge.
    assert httpx.get(f"{edge.base_url}/api/v1/health/liveness").status_code == 200


# ---- request ids, docs, metrics, dashboard, CORS ------------------------------------------------------------------

def test_request_id_is_echoed_or_generated(edge_stack: EdgeStack) -> None:
    given = httpx.get(f"{edge_stack.base_url}/api/v1/symbols", headers={"x-request-id": "req-123"})
    assert given.headers["x-request-id"] == "req-123"
    generated = httpx.get(f"{edge_stack.base_url}/api/v1/symbols")
    assert len(generated.headers["x-request-id"]) == 32
    failed = httpx.get(f"{edge_stack.base_url}/api/v1/ticks/NOSUCHSYMBOL/latest", headers={"x-request-id": "req-9"})
    assert failed.json()["requestId"] == "req-9"


def test_docs_document_and_metrics(edge_stack: EdgeStack) -> None:
    base = edge_stack.base_url
    docs = httpx.get(f"{base}/docs", follow_redirects=True)
    assert docs.status_code == 200 and "swagger-ui" in docs.text.lower()
    assert "/openapi.json" in httpx.get(f"{base}/docs/").text
    document = httpx.get(f"{base}/openapi.json").json()
    assert document["openapi"].startswith("3.") and "/api/v1/ticks/{symbol}/history" in document["paths"]
    httpx.get(f"{base}/api/v1/symbols")
    samples = metrics(edge_stack.metrics_url)
    assert samples['edge_http_requests_total{method="GET",route="/api/v1/symbols",status="200"}'] >= 1
    assert "edge_sse_streams" in samples and "edge_sse_subscriptions" in samples
    # Not on the public port: an operator scrapes the metrics port, the internet does not.
    assert httpx.get(f"{base}/metrics").status_code == 404
    assert any(name.startswith("edge_grpc_client_seconds_count") for name in samples)


def test_dashboard_is_served_from_the_same_origin(edge_stack: EdgeStack, start_edge, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dist = Path(edge_stack.edge.env["WEB_DIST_DIR"])
    if (dist / "index.html").is_file():
        page = httpx.get(f"{edge_stack.base_url}/")
        assert page.status_code == 200 and page.text == (dist / "index.html").read_text()
        asset = next((dist / "assets").iterdir())
        served = httpx.get(f"{edge_stack.base_url}/assets/{asset.name}")
        assert served.status_code == 200 and served.content == asset.read_bytes()
    empty = tmp_path / "no-dist"
    empty.mkdir()
    edge = start_edge(WEB_DIST_DIR=str(empty))
    page = httpx.get(f"{edge.base_url}/")
    assert page.status_code == 200 and "dashboard is not built" in page.text and "npm run build" in page.text


def test_cors_is_off_by_default_and_configurable(edge_stack: EdgeStack, start_edge) -> None:  # type: ignore[no-untyped-def]
    origin = {"origin": "http://elsewhere.example"}
    assert "access-control-allow-origin" not in httpx.get(f"{edge_stack.base_url}/api/v1/symbols", headers=origin).headers
    edge = start_edge(CORS_ORIGINS="http://elsewhere.example")
    allowed = httpx.get(f"{edge.base_url}/api/v1/symbols", headers=origin)
    assert allowed.headers["access-control-allow-origin"] == "http://elsewhere.example"
    preflight = httpx.options(f"{edge.base_url}/api/v1/webhooks/ticks", headers={
        **origin, "access-control-request-method": "POST", "access-control-request-headers": "x-api-key"})
    assert preflight.status_code == 200 and "x-api-key" in preflight.headers["access-control-allow-headers"]
    other = httpx.get(f"{edge.base_url}/api/v1/symbols", headers={"origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# ---- process behaviour -------------------------------------------------------------------------------------------

def test_a_busy_port_names_edge_port(edge_stack: EdgeStack, tmp_path: Path) -> None:
    process = ServiceProcess("edge", edge_stack.stack.client_env(), tmp_path, port=edge_stack.edge.port).start()
    assert process.process is not None
    code = process.process.wait(30)
    assert code != 0
    assert "EDGE_PORT" in process.log_text() and str(edge_stack.edge.port) in process.log_text()


def test_sigterm_ends_streams_and_exits_cleanly(start_edge) -> None:  # type: ignore[no-untyped-def]
    edge: EdgeProcess = start_edge(SHUTDOWN_GRACE_SECONDS="5")
    streams = [httpx.Client(timeout=10).stream("GET", f"{edge.base_url}/realtime/ticks?symbol=SIGTERMTEST")
               for _ in range(3)]
    responses = [s.__enter__() for s in streams]
    assert all(r.status_code == 200 for r in responses)
    wait_for(lambda: metrics(edge.metrics_url).get("edge_sse_streams") == 3, 10, message="3 streams")
    started = time.monotonic()
    edge.process.signal(signal.SIGTERM)
    for response in responses:
        for _ in response.iter_raw():
            pass  # ends when the edge closes the stream
    assert edge.process.process is not None
    assert edge.process.process.wait(10) == 0
    assert time.monotonic() - started < 5
    for stream in streams:
        stream.__exit__(None, None, None)
    assert "Traceback" not in edge.process.log_text()


def test_every_poison_class_is_400_naming_each_bad_field(edge_stack: EdgeStack, symbol: str) -> None:
    good, _ = minute_ticks(symbol, 1)
    cases = {
        "nul trade id": ({"tradeId": "bad\u0000id"}, ["items[1].tradeId"]),
        "control character in source": ({"source": "feed\u001ber"}, ["items[1].source"]),
        "far past": ({"eventTime": "0001-01-01T00:00:00Z"}, ["items[1].eventTime"]),
        "year -7500": ({"eventTime": "-7500-01-01T00:00:00Z"}, ["items[1].eventTime"]),
        "far future": ({"eventTime": "9999-12-31T23:59:59Z"}, ["items[1].eventTime"]),
        "price 1e308": ({"price": 1e308}, ["items[1].price"]),
        "size 1e308": ({"size": 1e308}, ["items[1].size"]),
        "symbol BTC.": ({"symbol": "BTC."}, ["items[1].symbol"]),
        "symbol A..B": ({"symbol": "A..B"}, ["items[1].symbol"]),
        "symbol -BTC": ({"symbol": "-BTC"}, ["items[1].symbol"]),
        # A JSON type error does not hide the other bad fields of the batch.
        "type error and bad values": ({"price": "cheap", "size": 1e308, "symbol": "BTC."},
                                      ["items[1].symbol", "items[1].price", "items[1].size"]),
    }
    for name, (change, fields) in cases.items():
        bad = {**good[0], "tradeId": f"poison-{len(name)}", **change}
        body = problem(post_ticks(edge_stack.base_url, edge_stack.api_key, [good[0], bad]), 400, "INVALID_ARGUMENT")
        assert sorted(v["field"] for v in body["violations"]) == sorted(fields), (name, body)


def test_a_bad_date_time_is_named_with_the_other_bad_fields(edge_stack: EdgeStack, symbol: str) -> None:
    ticks, _ = minute_ticks(symbol, 1)
    ticks[0]["eventTime"] = "last tuesday"
    ticks[1]["price"] = "cheap"
    ticks[2]["eventTime"] = "-7500-01-01T00:00:00Z"
    body = problem(post_ticks(edge_stack.base_url, edge_stack.api_key, ticks), 400, "INVALID_ARGUMENT")
    assert [v["field"] for v in body["violations"]] == ["items[0].eventTime", "items[1].price", "items[2].eventTime"]
