"""The README's "Try it" commands work as printed: curl against the edge, grpcurl (run as `buf curl`, a
grpcurl-compatible client, through the same server reflection) against the gRPC services."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.platform.test_contracts import buf
from tests.support.stack import EdgeStack

README = Path(__file__).resolve().parents[2] / "README.md"

# grpcurl's command line, translated to buf curl. Only the forms the README uses.
GRPCURL_AS_BUF_CURL = r'''
grpcurl() {
  local address="" target="" verb="call" args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      -plaintext) ;;
      -d) args+=(--data "$2"); shift ;;
      -H) args+=(--header "$2"); shift ;;
      list) verb=list ;;
      describe) verb=describe; target="$2"; shift ;;
      *) if [ -z "$address" ]; then address="$1"; else target="$1"; fi ;;
    esac
    shift
  done
  local base=(BUF curl --protocol grpc --http2-prior-knowledge)
  case "$verb" in
    list) "${base[@]}" --list-services "http://$address" ;;
    describe) "${base[@]}" --list-methods "http://$address" | grep "^$target/" ;;
    call) "${base[@]}" "${args[@]}" "http://$address/$target" ;;
  esac
}
'''


def try_it_commands() -> list[str]:
    section = README.read_text().split("## Try it", 1)[1].split("\n### ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#[^'\"]*$", "", command).strip()
            if command:
                commands.append(command)
    return commands


def assert_streams(script: str, printed: str) -> None:
    """A live stream runs until stopped: it must still be open, without an error, after a few seconds."""
    process = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        process.wait(3)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
        # buf curl reports the cancellation we caused; anything else is an error of the command.
        assert not stderr.strip() or '"code": "canceled"' in stderr, (printed, stderr)
    else:
        raise AssertionError(f"{printed} ended: {process.communicate()}")


def test_readme_has_the_original_designs_verification_commands() -> None:
    commands = " ".join(try_it_commands())
    for path in ("/api/v1/health/liveness", "/api/v1/health/readiness", "/api/v1/webhooks/symbols",
                 "/realtime/ticks?symbol=BTCUSDT", "/api/v1/ticks/BTCUSDT/history?view=ohlc1m&limit=30"):
        assert path in commands


def test_try_it_commands_work_as_printed(edge_stack: EdgeStack) -> None:
    stack = edge_stack.stack
    assert stack.query is not None
    ports = {"localhost:8080": edge_stack.base_url.removeprefix("http://"),
             "localhost:50051": stack.ingest.address, "localhost:50052": stack.query.address,
             "localhost:50053": stack.aggregator.address}
    prelude = GRPCURL_AS_BUF_CURL.replace("BUF", buf())
    for printed in try_it_commands():
        command = printed.replace("x-api-key: dev-key", f"x-api-key: {stack.api_key}")
        for default, actual in ports.items():
            command = command.replace(default, actual)
        if command.startswith("curl "):
            command = command.replace("curl ", "curl -sS --fail-with-body ", 1)
        if " -N " in command or "/Watch" in command:
            assert_streams(f"{prelude}\n{command}", printed)
            continue
        run = subprocess.run(["bash", "-c", f"{prelude}\n{command}"], capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, f"{printed}\n{run.stdout}\n{run.stderr}"
        if "history?view=ohlc1m" in printed or "GetHistory" in printed:
            assert "candles" in json.loads(run.stdout)
        if " list" in printed:
            assert "marketdata.v1.QueryService" in run.stdout.split()
        if "describe" in printed:
            assert "marketdata.v1.QueryService/GetHistory" in run.stdout.split()
        if "Health/Check" in printed:
            assert json.loads(run.stdout) == {"status": "SERVING"}


@pytest.mark.parametrize("port", ["8080", "50051", "50052", "50053"])
def test_readme_ports_are_the_defaults(port: str) -> None:
    from marketdata.common.config import load_settings

    settings = load_settings({})
    assert int(port) in (settings.edge_port, settings.ingest_port, settings.query_port, settings.aggregator_port)
    assert f"| {port} |" in README.read_text()
