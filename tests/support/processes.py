"""Service processes started the way an operator starts them: `python -m marketdata <command>` with env vars."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from marketdata.common.embedded import free_port

SERVICE_NAMES = {
    "ingest": "marketdata.v1.IngestService",
    "query": "marketdata.v1.QueryService",
    "aggregator": "marketdata.v1.AggregatorService",
}
PORT_SETTINGS = {"ingest": "INGEST_PORT", "query": "QUERY_PORT", "aggregator": "AGGREGATOR_PORT", "edge": "EDGE_PORT"}


def health_status(address: str, service: str = "", timeout: float = 1.0) -> str:
    """SERVING / NOT_SERVING / UNKNOWN / UNREACHABLE."""
    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    except grpc.RpcError:
        return "UNREACHABLE"


def wait_for(condition, timeout: float, interval: float = 0.1, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Polls condition() until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class ServiceProcess:
    """One `marketdata <command>` process on a free port, logging to a file."""

    def __init__(self, command: str, env: dict[str, str], log_dir: Path, port: int | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.command = command
        self.args = args
        self.port = port or free_port()
        self.env = {**os.environ, **env}
        if command in PORT_SETTINGS:
            self.env[PORT_SETTINGS[command]] = str(self.port)
        self.env.setdefault("LOG_FORMAT", "text")
        self.env["METRICS_PORT"] = env.get("METRICS_PORT", "0")
        self.log_path = log_dir / f"{command}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen([sys.executable, "-m", "marketdata", self.command, *self.args],
                                        env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_serving(self, timeout: float = 30.0) -> ServiceProcess:
        service = SERVICE_NAMES[self.command]

        def serving() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"{self.command} exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            return health_status(self.address, service) == "SERVING"

        wait_for(serving, timeout, message=f"{self.command} SERVING\n{self.log_text()[-2000:]}")
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after timeout; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
