"""`marketdata codegen`: regenerate every file derived from proto/ (the one command for generated code)."""

from __future__ import annotations

import argparse
from pathlib import Path

from marketdata.codegen import openapi, protos


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="marketdata codegen", description=__doc__)
    parser.add_argument("--out", type=Path, default=None,
                        help="write into this directory instead of the repository (used by the drift test)")
    args = parser.parse_args(argv)
    python_root = args.out / "services" if args.out else protos.PYTHON_ROOT
    descriptor_set = args.out / "proto" / "marketdata.binpb" if args.out else protos.DESCRIPTOR_SET
    written = protos.generate(python_root, descriptor_set)
    written.append(openapi.write(descriptor_set, python_root / "marketdata" / "edge" / "openapi.json"))
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
