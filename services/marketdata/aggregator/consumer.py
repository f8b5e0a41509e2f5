"""The durable JetStream pull consumer: batch by size or time, one transaction per batch, ack after commit."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import asyncpg
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from prometheus_client import Counter, Gauge

from marketdata.aggregator import rollup
from marketdata.common.config import Settings
from marketdata.common.database import CONNECTION_ERRORS
from marketdata.common.nats import NatsConnection, ensure_streams
from marketdata.v1 import events_pb2, market_pb2

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# A message not acknowledged within this time is redelivered (to this or another replica).
ACK_WAIT_SECONDS = 30.0
MAX_MESSAGES_PER_FETCH = 256
LEDGER_PRUNE_SECONDS = 60.0
THROUGHPUT_WINDOW_SECONDS = 10.0

COMMITTED = Counter("aggregator_ticks_committed_total", "Distinct ticks committed to ticks_history")
DUPLICATES = Counter("aggregator_ticks_duplicate_total", "Ticks skipped as already stored")
DEAD_LETTERED = Counter("aggregator_messages_dead_lettered_total", "Messages moved to the dead-letter subject")
BATCH_SECONDS = Gauge("aggregator_last_batch_seconds", "Duration of the last committed batch transaction")


class PoisonMessage(Exception):
    """A message that can never be processed; it goes to the dead-letter subject."""


@dataclass
class Stats:
    ticks_committed: int = 0
    duplicates_skipped: int = 0
    last_commit: datetime | None = None
    _recent: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)

    def record(self, committed: int, duplicates: int) -> None:
        now = time.monotonic()
        self.ticks_committed += committed
        self.duplicates_skipped += duplicates
        self.last_commit = datetime.now(timezone.utc)
        self._recent.append((now, committed))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - THROUGHPUT_WINDOW_SECONDS:
            self._recent.popleft()

    def ticks_per_second(self) -> float:
        self._trim(time.monotonic())
        return sum(n for _, n in self._recent) / THROUGHPUT_WINDOW_SECONDS


def decode(msg: Msg, settings: Settings) -> list[market_pb2.Tick]:
    """The ticks of a message, or PoisonMessage saying why they cannot be used."""
    try:
        batch = events_pb2.TickBatch.FromString(msg.data)
    except DecodeError as exc:
        raise PoisonMessage(f"not a marketdata.v1.TickBatch: {exc}") from exc
    symbol = msg.subject[len(settings.ticks_subject_prefix) + 1:]
    for index, tick in enumerate(batch.items):
        if tick.symbol != symbol:
            raise PoisonMessage(f"items[{index}].symbol {tick.symbol!r} does not match subject {msg.subject}")
        if not (math.isfinite(tick.price) and tick.price > 0 and math.isfinite(tick.size) and tick.size >= 0):
            raise PoisonMessage(f"items[{index}] has an invalid price or size")
        if not tick.trade_id or not tick.HasField("event_time"):
            raise PoisonMessage(f"items[{index}] lacks a trade_id or event_time")
    return list(batch.items)


class Aggregator:
    def __init__(self, settings: Settings, nats: NatsConnection, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.nats = nats
        self.pool = pool
        self.stats = Stats()
        self.consuming = False
        self._subscription = None

    async def consumer_info(self) -> api.ConsumerInfo:
        client = await self.nats.wait_connected(timeout=2)
        return await client.jetstream().consumer_info(self.settings.stream, self.settings.consumer, timeout=2)

    async def dead_lettered(self) -> int:
        client = await self.nats.wait_connected(timeout=2)
        info = await client.jetstream().stream_info(self.settings.deadletter_stream)
        return info.state.messages

    async def _subscribe(self, client: NATS) -> None:
        await ensure_streams(client, self.settings)
        self._subscription = await client.jetstream().pull_subscribe(
            f"{self.settings.ticks_subject_prefix}.>",
            durable=self.settings.consumer,
            stream=self.settings.stream,
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT_SECONDS,
                deliver_policy=api.DeliverPolicy.ALL,
                max_ack_pending=-1,
                max_waiting=512,
            ),
        )

    async def _fetch_batch(self) -> list[Msg]:
        """Messages until batch_max_ticks ticks are in hand or batch_max_wait_ms passed since the first."""
        assert self._subscription is not None
        messages = await self._subscription.fetch(MAX_MESSAGES_PER_FETCH, timeout=1.0)
        deadline = time.monotonic() + self.settings.batch_max_wait_ms / 1000
        # The size of a message is proportional to its tick count, within a few bytes per tick.
        ticks = sum(len(m.data) for m in messages) // 40
        while ticks < self.settings.batch_max_ticks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                more = await self._subscription.fetch(MAX_MESSAGES_PER_FETCH, timeout=remaining)
            except (NatsTimeoutError, asyncio.TimeoutError):
                break
            messages.extend(more)
            ticks += sum(len(m.data) for m in more) // 40
        return messages

    async def _dead_letter(self, client: NATS, msg: Msg, reason: str) -> None:
        letter = events_pb2.DeadLetter(subject=msg.subject, stream_sequence=msg.metadata.sequence.stream,
                                       reason=reason, payload=msg.data)
        letter.time.GetCurrentTime()
        await client.jetstream().publish(self.settings.deadletter_subject, letter.SerializeToString(),
                                         headers={"Nats-Msg-Id": f"dlq-{self.settings.stream}-"
                                                                 f"{msg.metadata.sequence.stream}"})
        await msg.term()
        DEAD_LETTERED.inc()
        log.error("message dead-lettered", extra={"subject": msg.subject, "reason": reason,
                                                  "sequence": msg.metadata.sequence.stream})

    async def _commit(self, messages: list[tuple[Msg, list[market_pb2.Tick]]]) -> list[asyncpg.Record]:
        """One transaction: ledger, audit rows, ticks and rollups. Returns the live-update rows."""
        stream = self.settings.stream
        async with self.pool.acquire() as conn, conn.transaction():
            ledger = await conn.fetch(rollup.LEDGER_INSERT, stream, [m.metadata.sequence.stream for m, _ in messages])
            fresh = {row["seq"] for row in ledger}
            symbols: list[str] = []
            trade_ids: list[str] = []
            event_us: list[int] = []
            prices: list[float] = []
            sizes: list[float] = []
            sides: list[int] = []
            sources: list[str] = []
            raw: list[tuple[object, ...]] = []
            for msg, ticks in messages:
                seq = msg.metadata.sequence.stream
                if seq not in fresh:
                    continue  # redelivered after an earlier commit: already applied
                for tick in ticks:
                    ts = tick.event_time
                    micros = ts.seconds * 1_000_000 + ts.nanos // 1000
                    symbols.append(tick.symbol)
                    trade_ids.append(tick.trade_id)
                    event_us.append(micros)
                    prices.append(tick.price)
                    sizes.append(tick.size)
                    sides.append(tick.side)
                    sources.append(tick.source)
                    raw.append((stream, seq, tick.symbol, tick.trade_id, EPOCH + timedelta(microseconds=micros),
                                tick.price, tick.size, tick.side, tick.source))
            if not raw:
                return []
            await conn.copy_records_to_table("ticks_raw", records=raw, columns=rollup.RAW_COLUMNS)
            rows = await conn.fetch(rollup.FOLD_TICKS, symbols, trade_ids, event_us, prices, sizes, sides, sources)
        inserted = rows[0]["inserted"] if rows else 0
        self.stats.record(inserted, len(raw) - inserted)
        COMMITTED.inc(inserted)
        DUPLICATES.inc(len(raw) - inserted)
        return rows

    async def _publish_live(self, client: NATS, rows: list[asyncpg.Record]) -> None:
        commit_time = datetime.now(timezone.utc)
        for row in rows:
            update = events_pb2.LiveUpdate(
                symbol=row["symbol"],
                last_tick=market_pb2.Tick(symbol=row["symbol"], trade_id=row["trade_id"], price=row["price"],
                                          size=row["size"], side=row["side"], source=row["source"]),
                candle=market_pb2.Candle(symbol=row["symbol"], open=row["open"], high=row["high"], low=row["low"],
                                         close=row["close"], volume=row["volume"], trades=row["trades"],
                                         vwap=row["vwap"]),
            )
            update.last_tick.event_time.FromDatetime(row["event_time"])
            update.candle.time.FromDatetime(row["bucket"])
            update.commit_time.FromDatetime(commit_time)
            await client.publish(self.settings.live_subject(row["symbol"]), update.SerializeToString())

    async def process(self, client: NATS, messages: list[Msg]) -> None:
        decoded: list[tuple[Msg, list[market_pb2.Tick]]] = []
        for msg in messages:
            try:
                decoded.append((msg, decode(msg, self.settings)))
            except PoisonMessage as exc:
                await self._dead_letter(client, msg, str(exc))
        if not decoded:
            return
        started = time.perf_counter()
        rows = await self._commit(decoded)
        BATCH_SECONDS.set(time.perf_counter() - started)
        for msg, _ in decoded:
            await msg.ack()
        await self._publish_live(client, rows)

    async def run(self, stopping: asyncio.Event) -> None:
        """Consumes until stopping is set; survives NATS and PostgreSQL outages."""
        client = await self.nats.wait_connected()
        while not stopping.is_set():
            try:
                if self._subscription is None:
                    await self._subscribe(client)
                    self.consuming = True
                messages = await self._fetch_batch()
            except (NatsTimeoutError, asyncio.TimeoutError):
                continue
            except Exception as exc:  # noqa: BLE001 - NATS away: retry the subscription
                log.warning("cannot consume from JetStream", extra={"error": str(exc) or type(exc).__name__})
                self.consuming = False
                self._subscription = None
                await asyncio.sleep(1)
                continue
            try:
                await self.process(client, messages)
            except CONNECTION_ERRORS + (asyncpg.PostgresError,) as exc:
                # Not acknowledged: JetStream redelivers; the ledger makes the retry exact.
                log.warning("batch not committed, will be redelivered", extra={"error": str(exc) or type(exc).__name__,
                                                                               "messages": len(messages)})
                for msg in messages:
                    try:
                        await msg.nak(delay=1)
                    except Exception:  # noqa: BLE001 - redelivered after ack_wait anyway
                        pass
                await asyncio.sleep(1)

    async def prune_ledger(self, stopping: asyncio.Event) -> None:
        """Drops ledger rows below the ack floor: those messages can never be redelivered."""
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), LEDGER_PRUNE_SECONDS)
                return
            except asyncio.TimeoutError:
                pass
            try:
                info = await self.consumer_info()
                floor = info.ack_floor.stream_seq if info.ack_floor else 0
                if floor:
                    await self.pool.execute(rollup.LEDGER_PRUNE, self.settings.stream, floor)
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("ledger prune failed", extra={"error": str(exc) or type(exc).__name__})
