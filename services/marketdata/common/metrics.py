"""Prometheus metrics: an HTTP endpoint per process and a gRPC interceptor that times every call."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from prometheus_client import Counter, Histogram, start_http_server

from marketdata.common.interceptors import Around, CallEnd, CallInterceptor

# Seconds; one set for every latency histogram, so the gRPC and HTTP figures line up.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
GRPC_HANDLED = Counter("grpc_server_handled_total", "gRPC calls completed", ["grpc_service", "grpc_method", "grpc_code"])
GRPC_LATENCY = Histogram(
    "grpc_server_handling_seconds", "gRPC call duration (a stream: its whole life)", ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS)


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


class MetricsInterceptor(CallInterceptor):
    """Counts every call by the code its client got (an unhandled exception: UNKNOWN) and times it (a stream's
    time is its whole life)."""

    def around(self, details: grpc.HandlerCallDetails) -> Around:
        service, name = _split(details.method)

        @contextmanager
        def measured(context: grpc.aio.ServicerContext, ended: CallEnd) -> Iterator[None]:
            started = time.perf_counter()
            try:
                yield
            finally:
                GRPC_HANDLED.labels(service, name, ended.code(context).name).inc()
                GRPC_LATENCY.labels(service, name).observe(time.perf_counter() - started)

        return measured
