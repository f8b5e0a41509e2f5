"""`marketdata dev` for the operator: its embedded NATS and PostgreSQL are watched and restarted like the
services (and given up on with the same budget); the services' log lines keep their fields; and a wrong
--data-dir or DATABASE_URL is one line, not a traceback."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from marketdata.dev.__main__ import Dev, parse_args
from marketdata.dev.supervisor import Output
from tests.dev.procs import cmdline, describe, mentioning
from tests.dev.test_dev import (DevProcess, Ports, assert_nothing_left, candles, dev_env, temporary_data_dir,
                                trades_of)
from tests.support.processes import health_status, wait_for


@pytest.fixture
def data_dir() -> Iterator[Path]:
    yield from temporary_data_dir("md-devw-")


def embedded_nats_pid(data_dir: Path) -> int:
    pids = [pid for pid in mentioning(str(data_dir / "nats")) if "nats-server" in cmdline(pid)]
    assert len(pids) == 1, describe(set(pids))
    return pids[0]


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])


def wait_line(dev: DevProcess, text: str, timeout: float = 30) -> None:
    wait_for(lambda: any(text in line for line in dev.lines), timeout, interval=0.2,
             message=f"{text!r} from marketdata dev\n{dev.output[-3000:]}")


def test_embedded_servers_are_restarted_then_given_up(data_dir: Path) -> None:
    ports = Ports()
    dev = DevProcess(data_dir, ports, "--rate", "100", "--max-restarts", "1")
    tree: set[int] = set()
    try:
        dev.wait_ready()
        tree = dev.tree()
        wait_for(lambda: trades_of(candles(ports, "BTCUSDT")), 30, interval=0.5, message="first candles")

        # NATS killed: reported, restarted on its port and data; ingest is ready again and ticks still flow.
        nats_pid = embedded_nats_pid(data_dir)
        os.kill(nats_pid, signal.SIGKILL)
        wait_line(dev, "embedded NATS was killed by SIGKILL after")
        wait_line(dev, "embedded NATS restarted")
        assert embedded_nats_pid(data_dir) != nats_pid
        wait_for(lambda: health_status(f"127.0.0.1:{ports.ingest}", "marketdata.v1.IngestService") == "SERVING",
                 30, interval=0.2, message="ingest SERVING after the NATS restart")
        before = trades_of(candles(ports, "BTCUSDT"))
        wait_for(lambda: trades_of(candles(ports, "BTCUSDT")) > before, 30, interval=0.5,
                 message="ticks committed after the NATS restart")

        # PostgreSQL killed: the same, for the query and the aggregator.
        os.kill(postmaster_pid(data_dir), signal.SIGKILL)
        wait_line(dev, "embedded PostgreSQL exited")
        wait_line(dev, "embedded PostgreSQL restarted", 60)
        wait_for(lambda: health_status(f"127.0.0.1:{ports.query}", "marketdata.v1.QueryService") == "SERVING",
                 30, interval=0.2, message="query SERVING after the PostgreSQL restart")
        before = trades_of(candles(ports, "BTCUSDT"))
        wait_for(lambda: trades_of(candles(ports, "BTCUSDT")) > before, 30, interval=0.5,
                 message="ticks committed after the PostgreSQL restart")
        tree |= dev.tree()

        # NATS killed again within a minute: its one restart is spent, dev stops everything and says why.
        os.kill(embedded_nats_pid(data_dir), signal.SIGKILL)
        dev.process.wait(60)
    finally:
        code = dev.stop(signal.SIGINT)
    assert code == 1, dev.output[-3000:]
    assert any("error: embedded NATS was killed by SIGKILL" in line and "giving up" in line
               for line in dev.lines), dev.output[-3000:]
    assert_nothing_left(tree, dev)


def make_dev(*args: str) -> Dev:
    return Dev(parse_args(["--data-dir", "/nonexistent-md-dev", *args]), Output(io.StringIO()))


def test_services_log_as_the_operator_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    assert make_dev().child_env()["LOG_FORMAT"] == "text"
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert make_dev().child_env()["LOG_FORMAT"] == "json"


def run_dev(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "marketdata", "dev", "--data-dir", str(data_dir), *Ports().args()],
                          env={**dev_env(), **env}, capture_output=True, text=True, timeout=60)


def test_a_file_as_data_dir_is_one_line(tmp_path: Path) -> None:
    regular = tmp_path / "not-a-dir"
    regular.write_text("")
    result = run_dev(regular)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert f"error: cannot use {regular} as the data directory" in result.stdout


@pytest.mark.parametrize("problem", ["notaurl", "role"])
def test_a_wrong_database_url_is_one_line(problem: str, postgres_url: str, tmp_path: Path) -> None:
    if problem == "role":
        parts = urlsplit(postgres_url)
        url = urlunsplit(parts._replace(netloc="md_no_such_role@" + parts.netloc.rsplit("@", 1)[-1]))
        expected = 'role "md_no_such_role" does not exist'
    else:
        url, expected = "notaurl", "invalid DSN"
    # NATS_URL given: nothing is started before the migrations fail.
    result = run_dev(tmp_path / "data", DATABASE_URL=url, NATS_URL="nats://127.0.0.1:1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if "error:" in line]
    assert len(errors) == 1 and "cannot connect to PostgreSQL at" in errors[0] and expected in errors[0], result.stdout
