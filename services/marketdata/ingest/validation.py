"""Tick and symbol validation. Every problem is reported with its field path, e.g. items[3].price."""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from marketdata.common.errors import FieldViolations
from marketdata.v1 import market_pb2

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9._-]{2,20}$")
ASSET_PATTERN = re.compile(r"^[A-Z0-9]{1,12}$")
MAX_SOURCE_LENGTH = 64
# Enough to fix a batch; the rest are summarised so an error never outgrows the batch.
MAX_REPORTED_VIOLATIONS = 100
_SIDES = frozenset(market_pb2.Side.values())


@dataclass(frozen=True)
class TickRules:
    max_batch_ticks: int
    max_message_bytes: int
    max_future_skew_seconds: float
    max_trade_id_length: int


@dataclass
class ValidatedBatch:
    """The distinct ticks of a valid batch grouped by symbol, in arrival order."""

    by_symbol: dict[str, list[market_pb2.Tick]] = field(default_factory=dict)
    duplicates: int = 0


def derived_trade_id(tick: market_pb2.Tick) -> str:
    """A deterministic id from the tick's content, so exact duplicates without a trade id collapse."""
    content = (f"{tick.symbol}|{tick.price!r}|{tick.size!r}|{tick.event_time.seconds}.{tick.event_time.nanos:09d}"
               f"|{tick.side}|{tick.source}")
    return "d-" + hashlib.blake2b(content.encode(), digest_size=12).hexdigest()


def validate_ticks(
    ticks: Sequence[market_pb2.Tick],
    message_bytes: int,
    rules: TickRules,
    symbol_status: Callable[[str], bool | None],
    now: float | None = None,
) -> tuple[ValidatedBatch, FieldViolations]:
    """Checks every tick; fills missing trade ids; groups by symbol and drops in-batch duplicates.

    symbol_status(symbol) is True for an active symbol, False for an inactive one, None for an unknown one.
    """
    violations = FieldViolations()
    batch = ValidatedBatch()
    if not ticks:
        violations.add("items", "at least one tick is required")
        return batch, violations
    if len(ticks) > rules.max_batch_ticks:
        violations.add("items", f"{len(ticks)} ticks in one batch; at most {rules.max_batch_ticks} are allowed")
        return batch, violations
    if message_bytes > rules.max_message_bytes:
        violations.add("items", f"batch is {message_bytes} bytes; at most {rules.max_message_bytes} are allowed")
        return batch, violations

    latest_allowed = (time.time() if now is None else now) + rules.max_future_skew_seconds
    fast = _valid_batch(ticks, rules, symbol_status, latest_allowed)
    if fast is not None:
        return fast, violations
    # Some tick is invalid: the full pass below names every problem.
    seen: set[tuple[str, str]] = set()
    reported = 0
    problems = 0
    for index, tick in enumerate(ticks):
        errors: list[tuple[str, str]] = []
        symbol = tick.symbol
        if not SYMBOL_PATTERN.match(symbol):
            errors.append(("symbol", f"{symbol!r} is not a symbol: 2 to 20 characters of A-Z, 0-9, '.', '-', '_'"))
        else:
            status = symbol_status(symbol)
            if status is None:
                errors.append(("symbol", f"{symbol} is not registered (POST /api/v1/webhooks/symbols first)"))
            elif status is False:
                errors.append(("symbol", f"{symbol} is not active"))
        price = tick.price
        if not (math.isfinite(price) and price > 0):
            errors.append(("price", f"must be a finite number > 0, got {price!r}"))
        size = tick.size
        if not (math.isfinite(size) and size >= 0):
            errors.append(("size", f"must be a finite number >= 0, got {size!r}"))
        if not tick.HasField("event_time"):
            errors.append(("event_time", "is required"))
        else:
            seconds = tick.event_time.seconds + tick.event_time.nanos / 1e9
            if seconds > latest_allowed:
                errors.append(("event_time", f"is {seconds - latest_allowed + rules.max_future_skew_seconds:.1f}s "
                                             f"in the future; at most {rules.max_future_skew_seconds:g}s is allowed"))
        if len(tick.trade_id) > rules.max_trade_id_length:
            errors.append(("trade_id", f"is {len(tick.trade_id)} characters; at most {rules.max_trade_id_length}"))
        if tick.side not in _SIDES:
            errors.append(("side", f"unknown side {tick.side}"))
        if len(tick.source) > MAX_SOURCE_LENGTH:
            errors.append(("source", f"is {len(tick.source)} characters; at most {MAX_SOURCE_LENGTH}"))
        if errors:
            problems += len(errors)
            for name, description in errors:
                if reported < MAX_REPORTED_VIOLATIONS:
                    violations.add(f"items[{index}].{name}", description)
                    reported += 1
            continue
        if violations:
            continue  # the batch is rejected anyway: keep looking for problems only
        if not tick.trade_id:
            tick.trade_id = derived_trade_id(tick)
        key = (symbol, tick.trade_id)
        if key in seen:
            batch.duplicates += 1
            continue
        seen.add(key)
        group = batch.by_symbol.get(symbol)
        if group is None:
            group = batch.by_symbol[symbol] = []
        group.append(tick)
    if problems > reported:
        violations.add("items", f"{problems - reported} more problems not listed")
    return batch, violations


_INF = math.inf


def _valid_batch(ticks: Sequence[market_pb2.Tick], rules: TickRules, symbol_status: Callable[[str], bool | None],
                 latest_allowed: float) -> ValidatedBatch | None:
    """The batch when every tick is valid (the common case), checked in one lean pass; None at the first
    problem. Each distinct symbol is checked once; derived trade ids are only assigned once all are valid."""
    batch = ValidatedBatch()
    by_symbol = batch.by_symbol
    symbols_ok: dict[str, bool] = {}
    seen: set[tuple[str, str]] = set()
    derived: list[tuple[market_pb2.Tick, str]] = []
    max_trade_id = rules.max_trade_id_length
    for tick in ticks:
        symbol = tick.symbol
        ok = symbols_ok.get(symbol)
        if ok is None:
            ok = symbols_ok[symbol] = bool(SYMBOL_PATTERN.match(symbol)) and symbol_status(symbol) is True
        # 0 < x < inf is false for NaN and the infinities, like isfinite(x) and x > 0.
        if not ok or not (0 < tick.price < _INF and 0 <= tick.size < _INF) or not tick.HasField("event_time"):
            return None
        ts = tick.event_time
        if ts.seconds + ts.nanos / 1e9 > latest_allowed:
            return None
        trade_id = tick.trade_id
        if len(trade_id) > max_trade_id or tick.side not in _SIDES or len(tick.source) > MAX_SOURCE_LENGTH:
            return None
        if not trade_id:
            trade_id = derived_trade_id(tick)
            derived.append((tick, trade_id))
        key = (symbol, trade_id)
        if key in seen:
            batch.duplicates += 1
            continue
        seen.add(key)
        group = by_symbol.get(symbol)
        if group is None:
            group = by_symbol[symbol] = []
        group.append(tick)
    for tick, trade_id in derived:
        tick.trade_id = trade_id
    return batch


def validate_symbols(symbols: Sequence[market_pb2.Symbol]) -> FieldViolations:
    violations = FieldViolations()
    if not symbols:
        violations.add("items", "at least one symbol is required")
    seen: set[str] = set()
    for index, item in enumerate(symbols):
        if not SYMBOL_PATTERN.match(item.symbol):
            violations.add(f"items[{index}].symbol",
                           f"{item.symbol!r} is not a symbol: 2 to 20 characters of A-Z, 0-9, '.', '-', '_'")
        elif item.symbol in seen:
            violations.add(f"items[{index}].symbol", f"{item.symbol} appears more than once")
        seen.add(item.symbol)
        for name in ("base", "quote"):
            value = getattr(item, name)
            if not ASSET_PATTERN.match(value):
                violations.add(f"items[{index}].{name}", f"{value!r} is not an asset: 1 to 12 characters of A-Z, 0-9")
    return violations
