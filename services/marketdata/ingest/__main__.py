"""`marketdata ingest`: the IngestService gRPC server."""

from marketdata.common.runner import parse_service_args, run_service
from marketdata.ingest.server import serve


def main(argv: list[str] | None = None) -> None:
    parse_service_args("ingest", argv, __doc__)
    run_service("ingest", serve)


if __name__ == "__main__":
    main()
