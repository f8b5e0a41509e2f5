"""Traces across the hops this platform owns, caught by the SDK's in-memory exporter: a gRPC call through the
shared channel factory to the shared server bootstrap (client and server span, one trace), a handler's
exception (an error in the span and in the metrics), ingest's JetStream publish carrying traceparent to the
aggregator's commit, and trace ids in the JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from marketdata.aggregator.consumer import Aggregator
from marketdata.common import tracing
from marketdata.common.channels import open_channel
from marketdata.common.config import load_settings
from marketdata.common.database import create_pool
from marketdata.common.embedded import free_port
from marketdata.common.grpc_server import GrpcServiceHost
from marketdata.common.logging import JsonFormatter
from marketdata.common.nats import NatsConnection
from marketdata.ingest.publisher import TickPublisher
from marketdata.ingest.validation import ValidatedBatch
from marketdata.v1 import ingest_pb2, market_pb2
from tests.support.tracing import named, recorded_spans, wait_for_spans

SERVICE = "marketdata.v1.IngestService"
PUBLISH = f"{SERVICE}/PublishTicks"
STREAM = f"{SERVICE}/StreamTicks"
UPSERT = f"{SERVICE}/UpsertSymbols"


SETUP = """
from opentelemetry import trace
from marketdata.common.tracing import enabled, setup_tracing
setup_tracing("ingest")
print(enabled() and trace.get_tracer_provider().resource.attributes["service.name"])
"""


@pytest.mark.parametrize(("env", "printed"), [
    ({}, "False"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, "marketdata-ingest"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "ingest-eu"}, "ingest-eu"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_RESOURCE_ATTRIBUTES": "service.name=md,team=x"}, "md"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"}, "False"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}, "False"),
])
def test_tracing_is_off_unless_the_standard_variables_turn_the_exporter_on(env: dict[str, str], printed: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    run = subprocess.run([sys.executable, "-c", SETUP], env={**clean, **env}, capture_output=True, text=True,
                         timeout=60)
    assert run.stdout.strip() == printed, run.stderr


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


class FakeIngest:
    """PublishTicks answers, StreamTicks counts its batches, UpsertSymbols fails as a bug would (or aborts)."""

    async def publish_ticks(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        logging.getLogger("test.ingest").info("publishing")
        return ingest_pb2.PublishTicksResponse(accepted=len(request.items))

    async def stream_ticks(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        return ingest_pb2.StreamTicksResponse(batches=len([r async for r in requests]))

    async def upsert_symbols(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.items:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused")
        raise RuntimeError("a bug in the handler")

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "PublishTicks": grpc.unary_unary_rpc_method_handler(
                self.publish_ticks, ingest_pb2.PublishTicksRequest.FromString,
                ingest_pb2.PublishTicksResponse.SerializeToString),
            "StreamTicks": grpc.stream_unary_rpc_method_handler(
                self.stream_ticks, ingest_pb2.StreamTicksRequest.FromString,
                ingest_pb2.StreamTicksResponse.SerializeToString),
            "UpsertSymbols": grpc.unary_unary_rpc_method_handler(
                self.upsert_symbols, ingest_pb2.UpsertSymbolsRequest.FromString,
                ingest_pb2.UpsertSymbolsResponse.SerializeToString),
        })


@pytest.fixture
async def ingest_channel(spans: InMemorySpanExporter) -> AsyncIterator[grpc.aio.Channel]:
    """A channel of the shared factory to a fake IngestService hosted by the shared server bootstrap, both
    built while tracing is on."""
    settings = load_settings({"METRICS_PORT": "0", "BIND_HOST": "127.0.0.1"})
    host = GrpcServiceHost(settings=settings, port=free_port(), port_setting="INGEST_PORT")
    host.server.add_generic_rpc_handlers([FakeIngest().handler()])
    host.server.add_insecure_port(f"127.0.0.1:{host.port}")
    await host.server.start()
    try:
        async with open_channel(f"127.0.0.1:{host.port}") as channel:
            yield channel
    finally:
        await host.server.stop(0)


def unary(channel: grpc.aio.Channel, method: str, request: Any, response: Any) -> Any:
    return channel.unary_unary(f"/{method}", request_serializer=request.SerializeToString,
                               response_deserializer=response.FromString)


def handled(method: str, code: str) -> float:
    service, name = method.split("/")
    return REGISTRY.get_sample_value("grpc_server_handled_total",
                                     {"grpc_service": service, "grpc_method": name, "grpc_code": code}) or 0.0


async def test_a_call_gives_a_client_and_a_server_span_in_one_trace(ingest_channel: grpc.aio.Channel,
                                                                    spans: InMemorySpanExporter) -> None:
    with tracing.tracer.start_as_current_span("caller") as caller:
        reply = await unary(ingest_channel, PUBLISH, ingest_pb2.PublishTicksRequest, ingest_pb2.PublishTicksResponse)(
            ingest_pb2.PublishTicksRequest(items=[market_pb2.Tick()]), timeout=5)
        streamed = await ingest_channel.stream_unary(
            f"/{STREAM}", request_serializer=ingest_pb2.StreamTicksRequest.SerializeToString,
            response_deserializer=ingest_pb2.StreamTicksResponse.FromString)(
                iter([ingest_pb2.StreamTicksRequest()] * 3), timeout=5)
    assert (reply.accepted, streamed.batches) == (1, 3)

    finished = await wait_for_spans(spans, PUBLISH, STREAM)
    trace_id = caller.get_span_context().trace_id
    for method in (PUBLISH, STREAM):
        (client,) = [s for s in named(finished, method) if s.kind is SpanKind.CLIENT]
        (server,) = [s for s in named(finished, method) if s.kind is SpanKind.SERVER]
        assert client.context.trace_id == server.context.trace_id == trace_id
        assert client.parent.span_id == caller.get_span_context().span_id
        assert server.parent.span_id == client.context.span_id and server.parent.is_remote
        assert client.status.status_code is server.status.status_code is StatusCode.UNSET
        assert dict(server.attributes) == dict(client.attributes) == {
            "rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method.split("/")[1],
            "rpc.grpc.status_code": 0}


async def test_an_unhandled_exception_is_an_error_in_the_span_and_the_metrics(
        ingest_channel: grpc.aio.Channel, spans: InMemorySpanExporter) -> None:
    failed, aborted = handled(UPSERT, "UNKNOWN"), handled(UPSERT, "INVALID_ARGUMENT")
    call = unary(ingest_channel, UPSERT, ingest_pb2.UpsertSymbolsRequest, ingest_pb2.UpsertSymbolsResponse)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(ingest_pb2.UpsertSymbolsRequest(), timeout=5)
    assert raised.value.code() is grpc.StatusCode.UNKNOWN
    # The metrics say what the client got: UNKNOWN, not OK; an abort keeps its own code.
    assert handled(UPSERT, "UNKNOWN") == failed + 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(ingest_pb2.UpsertSymbolsRequest(items=[market_pb2.Symbol(symbol="X")]), timeout=5)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert handled(UPSERT, "INVALID_ARGUMENT") == aborted + 1

    finished = named(await wait_for_spans(spans, UPSERT), UPSERT)
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    clients = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert len(servers) == len(clients) == 2
    bug, refused = sorted(servers, key=lambda s: s.start_time)
    assert bug.status.status_code is StatusCode.ERROR and "a bug in the handler" in bug.status.description
    (event,) = bug.events
    assert event.name == "exception" and event.attributes["exception.type"] == "RuntimeError"
    assert bug.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNKNOWN.value[0]
    # A refusal is the caller's error: not the server's (OpenTelemetry's gRPC conventions), but the client's.
    assert refused.status.status_code is StatusCode.UNSET and not refused.events
    assert refused.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert all(c.status.status_code is StatusCode.ERROR for c in clients)


async def test_an_http_request_is_a_server_span_continuing_the_callers_trace(spans: InMemorySpanExporter) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        status = 500 if scope["path"].endswith("/broken") else 202
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    traced = tracing.trace_http(app, lambda path: "/api/v1/webhooks/ticks" if path.endswith("/ticks") else "other")
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=traced), base_url="http://edge") as client:
        assert (await client.post("/api/v1/webhooks/ticks", headers={"traceparent": caller})).status_code == 202
        assert (await client.get("/broken")).status_code == 500

    ticks, broken = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    assert ticks.name == "edge POST /api/v1/webhooks/ticks" and ticks.kind is SpanKind.SERVER
    assert (ticks.context.trace_id, ticks.parent.span_id) == (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331)
    assert ticks.attributes["http.response.status_code"] == 202 and ticks.status.status_code is StatusCode.UNSET
    assert broken.name == "edge GET other" and broken.status.status_code is StatusCode.ERROR and broken.parent is None


async def test_the_json_logs_carry_the_trace_and_span_id(spans: InMemorySpanExporter) -> None:
    formatter = JsonFormatter("test")
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "hello", (), None)
    assert "trace_id" not in json.loads(formatter.format(record))
    with tracing.tracer.start_as_current_span("work") as span:
        entry = json.loads(formatter.format(record))
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["span_id"] == format(span.get_span_context().span_id, "016x")


async def test_the_publish_carries_traceparent_to_the_aggregator_commit(
        spans: InMemorySpanExporter, nats_url: str, database_url: str) -> None:
    """Two publishes, each in a trace of its own, then a real Aggregator commits them: the commit span is a
    child of the first message's publish span and links to the other's."""
    run = uuid.uuid4().hex[:8]
    settings = load_settings({"NATS_URL": nats_url, "DATABASE_URL": database_url, "MD_STREAM": f"TR{run}",
                              "MD_SUBJECT_PREFIX": f"tr{run}", "MD_CONSUMER": f"tr{run}"})
    nats = NatsConnection(settings.nats_url, "test-tracing")
    nats.start()
    client = await nats.wait_connected(timeout=10)
    now = datetime.now(timezone.utc) - timedelta(seconds=30)
    symbols = [f"TR{run.upper()}{n}" for n in range(2)]
    publishers = {}
    for n, symbol in enumerate(symbols):
        tick = market_pb2.Tick(symbol=symbol, trade_id=f"t{n}", price=100.0 + n, size=1.0)
        tick.event_time.FromDatetime(now)
        with tracing.tracer.start_as_current_span(f"producer {symbol}"):
            await TickPublisher(settings).publish(client, ValidatedBatch(by_symbol={symbol: [tick]}), None)
    for publish in named(await wait_for_spans(spans, "ingest.publish"), "ingest.publish"):
        publishers[publish.context.trace_id] = publish
        assert publish.attributes["messages"] == publish.attributes["ticks"] == 1
    assert len(publishers) == 2

    js = client.jetstream()
    for symbol in symbols:
        stored = await js.get_last_msg(settings.stream, settings.ticks_subject(symbol))
        assert stored.headers is not None and "Nats-Msg-Id" in stored.headers
        parent = trace.get_current_span(tracing.extract(stored.headers)).get_span_context()
        assert publishers[parent.trace_id].context.span_id == parent.span_id

    pool = await create_pool(database_url, max_size=3, application_name="test-tracing",
                             server_settings={"extra_float_digits": "1"})
    stopping = asyncio.Event()
    consuming = asyncio.create_task(Aggregator(settings, nats, pool).run(stopping))
    try:
        async def committed() -> list[Any]:
            while True:
                commits = named(spans.get_finished_spans(), "aggregator.commit")
                if sum(c.attributes["inserted"] for c in commits) >= 2:
                    return commits
                await asyncio.sleep(0.05)

        commits = await asyncio.wait_for(committed(), 30)
    finally:
        stopping.set()
        await consuming
        await pool.close()
        for stream in (settings.stream, settings.deadletter_stream):
            await js.delete_stream(stream)
        await nats.close()

    joined = set()
    for commit in commits:
        publish = publishers[commit.context.trace_id]
        assert commit.parent.span_id == publish.context.span_id
        joined.add(commit.context.trace_id)
        for link in commit.links:
            assert publishers[link.context.trace_id].context.span_id == link.context.span_id
            joined.add(link.context.trace_id)
        assert commit.attributes["messages"] == 1 + len(commit.links)
        assert commit.attributes["ticks"] == commit.attributes["messages"]
    assert joined == set(publishers)


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC endpoint keeping every span the services export: name, trace id, span id, parent id and
    the exporting service."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    async def Export(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802 - gRPC's name
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes
                           if a.key == "service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({"name": span.name, "service": service, "trace": span.trace_id.hex(),
                                       "id": span.span_id.hex(), "parent": span.parent_span_id.hex()})
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_one_webhook_call_is_one_trace_from_the_edge_to_the_sse_write(start_service) -> None:  # type: ignore[no-untyped-def]
    """The services as processes, exporting over OTLP (as the OTEL_* variables configure them) to a collector in
    the test: one webhook call gives one trace, edge → ingest → JetStream → aggregator commit → SSE write."""
    from tests.edge.conftest import SSEClient

    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    run = uuid.uuid4().hex[:8]
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "100",
           "MD_STREAM": f"OT{run}", "MD_SUBJECT_PREFIX": f"ot{run}", "MD_CONSUMER": f"ot{run}"}
    try:
        ingest = start_service("ingest", **env)
        start_service("aggregator", **env)
        edge = start_service("edge", wait=False, INGEST_ADDR=ingest.address, QUERY_ADDR="127.0.0.1:1", **env)
        base = f"http://127.0.0.1:{edge.port}"
        symbol = f"OT{run.upper()}USDT"
        await asyncio.to_thread(wait_for_http, f"{base}/api/v1/health/liveness")
        async with httpx.AsyncClient(base_url=base, headers={"x-api-key": "test-key"}, timeout=10) as http:
            registered = await http.post("/api/v1/webhooks/symbols", json={"items": [
                {"symbol": symbol, "base": symbol[:-4], "quote": "USDT", "active": True}]})
            assert registered.status_code == 200, registered.text
            stream = await SSEClient.connect(base, f"/realtime/ticks?symbol={symbol}")
            try:
                at = (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
                posted = await http.post("/api/v1/webhooks/ticks", json={"items": [
                    {"symbol": symbol, "price": 101.5, "size": 2, "side": "SIDE_BUY", "eventTime": at,
                     "tradeId": f"{run}-1", "source": "trace-test"}]})
                assert posted.status_code == 200, posted.text
                event = await stream.next_event(15)
                assert event is not None and event.event == "update"
            finally:
                stream.close()

        wanted = ("edge POST /api/v1/webhooks/ticks", "marketdata.v1.IngestService/PublishTicks", "ingest.publish",
                  "aggregator.commit", "edge.sse.write")

        async def exported() -> list[dict[str, Any]]:
            while True:
                webhook = [s for s in collector.spans if s["name"] == wanted[0]]
                if webhook:
                    in_trace = [s for s in collector.spans if s["trace"] == webhook[-1]["trace"]]
                    if set(wanted) <= {s["name"] for s in in_trace}:
                        return in_trace
                await asyncio.sleep(0.1)

        try:
            trace_spans = await asyncio.wait_for(exported(), 20)
        except asyncio.TimeoutError:
            raise AssertionError(f"spans exported: {[(s['name'], s['trace'][:8]) for s in collector.spans]}") from None
    finally:
        await server.stop(None)
    by_id = {s["id"]: s for s in trace_spans}

    span = next(s for s in trace_spans if s["name"] == "edge.sse.write")
    path_to_root = [(span["name"], span["service"])]
    while span["parent"] in by_id:
        span = by_id[span["parent"]]
        path_to_root.append((span["name"], span["service"]))

    # The SSE write descends from the commit, the commit from ingest's publish, the publish from ingest's
    # handling of the call, which the edge made while handling the webhook request: one trace, three processes.
    assert path_to_root == [
        ("edge.sse.write", "marketdata-edge"), ("aggregator.commit", "marketdata-aggregator"),
        ("ingest.publish", "marketdata-ingest"), (wanted[1], "marketdata-ingest"), (wanted[1], "marketdata-edge"),
        (wanted[0], "marketdata-edge")]


def wait_for_http(url: str, timeout: float = 30) -> None:
    from tests.support.processes import wait_for

    def up() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout, message=url)
