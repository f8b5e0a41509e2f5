"""The stored tiers ohlc_3m to ohlc_1d equal an independent computation whatever the order, duplication and
redelivery of the ticks; Rebuild restores every tier of a range."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from marketdata.common.errors import field_violations_of
from marketdata.retention import lifecycle
from marketdata.v1 import aggregator_pb2, aggregator_pb2_grpc
from tests.conftest import KEY
from tests.storage.helpers import TIER_STEPS, assert_tier, commit, expected_tier, stored_tier
from tests.support.processes import wait_for
from tests.support.stack import Stack
from tests.support.ticks import make_ticks, publish, with_duplicates


def symbols_of(prefix: str, count: int) -> list[str]:
    tag = uuid.uuid4().hex[:5].upper()
    return [f"{prefix}{tag}{n:02d}" for n in range(count)]


async def assert_all_tiers(database_url: str, ticks, symbols, sided: bool = True) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for tier in TIER_STEPS:
            assert_tier(tier, await stored_tier(conn, tier, symbols), expected_tier(ticks, tier, sided))
    finally:
        await conn.close()


async def test_tiers_equal_an_independent_computation_after_shuffled_duplicated_redelivered_ticks(
        own_database: str) -> None:
    symbols = symbols_of("TI", 4)
    # Three days and a half of ticks: hours, days and a UTC midnight or three in between.
    distinct = make_ticks(symbols, 6_000, minutes=84 * 60, seed=5)
    sent = with_duplicates(distinct, 0.2, seed=6)  # shuffled, a fifth sent twice
    messages = [(seq + 1, sent[start:start + 50]) for seq, start in enumerate(range(0, len(sent), 50))]
    rng = random.Random(9)
    batches = [messages[i:i + 7] for i in range(0, len(messages), 7)]
    # Redeliveries: some batches come again whole (their ledger rows make them no-ops), some messages again
    # inside other batches.
    batches += rng.sample(batches, 5) + [[m] for m in rng.sample(messages, 10)]
    rng.shuffle(batches)
    pool = await asyncpg.create_pool(own_database, min_size=4, max_size=4, server_settings={"extra_float_digits": "1"})
    try:
        inserted = 0
        for start in range(0, len(batches), 4):  # four batches committing at once, like replicas
            results = await asyncio.gather(*(commit(pool, "TIERS@1", batch) for batch in batches[start:start + 4]))
            inserted += sum(results)
    finally:
        await pool.close()
    assert inserted == len(distinct)
    await assert_all_tiers(own_database, distinct, symbols)


def rebuild(address: str, symbol: str, start: datetime, end: datetime) -> aggregator_pb2.RebuildResponse:
    request = aggregator_pb2.RebuildRequest(symbol=symbol)
    request.from_time.CopyFrom(Timestamp(seconds=int(start.timestamp())))
    request.to_time.CopyFrom(Timestamp(seconds=int(end.timestamp())))
    with grpc.insecure_channel(address) as channel:
        return aggregator_pb2_grpc.AggregatorServiceStub(channel).Rebuild(request, timeout=30,
                                                                          metadata=KEY)


def test_rebuild_of_a_range_restores_every_tier(pipeline: Stack, database_url: str) -> None:
    symbols = symbols_of("RB", 2)
    pipeline.seed_symbols(*symbols)
    # Three hours of ticks ending now: the pipeline's fold writes every tier.
    distinct = make_ticks(symbols, 3_000, minutes=180, seed=12)
    publish(pipeline.ingest.address, pipeline.api_key, with_duplicates(distinct, 0.1, seed=13))

    async def stored() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval("SELECT count(*) FROM ticks_history WHERE symbol = ANY($1)", symbols)
        finally:
            await conn.close()

    wait_for(lambda: asyncio.run(stored()) == len(distinct), 90, interval=0.5, message="ticks committed")
    asyncio.run(assert_all_tiers(database_url, distinct, symbols, sided=False))

    async def damage() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            for tier in TIER_STEPS:
                await conn.execute(f"DELETE FROM {tier} WHERE symbol = $1 AND bucket IN "
                                   f"(SELECT bucket FROM {tier} WHERE symbol = $1 ORDER BY bucket LIMIT 2)", symbols[0])
                await conn.execute(f"UPDATE {tier} SET high = high + 1, volume = 0 WHERE symbol = $1", symbols[0])
        finally:
            await conn.close()

    asyncio.run(damage())
    now = datetime.now(timezone.utc)
    reply = rebuild(pipeline.aggregator.address, symbols[0], now - timedelta(hours=4), now + timedelta(minutes=1))
    assert reply.ticks_scanned == sum(1 for t in distinct if t.symbol == symbols[0])
    asyncio.run(assert_all_tiers(database_url, distinct, symbols, sided=False))


def test_rebuild_refuses_a_range_whose_ticks_retention_dropped(pipeline: Stack, database_url: str) -> None:
    """Retention run with a shorter RETENTION_TICKS_DAYS than the aggregator's (a CronJob, by hand) drops more:
    the partitions that exist say what is kept, not the aggregator's own setting (it erased the candles of such
    a range, recomputed from no ticks). Here the oldest ticks partition, ~30 days back, is dropped by hand."""
    symbol = symbols_of("RO", 1)[0]
    pipeline.seed_symbols(symbol)

    async def drop_oldest() -> lifecycle.Partition:
        conn = await asyncpg.connect(database_url)
        try:
            oldest = (await lifecycle.partitions(conn, "ticks_history"))[0]
            # Only a day no other test writes to: the aggregator made the partitions back to its horizon at start.
            assert oldest.hi < datetime.now(timezone.utc) - timedelta(days=20), oldest
            for _ in range(20):  # the drop gives way (300 ms) to the shared aggregator's commits: try again
                try:
                    await lifecycle.drop(conn, oldest)
                    return oldest
                except asyncpg.LockNotAvailableError:
                    await asyncio.sleep(0.2)
            raise AssertionError(f"{oldest.name} could not be dropped")
        finally:
            await conn.close()

    dropped = asyncio.run(drop_oldest())
    start = dropped.hi - timedelta(minutes=1)  # within the aggregator's 30 days, in the day dropped
    with pytest.raises(grpc.RpcError) as refused:
        rebuild(pipeline.aggregator.address, symbol, start, start + timedelta(minutes=2))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = field_violations_of(refused.value)
    assert "oldest partition of ticks_history" in description and field == "from_time"
    # Older than the aggregator's own 30 days: refused as well (a range that changes nothing to ask for).
    now = datetime.now(timezone.utc)
    with pytest.raises(grpc.RpcError) as older:
        rebuild(pipeline.aggregator.address, symbol, now - timedelta(days=45), now)
    assert older.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = field_violations_of(older.value)
    assert field == "from_time" and "must be within the ticks kept" in description, description


def test_rebuild_names_a_timestamp_that_is_not_one(pipeline: Stack) -> None:
    for seconds, nanos in ((0, -5), (253402300800, 0)):
        request = aggregator_pb2.RebuildRequest(symbol="BTCUSDT")
        request.from_time.seconds, request.from_time.nanos = seconds, nanos
        request.to_time.seconds = 1_900_000_000
        with grpc.insecure_channel(pipeline.aggregator.address) as channel, pytest.raises(grpc.RpcError) as refused:
            aggregator_pb2_grpc.AggregatorServiceStub(channel).Rebuild(request, timeout=10,
                                                                       metadata=KEY)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        assert [field for field, _ in field_violations_of(refused.value)] == ["from_time"]


def test_history_reads_the_coarsest_tier_whose_buckets_fit_the_zone() -> None:
    from marketdata.query.history import candle_tier
    from marketdata.query.intervals import parse_interval, parse_time_zone

    chosen = {(interval, zone): candle_tier(parse_interval(interval), parse_time_zone(zone))
              for interval, zone in (("1d", "UTC"), ("1w", "UTC"), ("1M", "UTC"), ("1h", "UTC"), ("12h", "UTC"),
                                     ("4h", "UTC"), ("6h", "UTC"), ("2h", "UTC"), ("15m", "UTC"), ("30m", "UTC"),
                                     ("30m", "Europe/Berlin"), ("5m", "UTC"), ("10m", "Asia/Kolkata"), ("3m", "UTC"),
                                     ("6m", "Asia/Kathmandu"), ("32m", "UTC"), ("45m", "Asia/Kathmandu"),
                                     ("120m", "UTC"), ("4h", "Europe/Berlin"), ("4h", "Asia/Dubai"),
                                     ("1d", "Europe/Berlin"), ("1d", "+08:00"), ("1d", "+06:00"), ("1d", "Asia/Kolkata"),
                                     ("1h", "+05:30"), ("1w", "America/St_Johns"), ("1d", "America/Caracas"),
                                     ("1h", "+05:37"), ("1d", "Africa/Monrovia"))}
    assert chosen == {
        ("1d", "UTC"): "ohlc_1d", ("1w", "UTC"): "ohlc_1d", ("1M", "UTC"): "ohlc_1d", ("1h", "UTC"): "ohlc_1h",
        ("12h", "UTC"): "ohlc_6h", ("4h", "UTC"): "ohlc_4h", ("6h", "UTC"): "ohlc_6h", ("2h", "UTC"): "ohlc_2h",
        ("15m", "UTC"): "ohlc_15m", ("30m", "UTC"): "ohlc_30m", ("30m", "Europe/Berlin"): "ohlc_30m",
        ("5m", "UTC"): "ohlc_5m", ("10m", "Asia/Kolkata"): "ohlc_5m", ("3m", "UTC"): "ohlc_3m",
        # Kathmandu (+05:45): quarter hours are its coarsest UTC-aligned tier, 3 minutes divide its offset.
        ("6m", "Asia/Kathmandu"): "ohlc_3m", ("32m", "UTC"): "ohlc_1m", ("45m", "Asia/Kathmandu"): "ohlc_15m",
        ("120m", "UTC"): "ohlc_2h",
        # 4-hour boundaries are UTC ones only where the offset is a multiple of 4 hours (Dubai: +04:00).
        ("4h", "Europe/Berlin"): "ohlc_1h", ("4h", "Asia/Dubai"): "ohlc_4h", ("1d", "Europe/Berlin"): "ohlc_1h",
        ("1d", "+08:00"): "ohlc_4h", ("1d", "+06:00"): "ohlc_6h",
        # Half-hour offsets, now or in the past (Caracas was -04:30 from 2007 to 2016): half hours.
        ("1d", "Asia/Kolkata"): "ohlc_30m", ("1h", "+05:30"): "ohlc_30m", ("1w", "America/St_Johns"): "ohlc_30m",
        ("1d", "America/Caracas"): "ohlc_30m",
        # Offsets that are no multiple of 15 minutes (Monrovia was -00:44:30 until 1972): minutes.
        ("1h", "+05:37"): "ohlc_1m", ("1d", "Africa/Monrovia"): "ohlc_1m"}


def test_walked_buckets_of_a_day_or_more_are_covered_by_whole_rows_of_a_coarser_tier() -> None:
    from marketdata.query.history import cover_tier
    from marketdata.query.intervals import parse_interval

    chosen = {(interval, tier): cover_tier(parse_interval(interval), tier)
              for interval, tier in (("1d", "ohlc_1h"), ("3d", "ohlc_1h"), ("1w", "ohlc_1h"), ("1M", "ohlc_1h"),
                                     ("1d", "ohlc_30m"), ("1w", "ohlc_30m"), ("1d", "ohlc_15m"), ("1d", "ohlc_1m"),
                                     ("1w", "ohlc_4h"), ("1d", "ohlc_4h"), ("2d", "ohlc_4h"), ("1d", "ohlc_6h"),
                                     ("12h", "ohlc_30m"), ("1w", "ohlc_1d"))}
    assert chosen == {
        # Days: 6-hour rows (three fit whole in a day of Europe/Berlin, the hours at its edges are read).
        ("1d", "ohlc_1h"): "ohlc_6h", ("3d", "ohlc_1h"): "ohlc_6h", ("1d", "ohlc_30m"): "ohlc_6h",
        ("1d", "ohlc_15m"): "ohlc_6h", ("1d", "ohlc_1m"): "ohlc_6h",
        # Weeks and months: UTC days.
        ("1w", "ohlc_1h"): "ohlc_1d", ("1M", "ohlc_1h"): "ohlc_1d", ("1w", "ohlc_30m"): "ohlc_1d",
        ("1w", "ohlc_4h"): "ohlc_1d",
        # 6 hours are no whole number of 4 hours, and UTC days are more than a quarter of 2 days.
        ("1d", "ohlc_4h"): None, ("2d", "ohlc_4h"): None,
        # No cover coarser than the tier, or none of at most a quarter of the interval.
        ("1d", "ohlc_6h"): None, ("12h", "ohlc_30m"): None, ("1w", "ohlc_1d"): None}
