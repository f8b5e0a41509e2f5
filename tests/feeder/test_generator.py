"""The statistical shape of the feeder's trades: pure tests of marketdata.feeder.generator."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from decimal import Decimal

import pytest

from marketdata.feeder.generator import (
    BUY,
    DEFAULT_SPECS,
    SELL,
    SECONDS_PER_YEAR,
    SymbolSpec,
    Trade,
    TradeGenerator,
    round_to_step,
    spec_for,
)

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]


def by_symbol(trades: list[Trade]) -> dict[str, list[Trade]]:
    groups: dict[str, list[Trade]] = defaultdict(list)
    for trade in trades:
        groups[trade.symbol].append(trade)
    return groups


@pytest.fixture(scope="module")
def long_run() -> list[Trade]:
    """An hour of trades at 50/s."""
    return TradeGenerator(SYMBOLS, rate=50, seed=42, run_epoch=1_700_000_000_000).until(3600)


def test_prices_are_positive_and_on_the_tick_grid(long_run: list[Trade]) -> None:
    for trade in long_run:
        spec = DEFAULT_SPECS[trade.symbol]
        assert trade.price > 0
        units = trade.price / spec.tick_size
        assert abs(units - round(units)) < 1e-6, trade
        # No binary noise either: the decimal string has at most the tick's decimals.
        decimals = max(0, -Decimal(repr(spec.tick_size)).as_tuple().exponent)
        assert round(trade.price, decimals) == trade.price


def test_sizes_are_positive_lots(long_run: list[Trade]) -> None:
    for trade in long_run:
        spec = DEFAULT_SPECS[trade.symbol]
        assert trade.size >= spec.lot_size
        units = trade.size / spec.lot_size
        assert abs(units - round(units)) < 1e-6, trade


def test_each_symbol_trades_near_its_own_level(long_run: list[Trade]) -> None:
    groups = by_symbol(long_run)
    assert set(groups) == set(SYMBOLS)
    for symbol, trades in groups.items():
        level = DEFAULT_SPECS[symbol].price
        prices = [t.price for t in trades]
        # An hour of a ~60-100 % annual volatility moves a few percent at most.
        assert 0.85 * level < min(prices) and max(prices) < 1.15 * level, symbol
    assert statistics.median(t.price for t in groups["BTCUSDT"]) > 10_000
    assert statistics.median(t.price for t in groups["SOLUSDT"]) < 1_000


def test_trade_ids_and_times_strictly_increase_per_symbol(long_run: list[Trade]) -> None:
    for symbol, trades in by_symbol(long_run).items():
        seqs = [t.seq for t in trades]
        assert seqs == list(range(1, len(trades) + 1))
        ids = [t.trade_id for t in trades]
        assert len(set(ids)) == len(ids)
        assert ids == sorted(ids), "ids of a symbol sort like their sequence"
        assert all(i.startswith(f"{symbol}-1700000000000-") for i in ids)
        assert all(len(i) <= 64 for i in ids)
        times = [t.time for t in trades]
        assert all(a < b for a, b in zip(times, times[1:]))


def test_a_later_run_never_reuses_an_id() -> None:
    first = TradeGenerator(["BTCUSDT"], seed=1, run_epoch=1_700_000_000_000).take(100)
    second = TradeGenerator(["BTCUSDT"], seed=1, run_epoch=1_700_000_000_001).take(100)
    assert not {t.trade_id for t in first} & {t.trade_id for t in second}
    assert max(t.trade_id for t in first) < min(t.trade_id for t in second)


def test_same_seed_same_sequence_different_seed_different() -> None:
    def run(seed: int) -> list[tuple]:
        trades = TradeGenerator(SYMBOLS, rate=50, seed=seed, run_epoch=7).until(120)
        return [(t.symbol, t.trade_id, t.time, t.price, t.size, t.side) for t in trades]

    assert run(1) == run(1)
    assert run(1) != run(2)
    # The same seed also gives the same trades however the clock is sliced.
    sliced = TradeGenerator(SYMBOLS, rate=50, seed=1, run_epoch=7)
    pieces: list[Trade] = []
    for step in range(1, 601):
        pieces += sliced.until(step * 0.2)
    assert [(t.symbol, t.trade_id, t.time, t.price, t.size, t.side) for t in pieces] == run(1)


def test_log_returns_match_the_configured_volatility() -> None:
    spec = SymbolSpec("TESTUSD", "TEST", "USD", 1_000.0, 0.8, 0.0001, 0.001, 1.0)
    trades = TradeGenerator([spec], rate=20, seed=3, burst_probability=0.0).until(4 * 3600)
    # Sample the path once a minute: rounding and bid/ask bounce are negligible at that horizon.
    minute_close: dict[int, float] = {}
    for trade in trades:
        minute_close[int(trade.time // 60)] = trade.price
    closes = [minute_close[m] for m in sorted(minute_close)]
    returns = [math.log(b / a) for a, b in zip(closes, closes[1:])]
    expected = spec.volatility * math.sqrt(60 / SECONDS_PER_YEAR)
    realised = statistics.pstdev(returns)
    assert 0.85 * expected < realised < 1.15 * expected, (realised, expected)
    assert abs(statistics.fmean(returns)) < 3 * expected / math.sqrt(len(returns))


def test_volatility_differs_by_symbol(long_run: list[Trade]) -> None:
    def realised(symbol: str) -> float:
        closes: dict[int, float] = {}
        for trade in long_run:
            if trade.symbol == symbol:
                closes[int(trade.time // 60)] = trade.price
        series = [closes[m] for m in sorted(closes)]
        return statistics.pstdev(math.log(b / a) for a, b in zip(series, series[1:]))

    # BTC (55 %) moves less than DOGE (100 %).
    assert realised("BTCUSDT") < realised("DOGEUSDT")


def test_gaps_are_exponential_without_bursts() -> None:
    rate = 40.0
    trades = TradeGenerator(SYMBOLS, rate=rate, seed=5, burst_probability=0.0).take(40_000)
    gaps = [b.time - a.time for a, b in zip(trades, trades[1:])]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.03)
    # Exponential: standard deviation = mean, P(gap > mean) = 1/e, median = mean * ln 2.
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, abs=0.05)
    assert sum(g > mean for g in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.02)
    assert statistics.median(gaps) / mean == pytest.approx(math.log(2), abs=0.03)


def test_bursts_cluster_trades_but_keep_the_average_rate() -> None:
    rate = 40.0
    trades = TradeGenerator(SYMBOLS, rate=rate, seed=6).until(1800)
    assert len(trades) / 1800 == pytest.approx(rate, rel=0.05)
    gaps = [b.time - a.time for a, b in zip(trades, trades[1:])]
    # More variable than a Poisson process: bursts of quick trades between ordinary gaps.
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) > 1.05
    quick = [(a, b) for a, b in zip(trades, trades[1:]) if b.time - a.time < 0.05 / rate]
    assert quick, "bursts produce very short gaps"
    same_side = sum(a.symbol == b.symbol and a.side == b.side for a, b in quick) / len(quick)
    assert same_side > 0.6, "a burst sweeps one side of one symbol"


def test_sizes_are_heavy_tailed(long_run: list[Trade]) -> None:
    for symbol, trades in by_symbol(long_run).items():
        sizes = sorted(t.size for t in trades)
        median = statistics.median(sizes)
        assert median == pytest.approx(DEFAULT_SPECS[symbol].typical_size, rel=0.5), symbol
        assert sizes[-1] / median > 50, symbol
        p99 = sizes[int(0.99 * len(sizes))]
        assert p99 / median > 5, symbol
        # Heavier than a normal distribution: the mean sits well above the median.
        assert statistics.fmean(sizes) > 1.3 * median, symbol


def test_both_sides_trade(long_run: list[Trade]) -> None:
    buys = sum(t.side == BUY for t in long_run)
    sells = sum(t.side == SELL for t in long_run)
    assert buys + sells == len(long_run)
    assert 0.4 < buys / len(long_run) < 0.6


def test_rate_is_the_average_over_all_symbols(long_run: list[Trade]) -> None:
    assert len(long_run) / 3600 == pytest.approx(50, rel=0.05)
    counts = {s: len(t) for s, t in by_symbol(long_run).items()}
    assert counts["BTCUSDT"] > counts["SOLUSDT"] > counts["DOGEUSDT"]


def test_skip_to_jumps_without_trades() -> None:
    generator = TradeGenerator(["BTCUSDT"], rate=50, seed=1)
    before = generator.until(10)
    generator.skip_to(100)
    after = generator.until(101)
    assert after and all(t.time > 100 for t in after)
    assert after[0].seq == before[-1].seq + 1, "no sequence number is lost"


def test_unknown_symbols_get_a_plausible_spec() -> None:
    spec = spec_for("FOOUSDT")
    assert spec == spec_for("fooUSDT")
    assert (spec.base, spec.quote) == ("FOO", "USDT")
    assert 0.05 < spec.price < 20_000 and 0.1 < spec.volatility < 2
    assert round_to_step(spec.price, spec.tick_size) == spec.price
    trades = TradeGenerator([spec], seed=1).until(60)
    assert trades and all(t.price > 0 for t in trades)


def test_round_to_step() -> None:
    assert round_to_step(0.1 + 0.2, 0.1) == 0.3
    assert round_to_step(43000.004, 0.01, "up") == 43000.01
    assert round_to_step(43000.004, 0.01, "down") == 43000.0
    assert round_to_step(43000.01, 0.01, "up") == 43000.01
    assert round_to_step(0.123456, 0.0001) == 0.1235


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        TradeGenerator([], seed=1)
    with pytest.raises(ValueError):
        TradeGenerator(["BTCUSDT", "BTCUSDT"])
    with pytest.raises(ValueError):
        TradeGenerator(["BTCUSDT"], rate=0)


def test_assets_of_odd_symbols_are_valid() -> None:
    for symbol in ("BTC-PERP", "ES.F_2024", "AB"):
        spec = spec_for(symbol)
        assert 1 <= len(spec.base) <= 12 and spec.base.isalnum() and spec.base.isupper() or spec.base.isdigit()
        assert spec.quote
