"""GetTicker (rolling-window statistics) against an independent computation over every tick of the window.

Random ticks with gaps over the last 8 days, dense (seconds apart) around both edges of the 1-day window and
in the last minutes, a few in the future; folded by the aggregator's own SQL. The reference filters the ticks
to [openTime, closeTime] of the response (the window the service used) and aggregates them in Python.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import grpc
import pytest
from nats.aio.client import Client as NATS

from marketdata.common.errors import field_violations_of
from marketdata.v1 import market_pb2, query_pb2, query_pb2_grpc
from tests.query.helpers import UTC, insert_symbol, new_symbol
from tests.query.test_intervals import Trade, fold
from tests.query.test_watch import live_subject, update

WINDOWS = ("1m", "3m", "15m", "1h", "4h", "1d", "3d", "7d")


def random_trades(rng: random.Random, now: datetime) -> list[Trade]:
    moments: list[datetime] = []
    moment = now - timedelta(days=8)
    while moment < now - timedelta(minutes=6):
        moment += timedelta(seconds=rng.choice((3, 40, 600, 3600, 5 * 3600)), microseconds=rng.randint(0, 999999))
        moments.append(moment)
    for center in (now - timedelta(days=1), now - timedelta(days=3), now - timedelta(hours=1)):
        moments += [center + timedelta(seconds=rng.uniform(-300, 300)) for _ in range(300)]
    moments += [now - timedelta(seconds=rng.uniform(0, 360)) for _ in range(400)]
    moments += [now + timedelta(hours=1, seconds=n) for n in range(3)]  # in the future: never in a window
    return [Trade(f"k{n:05d}", m, Decimal(rng.randint(5000, 15000)) / 100, Decimal(rng.randint(0, 300)) / 100,
                  rng.choice((0, 1, 2))) for n, m in enumerate(moments)]


def assert_ticker(ticker: market_pb2.Ticker, trades: Sequence[Trade], label: str) -> None:
    start, end = ticker.open_time.ToDatetime(tzinfo=UTC), ticker.close_time.ToDatetime(tzinfo=UTC)
    inside = sorted((t for t in trades if start <= t.event_time <= end), key=lambda t: (t.event_time, t.trade_id))
    assert ticker.trades == len(inside), label
    if not inside:
        assert not ticker.HasField("last") and not ticker.HasField("open"), label
        assert ticker.volume == 0 and ticker.quote_volume == 0, label
        return
    first, last = inside[0], inside[-1]
    volume = sum((t.size for t in inside), Decimal(0))
    quote = sum((t.price * t.size for t in inside), Decimal(0))
    assert (ticker.open, ticker.last) == (float(first.price), float(last.price)), label
    assert ticker.high == float(max(t.price for t in inside)), label
    assert ticker.low == float(min(t.price for t in inside)), label
    assert ticker.change == pytest.approx(float(last.price - first.price), abs=1e-9), label
    assert ticker.change_percent == pytest.approx(float((last.price - first.price) / first.price * 100), rel=1e-9,
                                                  abs=1e-9), label
    assert ticker.volume == pytest.approx(float(volume), rel=1e-12), label
    assert ticker.quote_volume == pytest.approx(float(quote), rel=1e-12), label
    if volume:
        assert ticker.vwap == pytest.approx(float(quote / volume), rel=1e-12), label
    assert ticker.first_trade_time.ToDatetime(tzinfo=UTC) == first.event_time, label
    assert ticker.last_trade_time.ToDatetime(tzinfo=UTC) == last.event_time, label


@pytest.fixture(scope="module")
async def ticked(db: asyncpg.Connection) -> tuple[list[str], dict[str, list[Trade]]]:
    rng = random.Random(2424)
    now = datetime.now(UTC)
    symbols = [new_symbol() for _ in range(3)]
    by_symbol = {}
    for symbol in symbols:
        await insert_symbol(db, symbol)
        trades = random_trades(rng, now)
        by_symbol[symbol] = trades
        shuffled = trades[:]
        rng.shuffle(shuffled)
        for index in range(0, len(shuffled), 800):
            await fold(db, symbol, shuffled[index:index + 800])
    quiet = new_symbol()  # registered, never traded
    await insert_symbol(db, quiet)
    by_symbol[quiet] = []
    return [*symbols, quiet], by_symbol


@pytest.mark.parametrize("window", WINDOWS)
async def test_ticker_equals_the_ticks_of_its_window(query_stub: query_pb2_grpc.QueryServiceStub,
                                                     ticked: tuple[list[str], dict[str, list[Trade]]],
                                                     window: str) -> None:
    symbols, trades = ticked
    response = await query_stub.GetTicker(query_pb2.GetTickerRequest(symbol=symbols, window_size=window), timeout=10)
    assert [t.symbol for t in response.items] == sorted(symbols)
    for ticker in response.items:
        assert ticker.window_size == window
        assert ticker.close_time.ToDatetime(tzinfo=UTC) - ticker.open_time.ToDatetime(tzinfo=UTC) == {
            "m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}[window[-1]] * int(window[:-1])
        assert_ticker(ticker, trades[ticker.symbol], f"{ticker.symbol} {window}")


async def test_default_window_is_a_day_and_all_active_symbols_are_listed(
        query_stub: query_pb2_grpc.QueryServiceStub, ticked: tuple[list[str], dict[str, list[Trade]]]) -> None:
    symbols, trades = ticked
    response = await query_stub.GetTicker(query_pb2.GetTickerRequest(), timeout=10)
    listed = {t.symbol: t for t in response.items}
    assert set(symbols) <= set(listed)
    assert [t.symbol for t in response.items] == sorted(listed)
    one = listed[symbols[0]]
    assert one.window_size == "1d"
    assert_ticker(one, trades[symbols[0]], "all symbols")


async def test_comma_separated_symbols(query_stub: query_pb2_grpc.QueryServiceStub,
                                       ticked: tuple[list[str], dict[str, list[Trade]]]) -> None:
    symbols, _ = ticked
    response = await query_stub.GetTicker(query_pb2.GetTickerRequest(symbol=[f"{symbols[1]},{symbols[0]}"]),
                                          timeout=10)
    assert [t.symbol for t in response.items] == sorted(symbols[:2])


async def test_unknown_symbol_and_bad_window(query_stub: query_pb2_grpc.QueryServiceStub,
                                             ticked: tuple[list[str], dict[str, list[Trade]]]) -> None:
    symbols, _ = ticked
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query_stub.GetTicker(query_pb2.GetTickerRequest(symbol=[symbols[0], "NOPE99"]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "NOPE99" in caught.value.details()
    for window in ("0m", "60m", "24h", "8d", "1w", "1M"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query_stub.GetTicker(query_pb2.GetTickerRequest(symbol=symbols[:1], window_size=window), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "window_size" in dict(field_violations_of(caught.value)), window


async def test_symbol_lists_follow_the_contract(query_stub: query_pb2_grpc.QueryServiceStub,
                                                ticked: tuple[list[str], dict[str, list[Trade]]]) -> None:
    """The buf.validate rules of GetTickerRequest.symbol hold: an empty entry or an empty part of a list is an
    error naming the entry (it used to list every active symbol), and max_items counts the entries given."""
    symbols, _ = ticked
    for entries, bad in (([""], "symbol[0]"), ([symbols[0], f"{symbols[1]},"], "symbol[1]"),
                         ([f"{symbols[0]},,{symbols[1]}"], "symbol[0]"), ([symbols[0]] * 1001, "symbol")):
        for call in (lambda: query_stub.GetTicker(query_pb2.GetTickerRequest(symbol=entries), timeout=10),
                     lambda: query_stub.WatchTicker(query_pb2.WatchTickerRequest(symbol=entries[:101]),
                                                    timeout=10).read()):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, entries[:2]
            assert bad in dict(field_violations_of(caught.value)), (entries[:2], field_violations_of(caught.value))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query_stub.WatchTicker(query_pb2.WatchTickerRequest(symbol=[symbols[0]] * 101), timeout=10).read()
    assert field_violations_of(caught.value) == [("symbol", "at most 100 symbols per stream")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # many bad entries too: the count is named first
        await query_stub.GetTicker(query_pb2.GetTickerRequest(symbol=["x"] * 1001), timeout=10)
    assert field_violations_of(caught.value)[0] == ("symbol", "at most 1000 symbols per request")
    response = await query_stub.GetTicker(query_pb2.GetTickerRequest(symbol=[symbols[0]] * 1000), timeout=10)
    assert [t.symbol for t in response.items] == [symbols[0]]


async def test_watch_ticker_sends_the_watchlist_then_the_symbols_that_traded(
        query_stub: query_pb2_grpc.QueryServiceStub, db: asyncpg.Connection, nats_client: NATS,
        service_env: dict[str, str]) -> None:
    quiet, busy = new_symbol(), new_symbol()
    now = datetime.now(UTC)
    for symbol in (quiet, busy):
        await insert_symbol(db, symbol)
        await fold(db, symbol, [Trade(f"{symbol}-0", now - timedelta(minutes=5), Decimal(10), Decimal(2), 1)])
    call = query_stub.WatchTicker(query_pb2.WatchTickerRequest(symbol=[f"{quiet},{busy}"], window_size="1h"))
    try:
        first = await asyncio.wait_for(call.read(), 10)
        assert [(t.symbol, t.trades, t.last) for t in first.items] == sorted([(quiet, 1, 10.0), (busy, 1, 10.0)])
        # The aggregator commits a trade of `busy`, then announces it on the live subject.
        await fold(db, busy, [Trade(f"{busy}-1", datetime.now(UTC), Decimal(12), Decimal(1), 2)])
        await nats_client.publish(live_subject(service_env, busy), update(busy, 1).SerializeToString())
        second = await asyncio.wait_for(call.read(), 10)
        [ticker] = second.items
        assert (ticker.symbol, ticker.trades, ticker.last, ticker.open, ticker.high) == (busy, 2, 12.0, 10.0, 12.0)
        assert ticker.change_percent == pytest.approx(20.0)
    finally:
        call.cancel()


async def test_watch_ticker_needs_a_symbol(query_stub: query_pb2_grpc.QueryServiceStub) -> None:
    call = query_stub.WatchTicker(query_pb2.WatchTickerRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_late_trade_for_an_old_hour_counts_at_once(database_url: str, db: asyncpg.Connection) -> None:
    """Whole hours come from the stored hour tier, which the fold updates with the ticks: a trade arriving late
    for an hour of the window counts in the very next answer."""
    from marketdata.query.history import History

    symbol = new_symbol()
    now = datetime.now(UTC)
    three_hours_ago = now - timedelta(hours=3)
    await insert_symbol(db, symbol)
    await fold(db, symbol, [Trade(f"{symbol}-a", three_hours_ago, Decimal(10), Decimal(1), 1),
                            Trade(f"{symbol}-b", now - timedelta(seconds=5), Decimal(11), Decimal(1), 1)])
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        history = History(pool)
        before = (await history.ticker([symbol], "1d", timedelta(days=1), None)).items[0]
        assert (before.trades, before.high) == (2, 11.0)
        await fold(db, symbol, [Trade(f"{symbol}-late", three_hours_ago - timedelta(seconds=1), Decimal(50),
                                      Decimal(1), 1)])
        after = (await history.ticker([symbol], "1d", timedelta(days=1), None)).items[0]
        assert (after.trades, after.high, after.open, after.last) == (3, 50.0, 50.0, 11.0)
    finally:
        await pool.close()


@pytest.mark.parametrize("request_type", [query_pb2.GetTickerRequest, query_pb2.WatchTickerRequest])
def test_the_contract_pattern_of_window_size_is_the_services_rule(request_type: type) -> None:
    """The document and protovalidate read the window rule from the proto: exactly what the service takes."""
    import re

    from marketdata.common.rules import field_rules
    from marketdata.query.ticker import WINDOW_LIMITS, WINDOW_PATTERN

    def accepted(text: str) -> bool:
        match = WINDOW_PATTERN.match(text)
        return bool(match) and int(match.group(1)) <= WINDOW_LIMITS[match.group(2)]

    pattern = re.compile(field_rules(request_type.DESCRIPTOR, "window_size").string.pattern)
    for n in range(0, 200):
        for unit in "mhdws":
            assert bool(pattern.match(f"{n}{unit}")) == accepted(f"{n}{unit}"), f"{n}{unit}"
