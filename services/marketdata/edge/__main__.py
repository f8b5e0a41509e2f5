"""`marketdata edge`: the HTTP edge (REST → gRPC, Server-Sent Events, Swagger UI, metrics, dashboard)."""

from __future__ import annotations

import asyncio
import warnings

from marketdata.common.runner import parse_service_args, run_service


def main(argv: list[str] | None = None) -> None:
    parse_service_args("edge", argv, __doc__)  # before the heavy imports: --help answers at once
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # connexion imports starlette's test client, which warns about httpx at import time.
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from marketdata.edge.server import serve

    run_service("edge", serve)


if __name__ == "__main__":
    main()
