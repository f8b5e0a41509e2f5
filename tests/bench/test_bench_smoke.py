"""`marketdata bench --quick` runs end to end and writes its results; nothing is asserted about speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_json_and_png(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run([sys.executable, "-m", "marketdata", "bench", "--quick", "--out", str(out)],
                               cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    results = json.loads((out / "results.json").read_text())
    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    for key in ("machine", "config", "ingest", "ceilings", "live", "memory", "targets", "summary"):
        assert key in results, key
    assert {"cores", "cpu", "python", "postgresql", "nats_server"} <= set(results["machine"])
    assert {"grpc_batched", "grpc_stream"} <= set(results["ingest"])
    assert {"rollup_sql", "copy", "jetstream_publish"} <= set(results["ceilings"])
    for run in results["ingest"].values():
        assert run["error"] is None and run["committed"] == run["ticks"]
    for name in ("rollup_sql", "copy", "jetstream_publish"):
        assert results["ceilings"][name]["ticks_per_second"], results["ceilings"][name]
    assert results["live"]["ticks_committed"] == results["live"]["ticks_sent"]
    assert results["memory"]["start"]
    if "edge" in results["services"]:
        assert "webhook" in results["ingest"]
        # Both webhook latency clients answered every call (the keep-alive one reads the edge's answers itself).
        for name in ("webhook_latency", "webhook_latency_httpx"):
            assert results[name]["count"] > 0 and results[name]["errors"] == 0, results[name]
        assert results["live"]["sse"]["ack_to_client"]["count"] > 0
    if "query" in results["services"]:
        assert results["query"]["latency"]["grpc ohlc1m 1m"]["rows"] == 500
    assert results["targets"]
