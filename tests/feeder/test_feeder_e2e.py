"""`marketdata feeder` as a process against the real services: its ticks land in PostgreSQL, and a restart
of ingest in the middle of a run loses nothing that was acknowledged."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import grpc
import httpx

from marketdata.common.embedded import free_port
from marketdata.v1 import query_pb2, query_pb2_grpc
from tests.support.processes import ServiceProcess, wait_for
from tests.support.stack import EdgeStack, Stack

DONE = re.compile(r"done: (\d+) ticks sent")


def symbols(count: int) -> list[str]:
    run = uuid.uuid4().hex[:6].upper()
    return [f"F{run}{n}USDT" for n in range(count)]


def run_feeder(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "marketdata", "feeder", *args],
                            env={**os.environ, **env, "LOG_FORMAT": "text", "METRICS_PORT": "0"},
                            capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    match = DONE.search(output)
    assert match, output[-3000:]
    return int(match.group(1)), output


async def stored(database_url: str, names: list[str]) -> dict[str, list[int]]:
    """Per symbol, the sequence numbers of the stored trade ids."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT symbol, trade_id FROM ticks_history WHERE symbol = ANY($1)", names)
    finally:
        await conn.close()
    result: dict[str, list[int]] = {}
    for row in rows:
        result.setdefault(row["symbol"], []).append(int(row["trade_id"].rsplit("-", 1)[1]))
    return result


def wait_stored(database_url: str, names: list[str], expected: int, timeout: float = 30) -> dict[str, list[int]]:
    def complete() -> dict[str, list[int]] | None:
        found = asyncio.run(stored(database_url, names))
        return found if sum(map(len, found.values())) >= expected else None

    return wait_for(complete, timeout, interval=0.3, message=f"{expected} ticks in ticks_history")


def test_feeder_ticks_reach_the_database_and_candles(stack: Stack, database_url: str, tmp_path: Path) -> None:
    names = symbols(2)
    metrics_port = free_port()
    log = tmp_path / "feeder.log"
    with open(log, "w") as out:
        feeder = subprocess.Popen(
            [sys.executable, "-m", "marketdata", "feeder", "--duration", "3", "--rate", "200", "--seed", "7",
             "--symbols", ",".join(names)],
            env={**os.environ, **stack.client_env(), "LOG_FORMAT": "text", "METRICS_PORT": str(metrics_port),
                 "BIND_HOST": "127.0.0.1"},
            stdout=out, stderr=out)
        try:
            def scraped() -> str | None:
                try:
                    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).text
                except httpx.HTTPError:
                    return None
                return text if f'feeder_ticks_sent_total{{symbol="{names[0]}"}}' in text else None

            metrics = wait_for(scraped, 10, interval=0.2, message="feeder metrics")
            assert "feeder_errors_total" in metrics or "feeder_batches_sent_total" in metrics
            assert feeder.wait(30) == 0, log.read_text()[-3000:]
        finally:
            if feeder.poll() is None:
                feeder.kill()
    output = log.read_text()
    sent = int(DONE.search(output).group(1))  # type: ignore[union-attr]
    assert 300 < sent < 1000, output[-2000:]
    found = wait_stored(database_url, names, sent)
    assert sum(map(len, found.values())) == sent
    for seqs in found.values():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), "no hole, no duplicate"
    assert stack.query is not None
    with grpc.insecure_channel(stack.query.address) as channel:
        history = query_pb2_grpc.QueryServiceStub(channel).GetHistory(
            query_pb2.GetHistoryRequest(symbol=names[0], view="ohlc1m"), timeout=10)
    assert history.candles and sum(c.trades for c in history.candles) == len(found[names[0]])
    assert all(c.low <= c.open <= c.high and c.low <= c.close <= c.high for c in history.candles)


def test_ingest_restart_mid_run_loses_nothing(stack: Stack, database_url: str,
                                              start_service: Callable[..., ServiceProcess]) -> None:
    names = symbols(2)
    ingest = start_service("ingest")
    env = {**stack.client_env(), "INGEST_ADDR": ingest.address}
    log = Path(ingest.log_path).with_name("feeder-restart.log")
    with open(log, "w") as out:
        feeder = subprocess.Popen(
            [sys.executable, "-m", "marketdata", "feeder", "--duration", "9", "--rate", "200", "--seed", "3",
             "--symbols", ",".join(names)],
            env={**os.environ, **env, "LOG_FORMAT": "text", "METRICS_PORT": "0"}, stdout=out, stderr=out)
        try:
            time.sleep(3)
            ingest.stop()
            time.sleep(1.5)
            start_service("ingest", port=ingest.port)
            assert feeder.wait(40) == 0, log.read_text()[-3000:]
        finally:
            if feeder.poll() is None:
                feeder.kill()
    output = log.read_text()
    sent = int(DONE.search(output).group(1))  # type: ignore[union-attr]
    assert "retrying" in output, output[-3000:]
    found = wait_stored(database_url, names, sent)
    assert sum(map(len, found.values())) == sent, "every acknowledged tick is stored, once"
    for seqs in found.values():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), "nothing generated was lost"


def test_rest_transport_through_the_edge(edge_stack: EdgeStack, database_url: str) -> None:
    names = symbols(1)
    sent, output = run_feeder({**edge_stack.stack.client_env(), "FEEDER_EDGE_URL": edge_stack.base_url,
                               "FEEDER_API_KEY": edge_stack.api_key},
                              "--transport", "rest", "--duration", "2", "--rate", "100", "--symbols", names[0])
    assert sent > 100 and "0 errors" in output, output[-2000:]
    found = wait_stored(database_url, names, sent)
    assert sorted(found[names[0]]) == list(range(1, sent + 1))
