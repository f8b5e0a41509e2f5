"""Builds the edge's OpenAPI 3 document from the descriptor set (placeholder until the edge lands)."""

from __future__ import annotations

import json
from pathlib import Path


def write(descriptor_set: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"openapi": "3.0.3", "info": {"title": "marketdata", "version": "v1"}, "paths": {}}, indent=2) + "\n")
    return target
