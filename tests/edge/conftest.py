"""Helpers for the edge tests: unique symbols, extra edge processes, a raw SSE client, NATS live updates."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from marketdata.common.config import load_settings
from marketdata.common.embedded import free_port
from marketdata.v1 import events_pb2, market_pb2
from tests.support.processes import ServiceProcess, wait_for
from tests.support.stack import REPO_ROOT, EdgeStack


def unique_symbol(prefix: str = "E") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10].upper()}USDT"[:20]


@pytest.fixture
def symbol(edge_stack: EdgeStack) -> str:
    """A fresh symbol, registered (active) through the edge's webhook."""
    name = unique_symbol()
    response = httpx.post(f"{edge_stack.base_url}/api/v1/webhooks/symbols",
                          headers={"x-api-key": edge_stack.api_key},
                          json={"items": [{"symbol": name, "base": name[:-4], "quote": "USDT", "active": True}]})
    assert response.status_code == 200, response.text
    return name


def metrics(metrics_url: str) -> dict[str, float]:
    """Samples of the edge's metrics endpoint (its metrics port), keyed `name{label="value",...}` (labels sorted)
    or `name`."""
    text = httpx.get(metrics_url, timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def wait_gauges(metrics_url: str, timeout: float = 10, **expected: float) -> dict[str, float]:
    """Polls the metrics until every named gauge has the expected value."""
    last: dict[str, float] = {}

    def check() -> bool:
        nonlocal last
        last = metrics(metrics_url)
        return all(last.get(name) == value for name, value in expected.items())

    try:
        wait_for(check, timeout, interval=0.1, message=f"gauges {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last: { {k: last.get(k) for k in expected} }") from None
    return last


@dataclass
class EdgeProcess:
    process: ServiceProcess

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.process.port}"

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.process.env['METRICS_PORT']}/metrics"


@pytest.fixture
def start_edge(edge_stack: EdgeStack, tmp_path: Path) -> Iterator[Callable[..., EdgeProcess]]:
    """Starts an extra edge process for this test, with env overrides; waits for liveness."""
    started: list[ServiceProcess] = []

    def start(wait_ready: bool = False, **env: str) -> EdgeProcess:
        full_env = {**edge_stack.stack.client_env(), "WEB_DIST_DIR": str(REPO_ROOT / "web" / "dist"),
                    "METRICS_PORT": str(free_port()), **env}
        process = ServiceProcess("edge", full_env, tmp_path).start()
        started.append(process)
        path = "readiness" if wait_ready else "liveness"

        def up() -> bool:
            if process.process is not None and process.process.poll() is not None:
                raise AssertionError(f"edge exited {process.process.returncode}:\n{process.log_text()[-3000:]}")
            try:
                return httpx.get(f"http://127.0.0.1:{process.port}/api/v1/health/{path}", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 30, message=f"edge {path}")
        return EdgeProcess(process)

    yield start
    for process in reversed(started):
        process.stop()


# ---- live updates straight onto NATS (what the aggregator publishes) ------------------------------------------

@pytest.fixture
async def live_publisher(service_env: dict[str, str]) -> AsyncIterator[LivePublisher]:
    client = await nats.connect(service_env["NATS_URL"])
    try:
        yield LivePublisher(client, load_settings(service_env).live_subject)
    finally:
        await client.drain()


@dataclass
class LivePublisher:
    client: nats.NATS
    subject_of: Callable[[str], str]
    counter: int = 0

    def update(self, symbol: str, price: float = 100.0, source: str = "test") -> events_pb2.LiveUpdate:
        self.counter += 1
        tick = market_pb2.Tick(symbol=symbol, price=price, size=1.5, trade_id=f"t{self.counter}",
                               side=market_pb2.SIDE_BUY, source=source)
        tick.event_time.GetCurrentTime()
        candle = market_pb2.Candle(symbol=symbol, open=price, high=price, low=price, close=price, volume=1.5,
                                   trades=self.counter, vwap=price)
        candle.time.FromSeconds(int(time.time()) // 60 * 60)
        update = events_pb2.LiveUpdate(symbol=symbol, last_tick=tick, candle=candle)
        update.commit_time.GetCurrentTime()
        return update

    async def publish(self, symbol: str, price: float = 100.0, flush: bool = True,
                      source: str = "test") -> events_pb2.LiveUpdate:
        update = self.update(symbol, price, source)
        await self.client.publish(self.subject_of(symbol), update.SerializeToString())
        if flush:
            await self.client.flush()
        return update


# ---- a raw SSE client (asyncio sockets; de-chunks the body itself) ---------------------------------------------

@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    received: float = 0.0


class SSEClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self._buffer = b""
        self._chunked = False
        self._eof = False

    @classmethod
    async def connect(cls, base_url: str, path: str, headers: dict[str, str] | None = None,
                      rcvbuf: int | None = None, read_head: bool = True) -> SSEClient:
        host, port = base_url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        client = cls(reader, writer)
        if read_head:
            await client.read_head()
        return client

    async def read_head(self, timeout: float = 10) -> None:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                self.headers[name.strip().lower()] = value.strip()
        self._chunked = self.headers.get("transfer-encoding", "") == "chunked"
        if not self._chunked and "content-length" in self.headers:
            self.body = await self.reader.readexactly(int(self.headers["content-length"]))

    async def _more(self) -> bool:
        if self._eof:
            return False
        if not self._chunked:
            data = await self.reader.read(65536)
            if not data:
                self._eof = True
                return False
            self._buffer += data
            return True
        size_line = await self.reader.readline()
        if not size_line:
            self._eof = True
            return False
        size = int(size_line.strip().split(b";")[0] or b"0", 16)
        if size == 0:
            await self.reader.readline()
            self._eof = True
            return False
        self._buffer += await self.reader.readexactly(size)
        await self.reader.readexactly(2)
        return True

    async def next_event(self, timeout: float = 10, *, skip_comments: bool = True) -> Event | None:
        """The next event (an `event`/`data` block, or a comment/retry-only block when skip_comments is
        False); None at the end of the stream."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise asyncio.TimeoutError("no SSE event in time")
                if not await asyncio.wait_for(self._more(), remaining):
                    return None
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            event = Event(received=time.monotonic())
            data_lines, has_fields = [], False
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    event.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data_lines.append(value)
                    has_fields = True
                elif name == "event":
                    event.event = value
                    has_fields = True
                elif name == "id":
                    event.id = value
                elif name == "retry":
                    event.retry = int(value)
            event.data = "\n".join(data_lines)
            if has_fields or not skip_comments:
                return event

    async def closed(self, timeout: float = 10) -> bool:
        """Reads until the end of the stream; True if the server ended or dropped it in time."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not await asyncio.wait_for(self._more(), deadline - time.monotonic()):
                    return True
                self._buffer = b""
        except (asyncio.TimeoutError, TimeoutError):
            return False
        except (ConnectionError, asyncio.IncompleteReadError):
            return True
        return False

    def close(self) -> None:
        self.writer.close()


def stalled_socket(base_url: str, path: str, rcvbuf: int = 4096) -> socket.socket:
    """Opens a stream and never reads it: a blocking socket the event loop knows nothing of."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


def drained_to_end(sock: socket.socket, timeout: float = 10) -> bool:
    """Reads what is buffered; True when the server has closed (EOF or reset) within the timeout."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(1 << 20):
                return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return False


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


async def settle(metrics_url: str, timeout: float = 10, **expected: float) -> dict[str, float]:
    """wait_gauges without blocking the event loop (the test's own sockets must be able to close)."""
    return await asyncio.to_thread(wait_gauges, metrics_url, timeout, **expected)
