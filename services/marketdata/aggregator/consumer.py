"""The durable JetStream pull consumer: batch by size or time, one transaction per batch, ack after commit.

Pipelined: while one batch commits, the next is fetched and decoded. A batch closes when it holds
batch_max_ticks ticks, when batch_max_wait_ms passed since its first message, or as soon as the committer is
idle and JetStream has nothing more to deliver right now, so a quiet feed is committed at once and a busy
one in large batches. Up to AGGREGATOR_COMMIT_CONCURRENCY batches commit at once, each in its own transaction; each
message is acknowledged only after the transaction holding its ledger row committed. A batch is one
statement (rollup.COMMIT_BATCH_JOINED): one round trip.

Ledger: keyed by the stream's incarnation (`<name>@<creation time>`, read on subscribe), so a stream
recreated with sequences starting at 1 again never meets the rows of its predecessor; pruning keeps the
incarnation's ack floor in ledger_floors, so a recreated consumer delivering the stream from its start
skips what was applied before (rollup.LEDGER_PRUNE, LEDGER_RECONCILE).

Poison: a batch PostgreSQL refuses with a data error (SQLSTATE class 22, data exception, or 23, integrity
constraint violation) is split in halves until the message at fault stands alone; that message goes to the
dead-letter stream with the error, every other one commits. Any other failure (PostgreSQL away, a
timeout) is redelivered with a growing delay, and a message still failing after AGGREGATOR_MAX_DELIVER
deliveries is dead-lettered too, so one message can never stop the consumer (nor its ack floor).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import asyncpg
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.context import Context
from prometheus_client import Counter, Gauge

from marketdata.aggregator import rollup
from marketdata.common.config import Settings
from marketdata.common.database import DATABASE_ERRORS
from marketdata.common.nats import NATS_ERRORS, NatsConnection, ensure_streams
from marketdata.common.runner import sleep_unless
from marketdata.common.tracing import extract, inject, span_context_of, tracer
from marketdata.v1 import events_pb2, market_pb2

log = logging.getLogger(__name__)

# A message not acknowledged within this time is redelivered (to this or another replica).
ACK_WAIT_SECONDS = 30.0
MAX_MESSAGES_PER_FETCH = 256
# How long to look for more messages once the committer is idle, before committing what is in hand.
IDLE_POLL_SECONDS = 0.002
# How often to look for more messages (and whether the committer is done) while it is busy.
BUSY_POLL_SECONDS = 0.005
# Redelivery delay after a failed commit: doubles with each delivery of the message, up to this.
MAX_REDELIVERY_DELAY_SECONDS = 30.0
# SQLSTATE classes of errors caused by the data itself: retrying the same batch can never succeed.
DATA_ERROR_CLASSES = ("22", "23")
THROUGHPUT_WINDOW_SECONDS = 10.0
# With nothing to fetch for this long, check that the consumer still exists (its stream may have been
# deleted and recreated, which deletes the consumer too).
IDLE_CONSUMER_CHECK_SECONDS = 5.0

COMMITTED = Counter("aggregator_ticks_committed_total", "Distinct ticks committed to ticks_history")
DUPLICATES = Counter("aggregator_ticks_duplicate_total", "Ticks skipped as already stored")
DEAD_LETTERED = Counter("aggregator_messages_dead_lettered_total", "Messages moved to the dead-letter subject",
                        ["cause"])
BATCH_SECONDS = Gauge("aggregator_last_batch_seconds", "Duration of the last committed batch transaction")


class PoisonMessage(Exception):
    """A message that can never be processed; it goes to the dead-letter subject."""


def is_data_error(exc: BaseException) -> bool:
    """PostgreSQL refused the data itself (SQLSTATE class 22 or 23), not the moment."""
    state = getattr(exc, "sqlstate", None)
    return isinstance(exc, asyncpg.PostgresError) and isinstance(state, str) and state[:2] in DATA_ERROR_CLASSES


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


_INF = math.inf


@dataclass
class Decoded:
    """One message and its ticks."""

    msg: Msg
    seq: int
    ticks: rollup.TickColumns
    # The stream incarnation it was delivered from (its ledger key).
    stream_key: str = ""
    # The trace context ingest published it in (its traceparent header): the commit's parent or link.
    context: Context | None = None

    def __len__(self) -> int:
        return len(self.ticks)


def decode_columns(msg: Msg, settings: Settings) -> Decoded:
    """The ticks of a message as columns, or PoisonMessage saying why they cannot be used."""
    try:
        items = events_pb2.TickBatch.FromString(msg.data).items
    except DecodeError as exc:
        raise PoisonMessage(f"not a marketdata.v1.TickBatch: {exc}") from exc
    symbol = msg.subject[len(settings.ticks_subject_prefix) + 1:]
    columns = rollup.TickColumns()
    symbols, trade_ids, event_us, prices = columns.symbols, columns.trade_ids, columns.event_us, columns.prices
    sizes, sides, sources = columns.sizes, columns.sides, columns.sources
    for tick in items:  # one pass, one wrapper object per tick; the checks run on the columns below
        if not tick.HasField("event_time"):
            raise PoisonMessage(f"items[{len(symbols)}] lacks a trade_id or event_time")
        ts = tick.event_time
        symbols.append(tick.symbol)
        trade_ids.append(tick.trade_id)
        event_us.append(ts.seconds * 1_000_000 + ts.nanos // 1000)
        prices.append(tick.price)
        sizes.append(tick.size)
        sides.append(tick.side)
        sources.append(tick.source)
    if symbols.count(symbol) != len(symbols):
        index = next(i for i, s in enumerate(symbols) if s != symbol)
        raise PoisonMessage(f"items[{index}].symbol {symbols[index]!r} does not match subject {msg.subject}")
    # NaN fails every comparison, so these also reject NaN.
    if not (all(0 < p < _INF for p in prices) and all(0 <= z < _INF for z in sizes)):
        index = next(i for i, (p, z) in enumerate(zip(prices, sizes)) if not (0 < p < _INF and 0 <= z < _INF))
        raise PoisonMessage(f"items[{index}] has an invalid price or size")
    if not all(trade_ids):
        raise PoisonMessage(f"items[{trade_ids.index('')}] lacks a trade_id or event_time")
    return Decoded(msg, msg.metadata.sequence.stream, columns, context=extract(msg.headers))


class Aggregator:
    def __init__(self, settings: Settings, nats: NatsConnection, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.nats = nats
        self.pool = pool
        self.stats = Stats()
        self.consuming = False
        self._subscription = None
        # The ledger's key of the stream incarnation being consumed (rollup.stream_incarnation).
        self.stream_key = settings.stream
        self._carry: list[Decoded] = []
        self._ticks_per_message = 100

    async def consumer_info(self) -> api.ConsumerInfo:
        client = await self.nats.wait_connected(timeout=2)
        return await client.jetstream().consumer_info(self.settings.stream, self.settings.consumer, timeout=2)

    async def dead_lettered(self) -> int:
        client = await self.nats.wait_connected(timeout=2)
        info = await client.jetstream().stream_info(self.settings.deadletter_stream)
        return info.state.messages

    async def _subscribe(self, client: NATS) -> None:
        await ensure_streams(client, self.settings)
        js = client.jetstream()
        info = await js.stream_info(self.settings.stream)
        key = rollup.stream_incarnation(self.settings.stream, info.created)
        if key != self.stream_key:
            await self.pool.execute(rollup.LEDGER_RECONCILE, self.settings.stream, key)
            log.info("consuming stream incarnation", extra={"stream": key})
        self.stream_key = key
        self._subscription = await js.pull_subscribe(
            f"{self.settings.ticks_subject_prefix}.>",
            durable=self.settings.consumer,
            stream=self.settings.stream,
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT_SECONDS,
                deliver_policy=api.DeliverPolicy.ALL,
                max_ack_pending=-1,
                max_waiting=512,
                max_deliver=self.settings.max_deliver,
            ),
        )

    async def _fetch_batch(self, client: NATS, committer_idle: Callable[[], bool]) -> list[Decoded]:
        """Decoded messages until batch_max_ticks ticks are in hand, batch_max_wait_ms passed since the first,
        or the committer is idle and nothing more is available now. Poison messages are dead-lettered here;
        messages beyond batch_max_ticks are kept for the next batch."""
        assert self._subscription is not None
        batch, self._carry = self._carry, []
        ticks = sum(len(d) for d in batch)
        limit = self.settings.batch_max_ticks
        deadline = None if not batch else time.monotonic() + self.settings.batch_max_wait_ms / 1000
        while ticks < limit:
            if deadline is None:
                # Nothing in hand: wait for the first message alone. A waiting pull for more (nats-py's fetch
                # collects until the batch is full or the pull expires) held a lone tick for up to its 1 s.
                timeout, wanted = 1.0, 1
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                timeout = min(remaining, IDLE_POLL_SECONDS if committer_idle() else BUSY_POLL_SECONDS)
                # About as many messages as the batch still has room for.
                wanted = max(1, min(MAX_MESSAGES_PER_FETCH, -(-(limit - ticks) // max(1, self._ticks_per_message))))
            try:
                messages = await self._subscription.fetch(wanted, timeout=timeout)
            except (NatsTimeoutError, asyncio.TimeoutError):
                if deadline is None:
                    raise
                if committer_idle():
                    break
                continue
            if deadline is None:
                deadline = time.monotonic() + self.settings.batch_max_wait_ms / 1000
            for msg in messages:
                try:
                    decoded = decode_columns(msg, self.settings)
                except PoisonMessage as exc:
                    await self._dead_letter(client, msg, str(exc), "undecodable")
                    continue
                decoded.stream_key = self.stream_key
                if ticks >= limit:
                    self._carry.append(decoded)
                    continue
                batch.append(decoded)
                ticks += len(decoded)
                self._ticks_per_message = max(1, (self._ticks_per_message * 7 + len(decoded)) // 8)
        return batch

    async def _dead_letter(self, client: NATS, msg: Msg, reason: str, cause: str) -> None:
        letter = events_pb2.DeadLetter(subject=msg.subject, stream_sequence=msg.metadata.sequence.stream,
                                       reason=reason, payload=msg.data)
        letter.time.GetCurrentTime()
        await client.jetstream().publish(self.settings.deadletter_subject, letter.SerializeToString(),
                                         headers={"Nats-Msg-Id": f"dlq-{self.stream_key}-"
                                                                 f"{msg.metadata.sequence.stream}"})
        await msg.term()
        DEAD_LETTERED.labels(cause).inc()
        log.error("message dead-lettered", extra={"subject": msg.subject, "reason": reason,
                                                  "sequence": msg.metadata.sequence.stream})

    async def _commit(self, batch: list[Decoded]) -> tuple[list[asyncpg.Record], trace.Span]:
        """One statement, hence one transaction: ledger, audit rows, ticks and rollups. Returns the
        live-update rows (none when no tick was new) and the (ended) `aggregator.commit` span, the parent of
        what follows from the commit. Its parent is the first message's trace; the others' are links."""
        seqs: list[int] = []
        tick_seqs: list[int] = []
        ticks = rollup.TickColumns()
        for decoded in batch:
            seqs.append(decoded.seq)
            tick_seqs.extend([decoded.seq] * len(decoded))
            ticks.extend(decoded.ticks)
        links = [trace.Link(context) for context in (span_context_of(d.context) for d in batch[1:])
                 if context.is_valid]
        with tracer.start_as_current_span("aggregator.commit", context=batch[0].context, links=links,
                                          attributes={"messages": len(batch), "ticks": len(ticks)}) as span:
            # One batch comes from one subscription, hence one stream incarnation.
            rows = await self.pool.fetch(*rollup.commit_arguments(batch[0].stream_key, seqs, tick_seqs, ticks))
            inserted = rows[0]["inserted"] if rows else 0
            span.set_attribute("inserted", inserted)
        received = rows[0]["received"] if rows else 0
        if received:
            self.stats.record(inserted, received - inserted)
            COMMITTED.inc(inserted)
            DUPLICATES.inc(received - inserted)
        return [row for row in rows if row["symbol"] is not None], span

    async def _publish_live(self, client: NATS, rows: list[asyncpg.Record]) -> None:
        """One live update per (symbol, minute) the batch touched, in time order per symbol. Concurrent commits
        may publish a minute's snapshots out of order: the live feed keeps the one with the most trades."""
        commit_time = datetime.now(timezone.utc)
        for row in rows:
            update = events_pb2.LiveUpdate(
                symbol=row["symbol"],
                last_tick=market_pb2.Tick(symbol=row["symbol"], trade_id=row["trade_id"], price=row["price"],
                                          size=row["size"], side=row["side"], source=row["source"]),
                candle=market_pb2.Candle(symbol=row["symbol"], open=row["open"], high=row["high"], low=row["low"],
                                         close=row["close"], volume=row["volume"], trades=row["trades"],
                                         vwap=row["vwap"], quote_volume=row["quote_volume"],
                                         taker_buy_volume=row["taker_buy_volume"],
                                         taker_buy_quote_volume=row["taker_buy_quote_volume"],
                                         sma10=row["sma10"]),
            )
            update.last_tick.event_time.FromDatetime(row["event_time"])
            update.candle.time.FromDatetime(row["bucket"])
            update.candle.close_time.FromDatetime(row["bucket"] + timedelta(minutes=1))
            update.candle.closed = row["bucket"] + timedelta(minutes=1) <= commit_time
            update.commit_time.FromDatetime(commit_time)
            # The commit's trace context (process() runs this inside its span): the SSE write joins the trace.
            await client.publish(self.settings.live_subject(row["symbol"]), update.SerializeToString(),
                                 headers=inject() or None)

    async def process(self, client: NATS, batch: list[Decoded]) -> None:
        if not batch:
            return
        started = time.perf_counter()
        rows, span = await self._commit(batch)
        BATCH_SECONDS.set(time.perf_counter() - started)
        for decoded in batch:
            await decoded.msg.ack()
        with trace.use_span(span):  # the live updates carry the commit's trace
            await self._publish_live(client, rows)

    async def _process_or_redeliver(self, client: NATS, batch: list[Decoded]) -> None:
        try:
            await self.process(client, batch)
        except DATABASE_ERRORS as exc:
            if is_data_error(exc):
                await self._split(client, batch, exc)
                return
            error = f"{type(exc).__name__}: {exc}"
            if len(batch) > 1 and any(self._last_delivery(d) for d in batch):
                # Before giving up on a message, try each alone: neighbours never share its fate.
                for decoded in batch:
                    await self._process_or_redeliver(client, [decoded])
                return
            # Not acknowledged: JetStream redelivers; the ledger makes the retry exact.
            log.warning("batch not committed, will be redelivered", extra={"error": error, "messages": len(batch)})
            await self._redeliver_or_give_up(client, batch, error)
            await asyncio.sleep(1)

    def _last_delivery(self, decoded: Decoded) -> bool:
        return (decoded.msg.metadata.num_delivered or 1) >= self.settings.max_deliver

    async def _split(self, client: NATS, batch: list[Decoded], error: BaseException) -> None:
        """Commits the batch in halves until the message PostgreSQL refuses stands alone, and dead-letters it."""
        if len(batch) == 1:
            state = getattr(error, "sqlstate", "")
            try:
                await self._dead_letter(client, batch[0].msg, f"PostgreSQL refused it (SQLSTATE {state}): {error}",
                                        "data_error")
            except NATS_ERRORS as exc:  # NATS away: not acked, so redelivered and split again
                log.warning("cannot dead-letter a message", extra={"error": str(exc) or type(exc).__name__})
            return
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            try:
                await self.process(client, half)
            except DATABASE_ERRORS as exc:
                if is_data_error(exc):
                    await self._split(client, half, exc)
                else:
                    await self._redeliver_or_give_up(client, half, f"{type(exc).__name__}: {exc}")

    async def _redeliver_or_give_up(self, client: NATS, batch: list[Decoded], error: str) -> None:
        """Naks each message with a delay growing with its deliveries; dead-letters one that had its last."""
        limit = self.settings.max_deliver
        for decoded in batch:
            delivered = decoded.msg.metadata.num_delivered or 1
            with contextlib.suppress(NATS_ERRORS):  # NATS away: redelivered after ack_wait anyway
                if delivered >= limit:
                    await self._dead_letter(client, decoded.msg, f"not committed after {delivered} deliveries: "
                                                                 f"{error}", "max_deliver")
                else:
                    await decoded.msg.nak(delay=min(MAX_REDELIVERY_DELAY_SECONDS, 2.0 ** (delivered - 1)))

    async def run(self, stopping: asyncio.Event) -> None:
        """Consumes until stopping is set; survives NATS and PostgreSQL outages."""
        client = await self.nats.wait_connected()
        committing: set[asyncio.Task[None]] = set()

        def committer_idle() -> bool:
            return sum(1 for task in committing if not task.done()) < self.settings.commit_concurrency

        checked = time.monotonic()
        try:
            while not stopping.is_set():
                try:
                    if self._subscription is None:
                        self._carry = []
                        await self._subscribe(client)
                        self.consuming = True
                    batch = await self._fetch_batch(client, committer_idle)
                    checked = time.monotonic()
                except (NatsTimeoutError, asyncio.TimeoutError):
                    if time.monotonic() - checked >= IDLE_CONSUMER_CHECK_SECONDS:
                        checked = time.monotonic()
                        await self._check_subscription(client)
                    continue
                except (*NATS_ERRORS, *DATABASE_ERRORS) as exc:  # NATS away (or PostgreSQL, reconciling the ledger)
                    log.warning("cannot consume from JetStream", extra={"error": str(exc) or type(exc).__name__})
                    await self._drop_subscription()
                    await asyncio.sleep(1)
                    continue
                while len(committing) >= self.settings.commit_concurrency:
                    done, _ = await asyncio.wait(committing, return_when=asyncio.FIRST_COMPLETED)
                    committing -= done
                    for task in done:
                        task.result()  # an unexpected error stops the consumer, as it always did
                committing.add(asyncio.create_task(self._process_or_redeliver(client, batch)))
        finally:
            if committing:
                await asyncio.shield(asyncio.gather(*committing, return_exceptions=True))

    async def _drop_subscription(self) -> None:
        self.consuming = False
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(NATS_ERRORS):  # the connection may be gone; nothing to release then
                await subscription.unsubscribe()

    async def _check_subscription(self, client: NATS) -> None:
        """Resubscribes when the stream was recreated (another incarnation) or the consumer deleted."""
        js = client.jetstream()
        try:
            info = await js.stream_info(self.settings.stream)
            if rollup.stream_incarnation(self.settings.stream, info.created) == self.stream_key:
                await js.consumer_info(self.settings.stream, self.settings.consumer, timeout=2)
                return
            log.warning("the stream was recreated: resubscribing", extra={"stream": self.settings.stream})
        except NotFoundError:
            log.warning("the stream or the consumer is gone: resubscribing", extra={"stream": self.settings.stream})
        except NATS_ERRORS as exc:  # NATS away: the next fetch fails and resubscribes
            log.debug("subscription check failed", extra={"error": str(exc) or type(exc).__name__})
            return
        await self._drop_subscription()

    async def prune_ledger(self, stopping: asyncio.Event) -> None:
        """Drops ledger rows below the ack floor (those messages can never be redelivered), keeping the floor."""
        while not stopping.is_set():
            if await sleep_unless(stopping, self.settings.ledger_prune_seconds):
                return
            try:
                client = await self.nats.wait_connected(timeout=2)
                # The incarnation first, then its consumer's floor: a floor is never applied to a newer one.
                stream = await client.jetstream().stream_info(self.settings.stream)
                key = rollup.stream_incarnation(self.settings.stream, stream.created)
                if key != self.stream_key:
                    continue  # the consumer resubscribes to the new incarnation first
                info = await self.consumer_info()
                floor = info.ack_floor.stream_seq if info.ack_floor else 0
                if floor:
                    await self.pool.execute(rollup.LEDGER_PRUNE, key, floor)
            except (*NATS_ERRORS, *DATABASE_ERRORS) as exc:  # NATS or PostgreSQL away: try again next round
                log.warning("ledger prune failed", extra={"error": str(exc) or type(exc).__name__})
