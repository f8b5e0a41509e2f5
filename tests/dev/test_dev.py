"""`marketdata dev` end to end: embedded NATS and PostgreSQL (no NATS_URL / DATABASE_URL), every service, the
feeder; the dashboard, REST candles, gRPC reflection; a clean stop; data kept between runs; --fresh.

The tests of this module share one data directory and run in order: first start, second start (reuses the
data), --fresh start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from marketdata.common.embedded import free_port
from tests.dev.procs import alive, cmdline, describe, descendants, mentioning
from tests.support.processes import health_status, wait_for

READY_LINE = "press Ctrl-C to stop"
START_TIMEOUT = 90.0


@dataclass
class Ports:
    edge: int = field(default_factory=free_port)
    ingest: int = field(default_factory=free_port)
    query: int = field(default_factory=free_port)
    aggregator: int = field(default_factory=free_port)
    nats: int = field(default_factory=free_port)

    def args(self) -> list[str]:
        return ["--edge-port", str(self.edge), "--ingest-port", str(self.ingest), "--query-port", str(self.query),
                "--aggregator-port", str(self.aggregator), "--nats-port", str(self.nats)]

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.edge}"


def dev_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "API_KEYS", "API_KEY")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class DevProcess:
    """`marketdata dev` as a user starts it, its output collected line by line."""

    def __init__(self, data_dir: Path, ports: Ports, *extra: str) -> None:
        self.data_dir = data_dir
        self.ports = ports
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "marketdata", "dev", "--data-dir", str(data_dir), *ports.args(), *extra],
            env=dev_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"marketdata dev exited with {self.process.returncode}:\n{self.output[-5000:]}")
            return any(READY_LINE in line for line in self.lines)

        wait_for(ready, timeout, interval=0.2, message=f"marketdata dev ready\n{self.output[-5000:]}")

    def tree(self) -> set[int]:
        return descendants(self.process.pid) | mentioning(str(self.data_dir))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"marketdata dev did not stop within {timeout}s:\n{self.output[-5000:]}")
        self._reader.join(5)
        return self.process.returncode

    def kill(self) -> None:
        for pid in self.tree():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def candles(ports: Ports, symbol: str) -> list[dict]:
    response = httpx.get(f"{ports.web}/api/v1/ticks/{symbol}/history", params={"view": "ohlc1m", "limit": 100},
                         timeout=5)
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return response.json().get("candles", [])


def trades_of(rows: list[dict]) -> int:
    return sum(int(c.get("trades", 0)) for c in rows)


def assert_nothing_left(before: set[int], dev: DevProcess) -> None:
    def gone() -> bool:
        return not {pid for pid in before if alive(pid)} and not mentioning(str(dev.data_dir))

    try:
        wait_for(gone, 10, interval=0.1, message="every process of marketdata dev to exit")
    except AssertionError:
        left = {pid for pid in before if alive(pid)} | mentioning(str(dev.data_dir))
        raise AssertionError(f"left behind:\n{describe(left)}\n\n{dev.output[-3000:]}") from None


def temporary_data_dir(prefix: str) -> Iterator[Path]:
    """A data directory for marketdata dev; whatever still runs in it is killed afterwards. Not under pytest's
    basetemp: the embedded PostgreSQL runs as another user when the tests run as root, and must be able to reach
    its directory; a short path also keeps its unix socket path legal."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(root, 0o755)
    yield root / "data"
    for pid in mentioning(str(root)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    yield from temporary_data_dir("md-dev-")


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


def test_first_start_runs_everything_and_stops_clean(data_dir: Path, state: dict) -> None:
    ports = Ports()
    dev = DevProcess(data_dir, ports, "--rate", "100")
    try:
        dev.wait_ready()
        started = time.monotonic()
        tree = dev.tree()
        names = {"ingest", "aggregator", "query", "edge", "feeder"}
        assert all(any(line.startswith(f"{name:<10}|") for line in dev.lines) for name in names - {"feeder"})
        # The banner gives the real ports and ready-to-paste commands.
        assert f"http://localhost:{ports.edge}/" in dev.output
        assert f"grpcurl -plaintext localhost:{ports.query} list" in dev.output
        assert (f"grpcurl -plaintext -d '{{\"symbols\":[\"BTCUSDT\"]}}' localhost:{ports.query} "
                "marketdata.v1.QueryService/WatchTicks") in dev.output
        assert f"curl \"http://localhost:{ports.edge}/api/v1/ticks/BTCUSDT/history?view=ohlc1m&limit=30\"" in dev.output

        # The dashboard (or its how-to-build page) and the API docs answer.
        assert httpx.get(f"{ports.web}/", timeout=5).status_code == 200
        assert httpx.get(f"{ports.web}/docs/", timeout=5, follow_redirects=True).status_code == 200

        # Candles of the feeder's symbols appear through REST.
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            rows = wait_for(lambda s=symbol: candles(ports, s), 30, interval=0.5, message=f"{symbol} candles")
            assert all(float(c["low"]) <= float(c["high"]) for c in rows)
        btc = candles(ports, "BTCUSDT")
        assert 1_000 < float(btc[-1]["close"]) < 1_000_000

        # What grpcurl does: list the services by reflection and describe one.
        for port, service in ((ports.query, "marketdata.v1.QueryService"),
                              (ports.ingest, "marketdata.v1.IngestService"),
                              (ports.aggregator, "marketdata.v1.AggregatorService")):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                database = ProtoReflectionDescriptorDatabase(channel)
                services = database.get_services()
                assert service in services and "grpc.health.v1.Health" in services
                pool = descriptor_pool.DescriptorPool(database)
                described = pool.FindServiceByName(service)
                assert described.methods
                if service.endswith("QueryService"):
                    assert {"GetHistory", "WatchTicks"} <= {m.name for m in described.methods}
                    assert pool.FindMessageTypeByName("marketdata.v1.Candle").fields_by_name["sma10"]

        state["trades"] = trades_of(candles(ports, "BTCUSDT"))
        assert state["trades"] > 0
        tree |= dev.tree()
        assert len(tree) >= 7, describe(tree)  # 5 services + nats-server + postgres (and its workers)
        assert time.monotonic() - started < 60
    finally:
        code = dev.stop(signal.SIGINT)
    assert code == 0, dev.output[-3000:]
    assert_nothing_left(tree, dev)
    # Stopped in order: feeder first, ingest last, then NATS, then PostgreSQL.
    order = [line.split("stopping ", 1)[1].strip() for line in dev.lines if line.startswith("dev") and "| stopping " in line]
    assert order == ["feeder", "edge", "query", "aggregator", "ingest", "NATS", "PostgreSQL"], order


def test_second_start_reuses_the_data(data_dir: Path, state: dict) -> None:
    if "trades" not in state:
        pytest.skip("needs the first start")
    ports = Ports()
    dev = DevProcess(data_dir, ports, "--no-feeder")
    tree: set[int] = set()
    try:
        dev.wait_ready()
        tree = dev.tree()
        # The first run's candles are still there (and nothing new is fed).
        rows = candles(ports, "BTCUSDT")
        assert trades_of(rows) >= state["trades"], dev.output[-3000:]
        assert not any(line.startswith("feeder") for line in dev.lines)

        # A crashed service is reported and restarted.
        query = [pid for pid in descendants(dev.process.pid) if "marketdata query" in cmdline(pid)]
        assert len(query) == 1, describe(descendants(dev.process.pid))
        os.kill(query[0], signal.SIGKILL)
        wait_for(lambda: any("query exited with code -9" in line or "query was killed by SIGKILL" in line
                             for line in dev.lines), 10, message="the crash report")
        wait_for(lambda: health_status(f"127.0.0.1:{ports.query}", "marketdata.v1.QueryService") == "SERVING",
                 30, interval=0.2, message="query restarted")
        # The edge's channel reconnects to the new process within its reconnect backoff (at most 1 s).
        def trades_through_the_edge() -> int:
            try:
                return trades_of(candles(ports, "BTCUSDT"))
            except httpx.HTTPStatusError:  # 503 while the edge's channel is still reconnecting
                return 0

        wait_for(lambda: trades_through_the_edge() >= state["trades"], 5, interval=0.2,
                 message="history through the edge after the restart")
        tree |= dev.tree()
    finally:
        code = dev.stop(signal.SIGTERM)
    assert code == 0, dev.output[-3000:]
    assert_nothing_left(tree, dev)


def test_fresh_start_is_empty(data_dir: Path, state: dict) -> None:
    if "trades" not in state:
        pytest.skip("needs the first start")
    ports = Ports()
    dev = DevProcess(data_dir, ports, "--fresh", "--no-feeder")
    tree: set[int] = set()
    try:
        dev.wait_ready()
        tree = dev.tree()
        assert candles(ports, "BTCUSDT") == []
        symbols = httpx.get(f"{ports.web}/api/v1/symbols", timeout=5).json()
        assert symbols.get("items", []) == []
    finally:
        code = dev.stop(signal.SIGINT)
    assert code == 0, dev.output[-3000:]
    assert_nothing_left(tree, dev)


def test_a_busy_port_is_named_before_anything_starts(tmp_path: Path) -> None:
    ports = Ports()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports.query))
        holder.listen()
        result = subprocess.run(
            [sys.executable, "-m", "marketdata", "dev", "--data-dir", str(tmp_path / "data"), *ports.args()],
            env=dev_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"port {ports.query} (query, gRPC) is already in use" in result.stdout
    assert "--query-port" in result.stdout
    assert not (tmp_path / "data").exists(), "nothing was started"


def test_one_data_dir_one_dev(data_dir: Path) -> None:
    from marketdata.dev.environment import DataDirLock, DevError

    first = DataDirLock(data_dir)
    first.acquire()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "marketdata", "dev", "--data-dir", str(data_dir), *Ports().args()],
            env=dev_env(), capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        assert "in use by another `marketdata dev`" in result.stdout
        with pytest.raises(DevError):
            DataDirLock(data_dir).acquire()
    finally:
        first.release()
