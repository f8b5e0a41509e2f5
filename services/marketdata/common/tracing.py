"""OpenTelemetry traces across the hops: edge HTTP -> gRPC -> ingest -> JetStream -> aggregator commit -> live update.

Off by default: the API's no-op tracer, no exporter, no interceptors. `setup_tracing` turns it on with the
standard variables: OTEL_TRACES_EXPORTER=otlp, or OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) with
OTEL_TRACES_EXPORTER unset; spans go over OTLP/gRPC in batches (OTEL_BSP_*), named by OTEL_SERVICE_NAME or
OTEL_RESOURCE_ATTRIBUTES (else `marketdata-<service>`), sampled by OTEL_TRACES_SAMPLER. The context travels as
W3C trace context (`traceparent`; OTEL_PROPAGATORS) in gRPC metadata, NATS message headers and HTTP headers.

Whether interceptors and middleware are installed is decided when a server, channel or app is built: install
the tracer provider first (run_service does; a test installs its own with an in-memory exporter).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from marketdata.common.interceptors import Around, CallEnd, CallInterceptor

log = logging.getLogger(__name__)

tracer = trace.get_tracer("marketdata")

# The codes that make a server span an error (OpenTelemetry's gRPC conventions); a client span: any but OK.
SERVER_ERROR_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                                grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})


def _exporter_wanted() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return "otlp" in [name.strip() for name in exporters.split(",")]
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(service_name: str) -> None:
    """Installs a tracer provider exporting over OTLP when the OTEL_* variables ask for it (see the module
    docstring); otherwise does nothing, and so does a provider installed already."""
    if enabled() or not _exporter_wanted():
        return
    # Imported only when on: a process without tracing never loads the SDK.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol != "grpc":
        log.warning("only OTLP over gRPC is built in: exporting with grpc", extra={"protocol": protocol})
    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"marketdata-{service_name}"}))
    provider = TracerProvider(resource=resource)  # flushes its spans at exit
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing on: exporting spans over OTLP", extra={"service_name": resource.attributes[SERVICE_NAME]})


def enabled() -> bool:
    """Whether spans are recorded: an SDK tracer provider is installed."""
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def inject(context: Context | None = None) -> dict[str, str]:
    """Headers carrying the trace context of `context` (default: the current one), for a NATS message, gRPC
    metadata or an HTTP request. Empty outside a span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context)
    return carrier


def extract(headers: Mapping[str, str] | None) -> Context:
    """The trace context carried by headers (a NATS message's `msg.headers`, HTTP headers), usable as the
    `context=` (parent) of a span; an empty Context when they carry none."""
    return propagate.extract(headers) if headers else Context()


def span_context_of(context: Context | None) -> trace.SpanContext:
    """The span context a Context carries (invalid if none): what a Link points at."""
    return trace.get_current_span(context).get_span_context()


# ---- gRPC ------------------------------------------------------------------------------------------------

def _rpc_attributes(full_method: str) -> dict[str, str]:
    service, _, method = full_method.partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _finish(span: trace.Span, code: grpc.StatusCode, is_error: bool, description: str | None = None) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if is_error:
        span.set_status(Status(StatusCode.ERROR, description or code.name))


class ServerTracingInterceptor(CallInterceptor):
    """A SERVER span per call (`<package.Service>/<Method>`), child of the caller's traceparent, current while
    the handler runs; an unhandled exception is recorded on it and makes it an error."""

    def around(self, details: grpc.HandlerCallDetails) -> Around:
        name = details.method[1:]
        metadata = {key: value for key, value in details.invocation_metadata or () if isinstance(value, str)}

        @contextmanager
        def traced(context: grpc.aio.ServicerContext, ended: CallEnd) -> Iterator[None]:
            with tracer.start_as_current_span(name, context=extract(metadata), kind=SpanKind.SERVER,
                                              attributes=_rpc_attributes(name), record_exception=False,
                                              set_status_on_exception=False) as span:
                try:
                    yield
                finally:
                    code = ended.code(context)
                    unhandled = ended.error is not None and code is grpc.StatusCode.UNKNOWN
                    if unhandled:
                        span.record_exception(ended.error)  # type: ignore[arg-type]
                    _finish(span, code, code in SERVER_ERROR_CODES,
                            f"{type(ended.error).__name__}: {ended.error}" if unhandled else None)

        return traced


# Client spans end in a task started when their call is done (the call's code is read asynchronously).
_ending: set[asyncio.Task[None]] = set()


async def _end_client_span(span: trace.Span, call: grpc.aio.Call) -> None:
    code = await call.code()
    _finish(span, code, code is not grpc.StatusCode.OK,
            None if code is grpc.StatusCode.OK else f"{code.name}: {await call.details()}")
    span.end()


class _ClientTracing:
    """A CLIENT span per call, its context sent as traceparent metadata; it ends when the call is done. The call
    is returned at once, so a client stream's writes and the caller's cancel() behave as without it."""

    async def _intercept(self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails,
                         request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        name = method.lstrip("/")
        span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=_rpc_attributes(name))
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        for key, value in inject(context=trace.set_span_in_context(span)).items():
            metadata.add(key, value)
        try:
            call = await continuation(details._replace(metadata=metadata), request)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()
            raise

        def done(finished: grpc.aio.Call) -> None:
            task = asyncio.get_running_loop().create_task(_end_client_span(span, finished))
            _ending.add(task)
            task.add_done_callback(_ending.discard)

        call.add_done_callback(done)
        return call


class _UnaryUnaryTracing(_ClientTracing, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request)


class _StreamUnaryTracing(_ClientTracing, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                                     request_iterator: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request_iterator)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The channel interceptors of client spans (unary and client-stream calls, the ones the platform makes),
    none while tracing is off (a channel without interceptors costs no task per call)."""
    return [_UnaryUnaryTracing(), _StreamUnaryTracing()] if enabled() else []


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    return [ServerTracingInterceptor()] if enabled() else []


# ---- HTTP (ASGI) ------------------------------------------------------------------------------------------

def trace_http(app: Any, route_of: Callable[[str], str]) -> Any:
    """`app` with a SERVER span per HTTP request, `edge <METHOD> <route>` (e.g. `edge POST
    /api/v1/webhooks/ticks`), child of the request's traceparent; `app` itself while tracing is off."""
    if not enabled():
        return app

    async def traced(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        method, route = scope.get("method", ""), route_of(scope.get("path", ""))
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", ())}
        with tracer.start_as_current_span(
                f"edge {method} {route}", context=extract(headers), kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "http.route": route,
                            "url.path": scope.get("path", "")}) as span:

            async def send_traced(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await app(scope, receive, send_traced)

    return traced
