"""Entry point shared by every process: settings, logging, tracing, asyncio, and an exit code that says what went
wrong."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from marketdata.common.config import Settings, SettingsError, load_settings
from marketdata.common.logging import configure_logging
from marketdata.common.tracing import setup_tracing


def run_service(name: str, serve: Callable[[Settings], Awaitable[None]], argv: list[str] | None = None,
                description: str | None = None) -> None:
    """Runs serve(settings) until SIGTERM/SIGINT. Services take no options: everything comes from env vars."""
    argparse.ArgumentParser(prog=f"marketdata {name}", description=description,
                            epilog="Configured by environment variables; see the README.").parse_args(argv or [])
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"marketdata {name}: configuration error: {exc}")
    configure_logging(name, settings.log_level, settings.log_format)
    setup_tracing(name)
    try:
        asyncio.run(serve(settings))
    except SettingsError as exc:
        sys.exit(f"marketdata {name}: configuration error: {exc}")
    except KeyboardInterrupt:
        pass
