"""The measurements of `marketdata bench`: end-to-end ingest, the ceilings, tick → SSE latency with a soak,
query latency, and memory. Every loop is bounded in count and in time, and talks only to 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import statistics
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import httpx
import nats
from nats.js import api

from marketdata.aggregator import rollup
from marketdata.bench import sse_client
from marketdata.bench.data import Batch, live_batch
from marketdata.bench.stack import API_KEY, HOST, BenchStack
from marketdata.v1 import aggregator_pb2, aggregator_pb2_grpc, ingest_pb2, ingest_pb2_grpc, market_pb2

PUBLISH = "/marketdata.v1.IngestService/PublishTicks"
STREAM = "/marketdata.v1.IngestService/StreamTicks"
WEBHOOK_PATH = "/api/v1/webhooks/ticks"
METADATA = (("x-api-key", API_KEY),)
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {"count": len(ms), "p50_ms": _r(percentile(ms, 50)), "p99_ms": _r(percentile(ms, 99)),
            "p999_ms": _r(percentile(ms, 99.9)), "max_ms": _r(max(ms) if ms else None),
            "mean_ms": _r(statistics.fmean(ms) if ms else None)}


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) in value per minute."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return None if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 60


@dataclass
class Sampler:
    """RSS of every process, and the aggregator's committed-tick count, sampled in the background."""

    stack: BenchStack
    started: float = field(default_factory=time.perf_counter)
    rss: list[tuple[float, str, dict[str, int | None]]] = field(default_factory=list)
    phase: str = "idle"

    def now(self) -> float:
        return time.perf_counter() - self.started

    async def run(self, stop: asyncio.Event, interval: float = 0.5) -> None:
        while not stop.is_set():
            self.rss.append((self.now(), self.phase, self.stack.rss()))
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass

    def peak(self, phases: tuple[str, ...]) -> dict[str, int]:
        peak: dict[str, int] = {}
        for _, phase, sample in self.rss:
            if phase in phases:
                for name, kib in sample.items():
                    if kib is not None:
                        peak[name] = max(peak.get(name, 0), kib)
        return peak


class Aggregator:
    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = aggregator_pb2_grpc.AggregatorServiceStub(self.channel)

    async def status(self) -> aggregator_pb2.GetStatusResponse:
        return await self.stub.GetStatus(aggregator_pb2.GetStatusRequest(), timeout=5)

    async def committed(self) -> int:
        return (await self.status()).ticks_committed

    async def wait_idle(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            status = await self.status()
            if status.consumer_pending == 0 and status.ack_pending == 0 and status.ticks_committed == last:
                return last
            last = status.ticks_committed
            await asyncio.sleep(0.2)
        return last

    async def close(self) -> None:
        await self.channel.close()


# --- end-to-end ingest -------------------------------------------------------------------------------------

async def _retrying(call, payload: bytes, attempts: int = 5):  # type: ignore[no-untyped-def]
    for attempt in range(attempts):
        try:
            return await call(payload, metadata=METADATA, timeout=60)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


async def send_batched(address: str, payloads: list[bytes], counts: list[int], clients: int,
                       acked: list[int]) -> None:
    """`clients` concurrent PublishTicks callers (a channel each) working through the batches in order."""
    channels = [grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in range(clients)]
    position = iter(range(len(payloads)))

    async def worker(channel: grpc.aio.Channel) -> None:
        call = channel.unary_unary(PUBLISH, request_serializer=None,
                                   response_deserializer=ingest_pb2.PublishTicksResponse.FromString)
        for index in position:
            response = await _retrying(call, payloads[index])
            acked[0] += response.accepted + response.duplicates

    try:
        await asyncio.gather(*(worker(c) for c in channels))
    finally:
        for channel in channels:
            await channel.close()


async def send_streaming(address: str, payloads: list[bytes], counts: list[int], clients: int,
                         acked: list[int]) -> None:
    """`clients` concurrent StreamTicks calls, each streaming its share of the batches."""
    channels = [grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in range(clients)]

    async def worker(n: int, channel: grpc.aio.Channel) -> None:
        call = channel.stream_unary(STREAM, request_serializer=None,
                                    response_deserializer=ingest_pb2.StreamTicksResponse.FromString)
        response = await call(iter(payloads[n::clients]), metadata=METADATA, timeout=600)
        acked[0] += response.accepted + response.duplicates

    try:
        await asyncio.gather(*(worker(n, c) for n, c in enumerate(channels)))
    finally:
        for channel in channels:
            await channel.close()


async def send_webhook(base_url: str, payloads: list[bytes], counts: list[int], clients: int,
                       acked: list[int]) -> None:
    """`clients` concurrent POST /api/v1/webhooks/ticks callers (JSON bodies) on keep-alive connections."""
    position = iter(range(len(payloads)))
    headers = {"content-type": "application/json", "x-api-key": API_KEY}
    async with httpx.AsyncClient(base_url=base_url, timeout=60,
                                 limits=httpx.Limits(max_connections=clients)) as http:
        async def worker() -> None:
            for index in position:
                for attempt in range(5):
                    response = await http.post(WEBHOOK_PATH, content=payloads[index], headers=headers)
                    if response.status_code != 503 or attempt == 4:
                        break
                    await asyncio.sleep(0.2)
                if response.status_code != 200:
                    raise RuntimeError(f"webhook answered {response.status_code}: {response.text[:300]}")
                body = response.json()
                acked[0] += int(body.get("accepted", 0)) + int(body.get("duplicates", 0))

        await asyncio.gather(*(worker() for _ in range(clients)))


async def paced_latency(call: Callable[[bytes], Awaitable[str | None]], payloads: list[bytes], rate: int,
                        batch_ticks: int) -> dict[str, Any]:
    """Open-loop: one call of `batch_ticks` ticks every batch_ticks/rate seconds whatever the answers take
    (`rate` ticks/s offered), each call's time to its answer. `call` returns an error text or None."""
    interval = batch_ticks / rate
    latencies: list[float] = []
    errors: list[str] = []

    async def timed(payload: bytes) -> None:
        started = time.perf_counter()
        error = await call(payload)
        latencies.append(time.perf_counter() - started)
        if error:
            errors.append(error)

    # A few calls first, not counted: connections (and the edge's key check) are warm in production.
    await asyncio.gather(*(timed(payload) for payload in payloads[:4]))
    latencies.clear()
    errors.clear()
    calls = []
    begun = time.perf_counter()
    for n, payload in enumerate(payloads[4:]):
        delay = begun + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        calls.append(asyncio.create_task(timed(payload)))
    await asyncio.gather(*calls)
    seconds = time.perf_counter() - begun
    return {**summary_ms(latencies), "batch_ticks": batch_ticks, "offered_rate": rate,
            "achieved_rate": _r(len(latencies) * batch_ticks / seconds, 0) if seconds else None,
            "errors": len(errors), "first_error": errors[0] if errors else None}


class KeepAliveClient:
    """HTTP/1.1 as a wrk-style load generator speaks it, for latency figures: a request is written as prepared
    bytes on an idle keep-alive connection (a new one when every connection has a call in flight) and its
    answer read by Content-Length. httpx costs ~0.8 ms of the bench process's Python per 72 KB POST (p50;
    1.5 ms p99, docs/benchmarks.md), which would otherwise count as the edge's."""

    def __init__(self, base_url: str) -> None:
        url = urlsplit(base_url)
        self.host, self.port, self.netloc = url.hostname or HOST, url.port or 80, url.netloc
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened: list[asyncio.StreamWriter] = []

    def head(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"host: {self.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n").encode()

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        """(status, body) of the request `head` (from head()) with `body`."""
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.opened.append(writer)
        writer.writelines((head, b"content-length: %d\r\n\r\n" % len(body), body))
        await writer.drain()
        status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = {name.strip().lower(): value.strip().lower()
                  for name, _, value in (line.partition(":") for line in lines if line)}
        if "content-length" not in fields:
            raise ValueError(f"an answer without Content-Length ({status_line})")
        answer = await reader.readexactly(int(fields["content-length"]))
        if fields.get("connection") == "close":
            writer.close()
        else:
            self.idle.append((reader, writer))
        return int(status_line.split()[1]), answer

    async def close(self) -> None:
        for writer in self.opened:
            writer.close()


async def webhook_latency(base_url: str, payloads: list[bytes], rate: int, batch_ticks: int,
                          client: str = "keep-alive") -> dict[str, Any]:
    """paced_latency of POST /api/v1/webhooks/ticks (JSON bodies), through KeepAliveClient (the target's
    figure) or httpx (what a Python producer sees, for comparison)."""
    headers = {"content-type": "application/json", "x-api-key": API_KEY}
    if client == "httpx":
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=httpx.Limits(max_connections=64)) as http:
            async def post_httpx(payload: bytes) -> str | None:
                try:
                    response = await http.post(WEBHOOK_PATH, content=payload, headers=headers)
                except httpx.HTTPError as exc:  # an edge that cannot keep up: counted, the case goes on
                    return f"{type(exc).__name__}: {exc}"
                return None if response.status_code == 200 else f"{response.status_code}: {response.text[:200]}"

            return {**await paced_latency(post_httpx, payloads, rate, batch_ticks), "client": client}
    lean = KeepAliveClient(base_url)
    head = lean.head("POST", WEBHOOK_PATH, headers)

    async def post(payload: bytes) -> str | None:
        try:
            status, answer = await asyncio.wait_for(lean.request(head, payload), 30)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if status == 200 else f"{status}: {answer[:200]!r}"

    try:
        return {**await paced_latency(post, payloads, rate, batch_ticks), "client": client}
    finally:
        await lean.close()


async def publish_latency(address: str, payloads: list[bytes], rate: int, batch_ticks: int) -> dict[str, Any]:
    """paced_latency of PublishTicks (serialized requests): the floor of the webhook's latency."""
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    publish = channel.unary_unary(PUBLISH, request_serializer=None,
                                  response_deserializer=ingest_pb2.PublishTicksResponse.FromString)

    async def call(payload: bytes) -> str | None:
        try:
            await publish(payload, metadata=METADATA, timeout=30)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        return None

    try:
        return await paced_latency(call, payloads, rate, batch_ticks)
    finally:
        await channel.close()


async def end_to_end(name: str, sender, target: str, payloads: list[bytes], counts: list[int],  # type: ignore[no-untyped-def]
                     clients: int, aggregator: Aggregator, sampler: Sampler, timeout: float) -> dict[str, Any]:
    """Sends every batch and waits until the aggregator has committed every tick (with its rollups)."""
    expected = sum(counts)
    base = await aggregator.wait_idle()
    sampler.phase = name
    acked = [0]
    timeline: list[tuple[float, int, int]] = []
    cpu_before = sampler.stack.cpu()
    started = time.perf_counter()
    send = asyncio.create_task(sender(target, payloads, counts, clients, acked))
    acked_at: float | None = None
    committed = 0
    error = None
    while True:
        committed = await aggregator.committed() - base
        elapsed = time.perf_counter() - started
        timeline.append((round(sampler.now(), 3), committed, acked[0]))
        if send.done() and acked_at is None:
            acked_at = elapsed
            if send.exception() is not None:
                error = f"{type(send.exception()).__name__}: {send.exception()}"
                break
        if committed >= expected:
            break
        if elapsed > timeout:
            error = f"timed out after {timeout:.0f}s with {committed} of {expected} ticks committed"
            send.cancel()
            break
        await asyncio.sleep(0.05)
    done = time.perf_counter() - started
    cpu = cpu_used(cpu_before, sampler.stack.cpu(), done, committed)
    if not send.done():
        await asyncio.gather(send, return_exceptions=True)
    sampler.phase = "idle"
    return {"cpu": cpu,
        "ticks": expected, "batches": len(payloads), "batch_ticks": max(counts), "clients": clients,
        "committed": committed, "seconds": _r(done), "ack_seconds": _r(acked_at),
        "ticks_per_second": _r(committed / done, 0) if done else None,
        "ack_ticks_per_second": _r(expected / acked_at, 0) if acked_at else None,
        "error": error, "timeline": timeline,
    }


def cpu_used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], seconds: float,
             ticks: int) -> dict[str, Any]:
    """Per service: cores used on average, and CPU milliseconds per 1,000 ticks, over a phase."""
    out: dict[str, Any] = {}
    total = 0.0
    for name, pids in after.items():
        used = sum(cpu - before.get(name, {}).get(pid, 0.0) for pid, cpu in pids.items())
        total += used
        out[name] = {"cores": _r(used / seconds, 2) if seconds else None,
                     "ms_per_1k_ticks": _r(used * 1e6 / ticks, 2) if ticks else None}
    out["total"] = {"cores": _r(total / seconds, 2) if seconds else None,
                    "ms_per_1k_ticks": _r(total * 1e6 / ticks, 2) if ticks else None}
    return out


# --- ceilings ----------------------------------------------------------------------------------------------

# The aggregator's fold alone (no ledger, no ticks_raw): the ceiling of its SQL, also used by tests to fold
# ticks directly. $1 symbol text[], $2 trade_id text[], $3 event time as µs since the epoch int8[], $4 price
# float8[], $5 size float8[], $6 side int2[], $7 source text[]; doubles become numerics as in COMMIT_BATCH.
FOLD_TICKS = f"""
WITH batch AS (
    SELECT symbol, trade_id, timestamptz 'epoch' + event_us * interval '1 microsecond' AS event_time,
           price::text::numeric AS price, size::text::numeric AS size, side, source
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::float8[], $5::float8[], $6::int2[], $7::text[])
         AS t(symbol, trade_id, event_us, price, size, side, source)
),
{rollup.fold_sql()}"""

async def ceiling_rollup_sql(database_url: str, batches: list[Batch], connections: int = 1,
                             prefix: str = "C", schema: str | None = None, collate_c: bool = False) -> dict[str, Any]:
    """FOLD_TICKS alone, one transaction per batch, on the same batches renamed to fresh symbols;
    with connections > 1, that many connections work through the batches concurrently. With a schema:
    into empty copies of the rollup tables made there, with collate_c their symbol columns COLLATE "C"."""
    args = [b.fold_args(prefix) for b in batches]
    settings = {"search_path": f"{schema}, public"} if schema else None
    if schema:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
            for table in ("ticks_history", "ohlc_1m", "metrics_1m"):
                await conn.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
                if collate_c:
                    await conn.execute(f'ALTER TABLE {schema}.{table} ALTER COLUMN symbol TYPE text COLLATE "C"')
        finally:
            await conn.close()
    conns = [await asyncpg.connect(database_url, server_settings=settings) for _ in range(connections)]
    try:
        statements = [await conn.prepare(FOLD_TICKS) for conn in conns]
        position = iter(args)

        async def worker(conn: asyncpg.Connection, statement: Any) -> None:
            for arrays in position:
                async with conn.transaction():
                    await statement.fetch(*arrays)

        started = time.perf_counter()
        await asyncio.gather(*(worker(c, st) for c, st in zip(conns, statements)))
        seconds = time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()
        if schema:
            conn = await asyncpg.connect(database_url)
            try:
                await conn.execute(f"DROP SCHEMA {schema} CASCADE")
            finally:
                await conn.close()
    ticks = sum(len(b) for b in batches)
    return {"ticks": ticks, "connections": connections, "seconds": _r(seconds),
            "ticks_per_second": _r(ticks / seconds, 0)}


async def ceiling_aggregator_sql(database_url: str, batches: list[Batch], stream: str) -> dict[str, Any]:
    """The aggregator's whole statement (rollup.COMMIT_BATCH_JOINED: ledger, ticks_raw, FOLD) with the arguments
    the aggregator sends, without NATS or decoding, one batch per statement, each batch one message sequence,
    into fresh symbols."""
    prepared = []
    for seq, batch in enumerate(batches, start=1):
        ticks = rollup.TickColumns(*batch.fold_args("A"))
        prepared.append(rollup.commit_arguments(stream, [seq], [seq] * len(batch), ticks))
    conn = await asyncpg.connect(database_url)
    try:
        started = time.perf_counter()
        for sql, *args in prepared:
            await conn.fetch(sql, *args)
        seconds = time.perf_counter() - started
        await conn.execute("DELETE FROM ticks_raw WHERE stream = $1", stream)
        await conn.execute("DELETE FROM processed_messages WHERE stream = $1", stream)
    finally:
        await conn.close()
    ticks = sum(len(b) for b in batches)
    return {"ticks": ticks, "seconds": _r(seconds), "ticks_per_second": _r(ticks / seconds, 0)}


async def ceiling_copy(database_url: str, batches: list[Batch], table: str) -> dict[str, Any]:
    """copy_records_to_table of the same ticks into a scratch table shaped like ticks_raw, a transaction per batch."""
    records = [b.raw_records("copy", n) for n, b in enumerate(batches)]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE TABLE {table} (LIKE ticks_raw INCLUDING DEFAULTS)")
        started = time.perf_counter()
        for chunk in records:
            async with conn.transaction():
                await conn.copy_records_to_table(table, records=chunk, columns=rollup.RAW_COLUMNS)
        seconds = time.perf_counter() - started
        await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()
    ticks = sum(len(b) for b in batches)
    return {"ticks": ticks, "seconds": _r(seconds), "ticks_per_second": _r(ticks / seconds, 0)}


async def ceiling_jetstream(nats_url: str, batches: list[Batch], stream: str, prefix: str,
                            clients: int) -> dict[str, Any]:
    """Async JetStream publish (with acks and Nats-Msg-Id) of the payloads ingest would publish, to a
    scratch stream, `clients` batches in flight, each batch's messages published concurrently."""
    messages = [b.jetstream_messages(f"{prefix}.ticks") for b in batches]
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{prefix}.>"], storage=api.StorageType.FILE,
                                             duplicate_window=120.0))
        position = iter(messages)

        async def worker() -> None:
            for batch in position:
                await asyncio.gather(*(js.publish(subject, payload, timeout=10, headers={
                    "Nats-Msg-Id": f"{subject}-{n}-{len(payload)}-{hash(payload)}"})
                    for n, (subject, payload) in enumerate(batch)))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        seconds = time.perf_counter() - started
        await js.delete_stream(stream)
    finally:
        await client.close()
    ticks = sum(len(b) for b in batches)
    return {"ticks": ticks, "messages": sum(len(m) for m in messages), "seconds": _r(seconds),
            "ticks_per_second": _r(ticks / seconds, 0)}


# --- live: tick -> SSE latency, and the soak ---------------------------------------------------------------

PG_ACTIVITY_SQL = """
SELECT (SELECT coalesce(sum(autovacuum_count), 0) FROM pg_stat_user_tables)::int8 AS autovacuums,
       (SELECT coalesce(sum(autoanalyze_count), 0) FROM pg_stat_user_tables)::int8 AS autoanalyzes,
       (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)::int8 AS checkpoints,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker')::int8 AS autovacuum_running
"""


async def pg_activity(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        return dict(await conn.fetchrow(PG_ACTIVITY_SQL))
    finally:
        await conn.close()


async def settle_database(database_url: str) -> float:
    """VACUUM ANALYZE of the tables the ingest runs filled, so autovacuum does not start on them (it shares
    the 2 cores) in the middle of the latency measurement, then a CHECKPOINT, so neither do the writes of the
    pages all that dirtied (where the role may not checkpoint, the checkpointer's pace is left as it is).
    Returns the seconds it took."""
    started = time.perf_counter()
    conn = await asyncpg.connect(database_url, command_timeout=600)
    try:
        for table in ("ticks_history", "ticks_raw", "ohlc_1m", "metrics_1m", *rollup.TIERS, "processed_messages"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return time.perf_counter() - started

async def live(stack: BenchStack, symbols: list[str], rate: int, seconds: float, sse_clients: int,
               aggregator: Aggregator, sampler: Sampler, warmup: float = 2.0) -> dict[str, Any]:
    """Publishes `rate` ticks/s (20 PublishTicks calls a second) for `seconds`, with `sse_clients` SSE clients
    of the edge (when it runs) in a separate process. Latency of a live update = its arrival at a client
    minus the moment the PublishTicks call carrying its lastTick was acknowledged."""
    edge = stack.services.get("edge")
    sends_per_second = 20
    per_send = max(1, rate // sends_per_second)
    work = Path(tempfile.mkdtemp(prefix="sse-", dir=stack.work_dir))
    process = None
    sse_ready = None
    if edge is not None and sse_clients > 0:
        context = multiprocessing.get_context("spawn")
        process = context.Process(target=sse_client.main, args=(HOST, edge.port, symbols, sse_clients,
                                                                seconds + 6, str(work)), daemon=True)
        process.start()
        deadline = time.monotonic() + 60
        while not (work / "ready").exists() and time.monotonic() < deadline and process.is_alive():
            await asyncio.sleep(0.1)
        sse_ready = (work / "ready").read_text() if (work / "ready").exists() else "not ready"
        await asyncio.sleep(1)  # subscriptions settle
    await aggregator.wait_idle()
    base = await aggregator.committed()
    activity_before = await pg_activity(stack.database_url)
    sampler.phase = "soak"
    channel = grpc.aio.insecure_channel(stack.services["ingest"].address, options=CHANNEL_OPTIONS)
    call = channel.unary_unary(PUBLISH, request_serializer=None,
                               response_deserializer=ingest_pb2.PublishTicksResponse.FromString)
    rng = random.Random(5)
    ack_time: dict[int, float] = {}
    send_time: dict[int, float] = {}
    ack_latency: list[float] = []
    errors = 0
    skipped = 0
    inflight: set[asyncio.Task[None]] = set()
    committed_points: list[tuple[float, int]] = []

    async def send(sequence: int, payload: bytes) -> None:
        nonlocal errors
        sent = time.monotonic()
        try:
            await call(payload, metadata=METADATA, timeout=10)
        except grpc.aio.AioRpcError:
            errors += 1
            return
        now = time.monotonic()
        ack_time[sequence] = now
        send_time[sequence] = sent
        ack_latency.append(now - sent)

    cpu_before = stack.cpu()
    started = time.monotonic()
    sequence = 0
    next_status = started
    total = int(seconds * sends_per_second)
    while sequence < total:
        due = started + sequence / sends_per_second
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(inflight) >= 200:
            skipped += 1  # ingest is not keeping up: do not queue unboundedly
        else:
            task = asyncio.create_task(send(sequence, live_batch("L", sequence, symbols, per_send, rng)))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        sequence += 1
        if time.monotonic() >= next_status:
            next_status += 1.0
            try:
                committed_points.append((round(sampler.now(), 3), await aggregator.committed() - base))
            except grpc.aio.AioRpcError:
                pass
    if inflight:
        await asyncio.wait(inflight, timeout=30)
    elapsed = time.monotonic() - started
    sent_ticks = (total - skipped) * per_send
    cpu = cpu_used(cpu_before, stack.cpu(), elapsed, sent_ticks)
    caught_up = await aggregator.wait_idle(60)
    committed = caught_up - base
    activity_after = await pg_activity(stack.database_url)
    postgres_activity = {k: activity_after[k] - activity_before[k] for k in ("autovacuums", "autoanalyzes", "checkpoints")}
    postgres_activity["autovacuum_running_at_start"] = activity_before["autovacuum_running"]
    await channel.close()
    soak_rss = [(t, s) for t, phase, s in sampler.rss if phase == "soak"]
    sampler.phase = "idle"
    result: dict[str, Any] = {
        "rate_target": rate, "seconds": _r(elapsed), "ticks_sent": sent_ticks, "ticks_committed": committed,
        "achieved_rate": _r(sent_ticks / elapsed, 0), "send_errors": errors, "sends_skipped": skipped,
        "ingest_ack": summary_ms(ack_latency), "committed_timeline": committed_points, "cpu": cpu,
        "postgres_activity": postgres_activity,
    }
    result["memory"] = _soak_memory(soak_rss)
    if process is not None:
        process.join(seconds + 60)
        if process.is_alive():
            process.kill()
        result["sse"] = _sse_results(work, ack_time, started + warmup, sse_clients, sse_ready, sampler)
    return result


def _soak_memory(samples: list[tuple[float, dict[str, int | None]]]) -> dict[str, Any]:
    """Per process: RSS at the start and end of the soak, and the slope after the first 10% (warm-up)."""
    out: dict[str, Any] = {}
    if not samples:
        return out
    first_t, last_t = samples[0][0], samples[-1][0]
    skip = first_t + (last_t - first_t) * 0.1
    names = {n for _, s in samples for n in s}
    for name in sorted(names):
        points = [(t - first_t, s[name] / 1024) for t, s in samples if s.get(name) is not None]
        if not points:
            continue
        steady = [p for p in points if p[0] + first_t >= skip] or points
        slope = slope_per_minute(steady)
        mean = statistics.fmean(v for _, v in steady)
        growth_10min = (slope or 0) * 10
        out[name] = {"start_mib": _r(points[0][1], 1), "end_mib": _r(points[-1][1], 1),
                     "slope_mib_per_min": _r(slope, 3), "projected_10min_growth_mib": _r(growth_10min, 1),
                     # Flat: the fitted trend would add less than 5% (and under 10 MiB) over ten minutes
                     # (a shrinking RSS is not a leak).
                     "flat": growth_10min < max(2.0, min(10.0, 0.05 * mean))}
    return out


def _sse_results(work: Path, ack_time: dict[int, float], from_time: float, clients: int, ready: str | None,
                 sampler: Sampler) -> dict[str, Any]:
    batch, arrival, commit_lag = array("q"), array("d"), array("d")
    for arr, name in ((batch, "batch.bin"), (arrival, "arrival.bin"), (commit_lag, "commit_lag.bin")):
        path = work / name
        if path.exists():
            with open(path, "rb") as f:
                arr.frombytes(f.read())
    summary = (work / "summary").read_text().split() if (work / "summary").exists() else ["0", "0", "0"]
    latencies: list[float] = []
    lags: list[float] = []
    unmatched = 0
    per_second: dict[int, list[float]] = {}
    offset = time.monotonic() - sampler.now()  # monotonic of sampler time 0
    for b, a, lag in zip(batch, arrival, commit_lag):
        acked = ack_time.get(b)
        if acked is None:
            unmatched += 1
            continue
        if acked < from_time:
            continue
        latencies.append(a - acked)
        if lag == lag:
            lags.append(lag)
        per_second.setdefault(int(a - offset), []).append(a - acked)
    over_time = [(second, _r(percentile(v, 50) * 1000), _r(percentile(v, 99) * 1000))
                 for second, v in sorted(per_second.items())]
    return {"clients": clients, "connected": int(summary[0]), "failed": int(summary[1]), "ready": ready,
            "frames": int(summary[2]), "unmatched": unmatched, "ack_to_client": summary_ms(latencies),
            "commit_to_client": summary_ms(lags), "over_time": over_time}


# --- query latency -----------------------------------------------------------------------------------------

QUERY_SYMBOLS = [f"QS{i:02d}" for i in range(20)]


async def seed_query_data(database_url: str, ticks: int) -> dict[str, Any]:
    """ticks over 20 symbols, 15 minutes apart per symbol (one candle each), written with generate_series:
    ticks_history, then ohlc_1m and metrics_1m derived from it (each tick alone in its minute)."""
    per_symbol = max(1, ticks // len(QUERY_SYMBOLS))
    conn = await asyncpg.connect(database_url, command_timeout=900)
    started = time.perf_counter()
    try:
        await conn.execute("""
            INSERT INTO symbols (symbol, base, quote)
            SELECT 'QS' || lpad(s::text, 2, '0'), 'QS' || lpad(s::text, 2, '0'), 'USD' FROM generate_series(0, 19) s
            ON CONFLICT DO NOTHING""")
        await conn.execute("""
            INSERT INTO ticks_history (symbol, trade_id, event_time, price, size, side, source)
            SELECT 'QS' || lpad(s::text, 2, '0'), 'q-' || n,
                   date_trunc('minute', now()) - interval '1 minute' - n * interval '15 minutes' + s * interval '1 second',
                   round((100 + 10 * sin(n / 40.0) + s)::numeric, 2), round(((n % 13) + 1) / 4.0, 4), 1 + n % 2, 'bench'
            FROM generate_series(0, 19) s, generate_series(0, $1 - 1) n""", per_symbol)
        await conn.execute("""
            INSERT INTO ohlc_1m (symbol, bucket, open, high, low, close, volume, trades, turnover,
                                 open_time, open_trade_id, close_time, close_trade_id)
            SELECT symbol, date_trunc('minute', event_time), price, price, price, price, size, 1, price * size,
                   event_time, trade_id, event_time, trade_id
            FROM ticks_history WHERE symbol LIKE 'QS%'""")
        await conn.execute("""
            INSERT INTO metrics_1m (symbol, bucket, min, max, price_sum, trades, volume, turnover,
                                    last, last_time, last_trade_id)
            SELECT symbol, date_trunc('minute', event_time), price, price, price, 1, size, price * size,
                   price, event_time, trade_id
            FROM ticks_history WHERE symbol LIKE 'QS%'""")
        # The stored tiers (5 and 15 minutes, hours, 4 hours, days), as the aggregator folds them.
        await conn.execute("SELECT rebuild_tiers(symbol, min(bucket), max(bucket) + interval '1 minute') "
                           "FROM ohlc_1m WHERE symbol LIKE 'QS%' GROUP BY symbol")
        for table in ("ticks_history", "ohlc_1m", "metrics_1m", *rollup.TIERS):
            await conn.execute(f"VACUUM ANALYZE {table}")
        stored = await conn.fetchval("SELECT count(*) FROM ticks_history")
    finally:
        await conn.close()
    return {"ticks_seeded": per_symbol * len(QUERY_SYMBOLS), "ticks_stored": stored, "symbols": len(QUERY_SYMBOLS),
            "candles_1m_per_symbol": per_symbol, "seconds": _r(time.perf_counter() - started, 1)}


# (view, interval, time zone) of every GetHistory case: every named interval in UTC, the calendar ones in a DST
# zone too, a half-hour zone, and days in a zone whose offset changed last in 1991.
QUERY_CASES = [("ohlc1m", interval, "") for interval in ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h",
                                                         "12h", "1d", "3d", "1w", "1M")]
QUERY_CASES += [("ohlc1m", interval, "Europe/Berlin") for interval in ("1h", "1d", "1w", "1M")]
QUERY_CASES += [("ohlc1m", interval, "Asia/Kolkata") for interval in ("1h", "1d", "1w")]
QUERY_CASES += [("ohlc1m", "1d", "Asia/Shanghai")]
QUERY_CASES += [("metrics1m", "", ""), ("ticks", "", "")]


def _case_name(transport: str, view: str, interval: str, zone: str) -> str:
    return " ".join(part for part in (transport, view, interval, zone) if part)


async def query_latency(query_address: str | None, edge_url: str | None, requests: int, limit: int = 500,
                        warmup: int = 10, symbols: list[str] = QUERY_SYMBOLS,
                        cases: list[tuple[str, str, str]] = QUERY_CASES, passes: int = 1) -> dict[str, Any]:
    """`requests` GetHistory calls per case and pass, each case's figures over all its passes. Passes run every
    case in turn, so a busy second of the shared machine lands in one pass of several cases rather than in the
    only run of one: a p99 over 3 passes of 200 rests on its 6 slowest of 600, not on the 2 slowest of 200."""
    from marketdata.v1 import query_pb2, query_pb2_grpc

    out: dict[str, Any] = {}

    async def measure(transport: str, call: Callable[[str, str, str, str], Awaitable[Any]],
                      shape: Callable[[Any], dict[str, Any]]) -> None:
        """Times `call` alone; `shape` (rows in the answer) reads each case's last answer, after the clock."""
        times: dict[tuple[str, str, str], list[float]] = {case: [] for case in cases}
        last: dict[tuple[str, str, str], Any] = {}
        for done in range(passes):
            skip = warmup if done == 0 else 0
            for case in cases:
                for n in range(skip + requests):
                    started = time.perf_counter()
                    last[case] = await call(symbols[n % len(symbols)], *case)
                    if n >= skip:
                        times[case].append(time.perf_counter() - started)
        for case in cases:
            out[_case_name(transport, *case)] = {**summary_ms(times[case]), **shape(last[case])}

    if query_address:
        async with grpc.aio.insecure_channel(query_address, options=CHANNEL_OPTIONS) as channel:
            stub = query_pb2_grpc.QueryServiceStub(channel)

            async def grpc_call(symbol: str, view: str, interval: str, zone: str) -> query_pb2.GetHistoryResponse:
                return await stub.GetHistory(query_pb2.GetHistoryRequest(
                    symbol=symbol, view=view, interval=interval, limit=limit, time_zone=zone), timeout=30)

            await measure("grpc", grpc_call, lambda response: {
                "rows": len(response.candles) + len(response.ticks) + len(response.metrics),
                "with_sma10": sum(1 for c in response.candles if c.HasField("sma10"))})
    if edge_url:
        async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:

            async def rest_call(symbol: str, view: str, interval: str, zone: str) -> httpx.Response:
                params = {"view": view, "limit": str(limit)}
                if interval:
                    params["interval"] = interval
                if zone:
                    params["timeZone"] = zone
                response = await http.get(f"/api/v1/ticks/{symbol}/history", params=params)
                if response.status_code != 200:
                    raise RuntimeError(f"REST history answered {response.status_code}: {response.text[:300]}")
                return response

            def rest_shape(response: httpx.Response) -> dict[str, Any]:
                body = response.json()
                return {"rows": len(body.get("candles", [])) + len(body.get("ticks", [])) + len(body.get("metrics", []))}

            await measure("rest", rest_call, rest_shape)
    return out


TICKER_SYMBOLS = [f"TK{i:03d}" for i in range(100)]


async def seed_ticker_data(database_url: str, ticks_per_symbol: int) -> dict[str, Any]:
    """ticks_per_symbol ticks per symbol of TICKER_SYMBOLS, evenly over the last 25 hours (so a 24-hour window
    starts and ends inside the data), and their candle tiers (ohlc_1m with every column the rollup keeps, then
    the stored tiers by rebuild_tiers)."""
    conn = await asyncpg.connect(database_url, command_timeout=1800)
    started = time.perf_counter()
    try:
        await conn.execute("""
            INSERT INTO symbols (symbol, base, quote) SELECT s, s, 'USD' FROM unnest($1::text[]) s
            ON CONFLICT DO NOTHING""", TICKER_SYMBOLS)
        await conn.execute("""
            INSERT INTO ticks_history (symbol, trade_id, event_time, price, size, side, source)
            SELECT 'TK' || lpad(s::text, 3, '0'), 'tk-' || n,
                   now() - interval '25 hours' + n * (interval '25 hours' / $1) + s * interval '1 millisecond',
                   round((100 + 10 * sin(n / 50.0) + s)::numeric, 2), round(((n % 13) + 1) / 4.0, 4), 1 + n % 2, 'bench'
            FROM generate_series(0, 99) s, generate_series(0, $1 - 1) n""", ticks_per_symbol)
        await conn.execute("""
            INSERT INTO ohlc_1m (symbol, bucket, open, high, low, close, volume, trades, turnover,
                                 open_time, open_trade_id, close_time, close_trade_id,
                                 taker_buy_volume, taker_buy_turnover)
            SELECT symbol, date_trunc('minute', event_time),
                   (array_agg(price ORDER BY event_time, trade_id))[1], max(price), min(price),
                   (array_agg(price ORDER BY event_time DESC, trade_id DESC))[1], sum(size), count(*),
                   sum(price * size), min(event_time), (array_agg(trade_id ORDER BY event_time, trade_id))[1],
                   max(event_time), (array_agg(trade_id ORDER BY event_time DESC, trade_id DESC))[1],
                   coalesce(sum(size) FILTER (WHERE side = 1), 0), coalesce(sum(price * size) FILTER (WHERE side = 1), 0)
            FROM ticks_history WHERE symbol LIKE 'TK%'
            GROUP BY 1, 2""")
        await conn.execute("SELECT rebuild_tiers(NULL, now() - interval '26 hours', now() + interval '1 hour')")
        for table in ("ticks_history", "ohlc_1m", "ohlc_15m", "ohlc_1h"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        stored = await conn.fetchval("SELECT count(*) FROM ticks_history")
        minutes = await conn.fetchval("SELECT count(*) FROM ohlc_1m WHERE symbol = $1", TICKER_SYMBOLS[0])
    finally:
        await conn.close()
    return {"ticks_seeded": ticks_per_symbol * len(TICKER_SYMBOLS), "ticks_stored": stored,
            "symbols": len(TICKER_SYMBOLS), "minute_rows_per_symbol": minutes,
            "seconds": _r(time.perf_counter() - started, 1)}


async def ticker_latency(query_address: str | None, edge_url: str | None, requests: int,
                         warmup: int = 10) -> dict[str, Any]:
    """GetTicker (24-hour window) for one symbol and for all 100 of TICKER_SYMBOLS, over gRPC and REST."""
    from marketdata.v1 import query_pb2, query_pb2_grpc

    cases = {"1 symbol": lambda n: [TICKER_SYMBOLS[n % len(TICKER_SYMBOLS)]], "100 symbols": lambda n: TICKER_SYMBOLS}
    out: dict[str, Any] = {}
    if query_address:
        async with grpc.aio.insecure_channel(query_address, options=CHANNEL_OPTIONS) as channel:
            stub = query_pb2_grpc.QueryServiceStub(channel)
            for name, symbols in cases.items():
                times: list[float] = []
                for n in range(warmup + requests):
                    started = time.perf_counter()
                    response = await stub.GetTicker(query_pb2.GetTickerRequest(symbol=symbols(n)), timeout=30)
                    if n >= warmup:
                        times.append(time.perf_counter() - started)
                out[f"grpc ticker {name}"] = {**summary_ms(times), "rows": len(response.items),
                                              "trades_per_symbol": response.items[0].trades}
    if edge_url:
        async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
            for name, symbols in cases.items():
                times = []
                for n in range(warmup + requests):
                    started = time.perf_counter()
                    reply = await http.get("/api/v1/ticker/24hr", params={"symbol": ",".join(symbols(n))})
                    if n >= warmup:
                        times.append(time.perf_counter() - started)
                    if reply.status_code != 200:
                        raise RuntimeError(f"REST ticker answered {reply.status_code}: {reply.text[:300]}")
                out[f"rest ticker {name}"] = {**summary_ms(times), "rows": len(reply.json()["items"])}
    return out


async def explain_candles(database_url: str) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the query service's candle queries for 500 candles."""
    try:
        from marketdata.query import history
        from marketdata.query.intervals import parse_interval, parse_time_zone
    except ImportError:
        return {}
    plans: dict[str, Any] = {}
    conn = await asyncpg.connect(database_url)
    try:
        cases = {}
        for interval, zone in (("1m", "UTC"), ("5m", "UTC"), ("1h", "UTC"), ("1d", "UTC"), ("1d", "Europe/Berlin")):
            query = history.HistoryQuery(QUERY_SYMBOLS[0], "ohlc1m", parse_interval(interval), parse_time_zone(zone),
                                         history.NEGATIVE_INFINITY, history.INFINITY, 500, "desc")
            cases[f"{interval} {zone}"] = history.candle_statement(query, query.end)
        for name, (sql, args) in cases.items():
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
            lines = [r[0] for r in rows]
            # The top node and its buffers, every scan (which index serves the query), the timings.
            key = [lines[0].strip()]
            key += [line.strip() for line in lines[1:2] if line.strip().startswith("Buffers")]
            key += [line.strip().removeprefix("->  ") for line in lines
                    if ("Scan" in line and " using " in line) or "Seq Scan" in line]
            key += [line.strip() for line in lines if line.startswith(("Planning Time", "Execution Time"))]
            plans[name] = {"key_lines": key, "plan": lines}
    finally:
        await conn.close()
    return plans


async def register_symbols(ingest_address: str, symbols: list[str]) -> None:
    """Registers the bench's symbols through IngestService.UpsertSymbols."""
    async with grpc.aio.insecure_channel(ingest_address) as channel:
        await ingest_pb2_grpc.IngestServiceStub(channel).UpsertSymbols(
            ingest_pb2.UpsertSymbolsRequest(items=[market_pb2.Symbol(symbol=s, base=s[:-3], quote="USD", active=True)
                                                   for s in symbols]), metadata=METADATA, timeout=10)
