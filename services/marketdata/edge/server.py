"""The HTTP edge: connexion 3 AsyncApp (REST from the generated OpenAPI document, SSE, health, docs, metrics,
dashboard) on uvicorn.

Routes:
* every operation of `openapi.json` with `x-grpc-method` → the generic gRPC handler (gateway.py);
* the edge's own operations of the document (`x-edge-route`): liveness, readiness, the SSE stream;
* plain routes: the dashboard (`settings.web_dist_dir`) at `/`;
* Prometheus metrics on the metrics port (METRICS_PORT), not on this public one;
* connexion's Swagger UI at `/docs` and the document at `/openapi.json`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import connexion
import grpc
import uvicorn
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionResponse
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter, Gauge, Histogram
from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from marketdata.common import rules
from marketdata.common.config import Settings
from marketdata.common.errors import PortInUseError
from marketdata.common.live import LiveFeed, LiveFull, LiveUnavailable, Subscriber
from marketdata.common.metrics import LATENCY_BUCKETS, serve_metrics
from marketdata.common.nats import NatsConnection
from marketdata.common.tracing import trace_http
from marketdata.edge import gateway
from marketdata.edge.gateway import (
    PROBLEM_MEDIA_TYPE,
    REQUEST_ID,
    EdgeBodyValidator,
    EdgeParameterValidator,
    EdgeProblem,
    Gateway,
    Upstreams,
    problem_from_exception,
    problem_response,
)
from marketdata.edge.sse import RETRY_MILLISECONDS, create_feed, encode_frame, frames, open_stream
from marketdata.edge.webhook import (
    INGEST_SERVICE,
    BodyTooLarge,
    ClientGone,
    TickWebhook,
    buffered,
    tick_schema_validator,
    too_large,
)
from marketdata.v1 import query_pb2, query_pb2_grpc

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
REPO_ROOT = Path(__file__).resolve().parents[3]
MAX_STREAM_SYMBOLS = 50
GZIP_MINIMUM_BYTES = 1024
# Level 5: most of level 9's ratio on candle JSON at a third of its CPU.
GZIP_LEVEL = 5
HEALTH_TIMEOUT_SECONDS = 1.0
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Upstreams without which the edge is not ready (see Edge.readiness).
READINESS_REQUIRES = frozenset({"marketdata.v1.QueryService"})

HTTP_REQUESTS = Counter("edge_http_requests_total", "HTTP requests answered by the edge",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("edge_http_request_seconds", "Time to the response head of HTTP requests",
                         ["method", "route"], buckets=LATENCY_BUCKETS)
LOOP_TASKS = Gauge("edge_event_loop_tasks", "asyncio tasks alive in the edge's event loop")


def load_document(path: Path = OPENAPI_PATH) -> dict[str, Any]:
    return json.loads(path.read_text())


def upstream_addresses(settings: Settings) -> dict[str, str]:
    """Where each gRPC service behind the edge is reached."""
    return {
        "marketdata.v1.IngestService": settings.ingest_addr,
        "marketdata.v1.QueryService": settings.query_addr,
        "marketdata.v1.AggregatorService": settings.aggregator_addr,
    }


def default_web_dist(settings: Settings) -> Path | None:
    if settings.web_dist_dir is not None:
        return settings.web_dist_dir
    candidate = REPO_ROOT / "web" / "dist"
    return candidate if candidate.is_dir() else None


@dataclass
class Edge:
    """Everything the app's handlers need, created once per process."""

    settings: Settings
    document: dict[str, Any]
    upstreams: Upstreams
    feed: LiveFeed
    nats: NatsConnection | None = None
    gateway: Gateway = field(init=False)

    def __post_init__(self) -> None:
        self.gateway = Gateway(self.document, self.upstreams, self.settings.request_timeout_seconds,
                               lambda: connexion.request.headers, lambda: connexion.request.url)
        # The gRPC services behind the document's RPC routes; readiness needs only READINESS_REQUIRES of them.
        self.upstream_services = sorted({op.service_name for op in self.gateway.operations.values()})

    # -- the edge's own operations ---------------------------------------------------------------------------
    async def liveness(self) -> Response:
        return JSONResponse({"status": "alive"})

    async def _health(self, service: str) -> str:
        try:
            stub = health_pb2_grpc.HealthStub(self.upstreams.channel(service))
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_TIMEOUT_SECONDS)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            return "UNREACHABLE"

    async def readiness(self) -> Response:
        """Ready while the read path (query: history, the dashboard's data) serves; anything else that is down
        (ingest, NATS for SSE) makes the edge `degraded`, not unready: taking every edge out of its Service
        because one backend is away would also take down what still works."""
        statuses = await asyncio.gather(*(self._health(s) for s in self.upstream_services))
        dependencies = dict(zip(self.upstream_services, statuses))
        if self.nats is not None:
            dependencies["nats"] = "CONNECTED" if self.nats.is_connected else "DISCONNECTED"
        failing = {name: status for name, status in dependencies.items()
                   if name in READINESS_REQUIRES and status != "SERVING"}
        if failing:
            detail = "not ready: " + ", ".join(f"{name} is {status}" for name, status in failing.items())
            return problem_response(503, detail, grpc_code=grpc.StatusCode.UNAVAILABLE)
        degraded = sorted(name for name, status in dependencies.items() if status not in ("SERVING", "CONNECTED"))
        if degraded:
            return JSONResponse({"status": "degraded", "dependencies": dependencies, "degraded": degraded})
        return JSONResponse({"status": "ready", "dependencies": dependencies})

    async def stream(self, **arguments: Any) -> Response:
        raw = arguments.get("symbol") or []
        symbols = [part.strip() for value in raw for part in str(value).split(",") if part.strip()]
        bad = [s for s in symbols if not rules.is_symbol(s)]
        if not symbols or bad:
            description = rules.symbol_problem(bad[0]) if bad else "give at least one symbol"
            raise EdgeProblem(400, f"invalid query parameter 'symbol': {description}",
                              violations=[("symbol", description)])
        if len(set(symbols)) > MAX_STREAM_SYMBOLS:
            description = f"at most {MAX_STREAM_SYMBOLS} symbols per stream"
            raise EdgeProblem(400, description, violations=[("symbol", description)])
        request = connexion.request
        last_event_id = request.headers.get("last-event-id")
        try:
            subscriber, first = await open_stream(self.feed, symbols, last_event_id)
        except (LiveFull, LiveUnavailable) as exc:
            return problem_response(503, str(exc), grpc_code=grpc.StatusCode.UNAVAILABLE,
                                    headers={"retry-after": "5" if isinstance(exc, LiveFull) else "2"})
        subscriber.abort = request.scope.get("marketdata.abort")
        return LiveStreamResponse(subscriber, first, self.settings.sse_ping_seconds)

    async def ticker_stream(self, **arguments: Any) -> Response:
        """/realtime/ticker: QueryService.WatchTicker relayed as `event: ticker` frames. The first message is
        awaited before answering, so a bad request or an unknown symbol is a problem response, not a stream."""
        request = query_pb2.WatchTickerRequest(symbol=[str(v) for v in arguments.get("symbol") or []],
                                               window_size=arguments.get("windowSize") or "")
        call = query_pb2_grpc.QueryServiceStub(self.upstreams.channel("marketdata.v1.QueryService")).WatchTicker(
            request, metadata=self.gateway.metadata())
        try:
            first = await asyncio.wait_for(call.read(), self.settings.request_timeout_seconds)
        except grpc.aio.AioRpcError as exc:
            return gateway.rpc_error_response(exc, request.DESCRIPTOR)
        except asyncio.TimeoutError:
            call.cancel()
            return problem_response(504, "the query service did not answer in time",
                                    grpc_code=grpc.StatusCode.DEADLINE_EXCEEDED)

        async def frames() -> AsyncIterator[bytes]:
            try:  # the head inside: a client gone right after it still cancels the call
                yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
                message = first
                while message is not grpc.aio.EOF:
                    yield encode_frame("ticker", gateway.to_json_bytes(message))
                    message = await call.read()
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    log.warning("ticker stream ended", extra={"grpc_code": exc.code().name})
            finally:
                call.cancel()

        return EventSourceResponse(frames(), ping=self.settings.sse_ping_seconds, sep="\n",
                                   headers={"cache-control": "no-store"})


class LiveStreamResponse(EventSourceResponse):
    """sse-starlette's response for one live-feed subscriber. Whatever ends the response (the client leaves, the
    edge drops it, HEAD, an error), the subscriber leaves the feed."""

    def __init__(self, subscriber: Subscriber, first: bytes, ping_seconds: float) -> None:
        super().__init__(frames(subscriber, first), ping=ping_seconds, sep="\n", headers={"cache-control": "no-store"})
        self.subscriber = subscriber

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.subscriber.feed.remove(self.subscriber)

    # The one library internal the edge overrides, because sse-starlette has no public way to send without
    # its per-send cancel scope (anyio.move_on_after, even with send_timeout=None): measured at 500 clients,
    # that scope made the edge spend a third more CPU per frame and doubled tick -> SSE p99. The feed drops
    # slow clients itself, so a frame is one plain send. sse-starlette is pinned to the versions tested, and
    # tests/edge/test_sse.py::test_the_sse_send_hook_is_still_sse_starlettes fails if the hook goes away.
    async def _send_with_timeout(self, send: Any, message: Any) -> None:
        await send(message)


# ---- the outermost ASGI layer: request ids, metrics, and a way to abort a stalled connection ----------------

def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110: `gzip;q=0` refuses it, `*` admits it unless
    listed)."""
    weights = {}
    for entry in accept_encoding.lower().split(","):
        coding, _, parameters = entry.partition(";")
        name, _, value = parameters.strip().partition("=")
        try:
            weights[coding.strip()] = float(value) if name.strip() == "q" else 1.0
        except ValueError:
            weights[coding.strip()] = 0.0
    return weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0))) > 0


class EdgeMiddleware:
    def __init__(self, app: Any, routes: list[tuple[re.Pattern[str], str]], webhook: Any = None, *,
                 max_body_bytes: int, body_idle_seconds: float) -> None:
        self.app = app
        self.routes = routes
        self.webhook = webhook
        self.max_body_bytes = max_body_bytes
        self.body_idle_seconds = body_idle_seconds
        # JSON above GZIP_MINIMUM_BYTES is compressed for clients that accept gzip (a 5,000-candle page
        # shrinks about 6 times); event streams never are (starlette excludes text/event-stream).
        self.gzip = GZipMiddleware(self.dispatch, minimum_size=GZIP_MINIMUM_BYTES, compresslevel=GZIP_LEVEL)
        # A SERVER span per request when tracing is on (the webhook's trace starts here).
        self.handler = trace_http(self.negotiate, self.route_of)

    async def negotiate(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Starlette's GZipMiddleware looks for "gzip" in the header (`gzip;q=0` too, `GZIP` not): it is given
        # the verdict of accepts_gzip instead.
        if accepts_gzip(Headers(scope=scope).get("accept-encoding", "")):
            headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"accept-encoding"]
            await self.gzip({**scope, "headers": [*headers, (b"accept-encoding", b"gzip")]}, receive, send)
        else:
            await self.dispatch(scope, receive, send)

    async def dispatch(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The tick webhook's hot path (webhook.py) before connexion, everything else through connexion, other
        bodies read first (webhook.buffered: gzip, EDGE_MAX_BODY_BYTES, stalls)."""
        if scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if b"content-type" not in dict(scope.get("headers", ())):
            # A body without a media type is read as JSON, as grpc-gateway reads it.
            scope = {**scope, "headers": [*scope.get("headers", ()), (b"content-type", b"application/json")]}
        if self.webhook is not None and TickWebhook.handles(scope):
            await self.webhook(scope, receive, send)
            return
        try:
            scope, receive = await buffered(scope, receive, self.max_body_bytes, self.body_idle_seconds)
        except ClientGone:
            return
        except BodyTooLarge:
            await too_large(self.max_body_bytes)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def route_of(self, path: str) -> str:
        for pattern, template in self.routes:
            if pattern.match(path):
                return template
        return "other"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = Headers(scope=scope).get("x-request-id", "")[:128]
        if not request_id or not gateway.is_metadata_value(request_id):
            request_id = uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        scope["marketdata.abort"] = _aborter(send)
        started = time.perf_counter()
        method = scope.get("method", "")
        route = self.route_of(scope.get("path", ""))
        header = (b"x-request-id", request_id.encode("latin-1"))
        responded = False

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
                message["headers"] = [*message.get("headers", ()), header]
                HTTP_REQUESTS.labels(method, route, str(message["status"])).inc()
                HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.handler(scope, receive, send_with_id)
        except Exception as exc:
            # Connexion's error handlers answer its routes; this answers the rest (the webhook's hot path).
            if responded:
                raise
            await problem_from_exception(exc)(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


def _aborter(send: Any) -> Callable[[], None]:
    """Closes the client's connection at once, even while a send waits for a stalled reader.

    uvicorn's send is a bound method of its request cycle, which holds the transport; when that is not
    available, the request's task is cancelled instead."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        return transport.abort
    task = asyncio.current_task()
    return (lambda: task.cancel()) if task is not None else (lambda: None)


def _route_patterns(document: Mapping[str, Any]) -> list[tuple[re.Pattern[str], str]]:
    patterns = []
    for path in document.get("paths", {}):
        regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"
        patterns.append((re.compile(regex), path))
    for fixed in ("/openapi.json", "/docs", "/"):
        patterns.append((re.compile("^" + re.escape(fixed) + ("(/.*)?$" if fixed == "/docs" else "$")), fixed))
    return patterns


# ---- error handlers: every error in one problem shape -------------------------------------------------------

def _connexion_problem(_request: Any, exc: Exception) -> ConnexionResponse:
    response = problem_from_exception(exc)
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return ConnexionResponse(status_code=response.status_code, mimetype=PROBLEM_MEDIA_TYPE,
                             content_type=PROBLEM_MEDIA_TYPE, body=response.body, headers=headers)


# ---- the dashboard ------------------------------------------------------------------------------------------

NOT_BUILT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>marketdata</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem}}
code{{background:#f2f2f2;padding:.1rem .3rem;border-radius:3px}}</style></head>
<body><h1>marketdata edge</h1>
<p>The dashboard is not built{where}. Build it with <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>
(or point <code>WEB_DIST_DIR</code> at a built <code>dist/</code>) and restart the edge.</p>
<p>Meanwhile: <a href="/docs/">API documentation (Swagger UI)</a> · <a href="/openapi.json">OpenAPI document</a> ·
<a href="/api/v1/health/readiness">readiness</a></p>
<p>Live updates: <code>curl -N "/realtime/ticks?symbol=BTCUSDT"</code></p>
</body></html>
"""


def _dashboard_routes(app: connexion.AsyncApp, web_dist: Path | None) -> None:
    index = web_dist / "index.html" if web_dist else None
    if index is None or not index.is_file():
        where = f" ({web_dist} has no index.html)" if web_dist else ""
        page = NOT_BUILT_PAGE.format(where=where)

        async def not_built(request: Request) -> Response:
            return HTMLResponse(page)

        app.add_url_rule("/", "dashboard", not_built, methods=["GET"])
        return
    assert web_dist is not None

    async def home(request: Request) -> Response:
        return FileResponse(index, headers={"cache-control": "no-cache"})

    files = StaticFiles(directory=web_dist)

    async def static(request: Request) -> Response:
        return await files.get_response(files.get_path(request.scope), request.scope)

    app.add_url_rule("/", "dashboard", home, methods=["GET"])
    app.add_url_rule("/index.html", "dashboard-index", home, methods=["GET"])
    reserved = {"api", "realtime", "docs", "metrics", "openapi.json"}
    # One route per top-level entry, not a catch-all: that would shadow the API, which connexion routes after these.
    for entry in sorted(web_dist.iterdir()):
        if entry.name in reserved or entry.name == "index.html" or entry.name.startswith("."):
            continue
        rule = f"/{entry.name}/{{path:path}}" if entry.is_dir() else f"/{entry.name}"
        app.add_url_rule(rule, f"dashboard-{entry.name}", static, methods=["GET"])


# ---- the app ------------------------------------------------------------------------------------------------

def create_app(edge: Edge) -> Any:
    """The ASGI app of the edge (connexion AsyncApp wrapped in the request-id/metrics layer)."""
    edge_routes: dict[str, Callable[..., Awaitable[Response]]] = {
        "marketdata.edge.server.liveness": edge.liveness,
        "marketdata.edge.server.readiness": edge.readiness,
        "marketdata.edge.sse.stream": edge.stream,
        "marketdata.edge.server.ticker_stream": edge.ticker_stream,
    }

    def resolve(operation_id: str) -> Callable[..., Any]:
        handler = edge.gateway.handler(operation_id) or edge_routes.get(operation_id)
        if handler is None:
            raise LookupError(f"operation {operation_id} has neither an RPC nor an edge handler")
        return handler

    app = connexion.AsyncApp(
        __name__,
        resolver=Resolver(function_resolver=resolve),
        strict_validation=True,
        validate_responses=False,
        validator_map={"parameter": EdgeParameterValidator,
                       "body": MediaTypeDict({"*/*json": EdgeBodyValidator})},
        swagger_ui_options=SwaggerUIOptions(swagger_ui_path="/docs", spec_path="/openapi.json",
                                            swagger_ui_config={"tryItOutEnabled": True}),
    )
    for exc_class in (ProblemException, HTTPException, Exception):
        app.add_error_handler(exc_class, _connexion_problem)
    if edge.settings.cors_origins:
        app.add_middleware(CORSMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION,
                           allow_origins=list(edge.settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["content-type", "content-encoding", "x-api-key", "x-request-id",
                                          "last-event-id",
                                          "if-none-match"],
                           expose_headers=["x-request-id", "link", "etag"], max_age=600)
    # Plain routes first: the API is mounted at "" and would answer 404 for anything after it.
    _dashboard_routes(app, default_web_dist(edge.settings))
    app.add_api(edge.document, name="marketdata")
    webhook: Any = TickWebhook(app, edge.upstreams, max_body_bytes=edge.settings.edge_max_body_bytes,
                               max_batch_ticks=edge.settings.max_batch_ticks,
                               timeout=edge.settings.request_timeout_seconds,
                               tick_validator=tick_schema_validator(edge.document))
    if edge.settings.cors_origins:  # connexion's CORS layer is behind the hot path: the same one in front of it
        webhook = CORSMiddleware(webhook, allow_origins=list(edge.settings.cors_origins), allow_methods=["POST"],
                                 allow_headers=["content-type", "content-encoding", "x-api-key", "x-request-id"],
                                 expose_headers=["x-request-id"], max_age=600)
    return EdgeMiddleware(app, _route_patterns(edge.document), webhook, max_body_bytes=edge.settings.edge_max_body_bytes,
                          body_idle_seconds=edge.settings.request_timeout_seconds)


# ---- serving ------------------------------------------------------------------------------------------------

def bind_socket(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.bind_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.bind_host, settings.edge_port))
    except OSError as exc:
        sock.close()
        raise PortInUseError(settings.bind_host, settings.edge_port, "EDGE_PORT") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def end_streams_on_stop(server: uvicorn.Server, feed: LiveFeed) -> None:
    """SSE streams never end by themselves, and uvicorn's graceful stop waits for every open response: once
    uvicorn is stopping (a signal set `should_exit`), the feed ends them. Streams not gone well within the grace
    period (a reader that stopped reading) are aborted, so the stop finishes in time."""
    while not server.should_exit:
        await asyncio.sleep(0.1)  # uvicorn's own tick
    log.info("stopping", extra={"sse_streams": feed.stream_count})
    feed.close_streams()
    grace = server.config.timeout_graceful_shutdown or 0
    await feed.wait_streams_closed(max(0.2, grace * 0.7))


async def serve(settings: Settings) -> None:
    sock = bind_socket(settings)
    AppStatus.disable_automatic_graceful_drain()  # the feed ends the streams (end_streams_on_stop)
    document = load_document()
    nats = NatsConnection(settings.nats_url, "edge")
    nats.start()
    upstreams = Upstreams(upstream_addresses(settings), pools={INGEST_SERVICE: settings.edge_ingest_channels})
    feed = create_feed(nats, settings)
    edge = Edge(settings, document, upstreams, feed, nats)
    loop = asyncio.get_running_loop()
    LOOP_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))  # read when scraped, on the metrics server's thread
    serve_metrics(settings.metrics_port_for("edge"), settings.bind_host)
    app = create_app(edge)
    config = uvicorn.Config(app, host=settings.bind_host, port=settings.edge_port,
                            timeout_graceful_shutdown=settings.shutdown_grace_seconds,  # type: ignore[arg-type]
                            log_config=None, access_log=False, lifespan="on", server_header=False)
    server = uvicorn.Server(config)
    stopping = asyncio.create_task(end_streams_on_stop(server, feed))
    log.info("edge listening", extra={"address": f"{settings.bind_host}:{settings.edge_port}",
                                      "ingest": settings.ingest_addr, "query": settings.query_addr,
                                      "web_dist": str(default_web_dist(settings)),
                                      "loop": type(loop).__module__})
    # uvicorn passes the signal that stopped it on to the handler it found (cooperative signal handling,
    # uvicorn 0.29): ignored, so the cleanup below runs and the process exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    try:
        await server.serve(sockets=[sock])
    finally:
        stopping.cancel()
        await feed.close()
        await upstreams.close()
        await nats.close()
        sock.close()
        log.info("stopped")
