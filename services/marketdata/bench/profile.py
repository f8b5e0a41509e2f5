"""Optional sampling profiles of the services during a phase (`--profile`): py-spy record in raw (collapsed
stack) format, summarised as the functions with the most samples on top of the stack (self time)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


class Profiler:
    def __init__(self, out_dir: Path, pids: dict[str, int], phase: str, rate: int = 100) -> None:
        self.out_dir = out_dir
        self.processes: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        binary = py_spy()
        if binary is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            path = out_dir / f"{phase}-{name}.txt"
            self.processes[name] = (subprocess.Popen(
                [binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--nonblocking",
                 "-o", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path)

    def stop(self) -> dict[str, Any]:
        summaries: dict[str, Any] = {}
        for name, (process, path) in self.processes.items():
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            summaries[name] = summarise(path)
        return summaries


def summarise(path: Path, top: int = 12) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0, "top_self": []}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack:
            continue
        frames = stack.split(";")
        # py-spy frames look like "function (file.py:line)"; keep function and file, drop the line.
        leaf = frames[-1].rsplit(":", 1)[0] + ")" if ":" in frames[-1] else frames[-1]
        self_time[leaf] += int(count)
        total += int(count)
    return {"samples": total, "file": str(path),
            "top_self": [(name, round(100 * n / total, 1)) for name, n in self_time.most_common(top)] if total else []}
