"""What an operator reads in the logs: the text format keeps the fields given with `extra=`, and a warning that
repeats during an outage is shown once, then once per interval with how many were held back."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator

import pytest

from marketdata.common.logging import REPEAT_INTERVAL_SECONDS, RepeatFilter, TextFormatter, configure_logging


@pytest.fixture
def configure() -> Iterator[Callable[[str, str], io.StringIO]]:
    """configure_logging(service, "info", fmt), its handler writing to a StringIO returned."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def configure(service: str, fmt: str) -> io.StringIO:
        configure_logging(service, "info", fmt)
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        return stream

    yield configure
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_lines_carry_the_extra_fields(configure) -> None:  # type: ignore[no-untyped-def]
    stderr = configure("query", "text")
    log = logging.getLogger("marketdata.query")
    log.warning("PostgreSQL unreachable", extra={"error": "[Errno 111] Connect call failed ('127.0.0.1', 5432)"})
    log.info("listening", extra={"address": "0.0.0.0:50052", "services": ["marketdata.v1.QueryService"],
                                 "metrics_port": 9090})
    first, second = stderr.getvalue().splitlines()
    assert first.endswith("WARNING query marketdata.query: PostgreSQL unreachable "
                          "error=\"[Errno 111] Connect call failed ('127.0.0.1', 5432)\"")
    assert second.endswith('INFO query marketdata.query: listening address=0.0.0.0:50052 '
                           'services=["marketdata.v1.QueryService"] metrics_port=9090')


def test_text_fields_come_before_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info())
    record.__dict__["task"] = "prune"
    lines = TextFormatter("aggregator").format(record).splitlines()
    assert lines[0].endswith("ERROR aggregator x: failed task=prune")
    assert lines[-1] == "ValueError: boom"


def test_json_lines_are_unchanged(configure) -> None:  # type: ignore[no-untyped-def]
    stderr = configure("query", "json")
    logging.getLogger("marketdata.query").warning("PostgreSQL unreachable", extra={"error": "refused"})
    entry = json.loads(stderr.getvalue())
    assert (entry["message"], entry["error"], entry["service"]) == ("PostgreSQL unreachable", "refused", "query")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def shown(log_filter: RepeatFilter, message: str, **extra: object) -> logging.LogRecord | None:
    record = logging.LogRecord("marketdata.common.database", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record if log_filter.filter(record) else None


def test_an_outage_is_logged_once_then_every_interval_with_a_count() -> None:
    clock = Clock()
    log_filter = RepeatFilter(clock=clock)
    first = shown(log_filter, "PostgreSQL unreachable", error="refused")
    assert first is not None and not hasattr(first, "repeated")
    # Every second for the interval: held back (the error may differ, the line is the same).
    held = 0
    while clock.now < 1000.0 + REPEAT_INTERVAL_SECONDS - 1:
        clock.now += 1
        held += 1
        assert shown(log_filter, "PostgreSQL unreachable", error=f"refused {held}") is None
    clock.now += 1
    summary = shown(log_filter, "PostgreSQL unreachable", error="refused")
    assert summary is not None and summary.repeated == held  # type: ignore[attr-defined]
    # Another warning is not held back by this one.
    assert shown(log_filter, "batch not committed, will be redelivered") is not None
    # Quiet long enough (recovered), then down again: the new outage shows at once.
    clock.now += 15
    assert shown(log_filter, "PostgreSQL unreachable") is not None


def test_only_warnings_are_held_back() -> None:
    log_filter = RepeatFilter(clock=Clock())
    for level in (logging.INFO, logging.ERROR):
        for _ in range(3):
            assert log_filter.filter(logging.LogRecord("x", level, __file__, 1, "same", (), None))


def test_the_service_handler_holds_repeats_back(configure) -> None:  # type: ignore[no-untyped-def]
    stderr = configure("ingest", "text")
    log = logging.getLogger("marketdata.ingest.registry")
    for _ in range(5):
        log.warning("symbol registry refresh failed", extra={"error": "refused"})
    assert stderr.getvalue().count("symbol registry refresh failed") == 1
