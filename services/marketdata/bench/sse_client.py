"""Many SSE clients of the edge in a process of their own (so the load generator does not delay their reads).

Each client opens GET /realtime/ticks?symbol=S over a raw HTTP/1.1 connection, decodes the chunked body into
SSE frames and, for every `update` frame, records when it arrived (CLOCK_MONOTONIC, comparable across
processes), the live batch its lastTick.tradeId belongs to, and its commitTime (wall clock)."""

from __future__ import annotations

import array
import asyncio
import calendar
import re
import time
from pathlib import Path

TRADE_ID = re.compile(rb'"tradeId":"L(\d+)-')
COMMIT_TIME = re.compile(rb'"commitTime":"([0-9T:\-]+)(?:\.(\d+))?Z"')
MAX_RECORDS = 8_000_000
_seconds_cache: dict[bytes, int] = {}


def _wall(base: bytes, fraction: bytes | None) -> float:
    seconds = _seconds_cache.get(base)
    if seconds is None:
        seconds = _seconds_cache[base] = calendar.timegm(time.strptime(base.decode(), "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float(b"0." + fraction) if fraction else 0.0)


class Recorder:
    def __init__(self) -> None:
        self.batch = array.array("q")
        self.arrival = array.array("d")   # monotonic
        self.commit_lag = array.array("d")  # wall arrival - commitTime
        self.frames = 0
        self.connected = 0
        self.failed = 0
        self.closed = 0

    def frame(self, frame: bytes, arrival: float, wall: float) -> None:
        self.frames += 1
        if len(self.batch) >= MAX_RECORDS:
            return
        match = TRADE_ID.search(frame)
        if not match:
            return
        commit = COMMIT_TIME.search(frame)
        self.batch.append(int(match.group(1)))
        self.arrival.append(arrival)
        self.commit_lag.append(wall - _wall(commit.group(1), commit.group(2)) if commit else float("nan"))


async def client(host: str, port: int, symbol: str, recorder: Recorder, stop: asyncio.Event) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    except OSError:
        recorder.failed += 1
        return
    try:
        writer.write(f"GET /realtime/ticks?symbol={symbol} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"Accept: text/event-stream\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            recorder.failed += 1
            return
        chunked = b"chunked" in head.lower()
        recorder.connected += 1
        buffer = b""
        while not stop.is_set():
            if chunked:
                line = await reader.readline()
                if not line:
                    break
                size = int(line.strip() or b"0", 16)
                if size == 0:
                    break
                data = await reader.readexactly(size + 2)
                data = data[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
            arrival, wall = time.monotonic(), time.time()
            buffer += data
            while True:
                end = buffer.find(b"\n\n")
                if end < 0:
                    break
                frame, buffer = buffer[:end], buffer[end + 2:]
                if b"event: update" in frame:
                    recorder.frame(frame, arrival, wall)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        recorder.closed += 1
        writer.close()


async def run_clients(host: str, port: int, symbols: list[str], clients: int, seconds: float,
                      ready_file: Path) -> Recorder:
    recorder = Recorder()
    stop = asyncio.Event()
    tasks = []
    for n in range(clients):
        tasks.append(asyncio.create_task(client(host, port, symbols[n % len(symbols)], recorder, stop)))
        if n % 50 == 49:
            await asyncio.sleep(0.05)  # do not open 500 connections in one burst
    deadline = time.monotonic() + 30
    while recorder.connected + recorder.failed < clients and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    ready_file.write_text(f"{recorder.connected} {recorder.failed}")
    await asyncio.sleep(seconds)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return recorder


def main(host: str, port: int, symbols: list[str], clients: int, seconds: float, out_dir: str) -> None:
    """Entry point of the client process; writes batch/arrival/commit_lag arrays and a summary to out_dir."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    out = Path(out_dir)
    recorder = asyncio.run(run_clients(host, port, symbols, clients, seconds, out / "ready"))
    with open(out / "batch.bin", "wb") as f:
        recorder.batch.tofile(f)
    with open(out / "arrival.bin", "wb") as f:
        recorder.arrival.tofile(f)
    with open(out / "commit_lag.bin", "wb") as f:
        recorder.commit_lag.tofile(f)
    (out / "summary").write_text(f"{recorder.connected} {recorder.failed} {recorder.frames}")
