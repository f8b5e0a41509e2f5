"""The exactly-once ledger across stream and consumer recreation, and prices stored exactly."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from decimal import Decimal

import asyncpg
import grpc
import nats

from marketdata.v1 import ingest_pb2, ingest_pb2_grpc
from tests.aggregator.test_exactly_once import unique_symbols, wait_committed
from tests.conftest import API_KEY, KEY
from tests.support.processes import wait_for
from tests.support.stack import Stack
from tests.support.ticks import TickSpec, batches, make_ticks, publish, renamed


def isolated_pipeline(start_service, tmp_path, prefix: str, symbol_count: int, **extra: str):  # type: ignore[no-untyped-def]
    """ingest and aggregator on a stream of their own, with registered symbols: (env, ingest, symbols)."""
    namespace = uuid.uuid4().hex[:8]
    env = {"MD_STREAM": f"L{namespace}", "MD_SUBJECT_PREFIX": f"l{namespace}", "MD_CONSUMER": f"c{namespace}",
           **extra}
    ingest = start_service("ingest", **env)
    aggregator = start_service("aggregator", **env)
    symbols = unique_symbols(prefix, symbol_count)
    Stack(ingest.env, tmp_path, API_KEY, ingest, aggregator).seed_symbols(*symbols)
    return ingest.env, ingest, symbols


async def fetch(database_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def raw_and_history(database_url: str, symbols: list[str]) -> tuple[int, int, int]:
    """(ticks_raw rows, distinct (symbol, trade_id) of ticks_raw, ticks_history rows) of the symbols."""
    row = asyncio.run(fetch(database_url, """
        SELECT (SELECT count(*) FROM ticks_raw WHERE symbol = ANY($1)) AS raw,
               (SELECT count(DISTINCT (symbol, trade_id)) FROM ticks_raw WHERE symbol = ANY($1)) AS distinct_raw,
               (SELECT count(*) FROM ticks_history WHERE symbol = ANY($1)) AS history""", symbols))[0]
    return row["raw"], row["distinct_raw"], row["history"]


def publish_retrying(address: str, items: list[TickSpec], acked: list[tuple[float, list[TickSpec]]],
                     running: threading.Event, pause_after: int) -> None:
    """Publishes batches of 100 while `running` is set, retrying UNAVAILABLE; records when each batch was
    acknowledged. Clears `running` itself once `pause_after` batches are acknowledged."""
    with grpc.insecure_channel(address) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for chunk in batches(items, 100):
            running.wait()
            request = ingest_pb2.PublishTicksRequest(items=[t.proto() for t in chunk])
            last = ""
            for _ in range(100):
                try:
                    stub.PublishTicks(request, metadata=KEY, timeout=10)
                    break
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    last = exc.details() or ""
                    time.sleep(0.1)
            else:
                raise AssertionError(f"ingest stayed UNAVAILABLE: {last}")
            acked.append((time.monotonic(), chunk))
            if len(acked) == pause_after:
                running.clear()


def test_stream_deleted_and_recreated_under_load_keeps_the_ledger_exact(start_service, database_url: str,
                                                                         tmp_path) -> None:  # type: ignore[no-untyped-def]
    env, ingest, symbols = isolated_pipeline(start_service, tmp_path, "R", 4)
    # Before: the old incarnation's ledger holds sequences from 1 on (not pruned yet).
    before = make_ticks(symbols, 3_000, seed=41)
    publish(ingest.address, API_KEY, before, 100)
    wait_committed(database_url, symbols, len(before), timeout=60)

    during = renamed(make_ticks(symbols, 6_000, seed=42), "new")
    acked: list[tuple[float, list[TickSpec]]] = []
    running = threading.Event()
    running.set()
    # After 10 batches the producer holds its next one while the stream is deleted (the aggregator is still
    # busy): the nats-server of the tests (2.9) can wedge a stream created while its deletion is under way.
    publisher = threading.Thread(target=publish_retrying, args=(ingest.address, during, acked, running, 10))
    publisher.start()
    wait_for(lambda: not running.is_set(), 30, message="load running")
    assert len(acked) == 10

    async def delete_stream() -> None:
        client = await nats.connect(env["NATS_URL"])
        try:
            await client.jetstream().delete_stream(env["MD_STREAM"])
        finally:
            await client.close()

    asyncio.run(delete_stream())
    deleted_at = time.monotonic()
    time.sleep(1)
    running.set()  # ingest recreates the stream on its next publish, as it does when a NATS lost its store
    publisher.join(timeout=120)
    assert not publisher.is_alive()

    # Every tick acknowledged after the deletion went to the new incarnation (sequences from 1 again) and
    # must be applied, not taken for a redelivery of the old one.
    after = [t for at, chunk in acked if at > deleted_at for t in chunk]
    assert len(after) > 1_000
    wanted = {(t.symbol, t.trade_id) for t in after}

    def applied() -> bool:
        rows = asyncio.run(fetch(database_url, "SELECT symbol, trade_id FROM ticks_history WHERE symbol = ANY($1)",
                                 symbols))
        return wanted <= {(r["symbol"], r["trade_id"]) for r in rows}

    wait_for(applied, 90, interval=0.5, message="every tick acknowledged after the recreation stored")
    raw, distinct_raw, history = raw_and_history(database_url, symbols)
    assert raw == distinct_raw == history, (raw, distinct_raw, history)  # nothing applied twice
    streams = asyncio.run(fetch(database_url, "SELECT DISTINCT stream FROM ticks_raw WHERE symbol = ANY($1)",
                                symbols))
    assert len({r["stream"] for r in streams}) == 2  # two incarnations, each named in the audit rows


def test_recreated_consumer_never_doubles_ticks_raw(start_service, database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env, ingest, symbols = isolated_pipeline(start_service, tmp_path, "C", 2, AGGREGATOR_LEDGER_PRUNE_SECONDS="0.5")
    first = make_ticks(symbols, 2_000, seed=51)
    publish(ingest.address, API_KEY, first, 200)
    wait_committed(database_url, symbols, len(first), timeout=60)

    def pruned() -> bool:
        rows = asyncio.run(fetch(database_url, """
            SELECT (SELECT count(*) FROM processed_messages WHERE left(stream, length($1) + 1) = $1 || '@') AS rows,
                   (SELECT max(seq) FROM ledger_floors WHERE left(stream, length($1) + 1) = $1 || '@') AS floor""",
                                 env["MD_STREAM"]))
        return rows[0]["rows"] == 0 and (rows[0]["floor"] or 0) > 0

    wait_for(pruned, 30, interval=0.5, message="ledger pruned to its floor")

    async def delete_consumer() -> None:
        client = await nats.connect(env["NATS_URL"])
        try:
            await client.jetstream().delete_consumer(env["MD_STREAM"], env["MD_CONSUMER"])
        finally:
            await client.close()

    asyncio.run(delete_consumer())

    async def consumer_caught_up() -> bool:
        client = await nats.connect(env["NATS_URL"])
        try:
            js = client.jetstream()
            info = await js.consumer_info(env["MD_STREAM"], env["MD_CONSUMER"])
            last = (await js.stream_info(env["MD_STREAM"])).state.last_seq
            return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq == last
        except Exception:  # noqa: BLE001 - not recreated yet
            return False
        finally:
            await client.close()

    # The aggregator recreates its consumer, which delivers the whole stream again: nothing is applied twice.
    wait_for(lambda: asyncio.run(consumer_caught_up()), 60, interval=0.5, message="recreated consumer caught up")
    assert raw_and_history(database_url, symbols) == (len(first), len(first), len(first))
    second = renamed(make_ticks(symbols, 300, seed=52), "more")
    publish(ingest.address, API_KEY, second, 100)
    wait_committed(database_url, symbols, len(first) + len(second), timeout=60)
    total = len(first) + len(second)
    assert raw_and_history(database_url, symbols) == (total, total, total)


def test_prices_with_17_significant_digits_are_stored_exactly(pipeline: Stack, database_url: str) -> None:
    symbols = unique_symbols("X", 1)
    pipeline.seed_symbols(*symbols)
    prices = [1.2345678901234567, 98765.43210987654, 0.10000000000000002, 123456789.01234567, 3.0000000000000004,
              1e-12, 999999999999.9999]
    template = make_ticks(symbols, len(prices), minutes=1, seed=61)
    ticks = [TickSpec(t.symbol, f"p{n}", t.event_us + n, price, 1.0000000000000002)
             for n, (t, price) in enumerate(zip(template, prices))]
    publish(pipeline.ingest.address, pipeline.api_key, ticks)
    wait_committed(database_url, symbols, len(ticks), timeout=30)
    rows = asyncio.run(fetch(database_url, """
        SELECT h.trade_id, h.price::text AS history_text, h.size::text AS size_text, r.price AS raw
        FROM ticks_history h JOIN ticks_raw r USING (symbol, trade_id) WHERE h.symbol = $1""", symbols[0]))
    by_id = {r["trade_id"]: r for r in rows}
    for tick in ticks:
        row = by_id[tick.trade_id]
        assert row["raw"] == tick.price  # the double, as received
        assert Decimal(row["history_text"]) == Decimal(repr(tick.price)), row  # its shortest exact decimal
        assert float(row["history_text"]) == tick.price
        assert Decimal(row["size_text"]) == Decimal("1.0000000000000002")
    candles = asyncio.run(fetch(database_url, "SELECT open, high, low, close FROM ohlc_1m WHERE symbol = $1",
                                symbols[0]))
    extremes = {float(c["high"]) for c in candles} | {float(c["low"]) for c in candles}
    assert max(prices) in extremes and min(prices) in extremes
    assert all(Decimal(repr(float(value))) == value for c in candles for value in c.values())
