"""Compiles proto/ with grpc_tools.protoc into Python modules, type stubs and a descriptor set."""

from __future__ import annotations

import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO_ROOT / "proto"
PYTHON_ROOT = REPO_ROOT / "services"
DESCRIPTOR_SET = PROTO_ROOT / "marketdata.binpb"
GENERATED_PACKAGE = PYTHON_ROOT / "marketdata" / "v1"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "marketdata" / "v1").glob("*.proto"))


def _include_paths() -> list[str]:
    # Well-known types ship with grpc_tools; google/api and google/rpc with googleapis-common-protos.
    well_known = str(resources.files("grpc_tools") / "_proto")
    from google.api import annotations_pb2

    googleapis = str(Path(annotations_pb2.__file__).parents[2])
    return [str(PROTO_ROOT), well_known, googleapis]


def _protoc(args: list[str]) -> None:
    includes = [f"-I{path}" for path in _include_paths()]
    sources = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    code = protoc.main(["grpc_tools.protoc", *includes, *args, *sources])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def generate(python_root: Path, descriptor_set: Path) -> list[Path]:
    """Writes marketdata/v1/*_pb2*.py(i) under python_root and the descriptor set; returns the files written."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        # Stubs of the service modules come from mypy-protobuf's plugin, installed beside this interpreter.
        grpc_stubs = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
        _protoc([f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
                 f"--plugin=protoc-gen-mypy_grpc={grpc_stubs}", f"--mypy_grpc_out={out}"])
        target = python_root / "marketdata" / "v1"
        target.mkdir(parents=True, exist_ok=True)
        for stale in target.glob("*_pb2*.py*"):
            stale.unlink()
        written = []
        for generated in sorted((out / "marketdata" / "v1").iterdir()):
            shutil.copyfile(generated, target / generated.name)
            written.append(target / generated.name)
        init = target / "__init__.py"
        init.write_text('"""Generated from proto/marketdata/v1 by `marketdata codegen`; do not edit."""\n')
        written.append(init)
    descriptor_set.parent.mkdir(parents=True, exist_ok=True)
    _protoc(["--include_imports", "--include_source_info", f"--descriptor_set_out={descriptor_set}"])
    written.append(descriptor_set)
    return written
