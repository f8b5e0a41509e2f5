"""`marketdata query`: runs the gRPC QueryService."""

from __future__ import annotations

from marketdata.common.runner import run_service
from marketdata.query.server import serve


def main(argv: list[str] | None = None) -> None:
    run_service("query", serve, argv, __doc__)


if __name__ == "__main__":
    main()
