"""`marketdata ingest`: the IngestService gRPC server."""

from marketdata.common.runner import run_service
from marketdata.ingest.server import serve


def main(argv: list[str] | None = None) -> None:
    run_service("ingest", serve, argv, __doc__)


if __name__ == "__main__":
    main()
