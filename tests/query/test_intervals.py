"""Every interval in every kind of time zone, and paging, against candles computed independently in Python.

Ticks are folded into ohlc_1m by the aggregator's own fold SQL (the bench's FOLD_TICKS); the reference buckets
the same ticks straight from their event times with zoneinfo (no minute rows, no SQL). The data crosses both
DST switches of Europe/Berlin and America/New_York, month ends and week ends.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from datetime import timezone as dt_timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from marketdata.bench.measure import FOLD_TICKS
from marketdata.common.errors import field_violations_of
from marketdata.query.history import History, parse_history_request
from marketdata.query.intervals import parse_interval
from marketdata.v1 import market_pb2, query_pb2, query_pb2_grpc
from tests.query.helpers import UTC, insert_symbol, new_symbol

INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
             "10m", "45m", "3h", "2d", "2w", "3M")
# Asia/Shanghai is read as +08:00 (no candle before 1992); Australia/Adelaide (+09:30 / +10:30) groups half hours
# in a zone with DST; +05:37 groups minutes.
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "+08:00", "+05:30", "-03:00", "Asia/Shanghai",
         "Australia/Adelaide", "+05:37")
# Spans with both DST switches of Berlin (Mar 29, Oct 25 2026) and New York (Mar 8, Nov 1 2026).
SPANS = ((datetime(2026, 3, 5, 17, tzinfo=UTC), datetime(2026, 4, 2, 3, tzinfo=UTC)),
         (datetime(2026, 10, 22, 9, tzinfo=UTC), datetime(2026, 11, 3, 5, tzinfo=UTC)))


@dataclass(frozen=True)
class Trade:
    trade_id: str
    event_time: datetime
    price: Decimal
    size: Decimal
    side: int


@dataclass
class Ref:
    start: datetime
    end: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    taker_volume: Decimal
    taker_quote: Decimal
    trades: int
    sma10: float | None = None


def zone_of(name: str) -> tzinfo:
    if name[0] in "+-":
        sign = 1 if name[0] == "+" else -1
        return dt_timezone(sign * timedelta(hours=int(name[1:3]), minutes=int(name[4:6])))
    return ZoneInfo(name)


def local_midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def reference_bucket(moment: datetime, interval: str, zone: tzinfo) -> tuple[datetime, datetime]:
    """(start, end) of the bucket of `moment`, from the definition: local calendar periods for d/w/M counted
    from 1970-01-01 / Monday 1970-01-05 / January 1970; m/h counted from local midnight, cut at the next."""
    n, unit = int(interval[:-1]), interval[-1]
    day = moment.astimezone(zone).date()
    if unit in "mh":
        step = timedelta(minutes=n) if unit == "m" else timedelta(hours=n)
        midnight = local_midnight(day, zone)
        start = midnight + (moment - midnight) // step * step
        return start, min(start + step, local_midnight(day + timedelta(days=1), zone))
    if unit == "d":
        first = day - timedelta(days=(day - date(1970, 1, 1)).days % n)
        return local_midnight(first, zone), local_midnight(first + timedelta(days=n), zone)
    if unit == "w":
        monday = day - timedelta(days=day.weekday())
        first = monday - timedelta(weeks=(monday - date(1970, 1, 5)).days // 7 % n)
        return local_midnight(first, zone), local_midnight(first + timedelta(weeks=n), zone)
    index = day.year * 12 + day.month - 1
    first_index = index - (index - 1970 * 12) % n
    after_index = first_index + n
    first = date(first_index // 12, first_index % 12 + 1, 1)
    after = date(after_index // 12, after_index % 12 + 1, 1)
    return local_midnight(first, zone), local_midnight(after, zone)


def reference_candles(trades: Sequence[Trade], interval: str, zone_name: str) -> list[Ref]:
    zone = zone_of(zone_name)
    groups: dict[tuple[datetime, datetime], list[Trade]] = {}
    for trade in trades:
        groups.setdefault(reference_bucket(trade.event_time, interval, zone), []).append(trade)
    out = []
    for (start, end), group in sorted(groups.items()):
        group.sort(key=lambda t: (t.event_time, t.trade_id))
        buys = [t for t in group if t.side == 1]
        out.append(Ref(start=start, end=end, open=group[0].price, high=max(t.price for t in group),
                       low=min(t.price for t in group), close=group[-1].price,
                       volume=sum((t.size for t in group), Decimal(0)),
                       quote_volume=sum((t.price * t.size for t in group), Decimal(0)),
                       taker_volume=sum((t.size for t in buys), Decimal(0)),
                       taker_quote=sum((t.price * t.size for t in buys), Decimal(0)), trades=len(group)))
    for index in range(9, len(out)):
        out[index].sma10 = float(sum(c.close for c in out[index - 9:index + 1]) / 10)
    return out


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def assert_matches(got: Sequence[market_pb2.Candle], expected: Sequence[Ref], label: str) -> None:
    assert [c.time.ToDatetime(tzinfo=UTC) for c in got] == [e.start for e in expected], label
    for candle, ref in zip(got, expected):
        at = f"{label} {ref.start.isoformat()}"
        assert candle.close_time.ToDatetime(tzinfo=UTC) == ref.end, at
        assert candle.closed == (ref.end <= datetime.now(UTC)), at
        assert (candle.open, candle.high, candle.low, candle.close) == (
            float(ref.open), float(ref.high), float(ref.low), float(ref.close)), at
        assert candle.trades == ref.trades, at
        assert candle.volume == pytest.approx(float(ref.volume), rel=1e-12), at
        assert candle.quote_volume == pytest.approx(float(ref.quote_volume), rel=1e-12), at
        assert candle.taker_buy_volume == pytest.approx(float(ref.taker_volume), rel=1e-12, abs=1e-12), at
        assert candle.taker_buy_quote_volume == pytest.approx(float(ref.taker_quote), rel=1e-12, abs=1e-12), at
        assert candle.vwap == pytest.approx(float(ref.quote_volume / ref.volume), rel=1e-12), at
        if ref.sma10 is None:
            assert not candle.HasField("sma10"), at
        else:
            assert candle.sma10 == pytest.approx(ref.sma10, rel=1e-12), at


async def fold(db: asyncpg.Connection, symbol: str, trades: Sequence[Trade]) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    await db.fetch(FOLD_TICKS, [symbol] * len(trades), [t.trade_id for t in trades],
                   [(t.event_time - epoch) // timedelta(microseconds=1) for t in trades],
                   [float(t.price) for t in trades], [float(t.size) for t in trades], [t.side for t in trades],
                   ["test"] * len(trades))


@pytest.fixture(scope="module")
async def market(db: asyncpg.Connection) -> tuple[str, list[Trade]]:
    """About 5,000 trades at random moments (gaps of up to 40 minutes, some seconds apart) over the spans."""
    rng = random.Random(1515)
    symbol = new_symbol()
    trades: list[Trade] = []
    for first, last in SPANS:
        moment = first
        while moment < last:
            moment += timedelta(seconds=rng.choice((1, 7, 59, 300, 900, 2400)), microseconds=rng.randint(0, 999999))
            trades.append(Trade(f"t{len(trades):06d}", moment, Decimal(rng.randint(9000, 11000)) / 100,
                                Decimal(rng.randint(1, 400)) / 100, rng.choice((0, 1, 2))))
    await insert_symbol(db, symbol)
    rng.shuffle(trades)  # folded in any order
    for index in range(0, len(trades), 997):
        await fold(db, symbol, trades[index:index + 997])
    return symbol, trades


async def history(stub: query_pb2_grpc.QueryServiceStub, symbol: str, **fields: object) -> query_pb2.GetHistoryResponse:
    return await stub.GetHistory(query_pb2.GetHistoryRequest(symbol=symbol, **fields), timeout=30)


@pytest.mark.parametrize("zone", ZONES)
async def test_every_interval_in_every_zone(query_stub: query_pb2_grpc.QueryServiceStub,
                                            market: tuple[str, list[Trade]], zone: str) -> None:
    symbol, trades = market
    for interval in INTERVALS:
        expected = reference_candles(trades, interval, zone)
        response = await history(query_stub, symbol, interval=interval, time_zone=zone, limit=5000)
        assert response.time_zone == zone
        assert response.interval == interval
        assert_matches(response.candles, expected[-5000:], f"{interval} {zone}")


@pytest.mark.parametrize(("zone", "day", "hours"), [
    ("Europe/Berlin", date(2026, 3, 29), 23), ("Europe/Berlin", date(2026, 10, 25), 25),
    ("America/New_York", date(2026, 3, 8), 23), ("America/New_York", date(2026, 11, 1), 25),
])
async def test_day_candle_across_a_dst_switch_lasts_23_or_25_hours(
        query_stub: query_pb2_grpc.QueryServiceStub, market: tuple[str, list[Trade]], zone: str, day: date,
        hours: int) -> None:
    symbol, _ = market
    start = local_midnight(day, ZoneInfo(zone))
    response = await history(query_stub, symbol, interval="1d", time_zone=zone, limit=1,
                             from_time=ts(start), order="asc")
    [candle] = response.candles
    assert candle.time.ToDatetime(tzinfo=UTC) == start
    assert candle.close_time.ToDatetime(tzinfo=UTC) - start == timedelta(hours=hours)


async def test_a_zone_is_read_with_its_past_offsets_where_the_symbols_candles_reach_them(
        query_stub: query_pb2_grpc.QueryServiceStub, db: asyncpg.Connection, database_url: str,
        market: tuple[str, list[Trade]]) -> None:
    """Asia/Shanghai has been +08:00 since 1991 and is read as +08:00 for a symbol whose candles are all later
    (the zones of test_every_interval_in_every_zone); its summers from 1986 to 1991 were +09:00. A symbol with
    trades in 1988 (summer time from April 10 to September 11) gets that year's local days, weeks and months."""
    recent_symbol, _ = market
    rng = random.Random(1988)
    symbol = new_symbol()
    trades = []
    for first, last in ((datetime(1988, 3, 25, tzinfo=UTC), datetime(1988, 9, 30, tzinfo=UTC)),
                        (datetime(2026, 2, 20, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC))):
        moment = first
        while moment < last:
            moment += timedelta(minutes=rng.randint(1, 600))
            trades.append(Trade(f"s{len(trades):06d}", moment, Decimal(rng.randint(9000, 11000)) / 100,
                                Decimal(rng.randint(1, 400)) / 100, rng.choice((0, 1, 2))))
    await insert_symbol(db, symbol)
    await fold(db, symbol, trades)
    for interval in ("1h", "4h", "1d", "1w", "1M"):
        response = await history(query_stub, symbol, interval=interval, time_zone="Asia/Shanghai", limit=5000)
        assert_matches(response.candles, reference_candles(trades, interval, "Asia/Shanghai"), interval)
    summer_day = (await history(query_stub, symbol, interval="1d", time_zone="Asia/Shanghai", limit=1,
                                from_time=ts(datetime(1988, 6, 1, tzinfo=UTC)), order="asc")).candles[0]
    assert summer_day.time.ToDatetime(tzinfo=UTC) == datetime(1988, 6, 1, 15, tzinfo=UTC)  # midnight at +09:00
    # Which zone the reads use: the name for this symbol, +08:00 for one whose candles are all recent.
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        reads = History(pool)
        for candles_of, read_in in ((symbol, "Asia/Shanghai"), (recent_symbol, "<+08:00>-08:00")):
            query, _ = parse_history_request(query_pb2.GetHistoryRequest(
                symbol=candles_of, interval="1d", time_zone="Asia/Shanghai"), 5000)
            assert (await reads._in_constant_offset(query, None)).time_zone.sql_name == read_in, candles_of
    finally:
        await pool.close()


async def test_weeks_start_on_monday_and_months_on_the_first(query_stub: query_pb2_grpc.QueryServiceStub,
                                                             market: tuple[str, list[Trade]]) -> None:
    symbol, _ = market
    weeks = await history(query_stub, symbol, interval="1w", time_zone="Europe/Berlin", limit=100)
    months = await history(query_stub, symbol, interval="1M", time_zone="America/New_York", limit=100)
    berlin, new_york = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
    for candle in weeks.candles:
        local = candle.time.ToDatetime(tzinfo=UTC).astimezone(berlin)
        assert (local.weekday(), local.time()) == (0, time(0))
    assert [c.time.ToDatetime(tzinfo=UTC).astimezone(new_york).strftime("%Y-%m-%d %H:%M") for c in months.candles] \
        == ["2026-03-01 00:00", "2026-04-01 00:00", "2026-10-01 00:00", "2026-11-01 00:00"]


@pytest.mark.parametrize(("interval", "zone"), [("1m", "UTC"), ("5m", "Europe/Berlin"), ("15m", "+05:30"),
                                                ("1h", "America/New_York"), ("4h", "Europe/Berlin"), ("1d", "UTC"),
                                                ("1d", "+08:00"), ("1w", "UTC"), ("1d", "Asia/Shanghai"),
                                                ("1w", "Europe/Berlin")])
async def test_paging_forward_and_backward_covers_a_range_exactly_once(
        query_stub: query_pb2_grpc.QueryServiceStub, market: tuple[str, list[Trade]], interval: str,
        zone: str) -> None:
    symbol, trades = market
    lo, hi = datetime(2026, 3, 7, 5, 17, 3, tzinfo=UTC), datetime(2026, 10, 28, 11, 2, tzinfo=UTC)
    expected = [c for c in reference_candles(trades, interval, zone) if lo <= c.start < hi]
    limit = max(2, len(expected) // 7)
    for order in ("asc", "desc"):
        pages, token = [], ""
        while True:
            response = await history(query_stub, symbol, interval=interval, time_zone=zone, limit=limit,
                                     from_time=ts(lo), to_time=ts(hi), order=order, page_token=token)
            assert len(response.candles) <= limit
            pages.append(list(response.candles))
            token = response.next_page_token
            if not token:
                break
            assert len(pages) < 100, "paging does not end"
        got = [c for page in (pages if order == "asc" else pages[::-1]) for c in page]
        assert_matches(got, expected, f"{interval} {zone} {order}")


async def test_ticks_page_through_equal_timestamps_exactly_once(
        query_stub: query_pb2_grpc.QueryServiceStub, db: asyncpg.Connection) -> None:
    symbol = new_symbol()
    moment = datetime(2026, 2, 2, 12, tzinfo=UTC)
    # 25 ticks share each of 4 timestamps: a page boundary falls inside a run of equal times.
    trades = [Trade(f"id{n:03d}", moment + timedelta(seconds=n // 25), Decimal(100), Decimal(1), 1)
              for n in range(100)]
    await insert_symbol(db, symbol)
    await fold(db, symbol, trades)
    for order, walk_from in (("asc", True), ("desc", False)):
        seen, token = [], ""
        while True:
            fields = {"from_time": ts(moment)} if walk_from else {"to_time": ts(moment + timedelta(minutes=1))}
            response = await history(query_stub, symbol, view="ticks", limit=7, order=order, page_token=token,
                                     **fields)
            seen.append([t.trade_id for t in response.ticks])
            token = response.next_page_token
            if not token:
                break
        ids = [i for page in (seen if order == "asc" else seen[::-1]) for i in page]
        assert ids == [t.trade_id for t in trades], order


async def test_from_alone_walks_forward(query_stub: query_pb2_grpc.QueryServiceStub,
                                        market: tuple[str, list[Trade]]) -> None:
    symbol, trades = market
    lo = datetime(2026, 3, 20, tzinfo=UTC)
    response = await history(query_stub, symbol, interval="1h", from_time=ts(lo), limit=3)
    expected = [c for c in reference_candles(trades, "1h", "UTC") if c.start >= lo][:3]
    assert_matches(response.candles, expected, "from only")


@pytest.mark.parametrize(("fields", "field", "text"), [
    ({"interval": "7m"}, "interval", "must be"),
    ({"interval": "13h"}, "interval", "must be"),
    ({"interval": "2y"}, "interval", "must be"),
    ({"time_zone": "Mars/Olympus"}, "time_zone", "IANA"),
    ({"time_zone": "+25:00"}, "time_zone", "IANA"),
    ({"order": "sideways"}, "order", "asc or desc"),
    ({"page_token": "bm9wZQ"}, "page_token", "page token"),
])
async def test_bad_interval_zone_order_and_token_name_the_field(
        query_stub: query_pb2_grpc.QueryServiceStub, market: tuple[str, list[Trade]], fields: dict[str, str],
        field: str, text: str) -> None:
    symbol, _ = market
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await history(query_stub, symbol, **fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = dict(field_violations_of(caught.value))
    assert field in violations and text in violations[field]


async def test_a_token_of_another_query_is_refused(query_stub: query_pb2_grpc.QueryServiceStub,
                                                   market: tuple[str, list[Trade]]) -> None:
    symbol, _ = market
    first = await history(query_stub, symbol, interval="1h", limit=2)
    assert first.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await history(query_stub, symbol, interval="4h", limit=2, page_token=first.next_page_token)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("interval", "zone", "fill"), [("1h", "Europe/Berlin", "null"), ("6h", "America/New_York", "prev"),
                                                        ("1d", "+05:30", "prev"), ("4h", "Europe/Berlin", "null")])
async def test_fill_adds_every_empty_interval_between_candles(
        query_stub: query_pb2_grpc.QueryServiceStub, market: tuple[str, list[Trade]], interval: str, zone: str,
        fill: str) -> None:
    symbol, trades = market
    lo = datetime(2026, 4, 1, 12, tzinfo=UTC)  # the page crosses the months without trades (and a DST switch)
    real = [c for c in reference_candles(trades, interval, zone) if c.start >= lo][:40]
    response = await history(query_stub, symbol, interval=interval, time_zone=zone, from_time=ts(lo), limit=40,
                             fill=fill)
    zone_info = zone_of(zone)
    expected: list[tuple[datetime, datetime, Ref | None]] = []
    for ref in real:
        if expected:
            start = expected[-1][1]
            while start < ref.start:  # the empty buckets, by the reference's own bucketing
                bucket = reference_bucket(start, interval, zone_info)
                assert bucket[0] == start
                expected.append((start, bucket[1], None))
                start = bucket[1]
        expected.append((ref.start, ref.end, ref))
    assert len(response.candles) == len(expected) > len(real)
    previous = None
    for candle, (start, end, ref) in zip(response.candles, expected):
        assert (candle.time.ToDatetime(tzinfo=UTC), candle.close_time.ToDatetime(tzinfo=UTC)) == (start, end)
        if ref is not None:
            assert candle.trades == ref.trades and candle.close == float(ref.close)
            previous = candle
            continue
        assert candle.trades == 0 and candle.volume == 0 and not candle.HasField("sma10")
        if fill == "null":
            assert not candle.HasField("open") and not candle.HasField("close")
        else:
            assert candle.open == candle.high == candle.low == candle.close == previous.close


async def test_fill_refuses_a_page_it_would_make_too_long(query_stub: query_pb2_grpc.QueryServiceStub,
                                                          market: tuple[str, list[Trade]]) -> None:
    symbol, _ = market
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await history(query_stub, symbol, interval="1m", limit=5000, fill="null")  # 8 months of minutes
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fill" in dict(field_violations_of(caught.value))


def test_a_zone_whose_offset_no_longer_changes_has_a_constant_offset_from_a_moment() -> None:
    from marketdata.query.intervals import LONGEST_BUCKET, constant_offset, parse_time_zone

    def of(name: str) -> tuple[datetime | None, str, str] | None:
        constant = constant_offset(parse_time_zone(name))
        return None if constant is None else (constant[0], constant[1].name, constant[1].sql_name)

    # Kolkata and Tokyo have not changed since 1969. DST zones and offsets have no constant offset.
    assert of("Asia/Kolkata") == (None, "Asia/Kolkata", "<+05:30>-05:30")
    assert of("Asia/Tokyo") == (None, "Asia/Tokyo", "<+09:00>-09:00")
    assert of("Europe/Berlin") is None and of("America/New_York") is None
    assert of("+05:30") is None and of("UTC") is None
    # Shanghai's summer time ended last on 1991-09-15 at 02:00 (+09:00); Caracas went from -04:30 to -04:00 on
    # 2016-05-01 at 02:30. From the longest bucket after the change, late by less than the week between two
    # samples of the offset, a bucket holding data starts after the change.
    for name, sql_name, change in (("Asia/Shanghai", "<+08:00>-08:00", datetime(1991, 9, 14, 17, tzinfo=UTC)),
                                   ("America/Caracas", "<-04:00>+04:00", datetime(2016, 5, 1, 7, tzinfo=UTC))):
        since, *zone = of(name)
        assert zone == [name, sql_name]
        assert change + LONGEST_BUCKET <= since < change + LONGEST_BUCKET + timedelta(days=7)


def test_the_contract_pattern_of_interval_is_the_services_rule() -> None:
    """The OpenAPI document and protovalidate get the interval rule from the proto's pattern: it must accept
    exactly what the service parses, or clients would be told a valid interval is invalid (or the reverse)."""
    from marketdata.common.rules import field_rules

    pattern = re.compile(field_rules(query_pb2.GetHistoryRequest.DESCRIPTOR, "interval").string.pattern)
    for n in range(0, 1_500):
        for unit in "mhdwMys":
            text = f"{n}{unit}"
            assert bool(pattern.match(text)) == (parse_interval(text) is not None), text
    assert pattern.match("") and not pattern.match("01m")


@pytest.mark.parametrize(("interval", "zone"), [("1m", "UTC"), ("5m", "UTC"), ("1h", "Europe/Berlin"), ("1M", "+08:00"),
                                                ("1d", "Asia/Shanghai"), ("1w", "Europe/Berlin")])
async def test_numbers_string_gives_the_exact_decimals(query_stub: query_pb2_grpc.QueryServiceStub,
                                                        market: tuple[str, list[Trade]], interval: str,
                                                        zone: str) -> None:
    symbol, trades = market
    expected = reference_candles(trades, interval, zone)[-300:]
    response = await history(query_stub, symbol, interval=interval, time_zone=zone, limit=300, numbers="string")
    plain = await history(query_stub, symbol, interval=interval, time_zone=zone, limit=300)
    assert len(response.candles) == len(expected) == len(plain.candles)
    for candle, ref, double in zip(response.candles, expected, plain.candles):
        exact = candle.decimals
        at = f"{interval} {zone} {ref.start}"
        assert (Decimal(exact.open), Decimal(exact.high), Decimal(exact.low), Decimal(exact.close)) == (
            ref.open, ref.high, ref.low, ref.close), at
        assert (Decimal(exact.volume), Decimal(exact.quote_volume)) == (ref.volume, ref.quote_volume), at
        assert (Decimal(exact.taker_buy_volume), Decimal(exact.taker_buy_quote_volume)) == (
            ref.taker_volume, ref.taker_quote), at
        assert abs(Decimal(exact.vwap) - ref.quote_volume / ref.volume) < Decimal("1e-14") * ref.close, at
        # the doubles are the same as without numbers=string
        double.ClearField("decimals")
        candle.ClearField("decimals")
        assert candle == double, at
    assert not plain.candles[0].HasField("decimals")
