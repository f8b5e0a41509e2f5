"""The contracts: generated code matches proto/, the protos pass buf lint/format, the descriptor set works."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

REPO = Path(__file__).resolve().parents[2]
BUF = REPO / "tools" / "node_modules" / ".bin" / "buf"


def test_generated_files_match_proto(tmp_path: Path) -> None:
    """Fails when someone edits proto/ without running `marketdata codegen`, or edits generated files."""
    subprocess.run([sys.executable, "-m", "marketdata.codegen", "--out", str(tmp_path)], check=True,
                   capture_output=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "codegen wrote nothing"
    drifted = [str(p) for p in generated if not (REPO / p).exists() or not filecmp.cmp(tmp_path / p, REPO / p, False)]
    assert not drifted, f"out of date, run `marketdata codegen`: {drifted}"
    committed = sorted(p.relative_to(REPO) for p in (REPO / "services/marketdata/v1").glob("*_pb2*"))
    assert set(committed) <= set(generated), "generated files without a proto behind them"


def test_descriptor_set_loads_and_holds_every_service() -> None:
    data = (REPO / "proto" / "marketdata.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    for name, methods in {
        "marketdata.v1.IngestService": {"PublishTicks", "StreamTicks", "UpsertSymbols"},
        "marketdata.v1.AggregatorService": {"GetStatus", "Rebuild"},
        "marketdata.v1.QueryService": {"ListSymbols", "GetLatest", "GetHistory", "GetTicker", "WatchTicks", "WatchTicker"},
    }.items():
        assert {m.name for m in pool.FindServiceByName(name).methods} == methods
    # Comments are kept (grpcurl describe and the OpenAPI document show them).
    assert any(f.source_code_info.location for f in files.file if f.name.startswith("marketdata/"))


def buf() -> str:
    if not BUF.exists():
        if os.environ.get("CI"):
            pytest.fail("buf is missing: run scripts/setup (npm ci in tools/)")
        pytest.skip("buf not installed (npm ci --prefix tools)")
    return str(BUF)


def test_protos_pass_buf_lint() -> None:
    image = REPO / "proto" / "marketdata.binpb"
    result = subprocess.run([buf(), "lint", str(image), "--path", "marketdata"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_protos_are_buf_formatted() -> None:
    result = subprocess.run([buf(), "format", "-d", "--exit-code", "marketdata"], cwd=REPO / "proto",
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
