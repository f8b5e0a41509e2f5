"""`marketdata aggregator`: the JetStream consumer and the AggregatorService admin gRPC server."""

from marketdata.aggregator.server import serve
from marketdata.common.runner import parse_service_args, run_service


def main(argv: list[str] | None = None) -> None:
    parse_service_args("aggregator", argv, __doc__)
    run_service("aggregator", serve)


if __name__ == "__main__":
    main()
