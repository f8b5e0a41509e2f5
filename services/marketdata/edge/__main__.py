"""`marketdata edge`: the HTTP edge (REST → gRPC, Server-Sent Events, Swagger UI, metrics, dashboard)."""

from __future__ import annotations

import argparse
import asyncio
import warnings

from marketdata.common.runner import run_service


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="marketdata edge", description=__doc__).parse_args(argv)
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
