"""The hand-written tick validator (ingest's hot path) against protovalidate, the reference implementation of
the proto's buf.validate rules: on generated valid and invalid ticks, the same verdict and the same field paths.

The two rules protovalidate cannot know (symbol registered, event time at most the configured skew ahead)
are neutralised here: every symbol is registered and the clock is far in the future.
"""

from __future__ import annotations

import math
import random

from marketdata.common import rules
from marketdata.ingest.validation import TickRules, validate_ticks
from marketdata.v1 import ingest_pb2, market_pb2

TICK_RULES = TickRules(max_batch_ticks=rules.MAX_BATCH_TICKS, max_message_bytes=1 << 30, max_future_skew_seconds=5.0,
                       max_trade_id_length=rules.TRADE_ID_MAX_LENGTH)
FAR_FUTURE = 1e15  # seconds since the epoch: no generated event time is "in the future"

SYMBOL_ALPHABET = "ABCXYZ0189" * 4 + ".-_" * 3 + "a *>\x00é"
TEXT_SAMPLES = ["", "trade-1", "é✓ unicode", "\xa0nbsp", "line\u2028sep", "tab\tid", "nul\x00", "unit\x1fsep",
                "del\x7f", "c1\x85", "c1\x9f", "ok\xa0", "x" * 64, "x" * 65, "y" * 63 + "\x01"]
PRICES = [1e-12, 1e12, 100.0, 0.5, 1.2345678901234567, 0.0, -0.0, -1.0, math.nan, math.inf, -math.inf, 1e308,
          1e-13, math.nextafter(1e12, math.inf), math.nextafter(1e-12, 0.0), 5e-324]
SIZES = [0.0, -0.0, 1.0, 1e15, 1e-300, math.nextafter(1e15, math.inf), -1e-300, math.nan, math.inf, 1e308]
SECONDS = [0, 1, 1_700_000_000, 253_402_300_799, -1, -62_135_596_800, -298_800_000_000]


def random_text(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(TEXT_SAMPLES)
    return "".join(rng.choice("abcXYZ09-_ \x00\x1f\x7f\x85\x9f\xa0é✓\u2028") for _ in range(rng.randrange(0, 70)))


def random_symbol(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.4:
        return rng.choice(["BTCUSDT", "BTC-PERP", "ES.Z24", "A_B", "AB", "X" * 20, "BTC.", "A..B", "-BTC", "B",
                           "X" * 21, "A B", "A.-B", "A*B", "btc", ""])
    return "".join(rng.choice(SYMBOL_ALPHABET) for _ in range(rng.randrange(0, 23)))


def random_tick(rng: random.Random, hostile: float = 0.06) -> market_pb2.Tick:
    """Each field from the hostile generators with probability `hostile`, else an ordinary valid value."""

    def pick(valid: object, anything: object) -> object:
        return anything() if rng.random() < hostile else valid()  # type: ignore[operator]

    tick = market_pb2.Tick(
        symbol=pick(lambda: rng.choice(["BTCUSDT", "BTC-PERP", "ES.Z24", "A_B9"]), lambda: random_symbol(rng)),
        price=pick(lambda: 10 ** rng.uniform(-12, 12), lambda: rng.choice(PRICES)),
        size=pick(lambda: rng.choice([0.0, 10 ** rng.uniform(-8, 15)]), lambda: rng.choice(SIZES)),
        trade_id=pick(lambda: f"t{rng.randrange(10**9)}", lambda: random_text(rng)),
        source=pick(lambda: rng.choice(["", "feeder", "binance"]), lambda: random_text(rng)),
        side=pick(lambda: rng.choice([0, 1, 2]), lambda: rng.choice([0, 1, 2, 3, -1, 99])))
    if rng.random() >= hostile / 3:
        tick.event_time.seconds = pick(lambda: rng.randrange(0, 1_800_000_000), lambda: rng.choice(SECONDS))
        tick.event_time.nanos = rng.randrange(0, 1_000_000_000)
    return tick


def fast_paths(ticks: list[market_pb2.Tick]) -> set[str]:
    copies = [market_pb2.Tick.FromString(t.SerializeToString()) for t in ticks]
    request = ingest_pb2.PublishTicksRequest(items=copies)
    _, violations = validate_ticks(copies, request.ByteSize(), TICK_RULES, lambda _: True, now=FAR_FUTURE)
    return {field for field, _ in violations.items}


def reference_paths(ticks: list[market_pb2.Tick]) -> set[str]:
    return {field for field, _ in rules.violations(ingest_pb2.PublishTicksRequest(items=ticks))}


def test_fast_validator_agrees_with_protovalidate_on_generated_ticks() -> None:
    rng = random.Random(20241124)
    checked = invalid = 0
    for _ in range(3_000):
        ticks = [random_tick(rng) for _ in range(rng.randrange(1, 6))]
        fast, reference = fast_paths(ticks), reference_paths(ticks)
        assert fast == reference, [str(t).replace("\n", " ") for t in ticks]
        checked += len(ticks)
        invalid += bool(reference)
    # Both kinds were generated in numbers.
    assert 500 < invalid < 2_900, invalid


def test_every_valid_batch_is_valid_for_both() -> None:
    rng = random.Random(7)
    for _ in range(500):
        ticks = []
        for _ in range(rng.randrange(1, 20)):
            tick = market_pb2.Tick(symbol=rng.choice(["BTCUSDT", "BTC-PERP", "ES.Z24", "A_B9"]),
                                   price=10 ** rng.uniform(-12, 12), size=rng.choice([0.0, 10 ** rng.uniform(-8, 15)]),
                                   trade_id=rng.choice(["", f"t{rng.random()}", "é✓\xa0"]),
                                   source=rng.choice(["", "feeder", "binance"]), side=rng.choice([0, 1, 2]))
            tick.event_time.seconds = rng.randrange(0, 1_800_000_000)
            ticks.append(tick)
        assert fast_paths(ticks) == reference_paths(ticks) == set()


def test_event_times_that_are_not_valid_timestamps_are_invalid_for_both() -> None:
    """nanos outside 0..999,999,999 (which protovalidate itself compares as if normalised, and PostgreSQL
    refuses) and seconds outside 0001..9999: the same path for both, with the same words."""
    for seconds, nanos in [(0, -1), (1_700_000_000, -1), (1_700_000_000, 1_000_000_000),
                           (1_700_000_000, 1_999_999_999), (5, -999_999_999), (253_402_300_800, 0),
                           (-62_135_596_801, 0), (-1, 1_000_000_000)]:
        good = market_pb2.Tick(symbol="BTCUSDT", price=1.0, size=1.0, trade_id="good")
        good.event_time.seconds = 1_700_000_000
        bad = market_pb2.Tick(symbol="BTCUSDT", price=1.0, size=1.0, trade_id="bad")
        bad.event_time.seconds, bad.event_time.nanos = seconds, nanos
        ticks = [good, bad]
        assert fast_paths(ticks) == reference_paths(ticks) == {"items[1].event_time"}, (seconds, nanos)
        copies = [market_pb2.Tick.FromString(t.SerializeToString()) for t in ticks]
        _, found = validate_ticks(copies, 0, TICK_RULES, lambda _: True, now=FAR_FUTURE)
        reference = rules.violations(ingest_pb2.PublishTicksRequest(items=ticks))
        assert found.items == reference == [("items[1].event_time", rules.TIMESTAMP_RULE_TEXT)], (seconds, nanos)
