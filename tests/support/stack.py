"""A running platform for tests: gRPC services (and optionally the edge) as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx

from marketdata.common.embedded import free_port
from marketdata.v1 import ingest_pb2, ingest_pb2_grpc, market_pb2
from tests.support.processes import ServiceProcess, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    """Running service processes sharing one environment. `query` is None for a pipeline-only stack."""

    env: dict[str, str]
    log_dir: Path
    api_key: str
    ingest: ServiceProcess
    aggregator: ServiceProcess
    query: ServiceProcess | None = None

    @classmethod
    @contextmanager
    def running(cls, env: dict[str, str], log_dir: Path, api_key: str) -> Iterator[Stack]:
        """ingest and aggregator."""
        log_dir.mkdir(parents=True, exist_ok=True)
        processes = [ServiceProcess(name, env, log_dir).start() for name in ("ingest", "aggregator")]
        try:
            for process in processes:
                process.wait_serving(60)
            yield cls(env, log_dir, api_key, *processes)
        finally:
            for process in reversed(processes):
                process.stop()

    @contextmanager
    def with_query(self) -> Iterator[Stack]:
        """This stack plus a query service."""
        query = ServiceProcess("query", self.env, self.log_dir).start()
        try:
            query.wait_serving(60)
            yield Stack(self.env, self.log_dir, self.api_key, self.ingest, self.aggregator, query)
        finally:
            query.stop()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", self.api_key),)

    def client_env(self) -> dict[str, str]:
        """Environment for a client process (edge, feeder) of this stack."""
        env = {**self.env, "INGEST_ADDR": self.ingest.address, "AGGREGATOR_ADDR": self.aggregator.address}
        if self.query is not None:
            env["QUERY_ADDR"] = self.query.address
        return env

    def seed_symbols(self, *symbols: str) -> None:
        with grpc.insecure_channel(self.ingest.address) as channel:
            ingest_pb2_grpc.IngestServiceStub(channel).UpsertSymbols(
                ingest_pb2.UpsertSymbolsRequest(items=[
                    market_pb2.Symbol(symbol=s, base=s[:-4] or s, quote=s[-4:], active=True) for s in symbols]),
                metadata=self.metadata, timeout=10)


@dataclass
class EdgeStack:
    stack: Stack
    log_dir: Path
    edge: ServiceProcess
    _port: int = field(init=False)

    def __post_init__(self) -> None:
        self._port = self.edge.port

    @classmethod
    @contextmanager
    def running(cls, stack: Stack, log_dir: Path) -> Iterator[EdgeStack]:
        log_dir.mkdir(parents=True, exist_ok=True)
        edge = cls(stack, log_dir, cls._new_edge(stack, log_dir, None))
        edge.start_edge()
        try:
            yield edge
        finally:
            edge.stop_edge()

    @staticmethod
    def _new_edge(stack: Stack, log_dir: Path, port: int | None, metrics_port: int | None = None) -> ServiceProcess:
        env = {**stack.client_env(), "WEB_DIST_DIR": str(REPO_ROOT / "web" / "dist"),
               "METRICS_PORT": str(metrics_port or free_port())}
        return ServiceProcess("edge", env, log_dir, port=port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_key(self) -> str:
        return self.stack.api_key

    @property
    def metrics_url(self) -> str:
        """The edge's Prometheus endpoint (its metrics port, not the public one)."""
        return f"http://127.0.0.1:{self.edge.env['METRICS_PORT']}/metrics"

    def seed_symbol(self, symbol: str) -> None:
        self.stack.seed_symbols(symbol)

    def start_edge(self) -> None:
        if self.edge.process is not None and self.edge.process.poll() is None:
            return
        if self.edge.process is not None:
            self.edge = self._new_edge(self.stack, self.log_dir, self._port, int(self.edge.env["METRICS_PORT"]))
        self.edge.start()

        def ready() -> bool:
            if self.edge.process is not None and self.edge.process.poll() is not None:
                raise AssertionError(f"edge exited:\n{self.edge.log_text()[-3000:]}")
            try:
                return httpx.get(f"{self.base_url}/api/v1/health/readiness", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, message="edge readiness")

    def stop_edge(self) -> None:
        self.edge.stop()
