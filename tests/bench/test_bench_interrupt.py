"""`marketdata bench` stopped by SIGTERM (a `timeout`, a CI job cancelled) or Ctrl-C stops the servers it
started and removes its temporary directory, without a traceback, even when interrupted again while stopping."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.dev.procs import describe, mentioning
from tests.support.processes import wait_for


def test_sigterm_then_ctrl_c_while_stopping_leave_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL")}
    process = subprocess.Popen(
        [sys.executable, "-m", "marketdata", "bench", "--quick", "--phases", "query", "--out", str(tmp_path / "out")],
        env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL)
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        lines.extend(raw.decode(errors="replace").rstrip("\n") for raw in process.stderr)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("services ready" in line for line in lines), 120, interval=0.2,
                 message="the bench's services\n" + "\n".join(lines[-30:]))
        work_dir = next(m.group(1) for line in lines if (m := re.search(r"work dir (\S+)\)", line)))
        assert mentioning(work_dir), "the bench runs NATS and PostgreSQL in its work dir"
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: any(line.endswith("] stopping") for line in lines), 30, interval=0.05,
                 message="stopping\n" + "\n".join(lines[-30:]))
        process.send_signal(signal.SIGINT)
        process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    output = "\n".join(lines)
    assert process.returncode == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert any(line.endswith("] interrupted") for line in lines), output[-3000:]
    left = mentioning(work_dir)
    assert not left, describe(left)
    assert not Path(work_dir).exists()
