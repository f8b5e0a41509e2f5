"""GetHistory view=ohlc1m against candles computed independently in Python from the same rows.

Rows are written straight into ohlc_1m here (exhaustive interval / SMA / range cases); test_end_to_end.py
checks candles made by the real pipeline from ticks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from marketdata.v1 import market_pb2, query_pb2, query_pb2_grpc
from tests.query.helpers import (STEPS, UTC, RefCandle, insert_minutes, insert_symbol, new_symbol,
                                 random_minutes, rollup, with_sma10)

START = datetime(2026, 1, 1, 22, 13, tzinfo=UTC)  # crosses midnight UTC


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def assert_candles(symbol: str, got: Sequence[market_pb2.Candle], expected: Sequence[RefCandle]) -> None:
    assert [c.time.ToDatetime(tzinfo=UTC) for c in got] == [e.bucket for e in expected]
    for candle, ref in zip(got, expected):
        at = ref.bucket.isoformat()
        assert candle.symbol == symbol
        assert candle.open == pytest.approx(float(ref.open), rel=1e-12), at
        assert candle.high == pytest.approx(float(ref.high), rel=1e-12), at
        assert candle.low == pytest.approx(float(ref.low), rel=1e-12), at
        assert candle.close == pytest.approx(float(ref.close), rel=1e-12), at
        assert candle.volume == pytest.approx(float(ref.volume), rel=1e-12), at
        assert candle.trades == ref.trades, at
        assert candle.vwap == pytest.approx(float(ref.vwap), rel=1e-12), at
        if ref.sma10 is None:
            assert not candle.HasField("sma10"), f"{at}: sma10 must be absent before 10 candles exist"
        else:
            assert candle.HasField("sma10"), at
            assert candle.sma10 == pytest.approx(ref.sma10, rel=1e-12), at


async def history(stub: query_pb2_grpc.QueryServiceStub, symbol: str, **fields: object) -> query_pb2.GetHistoryResponse:
    return await stub.GetHistory(query_pb2.GetHistoryRequest(symbol=symbol, **fields), timeout=10)


@pytest.fixture(scope="module")
async def series(db: asyncpg.Connection) -> tuple[str, list[RefCandle]]:
    """800 one-minute candles with about 20% of the minutes missing, across a UTC midnight."""
    symbol = new_symbol()
    minutes = random_minutes(START, 800, seed=7)
    await insert_symbol(db, symbol)
    await insert_minutes(db, symbol, minutes)
    return symbol, minutes


@pytest.fixture(scope="module")
async def daily_series(db: asyncpg.Connection) -> tuple[str, list[RefCandle]]:
    """A few minutes a day over 16 days (one day without trades), near the day boundaries."""
    symbol = new_symbol()
    rng = random.Random(11)
    minutes: list[RefCandle] = []
    for day in range(16):
        if day == 6:
            continue
        midnight = datetime(2025, 12, 1, tzinfo=UTC) + timedelta(days=day)
        for offset in sorted({0, 1439, rng.randint(1, 1438), rng.randint(1, 1438)}):
            price = Decimal(rng.randint(9000, 11000)) / 100
            volume = Decimal(rng.randint(1, 500)) / 100
            minutes.append(RefCandle(bucket=midnight + timedelta(minutes=offset), open=price,
                                     high=price + 1, low=price - 1, close=price + Decimal("0.5"),
                                     volume=volume, trades=rng.randint(1, 9), turnover=price * volume))
    await insert_symbol(db, symbol)
    await insert_minutes(db, symbol, minutes)
    return symbol, minutes


@pytest.mark.parametrize("interval", ["1m", "5m", "15m", "1h"])
@pytest.mark.parametrize("limit", [1, 9, 10, 11, 37, 100, 5000])
async def test_newest_candles_with_sma10(query_stub, series, interval: str, limit: int) -> None:
    symbol, minutes = series
    expected = rollup(minutes, STEPS[interval]) if interval != "1m" else with_sma10(list(minutes))
    response = await history(query_stub, symbol, view="ohlc1m", interval=interval, limit=limit)
    assert response.symbol == symbol and response.view == "ohlc1m" and response.interval == interval
    # The newest `limit` candles, ascending, each with the SMA10 of the full history (the first candles of
    # a page take their window from candles before the page).
    assert_candles(symbol, response.candles, expected[-limit:])


async def test_defaults_are_ohlc1m_1m_limit_100(query_stub, series) -> None:
    symbol, minutes = series
    response = await history(query_stub, symbol)
    assert (response.view, response.interval) == ("ohlc1m", "1m")
    assert_candles(symbol, response.candles, with_sma10(list(minutes))[-100:])
    assert not response.ticks and not response.metrics


async def test_sma10_absent_for_the_first_nine_candles_of_history(query_stub, series) -> None:
    symbol, minutes = series
    response = await history(query_stub, symbol, limit=5000)
    assert len(response.candles) == len(minutes)
    assert [c.HasField("sma10") for c in response.candles[:10]] == [False] * 9 + [True]
    assert all(c.HasField("sma10") for c in response.candles[9:])
    for interval in ("5m", "15m", "1h"):
        candles = (await history(query_stub, symbol, interval=interval, limit=5000)).candles
        assert [c.HasField("sma10") for c in candles[:10]] == [False] * 9 + [True]


@pytest.mark.parametrize("interval", ["1m", "5m", "15m", "1h"])
async def test_ranges_and_limits(query_stub, series, interval: str) -> None:
    """Random [from, to) ranges, aligned or not, with limits below and above the number of candles."""
    symbol, minutes = series
    step = STEPS[interval]
    expected_all = rollup(minutes, step) if interval != "1m" else with_sma10(list(minutes))
    first, last = minutes[0].bucket, minutes[-1].bucket
    span = int((last - first).total_seconds())
    rng = random.Random(f"ranges-{interval}")
    for _ in range(25):
        start = first + timedelta(seconds=rng.randint(-3600, span))
        end = start + timedelta(seconds=rng.randint(1, span // 2))
        if rng.random() < 0.3:  # aligned on the interval
            start -= (start - datetime(1970, 1, 1, tzinfo=UTC)) % step
        limit = rng.choice([1, 3, 10, 50, 5000])
        response = await history(query_stub, symbol, interval=interval, limit=limit,
                                 from_time=ts(start), to_time=ts(end))
        # A candle is in the range when its start is; derived candles always cover their whole interval.
        in_range = [c for c in expected_all if start <= c.bucket < end]
        assert_candles(symbol, response.candles, in_range[-limit:])


async def test_only_from_or_only_to(query_stub, series) -> None:
    symbol, minutes = series
    expected = with_sma10(list(minutes))
    middle = minutes[400].bucket
    response = await history(query_stub, symbol, from_time=ts(middle), limit=5000)
    assert_candles(symbol, response.candles, [c for c in expected if c.bucket >= middle])
    response = await history(query_stub, symbol, to_time=ts(middle), limit=20)
    assert_candles(symbol, response.candles, [c for c in expected if c.bucket < middle][-20:])
    # `to` is exclusive, `from` inclusive.
    response = await history(query_stub, symbol, from_time=ts(middle), to_time=ts(middle + timedelta(minutes=1)))
    assert_candles(symbol, response.candles, [expected[400]])


async def test_daily_candles_are_utc_days_with_sma10(query_stub, daily_series) -> None:
    symbol, minutes = daily_series
    expected = rollup(minutes, STEPS["1d"])
    assert len(expected) == 15  # 16 days, one without trades: no candle
    response = await history(query_stub, symbol, interval="1d", limit=5000)
    assert all(c.time.ToDatetime(tzinfo=UTC).time() == datetime.min.time() for c in response.candles)
    assert_candles(symbol, response.candles, expected)
    # The candle after the empty day averages the 10 previous *candles*, reaching one day further back.
    assert response.candles[10].time.ToDatetime(tzinfo=UTC) == datetime(2025, 12, 12, tzinfo=UTC)
    closes = [Decimal(str(c.close)) for c in response.candles[1:11]]
    assert response.candles[10].sma10 == pytest.approx(float(sum(closes) / 10))
    page = await history(query_stub, symbol, interval="1d", limit=3)
    assert_candles(symbol, page.candles, expected[-3:])


async def test_sma10_counts_candles_not_minutes(query_stub, db) -> None:
    """Ten candles separated by gaps of hours still make an SMA10; missing minutes are not zeros."""
    symbol = new_symbol()
    closes = [Decimal(v) for v in ("10", "20", "30", "40", "50", "60", "70", "80", "90", "100", "110")]
    base = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
    offsets = [0, 1, 2, 180, 181, 600, 601, 602, 1000, 1001, 1440]  # minutes, with large gaps
    minutes = [RefCandle(bucket=base + timedelta(minutes=o), open=c, high=c, low=c, close=c, volume=Decimal(1),
                         trades=1, turnover=c) for o, c in zip(offsets, closes)]
    await insert_symbol(db, symbol)
    await insert_minutes(db, symbol, minutes)
    candles = (await history(query_stub, symbol)).candles
    assert len(candles) == 11
    assert [c.HasField("sma10") for c in candles] == [False] * 9 + [True, True]
    assert candles[9].sma10 == pytest.approx(55.0)   # mean of 10..100
    assert candles[10].sma10 == pytest.approx(65.0)  # mean of 20..110
    # The same through a page that starts after the gaps: the window reaches back before the page.
    page = (await history(query_stub, symbol, from_time=ts(base + timedelta(minutes=1001)))).candles
    assert [c.sma10 for c in page] == [pytest.approx(55.0), pytest.approx(65.0)]


async def test_derived_vwap_is_turnover_over_volume(query_stub, db) -> None:
    """Never the mean of the minutes' vwaps: a big-volume minute weighs more."""
    symbol = new_symbol()
    base = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
    minutes = [
        RefCandle(bucket=base, open=Decimal(10), high=Decimal(10), low=Decimal(10), close=Decimal(10),
                  volume=Decimal(1), trades=1, turnover=Decimal(10)),
        RefCandle(bucket=base + timedelta(minutes=1), open=Decimal(20), high=Decimal(20), low=Decimal(20),
                  close=Decimal(20), volume=Decimal(3), trades=2, turnover=Decimal(60)),
    ]
    await insert_symbol(db, symbol)
    await insert_minutes(db, symbol, minutes)
    [candle] = (await history(query_stub, symbol, interval="5m")).candles
    assert candle.vwap == pytest.approx(70 / 4)  # not (10 + 20) / 2
    assert (candle.open, candle.close, candle.high, candle.low) == (10, 20, 20, 10)
    assert (candle.volume, candle.trades) == (4, 3)


async def test_known_symbol_without_data_and_empty_ranges(query_stub, db, series) -> None:
    symbol = new_symbol()
    await insert_symbol(db, symbol)
    for interval in ("1m", "5m", "1d"):
        response = await history(query_stub, symbol, interval=interval)
        assert list(response.candles) == [] and response.interval == interval
    series_symbol, minutes = series
    before = minutes[0].bucket - timedelta(days=30)
    for interval in ("1m", "15m"):
        response = await history(query_stub, series_symbol, interval=interval, from_time=ts(before),
                                 to_time=ts(before + timedelta(days=1)))
        assert list(response.candles) == []
        after = minutes[-1].bucket + timedelta(days=1)
        response = await history(query_stub, series_symbol, interval=interval, from_time=ts(after))
        assert list(response.candles) == []


@pytest.mark.parametrize("interval", ["1m", "5m", "1d"])
async def test_widest_possible_range(query_stub, series, interval: str) -> None:
    symbol, minutes = series
    expected = rollup(minutes, STEPS[interval]) if interval != "1m" else with_sma10(list(minutes))
    response = await history(query_stub, symbol, interval=interval, limit=5000,
                             from_time=Timestamp(seconds=-62135596800),
                             to_time=Timestamp(seconds=253402300799, nanos=999_999_999))
    assert_candles(symbol, response.candles, expected)
