"""`marketdata aggregator`: the JetStream consumer and the AggregatorService admin gRPC server."""

from marketdata.aggregator.server import serve
from marketdata.common.runner import run_service


def main(argv: list[str] | None = None) -> None:
    run_service("aggregator", serve, argv, __doc__)


if __name__ == "__main__":
    main()
