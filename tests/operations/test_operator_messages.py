"""What an operator sees when a setting is wrong: one line naming the problem and a non-zero exit (never a
traceback), --help that answers without starting anything, and a NATS that cannot be reached named in the log."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest

from marketdata.common.embedded import free_port
from tests.support.processes import wait_for


def marketdata(*args: str, timeout: float = 60, module: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    """`marketdata ARGS`, or with module=True `python -m ARGS` (the module named first)."""
    base = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL", "API_KEYS", "BIND_HOST")}
    command = [sys.executable, "-m", *args] if module else [sys.executable, "-m", "marketdata", *args]
    return subprocess.run(command, env={**base, **env}, capture_output=True, text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    return errors[0]


def with_url(url: str, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rsplit('@', 1)[1]}" if "@" in netloc else f"{user}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}" if database else parts.path))


@pytest.mark.parametrize("command", [("migrate",), ("retention",), ("retention", "--dry-run")])
def test_an_unreachable_database_is_one_line(command: tuple[str, ...]) -> None:
    line = one_line_error(marketdata(*command, DATABASE_URL="postgresql://md:secret@127.0.0.1:1/marketdata"))
    assert line.startswith(f"marketdata {command[0]}: cannot connect to PostgreSQL at "
                           "postgresql://md:***@127.0.0.1:1/marketdata: ")
    assert "Connect call failed" in line and "secret" not in line


@pytest.mark.parametrize("command", ["migrate", "retention"])
def test_a_wrong_database_or_role_is_one_line(command: str, postgres_url: str) -> None:
    line = one_line_error(marketdata(command, DATABASE_URL=with_url(postgres_url, database="md_no_such_database")))
    assert 'database "md_no_such_database" does not exist' in line
    line = one_line_error(marketdata(command, DATABASE_URL=with_url(postgres_url, user="md_no_such_role")))
    assert 'role "md_no_such_role" does not exist' in line


@pytest.mark.parametrize("command", [("retention", "--dry-run"), ("retention",)])
def test_a_closed_output_is_not_a_database_problem(command: tuple[str, ...], database_url: str) -> None:
    """`marketdata retention --dry-run | head -1`: the reader of the pipe gone, the command ends quietly with
    141 (128 + SIGPIPE, as a shell tool would), not with `cannot connect to PostgreSQL ...: Broken pipe`."""
    reader, writer = os.pipe()
    os.close(reader)  # closed before the command writes its first line: deterministic, unlike a racing head -1
    try:
        base = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "API_KEYS", "BIND_HOST")}
        result = subprocess.run([sys.executable, "-m", "marketdata", *command], stdout=writer,
                                stderr=subprocess.PIPE, text=True, timeout=60,
                                env={**base, "DATABASE_URL": database_url, "LOG_FORMAT": "text"})
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (141, ""), result


@pytest.mark.parametrize("as_module", [False, True], ids=["marketdata-command", "python-m-module"])
def test_the_services_take_no_options_and_answer_help(as_module: bool) -> None:
    """`marketdata ingest --help` and `python -m marketdata.ingest --help` alike: help, not a server start."""
    for command in ("ingest", "aggregator", "query", "edge"):
        invocation = (f"marketdata.{command}",) if as_module else ("marketdata", command)
        helped = marketdata(*invocation, "--help", timeout=30, module=True)
        assert helped.returncode == 0 and helped.stdout.startswith(f"usage: marketdata {command}"), helped.stderr
        assert "Configured by environment variables" in helped.stdout
        refused = marketdata(*invocation, "--bogus-flag", timeout=30, module=True)
        assert refused.returncode == 2
        assert "unrecognized arguments: --bogus-flag" in refused.stderr


@pytest.mark.parametrize(("command", "setting"), [("query", "QUERY_PORT"), ("edge", "EDGE_PORT")])
def test_a_bad_bind_host_is_named(command: str, setting: str, service_env: dict[str, str]) -> None:
    port = str(free_port())
    for host, problem in (("notahost.invalid", "BIND_HOST notahost.invalid does not resolve"),
                          ("192.0.2.1", "BIND_HOST 192.0.2.1 is not an address of this machine")):
        result = marketdata(command, timeout=60, **{**service_env, "BIND_HOST": host, setting: port,
                                                     "METRICS_PORT": "0"})
        assert result.returncode != 0
        assert "Traceback" not in result.stderr, result.stderr
        assert f"cannot listen on {host}:{port}: {problem}" in result.stderr, result.stderr
        assert setting not in result.stderr and "already in use" not in result.stderr


def test_an_unreachable_nats_is_logged_with_its_url(start_service) -> None:  # type: ignore[no-untyped-def]
    service = start_service("ingest", wait=False, NATS_URL="nats://127.0.0.1:1", LOG_FORMAT="text")
    wait_for(lambda: "NATS unreachable, retrying" in service.log_text(), 20,
             message=f"the NATS warning\n{service.log_text()[-2000:]}")
    line = next(line for line in service.log_text().splitlines() if "NATS unreachable" in line)
    assert "WARNING" in line and "url=nats://127.0.0.1:1" in line and "error=" in line
