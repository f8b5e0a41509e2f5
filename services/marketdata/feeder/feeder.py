"""The feeder's loop: registers its symbols, then sends the generator's trades in batches, live.

Delivery is at-least-once without duplicates of what was acknowledged: a batch that failed with a retryable
error (ingest or NATS unavailable, a timeout, a broken stream) is sent again, the very same trades with the
same trade ids, until it is acknowledged; ingest, JetStream and the aggregator drop the copies by trade id.
A brief UNAVAILABLE of a unary call is retried by the gRPC channel itself (the retry policy of common.channels);
the loops here outlast longer outages, and cover the stream and REST transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import httpx
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge

from marketdata.common.channels import open_channel
from marketdata.common.config import Settings
from marketdata.common.metrics import serve_metrics
from marketdata.common.runner import sleep_unless
from marketdata.feeder.generator import SymbolSpec, Trade, TradeGenerator
from marketdata.v1 import ingest_pb2, ingest_pb2_grpc, market_pb2

log = logging.getLogger(__name__)

TICKS_SENT = Counter("feeder_ticks_sent_total", "Ticks acknowledged by ingest", ["symbol"])
BATCHES_SENT = Counter("feeder_batches_sent_total", "Batches acknowledged by ingest")
ERRORS = Counter("feeder_errors_total", "Failed sends (each retry counts)", ["kind"])
DUPLICATES = Counter("feeder_duplicates_total", "Ticks ingest reported as duplicates (resent after a lost ack)")
RETRYING = Gauge("feeder_retrying", "1 while a batch is being retried (ingest or the edge unavailable)")

RETRYABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
}
FATAL_CODES = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED}
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
FATAL_HTTP = {401, 403, 404}
# After an outage longer than this, the generator jumps to now instead of catching up with old trades.
MAX_LAG_SECONDS = 2.0
MAX_BATCH_TICKS = 2_000
CALL_TIMEOUT_SECONDS = 10.0
BACKOFF_START_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0
# How long a stop waits for the in-flight batch to be acknowledged before giving up on it.
STOP_GRACE_SECONDS = 5.0
SOURCE = "feeder"  # the source of every tick sent
REPORT_EVERY_SECONDS = 10.0  # between plain progress lines


class FatalSendError(RuntimeError):
    """Retrying cannot help (wrong API key, wrong address): the feeder stops."""


class RetryableSendError(RuntimeError):
    pass


class RejectedBatchError(RuntimeError):
    """Ingest refused the batch itself (invalid or unknown symbol): it is dropped, not retried."""


@dataclass
class FeederOptions:
    specs: list[SymbolSpec]
    api_key: str  # sent in x-api-key
    rate: float = 50.0
    duration: float | None = None  # seconds; None = until stopped
    seed: int | None = None
    batch_interval: float = 0.2
    transport: str = "grpc"  # grpc | stream | rest
    ingest_addr: str = "127.0.0.1:50051"
    edge_url: str = "http://127.0.0.1:8080"
    progress: bool | None = None  # None: when stdout is a terminal
    register_symbols: bool = True


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    duplicates: int = 0
    batches: int = 0
    errors: int = 0
    rejected: int = 0
    retrying: bool = False
    last_error: str = ""


def to_proto(trade: Trade, event_time: float) -> market_pb2.Tick:
    ts = Timestamp()
    ts.FromNanoseconds(int(round(event_time * 1e9)))
    return market_pb2.Tick(symbol=trade.symbol, price=trade.price, size=trade.size, event_time=ts,
                           trade_id=trade.trade_id, side=trade.side, source=SOURCE)


def to_json(ticks: Sequence[market_pb2.Tick]) -> dict:
    """The webhook body: the proto3 JSON of PublishTicksRequest (eventTime as RFC 3339, side as SIDE_BUY...)."""
    return json_format.MessageToDict(ingest_pb2.PublishTicksRequest(items=ticks))


Acked = list[tuple[Sequence[market_pb2.Tick], int, int]]  # (batch, accepted, duplicates)


class Transport:
    async def register(self, symbols: Sequence[market_pb2.Symbol]) -> int:
        raise NotImplementedError

    async def send(self, batch: Sequence[market_pb2.Tick], final: bool = False) -> Acked:
        """Sends one batch (again, after a failure: the same object); returns the batches now acknowledged
        (durable in JetStream). `final` asks for everything in flight to be acknowledged now."""
        raise NotImplementedError

    async def close(self) -> None:
        pass


def _classify_rpc_error(error: grpc.aio.AioRpcError, what: str) -> Exception:
    code = error.code()
    text = f"{what}: {code.name}: {error.details()}"
    if code in RETRYABLE_CODES:
        return RetryableSendError(text)
    if code in FATAL_CODES:
        return FatalSendError(text)
    return RejectedBatchError(text)


class GrpcTransport(Transport):
    """Unary PublishTicks: one call per batch, acknowledged by its response."""

    def __init__(self, address: str, api_key: str) -> None:
        self.address = address
        self.metadata = (("x-api-key", api_key),)
        self.channel = open_channel(address)
        self.stub = ingest_pb2_grpc.IngestServiceStub(self.channel)

    async def register(self, symbols: Sequence[market_pb2.Symbol]) -> int:
        try:
            response = await self.stub.UpsertSymbols(ingest_pb2.UpsertSymbolsRequest(items=symbols),
                                                     metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            raise _classify_rpc_error(error, f"UpsertSymbols to {self.address}") from None
        return response.upserted

    async def send(self, batch: Sequence[market_pb2.Tick], final: bool = False) -> Acked:
        if not batch:
            return []
        try:
            response = await self.stub.PublishTicks(ingest_pb2.PublishTicksRequest(items=batch),
                                                    metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            raise _classify_rpc_error(error, f"PublishTicks to {self.address}") from None
        return [(batch, response.accepted, response.duplicates)]

    async def close(self) -> None:
        await self.channel.close()


class StreamTransport(GrpcTransport):
    """Client-streaming StreamTicks. Its one response, the acknowledgement, comes when the stream is closed,
    so the stream is closed and reopened every few batches. Until then its batches are unacknowledged; if the
    stream breaks they are all written again, same trade ids, on the next stream."""

    ROTATE_BATCHES = 25
    ROTATE_SECONDS = 2.0

    def __init__(self, address: str, api_key: str) -> None:
        super().__init__(address, api_key)
        self._call: grpc.aio.StreamUnaryCall | None = None
        self._opened = 0.0
        self._unacked: list[Sequence[market_pb2.Tick]] = []

    async def send(self, batch: Sequence[market_pb2.Tick], final: bool = False) -> Acked:
        fresh = bool(batch) and not any(b is batch for b in self._unacked)
        if fresh:
            self._unacked.append(batch)
        try:
            if self._call is None:
                if not self._unacked:
                    return []
                self._call = self.stub.StreamTicks(metadata=self.metadata, timeout=60.0)
                self._opened = time.monotonic()
                for item in self._unacked:
                    await self._call.write(ingest_pb2.StreamTicksRequest(items=item))
            elif fresh:
                await self._call.write(ingest_pb2.StreamTicksRequest(items=batch))
            if not (final or len(self._unacked) >= self.ROTATE_BATCHES
                    or time.monotonic() - self._opened >= self.ROTATE_SECONDS):
                return []
            await self._call.done_writing()
            response = await self._call
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            # A write on a stream the server already ended fails vaguely: the call's own status says why.
            problem = await self._stream_error(error)
            self._abandon()
            if isinstance(problem, RejectedBatchError):
                self._unacked = []  # the stream was refused for its content: sending it again cannot help
            raise problem from None
        acked, self._unacked, self._call = self._unacked, [], None
        # The response sums the whole stream; the per-batch split is for the bookkeeping only.
        result: Acked = [(b, len(b), 0) for b in acked]
        if result and response.duplicates:
            last, accepted, _ = result[-1]
            result[-1] = (last, accepted, response.duplicates)
        return result

    async def _stream_error(self, error: Exception) -> Exception:
        what = f"StreamTicks to {self.address}"
        call = self._call
        if call is not None:
            with contextlib.suppress(asyncio.TimeoutError, grpc.RpcError, asyncio.CancelledError):
                code = await asyncio.wait_for(call.code(), 1.0)
                if code is not None and code != grpc.StatusCode.OK:
                    details = await call.details()
                    error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
        if isinstance(error, grpc.aio.AioRpcError):
            return _classify_rpc_error(error, what)
        return RetryableSendError(f"{what}: {error}")

    def _abandon(self) -> None:
        if self._call is not None:
            self._call.cancel()
        self._call = None

    async def close(self) -> None:
        self._abandon()
        await super().close()


class RestTransport(Transport):
    """POST /api/v1/webhooks/ticks on the edge, with the API key in x-api-key."""

    def __init__(self, edge_url: str, api_key: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base = edge_url.rstrip("/")
        self.client = httpx.AsyncClient(base_url=self.base, timeout=CALL_TIMEOUT_SECONDS, transport=transport,
                                        headers={"x-api-key": api_key, "content-type": "application/json"})

    async def _post(self, path: str, body: dict) -> dict:
        try:
            response = await self.client.post(path, content=json.dumps(body))
        except httpx.HTTPError as error:
            raise RetryableSendError(f"POST {self.base}{path}: {type(error).__name__}: {error}") from None
        if response.status_code // 100 == 2:
            return response.json() if response.content else {}
        text = f"POST {self.base}{path}: HTTP {response.status_code}: {response.text[:300]}"
        if response.status_code in RETRYABLE_HTTP:
            raise RetryableSendError(text)
        if response.status_code in FATAL_HTTP:
            raise FatalSendError(text)
        raise RejectedBatchError(text)

    async def register(self, symbols: Sequence[market_pb2.Symbol]) -> int:
        body = json_format.MessageToDict(ingest_pb2.UpsertSymbolsRequest(items=symbols))
        return int((await self._post("/api/v1/webhooks/symbols", body)).get("upserted", len(symbols)))

    async def send(self, batch: Sequence[market_pb2.Tick], final: bool = False) -> Acked:
        if not batch:
            return []
        answer = await self._post("/api/v1/webhooks/ticks", to_json(batch))
        return [(batch, int(answer.get("accepted", len(batch))), int(answer.get("duplicates", 0)))]

    async def close(self) -> None:
        await self.client.aclose()


def make_transport(options: FeederOptions) -> Transport:
    if options.transport == "grpc":
        return GrpcTransport(options.ingest_addr, options.api_key)
    if options.transport == "stream":
        return StreamTransport(options.ingest_addr, options.api_key)
    if options.transport == "rest":
        return RestTransport(options.edge_url, options.api_key)
    raise ValueError(f"unknown transport {options.transport!r}: use grpc, stream or rest")


class Progress:
    """A live one-line display on a terminal, plain log lines every few seconds otherwise."""

    def __init__(self, stats: Stats, live: bool) -> None:
        self.stats = stats
        self.live = live
        self._last_report = time.monotonic()
        self._last_sent = 0
        self._last_draw = 0.0

    def update(self, force: bool = False) -> None:
        s = self.stats
        now = time.monotonic()
        if self.live:
            if not force and now - self._last_draw < 0.25:
                return
            self._last_draw = now
            overall = s.sent / max(1e-9, now - s.started)
            state = "  RETRYING: " + s.last_error[:60] if s.retrying else ""
            sys.stdout.write(f"\rfeeder: {s.sent} ticks sent  {overall:6.1f}/s  {s.batches} batches  "
                             f"{s.errors} errors{state}\x1b[K")
            sys.stdout.flush()
            return
        elapsed = now - self._last_report
        if force or elapsed >= REPORT_EVERY_SECONDS:
            rate = (s.sent - self._last_sent) / max(1e-9, elapsed)
            log.info("%d ticks sent (%.1f/s over the last %.0fs), %d batches, %d errors%s", s.sent, rate,
                     elapsed, s.batches, s.errors, " (retrying)" if s.retrying else "")
            self._last_report, self._last_sent = now, s.sent

    def clear(self) -> None:
        """Erases the live line, so that a log line does not start in its middle."""
        if self.live and self._last_draw:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()
            self._last_draw = 0.0

    def close(self) -> None:
        if self.live:
            self.update(force=True)
            sys.stdout.write("\n")
            sys.stdout.flush()


class Feeder:
    def __init__(self, options: FeederOptions, transport: Transport | None = None) -> None:
        self.options = options
        self.transport = transport or make_transport(options)
        self.run_epoch_ms = int(time.time() * 1000)
        self.generator = TradeGenerator(options.specs, rate=options.rate, seed=options.seed,
                                        run_epoch=self.run_epoch_ms)
        self.stats = Stats()
        self.stop = asyncio.Event()
        live = sys.stdout.isatty() if options.progress is None else options.progress
        self.progress = Progress(self.stats, live)
        self._backoff = BACKOFF_START_SECONDS
        self._stop_deadline: float | None = None

    # The generator's clock is "seconds since t0"; event times are t0 + that, on the wall clock.
    def _wall(self, offset: float) -> float:
        return self._t0_wall + offset

    def _now_offset(self) -> float:
        return time.monotonic() - self._t0_mono

    def symbols(self) -> list[market_pb2.Symbol]:
        return [market_pb2.Symbol(symbol=s.symbol, base=s.base, quote=s.quote, active=True)
                for s in self.options.specs]

    def _note_error(self, error: Exception) -> None:
        kind = ("retryable" if isinstance(error, RetryableSendError)
                else "rejected" if isinstance(error, RejectedBatchError) else "fatal")
        ERRORS.labels(kind).inc()
        self.stats.errors += 1
        first = not self.stats.retrying or self.stats.last_error != str(error)
        self.stats.last_error = str(error)
        if isinstance(error, RetryableSendError):
            self.stats.retrying = True
            RETRYING.set(1)
            if first:
                self.progress.clear()
                log.warning("send failed, retrying with backoff: %s", error)
        else:
            self.progress.clear()
            log.error("%s", error)

    async def register(self) -> bool:
        """UpsertSymbols once at start, retried until ingest answers; False if stopped meanwhile."""
        while True:
            try:
                count = await self.transport.register(self.symbols())
                log.info("registered %d symbol(s): %s", count, ", ".join(s.symbol for s in self.options.specs))
                self.stats.retrying = False
                RETRYING.set(0)
                self._backoff = BACKOFF_START_SECONDS
                return True
            except RetryableSendError as error:
                self._note_error(error)
                if await sleep_unless(self.stop, self._backoff):
                    return False
                self._backoff = min(BACKOFF_MAX_SECONDS, self._backoff * 2)

    def _acknowledged(self, batch: Sequence[market_pb2.Tick], accepted: int, duplicates: int) -> None:
        self.stats.sent += len(batch)
        self.stats.duplicates += duplicates
        self.stats.batches += 1
        BATCHES_SENT.inc()
        if duplicates:
            DUPLICATES.inc(duplicates)
        counts: dict[str, int] = {}
        for tick in batch:
            counts[tick.symbol] = counts.get(tick.symbol, 0) + 1
        for symbol, n in counts.items():
            TICKS_SENT.labels(symbol).inc(n)

    async def send_until_acked(self, batch: Sequence[market_pb2.Tick], final: bool = False) -> None:
        """Sends the batch, and the very same batch again after retryable failures, until acknowledged.
        Gives up only when stopping and the stop grace is over."""
        while True:
            try:
                for acked, accepted, duplicates in await self.transport.send(batch, final=final):
                    self._acknowledged(acked, accepted, duplicates)
                self.stats.retrying = False
                RETRYING.set(0)
                self._backoff = BACKOFF_START_SECONDS
                return
            except RetryableSendError as error:
                self._note_error(error)
                if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
                    log.error("stopping: %d tick(s) not acknowledged", len(batch))
                    return
                self.progress.update()
                if self._stop_deadline is not None:
                    await asyncio.sleep(self._backoff)
                elif await sleep_unless(self.stop, self._backoff):
                    self._stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
                self._backoff = min(BACKOFF_MAX_SECONDS, self._backoff * 2)
            except RejectedBatchError as error:
                self._note_error(error)
                self.stats.rejected += len(batch)
                return

    async def run(self) -> Stats:
        options = self.options
        self._t0_wall, self._t0_mono = time.time(), time.monotonic()
        try:
            if options.register_symbols and not await self.register():
                log.info("stopped before ingest could be reached")
                return self.stats
            self._t0_wall, self._t0_mono = time.time(), time.monotonic()
            log.info("sending ~%.0f ticks/s for %s over %s (seed %s)", options.rate,
                     f"{options.duration:g}s" if options.duration else "ever", options.transport, options.seed)
            end = options.duration
            while True:
                now = self._now_offset()
                last_round = self.stop.is_set() or (end is not None and now >= end)
                horizon = min(now, end) if end is not None else now
                if horizon - self.generator.clock > MAX_LAG_SECONDS + options.batch_interval:
                    # We were blocked (outage): do not flood ingest with stale trades, carry on from now.
                    skipped = horizon - self.generator.clock
                    self.generator.skip_to(horizon - options.batch_interval)
                    self.progress.clear()
                    log.info("skipped %.1fs of trades after an outage", skipped)
                trades = self.generator.until(horizon)
                for start in range(0, len(trades), MAX_BATCH_TICKS):
                    chunk = trades[start:start + MAX_BATCH_TICKS]
                    batch = [to_proto(t, self._wall(t.time)) for t in chunk]
                    if last_round and self._stop_deadline is None:
                        self._stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
                    if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
                        break  # stopping, and ingest is not answering: do not start another batch
                    await self.send_until_acked(batch)
                if last_round or self._stop_deadline is not None:
                    break
                self.progress.update()
                next_at = horizon + options.batch_interval
                if end is not None:
                    next_at = min(next_at, end)
                await sleep_unless(self.stop, max(0.0, next_at - self._now_offset()))
            # Whatever is still unacknowledged (a stream's last batches) is acknowledged now.
            self._stop_deadline = self._stop_deadline or time.monotonic() + STOP_GRACE_SECONDS
            if time.monotonic() <= self._stop_deadline:
                await self.send_until_acked([], final=True)
        finally:
            self.progress.close()
            await self.transport.close()
        log.info("done: %d ticks sent in %d batches, %d errors, %d duplicates reported, %d rejected",
                 self.stats.sent, self.stats.batches, self.stats.errors, self.stats.duplicates, self.stats.rejected)
        return self.stats


async def serve(settings: Settings, options: FeederOptions) -> None:
    # One line per webhook request would drown the progress lines.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    serve_metrics(settings.metrics_port_for("feeder"), settings.bind_host)
    feeder = Feeder(options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, feeder.stop.set)
    try:
        await feeder.run()
    except FatalSendError as error:
        raise SystemExit(f"marketdata feeder: {error}") from None
