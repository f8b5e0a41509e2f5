"""Poison messages injected straight into JetStream (past ingest's validation) never stall the aggregator:
each is dead-lettered with PostgreSQL's error while the good ticks around it all commit."""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg
import grpc
import httpx
import nats
from prometheus_client.parser import text_string_to_metric_families

from marketdata.common.embedded import free_port
from marketdata.common.errors import field_violations_of
from marketdata.v1 import aggregator_pb2, aggregator_pb2_grpc, events_pb2, market_pb2
from tests.conftest import KEY
from tests.aggregator.test_exactly_once import aggregator_status, history_count, unique_symbols, wait_committed
from tests.support.processes import wait_for
from tests.support.stack import Stack
from tests.support.ticks import make_ticks, renamed


def poison_batches(symbol: str) -> dict[str, list[market_pb2.Tick]]:
    """One message per class of data PostgreSQL refuses, each also holding a good tick (that goes down with it)."""

    def tick(trade_id: str, **fields: object) -> market_pb2.Tick:
        seconds = fields.pop("seconds", 1_700_000_000)
        made = market_pb2.Tick(symbol=symbol, trade_id=trade_id, price=fields.pop("price", 100.0),
                               size=fields.pop("size", 1.0), **fields)  # type: ignore[arg-type]
        made.event_time.seconds = seconds  # type: ignore[assignment]
        return made

    return {
        "nul-trade-id": [tick("poison-nul-ok"), tick("poison\x00nul")],
        "nul-source": [tick("poison-src", source="feed\x00er")],
        "far-past": [tick("poison-past", seconds=-298_800_000_000)],  # year -7500
        "far-future": [tick("poison-future", seconds=9_300_000_000_000)],  # year ~296,000
        # Each alone is finite; their sum over one minute overflows a double.
        "overflow": [tick("poison-big-1", size=1e308), tick("poison-big-2", size=1e308)],
    }


async def inject(url: str, messages: list[tuple[str, bytes]]) -> None:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for subject, payload in messages:
            await js.publish(subject, payload)
    finally:
        await client.close()


async def dead_letters(url: str, stream: str, since: int) -> list[events_pb2.DeadLetter]:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        letters = []
        for seq in range(since + 1, info.state.last_seq + 1):
            raw = await js.get_msg(stream, seq)
            letters.append(events_pb2.DeadLetter.FromString(raw.data))
        return letters
    finally:
        await client.close()


async def stream_last_seq(url: str, stream: str) -> int:
    client = await nats.connect(url)
    try:
        return (await client.jetstream().stream_info(stream)).state.last_seq
    finally:
        await client.close()


def dead_letter_counter(metrics_port: int, cause: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "aggregator_messages_dead_lettered_total" and sample.labels.get("cause") == cause:
                return sample.value
    return 0.0


def test_each_poison_class_is_dead_lettered_while_10000_good_ticks_commit(start_service, database_url: str) -> None:  # type: ignore[no-untyped-def]
    namespace = uuid.uuid4().hex[:8]
    metrics_port = free_port()
    aggregator = start_service("aggregator", MD_STREAM=f"Q{namespace}", MD_SUBJECT_PREFIX=f"q{namespace}",
                               MD_CONSUMER=f"c{namespace}", METRICS_PORT=str(metrics_port))
    env = aggregator.env
    symbols = unique_symbols("Q", 4)
    deadletter_stream = f"{env['MD_STREAM']}_DEADLETTER"
    first_letter = asyncio.run(stream_last_seq(env["NATS_URL"], deadletter_stream))
    before = aggregator_status(aggregator.address).dead_lettered
    assert before == 0 and dead_letter_counter(metrics_port, "data_error") == 0

    good = make_ticks(symbols, 10_000, seed=31)
    subject = f"{env['MD_SUBJECT_PREFIX']}.ticks"
    messages = []
    for start in range(0, len(good), 100):
        chunk = good[start:start + 100]
        for symbol in symbols:
            items = [t.proto() for t in chunk if t.symbol == symbol]
            messages.append((f"{subject}.{symbol}", events_pb2.TickBatch(items=items).SerializeToString()))
    poisons = poison_batches(symbols[0])
    rng = random.Random(5)
    for name, items in poisons.items():
        # Scattered among the good messages, so each lands in a batch with good neighbours.
        messages.insert(rng.randrange(len(messages)), (f"{subject}.{symbols[0]}",
                                                        events_pb2.TickBatch(items=items).SerializeToString()))
    asyncio.run(inject(env["NATS_URL"], messages))

    wait_committed(database_url, symbols, len(good), timeout=90)
    wait_for(lambda: aggregator_status(aggregator.address).dead_lettered == before + len(poisons), 30,
             message="every poison message dead-lettered")
    status = aggregator_status(aggregator.address)
    assert status.dead_lettered == before + len(poisons)
    assert dead_letter_counter(metrics_port, "data_error") == len(poisons)
    wait_for(lambda: aggregator_status(aggregator.address).ack_pending == 0, 30, message="nothing unacked")
    # Only the good ticks are stored (the poisons' good companions went to the dead letters with them).
    assert asyncio.run(history_count(database_url, symbols)) == len(good)

    letters = asyncio.run(dead_letters(env["NATS_URL"], deadletter_stream, first_letter))
    ours = [letter for letter in letters if letter.subject == f"{subject}.{symbols[0]}"]
    assert len(ours) == len(poisons), [letter.reason for letter in letters]
    for letter in ours:
        assert "SQLSTATE 22" in letter.reason or "SQLSTATE 23" in letter.reason, letter.reason
        assert events_pb2.TickBatch.FromString(letter.payload).items[0].trade_id.startswith("poison")

    # And the consumer goes on committing.
    more = renamed(make_ticks(symbols, 500, seed=32), "after")
    asyncio.run(inject(env["NATS_URL"], [
        (f"{subject}.{t.symbol}", events_pb2.TickBatch(items=[t.proto()]).SerializeToString()) for t in more]))
    wait_committed(database_url, symbols, len(good) + len(more), timeout=60)


def test_rebuild_requests_are_checked_by_the_proto_rules(pipeline: Stack) -> None:
    with grpc.insecure_channel(pipeline.aggregator.address) as channel:
        stub = aggregator_pb2_grpc.AggregatorServiceStub(channel)
        try:
            stub.Rebuild(aggregator_pb2.RebuildRequest(symbol="A..B"), timeout=5, metadata=KEY)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert [field for field, _ in field_violations_of(error)] == ["symbol", "from_time", "to_time"]
        else:
            raise AssertionError("an invalid Rebuild was accepted")


def test_a_message_failing_for_another_reason_is_dead_lettered_after_max_deliver(start_service,
                                                                                 database_url: str) -> None:  # type: ignore[no-untyped-def]
    """A failure that is not the data's (here a trigger raising for one trade id) is retried with a growing
    delay; after AGGREGATOR_MAX_DELIVER deliveries the message is dead-lettered alone, its neighbours commit."""

    async def trigger(create: bool) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            if create:
                await conn.execute("""
                    CREATE FUNCTION stubborn_tick() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                        IF NEW.trade_id = 'stubborn' THEN RAISE EXCEPTION 'not today'; END IF;
                        RETURN NEW;
                    END $$;
                    CREATE TRIGGER stubborn_tick BEFORE INSERT ON ticks_history
                        FOR EACH ROW EXECUTE FUNCTION stubborn_tick();""")
            else:
                await conn.execute("DROP TRIGGER stubborn_tick ON ticks_history; DROP FUNCTION stubborn_tick();")
        finally:
            await conn.close()

    namespace = uuid.uuid4().hex[:8]
    metrics_port = free_port()
    aggregator = start_service("aggregator", MD_STREAM=f"M{namespace}", MD_SUBJECT_PREFIX=f"m{namespace}",
                               MD_CONSUMER=f"c{namespace}", METRICS_PORT=str(metrics_port), AGGREGATOR_MAX_DELIVER="3")
    env = aggregator.env
    symbols = unique_symbols("M", 2)
    good = make_ticks(symbols, 400, seed=71)
    subject = f"{env['MD_SUBJECT_PREFIX']}.ticks"
    stubborn = market_pb2.Tick(symbol=symbols[0], trade_id="stubborn", price=1.0, size=1.0)
    stubborn.event_time.GetCurrentTime()
    messages = [(f"{subject}.{t.symbol}", events_pb2.TickBatch(items=[t.proto()]).SerializeToString()) for t in good]
    messages.insert(200, (f"{subject}.{symbols[0]}", events_pb2.TickBatch(items=[stubborn]).SerializeToString()))
    asyncio.run(trigger(True))
    try:
        asyncio.run(inject(env["NATS_URL"], messages))
        wait_committed(database_url, symbols, len(good), timeout=60)
        wait_for(lambda: aggregator_status(aggregator.address).dead_lettered == 1, 30, message="dead-lettered")
        assert dead_letter_counter(metrics_port, "max_deliver") == 1
        letters = asyncio.run(dead_letters(env["NATS_URL"], f"{env['MD_STREAM']}_DEADLETTER", 0))
        assert [events_pb2.TickBatch.FromString(letter.payload).items[0].trade_id for letter in letters] == ["stubborn"]
        assert "after 3 deliveries" in letters[0].reason and "not today" in letters[0].reason, letters[0].reason
        wait_for(lambda: aggregator_status(aggregator.address).ack_pending == 0, 30, message="nothing unacked")
    finally:
        asyncio.run(trigger(False))
    assert asyncio.run(history_count(database_url, symbols)) == len(good)
