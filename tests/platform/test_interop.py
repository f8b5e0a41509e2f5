"""Interoperability: Node's @grpc/grpc-js, a second gRPC implementation, talks to the Python services."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.stack import Stack

HERE = Path(__file__).resolve().parent
GRPC_JS = HERE.parents[1] / "tools" / "node_modules" / "@grpc" / "grpc-js"


def test_grpc_js_client_publishes_and_sees_the_same_errors(pipeline: Stack) -> None:
    if not GRPC_JS.exists() or not shutil.which("node"):
        if os.environ.get("CI"):
            pytest.fail("@grpc/grpc-js is missing: run scripts/setup --test")
        pytest.skip("@grpc/grpc-js not installed (npm ci --prefix tools)")
    symbol = f"JS{uuid.uuid4().hex[:6].upper()}"
    output = subprocess.run(
        ["node", str(HERE / "grpc_js_client.mjs"), pipeline.ingest.address, pipeline.aggregator.address,
         pipeline.api_key, symbol], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(output.stdout)
    assert result["upsert"] == {"code": "OK", "response": {"upserted": 1}}
    assert result["publish"] == {"code": "OK", "response": {"accepted": 3, "duplicates": 0}}
    assert result["noKey"]["code"] == "UNAUTHENTICATED"
    assert result["invalid"]["code"] == "INVALID_ARGUMENT"
    assert "items[0].price" in result["invalid"]["details"] and result["invalid"]["hasStatusDetails"]
    assert result["status"]["code"] == "OK"
