"""Structured logs: one JSON object per line (or plain text for humans), with the service name on every record
and, inside a span, its trace_id and span_id (to find the trace of a log line). Warnings that repeat (an outage
reported by every health check and every retry) are shown once, then once per REPEAT_INTERVAL_SECONDS with
their count."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
# One line of a repeating warning per interval; one unseen for REPEAT_QUIET_SECONDS starts a new series (the
# outage ended and another began), shown at once.
REPEAT_INTERVAL_SECONDS = 30.0
REPEAT_QUIET_SECONDS = 10.0
# Series are forgotten once quiet, when this many distinct warnings are remembered.
REPEAT_MEMORY = 256


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    """What was passed with `extra=`."""
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        # Anything passed with `extra=` becomes a field of its own.
        entry.update(_extra(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _text_value(value: object) -> str:
    if isinstance(value, str):
        bare = bool(value) and not any(c.isspace() or c in "\"'=" for c in value)
        return value if bare else json.dumps(value)
    return json.dumps(value, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """time level service logger: message, then the `extra=` fields as key=value (quoted when they have spaces)."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{key}={_text_value(value)}" for key, value in _extra(record).items())
        return f"{line} {fields}" if fields else line


@dataclass
class _Series:
    shown: float
    seen: float
    held: int = 0


class RepeatFilter(logging.Filter):
    """Passes the first of identical warnings (same logger and message; the fields may differ), then one per
    `interval` carrying `repeated`: how many were held back since the last one shown."""

    def __init__(self, interval: float = REPEAT_INTERVAL_SECONDS, quiet: float = REPEAT_QUIET_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.quiet = quiet
        self.clock = clock
        self._series: dict[tuple[str, str], _Series] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        now = self.clock()
        key = (record.name, record.getMessage())
        series = self._series.get(key)
        if series is None or now - series.seen >= self.quiet:
            self._forget_quiet(now)
            self._series[key] = _Series(now, now)
            return True
        series.seen = now
        if now - series.shown < self.interval:
            series.held += 1
            return False
        if series.held:
            record.repeated = series.held
        series.shown, series.held = now, 0
        return True

    def _forget_quiet(self, now: float) -> None:
        if len(self._series) >= REPEAT_MEMORY:
            self._series = {k: s for k, s in self._series.items() if now - s.seen < self.quiet}


def configure_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter below warning is noise in service logs.
    for noisy in ("nats", "asyncio", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
