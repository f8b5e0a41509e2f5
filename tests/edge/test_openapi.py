"""The OpenAPI document is generated from the descriptors, and the edge serves exactly the annotated RPCs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from marketdata.codegen import openapi
from marketdata.common import rules
from marketdata.codegen.protos import DESCRIPTOR_SET
from marketdata.common.config import load_settings
from marketdata.common.nats import NatsConnection
from marketdata.edge import server
from marketdata.edge.gateway import http_rules
from marketdata.edge.sse import create_feed
from marketdata.v1 import aggregator_pb2, events_pb2, ingest_pb2, market_pb2, query_pb2
from tests.support.stack import EdgeStack

DOCUMENT = json.loads(server.OPENAPI_PATH.read_text())
SCHEMAS = DOCUMENT["components"]["schemas"]


def operation(path: str, method: str) -> dict:
    return DOCUMENT["paths"][path][method]


def params(path: str, method: str) -> dict[str, dict]:
    return {p["name"]: p for p in operation(path, method).get("parameters", [])}


def test_committed_document_is_what_the_generator_writes(tmp_path: Path) -> None:
    target = openapi.write(DESCRIPTOR_SET, tmp_path / "openapi.json")
    assert json.loads(target.read_text()) == DOCUMENT, "edge/openapi.json is stale: run `marketdata codegen`"


def test_paths_and_methods_come_from_the_http_annotations() -> None:
    rpc_paths = {(method.upper(), path) for path, methods in DOCUMENT["paths"].items()
                 for method, spec in methods.items() if "x-grpc-method" in spec}
    assert rpc_paths == {
        ("POST", "/api/v1/webhooks/ticks"), ("POST", "/api/v1/webhooks/symbols"), ("GET", "/api/v1/symbols"),
        ("GET", "/api/v1/ticks/{symbol}/latest"), ("GET", "/api/v1/ticks/{symbol}/history"),
        ("GET", "/api/v1/ticker/24hr")}
    assert operation("/api/v1/ticks/{symbol}/history", "get")["x-grpc-method"] == \
        "/marketdata.v1.QueryService/GetHistory"
    # Streaming and unannotated RPCs get no route.
    assert not any("StreamTicks" in json.dumps(m) or "WatchTicks" in json.dumps(m) or "Rebuild" in json.dumps(m)
                   for m in DOCUMENT["paths"].values())


def test_parameters_follow_the_grpc_gateway_rules() -> None:
    history = params("/api/v1/ticks/{symbol}/history", "get")
    assert history["symbol"]["in"] == "path" and history["symbol"]["required"] is True
    # Remaining fields of a GET are query parameters, under their JSON names (json_name from / to).
    assert {name for name, p in history.items() if p["in"] == "query"} == {"view", "interval", "from", "to", "limit",
                                                                                "timeZone", "order", "pageToken", "fill",
                                                                                "numbers"}
    assert history["from"]["schema"]["format"] == "date-time"
    assert history["limit"]["schema"]["type"] == "integer" and history["limit"]["schema"]["minimum"] == 0
    assert history["limit"]["description"].startswith("Maximum number of rows")
    # `optional bool active` is a non-required boolean query parameter.
    assert params("/api/v1/symbols", "get")["active"] == {
        "name": "active", "in": "query", "required": False, "schema": {"type": "boolean"},
        "description": "When set, only symbols whose active flag equals it."}
    # body "*": the whole request message is the body, and there are no parameters.
    ticks = operation("/api/v1/webhooks/ticks", "post")
    assert "parameters" not in ticks
    assert ticks["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PublishTicksRequest"}
    assert ticks["security"] == [{"ApiKey": []}]
    assert "security" not in operation("/api/v1/symbols", "get")


def test_schemas_follow_the_protobuf_json_mapping() -> None:
    candle = SCHEMAS["Candle"]["properties"]
    assert candle["trades"]["type"] == "integer" and candle["trades"]["maximum"] == 2**32 - 1  # uint32: a number
    assert SCHEMAS["MinuteMetrics"]["properties"]["trades"]["type"] == "integer"
    assert candle["time"]["format"] == "date-time"  # Timestamp as RFC 3339
    assert candle["close"] == {"type": "number", "format": "double"}
    assert "sma10" in candle and "sma10" not in SCHEMAS["Candle"]["required"]  # optional → not required
    assert "volume" in SCHEMAS["Candle"]["required"]  # always printed in responses
    assert "close" not in SCHEMAS["Candle"]["required"]  # optional: absent in a fill=null candle
    assert "time" not in SCHEMAS["Candle"]["required"]  # message fields have presence
    tick = SCHEMAS["Tick"]["properties"]
    assert {"eventTime", "tradeId"} <= set(tick)  # lowerCamelCase
    assert SCHEMAS["Side"] == {"type": "string", "enum": ["SIDE_UNSPECIFIED", "SIDE_BUY", "SIDE_SELL"],
                               "description": "Side of the aggressor in a trade."}
    # Request bodies: only fields the proto marks required are required; unknown fields rejected.
    tick_input = SCHEMAS["TickInput"]
    assert tick_input["required"] == ["symbol", "price", "eventTime"] and tick_input["additionalProperties"] is False
    assert SCHEMAS["PublishTicksRequest"]["properties"]["items"] == {
        "type": "array", "items": {"$ref": "#/components/schemas/TickInput"}, "minItems": 1, "maxItems": 10000,
        "description": "1 to 10,000 ticks (INGEST_MAX_BATCH_TICKS may lower the limit)."}
    # Descriptions are the proto comments.
    assert SCHEMAS["Tick"]["description"] == "One trade as reported by a source."
    assert tick["price"]["description"].startswith("Trade price: finite, from 1e-12 to 1e12")


@pytest.mark.parametrize("text", [
    "1970-01-01T00:00:00Z", "1970-01-01T12:00:00Z", "1970-01-02T00:30:00+01:00", "1970-01-15T08:00:00Z",
    "1970-03-01T12:00:00Z", "1970-01-01T05:00:00-03:00", "1969-12-31T23:30:00-01:00", "1999-12-31T23:59:59Z",
    "2026-03-01T10:20:30.123456789Z", "9999-12-31T23:59:59Z",
    "1969-12-31T23:59:59Z", "1969-12-31T23:30:00+01:00", "1969-06-01T00:00:00Z", "0001-01-01T00:00:00Z",
    "1960-01-01T00:00:00Z", "1800-01-01T00:00:00Z",
])
def test_the_event_time_pattern_never_refuses_a_time_the_rule_takes(text: str) -> None:
    """The proto's rule is "not before the epoch" (timestamp.gte 0). Only a bound the text shows on its face
    can be a pattern: it refuses the years before, and the service judges the day either side of the epoch."""
    pattern = re.compile(SCHEMAS["TickInput"]["properties"]["eventTime"]["pattern"])
    moment = Timestamp()
    moment.FromJsonString(text)
    # 1969-12-31 is admitted whatever the time: with an offset it may be after the epoch, the service judges it.
    assert bool(pattern.search(text)) == (moment.seconds >= 0 or text.startswith("1969-12-31T")), text


def test_request_schemas_carry_the_buf_validate_rules_of_the_proto() -> None:
    """The rules are written once, as buf.validate annotations; the document shows each of them."""
    tick = SCHEMAS["TickInput"]["properties"]
    assert tick["symbol"]["pattern"] == rules.SYMBOL_PATTERN.pattern
    assert (tick["symbol"]["minLength"], tick["symbol"]["maxLength"]) == (2, 20)
    assert (tick["price"]["minimum"], tick["price"]["maximum"]) == (rules.PRICE_MIN, rules.PRICE_MAX)
    assert (tick["size"]["minimum"], tick["size"]["maximum"]) == (0, rules.SIZE_MAX)
    assert tick["tradeId"]["pattern"] == tick["source"]["pattern"] == rules.TEXT_PATTERN.pattern
    assert tick["tradeId"]["maxLength"] == 64
    history = {p["name"]: p["schema"] for p in operation("/api/v1/ticks/{symbol}/history", "get")["parameters"]}
    assert history["symbol"]["pattern"] == rules.SYMBOL_PATTERN.pattern
    assert history["view"]["enum"] == ["", "ticks", "metrics1m", "ohlc1m"]
    assert history["interval"]["pattern"] == rules.field_rules(query_pb2.GetHistoryRequest.DESCRIPTOR, "interval").string.pattern
    assert history["order"]["enum"] == ["", "asc", "desc"] and history["fill"]["enum"] == ["", "none", "null", "prev"]
    assert history["limit"]["maximum"] == 5000
    symbol = SCHEMAS["SymbolInput"]["properties"]
    assert symbol["base"]["pattern"] == "^[A-Z0-9]{1,12}$"
    # Responses describe what is stored: no request rules there.
    assert "pattern" not in SCHEMAS["Tick"]["properties"]["symbol"]
    assert operation("/api/v1/webhooks/ticks", "post")["summary"].startswith("Validates a batch of ticks")
    history_response = SCHEMAS["GetHistoryResponse"]["properties"]
    assert history_response["candles"]["items"] == {"$ref": "#/components/schemas/Candle"}


def test_every_error_response_is_a_problem() -> None:
    for path, methods in DOCUMENT["paths"].items():
        for method, spec in methods.items():
            for code, response in spec["responses"].items():
                if code not in ("200", "304"):
                    ref = response["$ref"].rsplit("/", 1)[-1]
                    content = DOCUMENT["components"]["responses"][ref]["content"]
                    assert list(content) == ["application/problem+json"], (path, method, code)
    # The one operation answered with an ETag documents it, and its 304.
    history = operation("/api/v1/ticks/{symbol}/history", "get")["responses"]
    assert "ETag" in history["200"]["headers"] and "content" not in history["304"]
    assert [path for path, methods in DOCUMENT["paths"].items()
            if any("304" in spec["responses"] for spec in methods.values())] == ["/api/v1/ticks/{symbol}/history"]


# ---- served routes ↔ annotated RPCs ---------------------------------------------------------------------------

def document_routes(document: dict) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation of the document: what connexion routes; the running edge's answers
    on them are checked below (test_the_running_edge_serves_the_generated_document)."""
    return {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}


# The edge's own routes, with no RPC behind them.
EDGE_OWN_PATHS = ("/api/v1/health/liveness", "/api/v1/health/readiness", "/realtime/ticks", "/realtime/ticker")


def annotated_routes() -> set[tuple[str, str, str]]:
    """(HTTP method, path, /Service/Method) of every annotated RPC of the marketdata.v1 services."""
    routes = set()
    for module in (ingest_pb2, query_pb2, aggregator_pb2, events_pb2, market_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                for verb, path, _ in http_rules(method):
                    routes.add((verb.upper(), path, f"/{service.full_name}/{method.name}"))
    return routes


def route_coverage(served: set[tuple[str, str]]) -> tuple[set, set]:
    """(served /api/v1 routes with no RPC behind them, annotated RPCs with no served route)."""
    annotated = {(verb, path) for verb, path, _ in annotated_routes()}
    edge_own = {("GET", path) for path in EDGE_OWN_PATHS}
    api = {route for route in served if route[1].startswith("/api/v1")}
    return api - annotated - edge_own, annotated - served


async def app_for(document: dict, env: dict[str, str] | None = None) -> object:
    settings = load_settings(env or {})
    feed = create_feed(NatsConnection("nats://127.0.0.1:1", "test"), settings)
    edge = server.Edge(settings, document, server.Upstreams(server.upstream_addresses(settings)), feed)
    return server.create_app(edge)


async def test_served_routes_are_exactly_the_annotated_rpcs() -> None:
    served = document_routes(DOCUMENT)
    unbacked, unrouted = route_coverage(served)
    assert not unbacked, f"/api/v1 routes with no RPC behind them: {unbacked}"
    assert not unrouted, f"annotated RPCs with no route: {unrouted}"
    assert len(annotated_routes()) == 6
    assert ("GET", "/realtime/ticks") in served
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=await app_for(DOCUMENT)),
                                 base_url="http://edge") as client:
        assert (await client.get("/")).status_code == 200
        # Not on the public port: an operator scrapes the metrics port, the internet does not.
        assert (await client.get("/metrics")).status_code == 404


async def test_the_dashboard_is_served_beside_the_api(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "app.js").write_text("console.log(1)")
    (tmp_path / "favicon.svg").write_text("<svg/>")
    (tmp_path / "index.html").write_text("<html>dashboard</html>")
    app = await app_for(DOCUMENT, {"WEB_DIST_DIR": str(tmp_path)})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        home = await client.get("/")
        assert home.text == "<html>dashboard</html>" and home.headers["cache-control"] == "no-cache"
        script = await client.get("/assets/app.js")
        assert script.text == "console.log(1)" and "javascript" in script.headers["content-type"]
        assert (await client.get("/assets/app.js", headers={"if-none-match": script.headers["etag"]})).status_code == 304
        assert (await client.get("/favicon.svg")).text == "<svg/>"
        missing = await client.get("/assets/nope.js")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        assert (await client.get("/assets/..%2F..%2Fetc%2Fpasswd")).status_code == 404
        # The dashboard's routes do not shadow the API's.
        assert (await client.get("/api/v1/health/liveness")).json() == {"status": "alive"}


async def test_route_coverage_catches_a_route_without_rpc_and_an_rpc_without_route() -> None:
    document = copy.deepcopy(DOCUMENT)
    # A route nobody annotated, served by an edge handler...
    document["paths"]["/api/v1/extra"] = {"get": {**document["paths"]["/api/v1/health/liveness"]["get"]}}
    # ...and an annotated RPC dropped from the document.
    del document["paths"]["/api/v1/symbols"]
    await app_for(document)  # the edge takes the document
    unbacked, unrouted = route_coverage(document_routes(document))
    assert unbacked == {("GET", "/api/v1/extra")}
    assert unrouted == {("GET", "/api/v1/symbols")}


async def test_the_edge_refuses_a_document_route_its_rpc_does_not_declare() -> None:
    document = copy.deepcopy(DOCUMENT)
    document["paths"]["/api/v1/other"] = {"get": {**document["paths"]["/api/v1/symbols"]["get"],
                                                  "operationId": "other"}}
    with pytest.raises(LookupError, match="has no such HTTP binding"):
        await app_for(document)
    document = copy.deepcopy(DOCUMENT)
    document["paths"]["/api/v1/symbols"]["get"]["x-grpc-method"] = "/marketdata.v1.QueryService/Nope"
    with pytest.raises(LookupError, match="no such RPC"):
        await app_for(document)


def test_the_running_edge_serves_the_generated_document(edge_stack: EdgeStack) -> None:
    served = httpx.get(f"{edge_stack.base_url}/openapi.json").json()
    assert served["paths"].keys() == DOCUMENT["paths"].keys()
    assert served["components"]["schemas"].keys() == DOCUMENT["components"]["schemas"].keys()
    assert served["components"]["schemas"]["Candle"]["required"] == SCHEMAS["Candle"]["required"]
    # Every annotated RPC answers on its route over HTTP (not the router's 404).
    for verb, path, _ in annotated_routes():
        url = edge_stack.base_url + path.replace("{symbol}", "NOSUCHSYM")
        response = httpx.request(verb, url, json={} if verb == "POST" else None,
                                 headers={"x-api-key": edge_stack.api_key})
        assert response.status_code != 405, (verb, path)
        assert response.headers["content-type"].startswith(("application/json", "application/problem+json"))
        if response.status_code == 404:
            assert response.json()["detail"] != "Not Found", (verb, path)  # a service's answer, not the router's
