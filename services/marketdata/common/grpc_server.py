"""The one gRPC server bootstrap: health per dependency, reflection, metrics, traces, graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Gauge

from marketdata.common.config import Settings
from marketdata.common.errors import PortInUseError
from marketdata.common.metrics import MetricsInterceptor, serve_metrics
from marketdata.common.runner import sleep_unless
from marketdata.common.tracing import server_interceptors

log = logging.getLogger(__name__)

DependencyCheck = Callable[[], Awaitable[bool]]
HEALTH_CHECK_INTERVAL_SECONDS = 1.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# --- health (liveness apart from readiness) ---------------------------------------------------------------
# The health name a liveness probe asks for: SERVING while the server answers calls, whatever NATS or
# PostgreSQL do, so that an outage of a dependency never restarts the pods (it only makes them unready).
LIVENESS_SERVICE = "liveness"
HEALTH_SERVING = Gauge("health_serving", "1 while the process reports SERVING for its readiness", ["service"])
DEPENDENCY_UP = Gauge("health_dependency_up", "1 while a dependency of the process answers", ["dependency"])


class HealthServicer(health_aio.HealthServicer):
    """grpcio-health-checking's servicer, plus the List method of grpc.health.v1 that it leaves unimplemented
    (reflection lists it, so clients call it): every status, kept through the servicer's public methods."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses = {"": SERVING}
        self.shutting_down = False

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        if not self.shutting_down:  # as the servicer, which ignores changes once shutting down
            self.statuses[service] = status
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        self.shutting_down = True
        self.statuses = dict.fromkeys(self.statuses, NOT_SERVING)
        await super().enter_graceful_shutdown()

    async def List(self, request: health_pb2.HealthListRequest,  # noqa: N802 - the RPC's name
                   context: grpc.aio.ServicerContext) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(statuses={
            name: health_pb2.HealthCheckResponse(status=status) for name, status in self.statuses.items()})
# --- end health ---------------------------------------------------------------------------------------------


class GrpcServiceHost:
    """Hosts one or more gRPC services in a grpc.aio server.

    Health: readiness, SERVING for "" and every registered service only while every *required* dependency check
    passes (an optional one, like NATS for the query's WatchTicks, is reported and logged but keeps the process
    ready for what still works); liveness, SERVING for LIVENESS_SERVICE from start to shutdown.
    Shutdown (SIGTERM/SIGINT): health NOT_SERVING, `stopping` set (long streams end), no new calls,
    in-flight calls drained for up to the grace period, then the cleanups run in reverse order.
    """

    def __init__(self, *, settings: Settings, port: int, port_setting: str,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> None:
        self.settings = settings
        self.port = port
        self.port_setting = port_setting
        self.server = grpc.aio.server(
            # Tracing outermost, so a call refused by a later interceptor (an API key) has its span too.
            interceptors=[*server_interceptors(), MetricsInterceptor(), *interceptors],
            options=[
                # Without this a second server could silently share the port.
                ("grpc.so_reuseport", 0),
                # Above the ingest limit, so an oversized batch gets INVALID_ARGUMENT naming it, not a transport error.
                ("grpc.max_receive_message_length", 2 * settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.keepalive_permit_without_calls", 1),
                # Clients balance over the replicas they resolved (common.channels); closing connections
                # by age makes them resolve again, so replicas added later get their share.
                ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_seconds * 1000)),
                ("grpc.max_connection_age_grace_ms", int(settings.grpc_max_connection_age_grace_seconds * 1000)),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        self.health = HealthServicer()
        self.stopping = asyncio.Event()
        self._service_names: list[str] = []
        self._dependencies: dict[str, DependencyCheck] = {}
        self._optional: set[str] = set()
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._serving: bool | None = None
        self._failed = False

    def add_service(self, full_name: str) -> None:
        """Declares a service already added to `self.server` (for health and reflection)."""
        self._service_names.append(full_name)

    def add_dependency(self, name: str, check: DependencyCheck, *, required: bool = True) -> None:
        """A dependency of readiness; an optional one is watched and reported but never makes the process unready."""
        self._dependencies[name] = check
        if not required:
            self._optional.add(name)

    def add_cleanup(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        self._cleanups.append(cleanup)

    def add_background(self, coroutine: Awaitable[None], name: str) -> None:
        """Runs a task for the life of the server; it is cancelled at shutdown after the drain.

        A task that fails is fatal: the server shuts down and exits non-zero, so that its supervisor
        (Kubernetes, `marketdata dev`) restarts it rather than leaving a healthy-looking idle process."""
        task = asyncio.create_task(coroutine, name=name)  # type: ignore[arg-type]
        task.add_done_callback(self._on_background_done)
        self._tasks.append(task)

    def _on_background_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None or self.stopping.is_set():
            return
        log.error("background task %s failed; shutting down", task.get_name(), exc_info=task.exception())
        self._failed = True
        self.stopping.set()

    async def dependency_status(self) -> dict[str, bool]:
        names = list(self._dependencies)
        results = await asyncio.gather(*(self._dependencies[n]() for n in names), return_exceptions=True)
        return {name: result is True for name, result in zip(names, results)}

    async def _set_all(self, status: int) -> None:
        for name in ["", *self._service_names]:
            await self.health.set(name, status)
            HEALTH_SERVING.labels(name or "overall").set(1 if status == SERVING else 0)

    async def _watch_dependencies(self) -> None:
        previous: dict[str, bool] = {}
        while not self.stopping.is_set():
            status = await self.dependency_status()
            for name, up in status.items():
                DEPENDENCY_UP.labels(name).set(1 if up else 0)
            serving = all(up for name, up in status.items() if name not in self._optional)
            degraded = sorted(name for name, up in status.items() if name in self._optional and not up)
            if serving != self._serving or status != previous:
                log.info("health %s%s", "SERVING" if serving else "NOT_SERVING",
                         f" (degraded: {', '.join(degraded)})" if serving and degraded else "",
                         extra={"dependencies": status})
            previous = status
            if serving != self._serving:
                self._serving = serving
                await self._set_all(SERVING if serving else NOT_SERVING)
            await sleep_unless(self.stopping, HEALTH_CHECK_INTERVAL_SECONDS)

    async def run(self) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self._service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            self.server,
        )
        address = f"{self.settings.bind_host}:{self.port}"
        try:
            self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise PortInUseError(self.settings.bind_host, self.port, self.port_setting) from exc
        await self._set_all(NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE, SERVING)
        metrics_port = self.settings.metrics_port_for(self.port_setting.removesuffix("_PORT").lower())
        serve_metrics(metrics_port, self.settings.bind_host)
        await self.server.start()
        log.info("listening", extra={"address": address, "services": self._service_names,
                                     "metrics_port": metrics_port})
        watcher = asyncio.create_task(self._watch_dependencies(), name="health-watch")

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.stopping.wait()

        log.info("shutting down", extra={"grace_seconds": self.settings.shutdown_grace_seconds})
        await self.health.enter_graceful_shutdown()
        await watcher
        await self.server.stop(self.settings.shutdown_grace_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for cleanup in reversed(self._cleanups):
            try:
                await cleanup()
            except Exception:  # noqa: BLE001 - keep closing the rest
                log.exception("cleanup failed")
        log.info("stopped")
        if self._failed:
            raise SystemExit(1)
