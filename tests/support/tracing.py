"""The spans of in-process code, caught by the SDK's in-memory exporter.

A process has one tracer provider: it is installed on first use and keeps spans only while a test records
them, so tests that run later in the session do not pile spans up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class _Recorder(SpanProcessor):
    """Hands each ended span to the exporter of the test recording, if one is."""

    def __init__(self) -> None:
        self.exporter: InMemorySpanExporter | None = None

    def on_end(self, span: ReadableSpan) -> None:
        if self.exporter is not None:
            self.exporter.export((span,))


_recorder = _Recorder()


@contextmanager
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """The spans ended while inside. Tracing is on from the first use for the rest of the process: build the
    servers, channels and apps under test after it."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_marketdata_recorder", False):
        provider.add_span_processor(_recorder)
        provider._marketdata_recorder = True  # type: ignore[attr-defined]
    _recorder.exporter = exporter = InMemorySpanExporter()
    try:
        yield exporter
    finally:
        _recorder.exporter = None


async def wait_for_spans(exporter: InMemorySpanExporter, *names: str, timeout: float = 10.0) -> list[ReadableSpan]:
    """The finished spans once one of each name has ended (a client span ends just after its call)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = list(exporter.get_finished_spans())
        missing = set(names) - {span.name for span in spans}
        if not missing:
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(f"no span named {sorted(missing)} among {[span.name for span in spans]}")
        await asyncio.sleep(0.01)


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]
