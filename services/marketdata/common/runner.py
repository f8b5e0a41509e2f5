"""Entry point shared by every process: settings, logging, tracing, asyncio, and an exit code that says what went
wrong; for the commands, the signal plumbing of a clean stop and the one-line message of a database they cannot
connect to."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import select
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from marketdata.common.config import Settings, SettingsError, load_settings
from marketdata.common.logging import configure_logging
from marketdata.common.tracing import setup_tracing

# When a started service's objects (modules, the OpenAPI document, pools, channels) are set aside; see below.
FREEZE_AFTER_SECONDS = 10.0
# SQLSTATE classes of a connection PostgreSQL refused: connection exception, wrong role or password, no such
# database, starting up or shutting down, too many connections.
REFUSED_CONNECTION_STATES = ("08", "28", "3D", "57P", "53300")
# Exit status of a command whose output was closed before it was all written (`marketdata retention | head -1`):
# 128 + SIGPIPE, what a shell reports for a tool SIGPIPE killed (Python ignores SIGPIPE and gets EPIPE instead).
CLOSED_OUTPUT_STATUS = 141


def freeze_startup_objects() -> None:
    """Moves every object alive now out of the garbage collector's reach. Start-up objects live as long as the
    process, yet each full collection walked them all: ~30 ms pauses in ingest at 10,000 ticks/s, the largest
    part of PublishTicks' p99; ~0.5 ms once they are frozen."""
    gc.collect()
    gc.freeze()


async def sleep_unless(event: asyncio.Event, seconds: float) -> bool:
    """Sleeps `seconds`, or less if the event is set meanwhile; True when it is set."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


async def _serve_then_freeze(serve: Callable[[Settings], Awaitable[None]], settings: Settings) -> None:
    asyncio.get_running_loop().call_later(FREEZE_AFTER_SECONDS, freeze_startup_objects)
    await serve(settings)


def parse_service_args(name: str, argv: list[str] | None, description: str | None) -> argparse.Namespace:
    """--help, and an error naming any option given: services take none (everything comes from env vars).
    argv None: the process's own arguments (`python -m marketdata.ingest --help`)."""
    return argparse.ArgumentParser(prog=f"marketdata {name}", description=description,
                                   epilog="Configured by environment variables; see the README.").parse_args(argv)


def command_settings(name: str, *, database: bool = False) -> Settings:
    """The settings, with logging set up; a bad or missing variable ends the command with one line."""
    try:
        settings = load_settings()
        if database:
            settings.require_database_url()
    except SettingsError as exc:
        sys.exit(f"marketdata {name}: configuration error: {exc}")
    configure_logging(name, settings.log_level, settings.log_format)
    return settings


def run_service(name: str, serve: Callable[[Settings], Awaitable[None]]) -> None:
    """Runs serve(settings) until SIGTERM/SIGINT; the caller has parsed its arguments."""
    settings = command_settings(name)
    setup_tracing(name)
    try:
        asyncio.run(_serve_then_freeze(serve, settings))
    except SettingsError as exc:
        sys.exit(f"marketdata {name}: configuration error: {exc}")
    except KeyboardInterrupt:
        pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def sigterm_interrupts() -> None:
    """SIGTERM (`timeout`, `kill`, a container stop) then ends the command like Ctrl-C: a KeyboardInterrupt, so
    that what it started is stopped on the way out."""
    signal.signal(signal.SIGTERM, _interrupt)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT/SIGTERM are ignored meanwhile: a stop that is interrupted would leave servers half-stopped."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages."""
    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
    return url


def _closed_pipe(stream: object) -> bool:
    """Whether stream writes to a pipe (or socket) whose reader is gone: poll() reports POLLERR for it."""
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no stream, or not one with a descriptor
        return False


def output_closed(exc: BaseException) -> bool:
    """Whether exc is a write to the command's stdout or stderr after its reader went away (`| head -1`), not a
    failure of the database connection (an OSError too)."""
    return isinstance(exc, BrokenPipeError) and (_closed_pipe(sys.stdout) or _closed_pipe(sys.stderr))


def exit_quietly_on_closed_output() -> None:
    """Ends the command with CLOSED_OUTPUT_STATUS and no message, as a shell tool killed by SIGPIPE does: the
    closed streams are pointed at /dev/null so that flushing them on the way out raises nothing more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        if _closed_pipe(stream):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)
    sys.exit(CLOSED_OUTPUT_STATUS)


def database_connect_problem(url: str, exc: BaseException) -> str | None:
    """One line saying why PostgreSQL at url cannot be used, when exc is a refused or failed connection (not
    there, a name that does not resolve, a malformed URL, a wrong role, password or database); None otherwise."""
    if isinstance(exc, asyncpg.PostgresError):
        refused = (exc.sqlstate or "").startswith(REFUSED_CONNECTION_STATES)
    else:
        refused = isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError))
    if not refused:
        return None
    return f"cannot connect to PostgreSQL at {redact_url(url)}: {str(exc) or type(exc).__name__}"


@contextlib.contextmanager
def exit_if_database_unreachable(command: str, url: str) -> Iterator[None]:
    """For a command run by hand or by a Job: a connection PostgreSQL refuses ends it with one line, not a
    traceback; its output closed early (`| head -1`) ends it quietly with CLOSED_OUTPUT_STATUS."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only connection failures are turned into a message
        if output_closed(exc):
            exit_quietly_on_closed_output()
        problem = database_connect_problem(url, exc)
        if problem is None:
            raise
        sys.exit(f"marketdata {command}: {problem}")
