"""`marketdata query`: runs the gRPC QueryService."""

from __future__ import annotations

from marketdata.common.runner import parse_service_args, run_service
from marketdata.query.server import serve


def main(argv: list[str] | None = None) -> None:
    parse_service_args("query", argv, __doc__)
    run_service("query", serve)


if __name__ == "__main__":
    main()
