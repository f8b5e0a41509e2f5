"""Prometheus metrics: an HTTP endpoint per process and a gRPC interceptor that times every call."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram, start_http_server

GRPC_HANDLED = Counter("grpc_server_handled_total", "gRPC calls completed", ["grpc_service", "grpc_method", "grpc_code"])
GRPC_LATENCY = Histogram(
    "grpc_server_handling_seconds", "gRPC call duration (a stream: its whole life)", ["grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def serve_metrics(port: int, host: str) -> None:
    """Serves /metrics (any path answers with the metrics) on a background thread; no-op for port 0."""
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise SystemExit(f"cannot serve metrics on {host}:{port}: {exc.strerror} (set METRICS_PORT to another "
                         "port, or 0 to turn the endpoint off)") from exc


def _split(method: str) -> tuple[str, str]:
    _, service, name = method.split("/", 2)
    return service, name


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every call by code and times it (a stream's time is its whole life)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith("/grpc."):
            return handler
        service, name = _split(handler_call_details.method)

        def finish(context: grpc.aio.ServicerContext, started: float) -> None:
            code = context.code()
            GRPC_HANDLED.labels(service, name, code.name if isinstance(code, grpc.StatusCode) else "OK").inc()
            GRPC_LATENCY.labels(service, name).observe(time.perf_counter() - started)

        def timed(inner: Callable[..., Any]) -> Callable[..., Any]:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    return await inner(request, context)
                finally:
                    finish(context, started)
            return call

        def timed_stream(inner: Callable[..., Any]) -> Callable[..., Any]:
            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    async for response in inner(request, context):
                        yield response
                finally:
                    finish(context, started)
            return stream

        serializers = (handler.request_deserializer, handler.response_serializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(timed(handler.unary_unary), *serializers)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(timed(handler.stream_unary), *serializers)
        if handler.unary_stream and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(timed_stream(handler.unary_stream), *serializers)
        return handler
