"""Ticks through ingest → JetStream → aggregator end up in the rollups exactly once, whatever happens."""

from __future__ import annotations

import asyncio
import threading
import uuid
from decimal import Decimal

import asyncpg
import grpc
import nats
import pytest

from marketdata.v1 import aggregator_pb2, aggregator_pb2_grpc, events_pb2
from tests.conftest import API_KEY, KEY
from tests.support.processes import wait_for
from tests.support.stack import Stack
from tests.support.ticks import (TickSpec, assert_rollups_match, expected_minutes, make_ticks, publish, stored_minutes,
                                 with_duplicates)


def unique_symbols(prefix: str, count: int) -> list[str]:
    tag = uuid.uuid4().hex[:5].upper()
    return [f"{prefix}{tag}{n:02d}" for n in range(count)]


async def history_count(database_url: str, symbols: list[str]) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM ticks_history WHERE symbol = ANY($1)", symbols)
    finally:
        await conn.close()


def wait_committed(database_url: str, symbols: list[str], count: int, timeout: float = 90) -> None:
    wait_for(lambda: asyncio.run(history_count(database_url, symbols)) == count, timeout, interval=0.5,
             message=f"{count} ticks in ticks_history")


def aggregator_status(address: str) -> aggregator_pb2.GetStatusResponse:
    with grpc.insecure_channel(address) as channel:
        return aggregator_pb2_grpc.AggregatorServiceStub(channel).GetStatus(aggregator_pb2.GetStatusRequest(),
                                                                              timeout=5)


def test_50k_ticks_with_duplicates_and_shuffled_order_give_exact_rollups(pipeline: Stack, database_url: str) -> None:
    symbols = unique_symbols("E", 20)
    pipeline.seed_symbols(*symbols)
    distinct = make_ticks(symbols, 50_000)
    sent = with_duplicates(distinct, 0.05)

    accepted, duplicates = publish(pipeline.ingest.address, pipeline.api_key, sent)

    assert accepted + duplicates == len(sent)
    wait_committed(database_url, symbols, len(distinct))
    ohlc, metrics = asyncio.run(stored_minutes(database_url, symbols))
    expected = expected_minutes(distinct)
    assert_rollups_match(expected, ohlc, metrics)
    assert sum((row["volume"] for row in ohlc.values()), Decimal(0)) == sum(
        (Decimal(repr(t.size)) for t in distinct), Decimal(0))
    wait_for(lambda: aggregator_status(pipeline.aggregator.address).consumer_pending == 0, 30,
             message="consumer caught up")


def test_aggregator_killed_mid_load_loses_nothing_and_counts_nothing_twice(start_service, database_url: str) -> None:
    namespace = uuid.uuid4().hex[:8]
    isolated = {"MD_STREAM": f"K{namespace}", "MD_SUBJECT_PREFIX": f"k{namespace}", "MD_CONSUMER": f"c{namespace}",
                "AGGREGATOR_BATCH_MAX_TICKS": "2000"}
    ingest = start_service("ingest", **isolated)
    aggregator = start_service("aggregator", **isolated)
    symbols = unique_symbols("K", 20)
    seed = Stack(ingest.env, ingest.log_path.parent, API_KEY, ingest, aggregator)
    seed.seed_symbols(*symbols)
    distinct = make_ticks(symbols, 50_000, seed=21)
    sent = with_duplicates(distinct, 0.05, seed=22)
    result: dict[str, tuple[int, int]] = {}
    publisher = threading.Thread(target=lambda: result.update(sent=publish(ingest.address, API_KEY, sent, 500)))
    publisher.start()

    # Kill while batches are being committed: some ticks are in, many are still flowing.
    wait_for(lambda: asyncio.run(history_count(database_url, symbols)) > 2_000, 60, interval=0.05,
             message="first commits")
    aggregator.kill()
    publisher.join(120)
    start_service("aggregator", port=aggregator.port, **isolated)

    accepted, duplicates = result["sent"]
    assert accepted + duplicates == len(sent)
    wait_committed(database_url, symbols, len(distinct))
    ohlc, metrics = asyncio.run(stored_minutes(database_url, symbols))
    assert_rollups_match(expected_minutes(distinct), ohlc, metrics)

    async def audit() -> tuple[int, int]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetchval("SELECT count(*) FROM ticks_raw WHERE symbol = ANY($1)", symbols)
            repeated = await conn.fetchval(
                """SELECT count(*) FROM (SELECT 1 FROM ticks_raw WHERE symbol = ANY($1)
                   GROUP BY stream, stream_seq, symbol, trade_id HAVING count(*) > 1) AS r""", symbols)
            return rows, repeated
        finally:
            await conn.close()

    raw_rows, repeated = asyncio.run(audit())
    assert repeated == 0, "a redelivered message wrote its audit rows twice"
    assert raw_rows == accepted, "every tick JetStream stored appears once in ticks_raw"


@pytest.mark.parametrize("corruption", ["UPDATE ohlc_1m SET close = 1, volume = 0 WHERE symbol = $1",
                                        "DELETE FROM metrics_1m WHERE symbol = $1"])
def test_rebuild_recomputes_rollups_from_history(pipeline: Stack, database_url: str, corruption: str) -> None:
    symbols = unique_symbols("R", 1)
    pipeline.seed_symbols(*symbols)
    ticks = make_ticks(symbols, 600, minutes=20, seed=5)
    publish(pipeline.ingest.address, pipeline.api_key, ticks)
    wait_committed(database_url, symbols, len(ticks))

    async def corrupt() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(corruption, symbols[0])
        finally:
            await conn.close()

    asyncio.run(corrupt())
    request = aggregator_pb2.RebuildRequest(symbol=symbols[0])
    request.from_time.FromMicroseconds(min(t.event_us for t in ticks))
    request.to_time.FromMicroseconds(max(t.event_us for t in ticks) + 1)
    with grpc.insecure_channel(pipeline.aggregator.address) as channel:
        response = aggregator_pb2_grpc.AggregatorServiceStub(channel).Rebuild(request, timeout=30,
                                                                              metadata=KEY)

    expected = expected_minutes(ticks)
    assert response.minutes_rebuilt == len(expected)
    assert response.ticks_scanned == len(ticks)
    assert_rollups_match(expected, *asyncio.run(stored_minutes(database_url, symbols)))


def test_rebuild_rejects_bad_ranges_and_unknown_symbols(pipeline: Stack) -> None:
    from marketdata.common.errors import field_violations_of
    with grpc.insecure_channel(pipeline.aggregator.address) as channel:
        stub = aggregator_pb2_grpc.AggregatorServiceStub(channel)
        request = aggregator_pb2.RebuildRequest(symbol="NOSUCHSYM")
        request.from_time.FromSeconds(1_800_000_000)
        request.to_time.FromSeconds(1_700_000_000)
        with pytest.raises(grpc.RpcError) as bad_range:
            stub.Rebuild(request, timeout=5, metadata=KEY)
        assert bad_range.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations_of(bad_range.value)] == ["to_time"]
        request.to_time.FromSeconds(1_900_000_000)
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Rebuild(request, timeout=5, metadata=KEY)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_ids_and_sources_with_unusual_characters_are_stored_verbatim(pipeline: Stack, database_url: str) -> None:
    """Strings holding the aggregator's column separator take its array path; both paths give the same result."""
    symbols = unique_symbols("U", 1)
    pipeline.seed_symbols(*symbols)
    ticks = make_ticks(symbols, 40, minutes=3, seed=13)
    odd_ids = ["with\x1fseparator", "comma,and;semicolon", "quote'\"back\\slash", "ünïcødé ✓", "{braces}"]
    ticks = [TickSpec(t.symbol, odd_ids[n] if n < len(odd_ids) else t.trade_id, t.event_us, t.price, t.size)
             for n, t in enumerate(ticks)]
    # Ingest refuses control characters such as the separator: that tick goes straight into JetStream.
    publish(pipeline.ingest.address, pipeline.api_key, ticks[1:])

    async def inject_first() -> None:
        client = await nats.connect(pipeline.env["NATS_URL"])
        try:
            await client.jetstream().publish(f"{pipeline.env['MD_SUBJECT_PREFIX']}.ticks.{symbols[0]}",
                                             events_pb2.TickBatch(items=[ticks[0].proto()]).SerializeToString())
        finally:
            await client.close()

    asyncio.run(inject_first())
    wait_committed(database_url, symbols, len(ticks), timeout=30)

    async def stored_ids() -> set[str]:
        conn = await asyncpg.connect(database_url)
        try:
            return {r["trade_id"] for r in await conn.fetch(
                "SELECT trade_id FROM ticks_history WHERE symbol = $1", symbols[0])}
        finally:
            await conn.close()

    assert asyncio.run(stored_ids()) == {t.trade_id for t in ticks}
    assert_rollups_match(expected_minutes(ticks), *asyncio.run(stored_minutes(database_url, symbols)))


def test_rebuild_takes_an_api_key_and_get_status_does_not(pipeline: Stack) -> None:
    """Rebuild deletes and rewrites stored candles: a write, refused without one of API_KEYS as ingest's are."""
    request = aggregator_pb2.RebuildRequest(symbol="NOSUCHSYM")
    request.from_time.FromSeconds(1_800_000_000)
    request.to_time.FromSeconds(1_800_000_060)
    with grpc.insecure_channel(pipeline.aggregator.address) as channel:
        stub = aggregator_pb2_grpc.AggregatorServiceStub(channel)
        for metadata, message in (((), "missing API key"), ((("x-api-key", "nope"),), "invalid API key"),
                                  ((("x-api-key", "nope"), *KEY), "send one x-api-key")):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Rebuild(request, timeout=5, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in refused.value.details()
        with pytest.raises(grpc.RpcError) as checked:  # with the key, the request itself is looked at
            stub.Rebuild(request, timeout=5, metadata=KEY)
        assert checked.value.code() == grpc.StatusCode.NOT_FOUND
        stub.GetStatus(aggregator_pb2.GetStatusRequest(), timeout=5)  # no key: answers, raises nothing
