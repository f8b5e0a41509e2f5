"""Tick and symbol validation. Every problem is reported with its field path, e.g. items[3].price.

The rules are the buf.validate annotations of the protos (marketdata.common.rules). Tick batches are the
hot path: they are checked here by hand, in one lean pass when every tick is valid, and a test compares
this validator's verdicts and field paths with protovalidate's on generated ticks. The rules that depend
on the moment or on the registry (event time at most the configured skew ahead, symbol registered and
active) are this module's own. Symbol upserts are low-rate: protovalidate checks them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from marketdata.common import rules
from marketdata.common.errors import FieldViolations
from marketdata.v1 import market_pb2

PRICE_MIN, PRICE_MAX, SIZE_MIN, SIZE_MAX = rules.PRICE_MIN, rules.PRICE_MAX, rules.SIZE_MIN, rules.SIZE_MAX
EVENT_TIME_MIN_SECONDS = rules.EVENT_TIME_MIN_SECONDS
TIMESTAMP_MAX_SECONDS = rules.TIMESTAMP_MAX_SECONDS
MAX_SOURCE_LENGTH = rules.SOURCE_MAX_LENGTH
TEXT_PATTERN = rules.TEXT_PATTERN
# Problems collected at most; the status lists as many as fit its byte budget (common/errors.py) and counts the
# rest in one "N more problems not listed" entry.
MAX_REPORTED_VIOLATIONS = 100
DAY_SECONDS = 86_400
_SIDES = frozenset(market_pb2.Side.values())


@dataclass(frozen=True)
class TickRules:
    max_batch_ticks: int
    max_message_bytes: int
    max_future_skew_seconds: float
    max_trade_id_length: int
    # RETENTION_TICKS_DAYS (0: for ever). Older ticks are refused: their day's partition of ticks_history is
    # dropped, or soon will be, and with it what deduplicates a tick sent again (it would count twice).
    kept_ticks_days: int = 0

    def earliest_event_seconds(self, now: float) -> int:
        """The first event time accepted: 1970, or the start of the first UTC day whose ticks stay kept for a
        day more at least (so a tick accepted now is stored before its partition can be dropped)."""
        if not self.kept_ticks_days:
            return EVENT_TIME_MIN_SECONDS
        return -(-int(now - self.kept_ticks_days * DAY_SECONDS) // DAY_SECONDS) * DAY_SECONDS


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
    rules_: TickRules,
    symbol_status: Callable[[str], bool | None],
    now: float | None = None,
) -> tuple[ValidatedBatch, FieldViolations]:
    """Checks every tick; fills missing trade ids; groups by symbol and drops in-batch duplicates (same symbol,
    event time to the microsecond and trade id: the key ticks_history deduplicates on, so a batch counts what
    storage keeps).

    symbol_status(symbol) is True for an active symbol, False for an inactive one, None for an unknown one.
    """
    violations = FieldViolations()
    batch = ValidatedBatch()
    if not ticks:
        violations.add("items", "at least one tick is required")
        return batch, violations
    if len(ticks) > rules_.max_batch_ticks:
        violations.add("items", f"{len(ticks)} ticks in one batch; at most {rules_.max_batch_ticks} are allowed")
        return batch, violations
    if message_bytes > rules_.max_message_bytes:
        violations.add("items", f"batch is {message_bytes} bytes; at most {rules_.max_message_bytes} are allowed")
        return batch, violations

    now = time.time() if now is None else now
    earliest_allowed, latest_allowed = rules_.earliest_event_seconds(now), now + rules_.max_future_skew_seconds
    fast = _valid_batch(ticks, rules_, symbol_status, earliest_allowed, latest_allowed)
    if fast is not None:
        return fast, violations
    # Some tick is invalid: the full pass below names every problem.
    seen: set[tuple[str, int, int, str]] = set()
    reported = 0
    problems = 0
    for index, tick in enumerate(ticks):
        symbol = tick.symbol
        errors = tick_errors(tick, rules_, symbol_status, earliest_allowed, latest_allowed)
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
        key = (symbol, tick.event_time.seconds, tick.event_time.nanos // 1000, tick.trade_id)
        if key in seen:
            batch.duplicates += 1
            continue
        seen.add(key)
        group = batch.by_symbol.get(symbol)
        if group is None:
            group = batch.by_symbol[symbol] = []
        group.append(tick)
    violations.unlisted = problems - reported
    return batch, violations


def tick_errors(tick: market_pb2.Tick, rules_: TickRules, symbol_status: Callable[[str], bool | None],
                earliest_allowed: int, latest_allowed: float) -> list[tuple[str, str]]:
    """(field, description) of every rule the tick breaks."""
    errors: list[tuple[str, str]] = []
    symbol = tick.symbol
    problem = rules.symbol_problem(symbol)
    if problem:
        errors.append(("symbol", problem))
    else:
        status = symbol_status(symbol)
        if status is None:
            errors.append(("symbol", f"{symbol} is not registered (POST /api/v1/webhooks/symbols first)"))
        elif status is False:
            errors.append(("symbol", f"{symbol} is not active"))
    price = tick.price
    if not PRICE_MIN <= price <= PRICE_MAX:  # false for NaN too
        errors.append(("price", f"must be a finite number from {PRICE_MIN:g} to {PRICE_MAX:g}, got {price!r}"))
    size = tick.size
    if not SIZE_MIN <= size <= SIZE_MAX:
        errors.append(("size", f"must be a finite number from {SIZE_MIN:g} to {SIZE_MAX:g}, got {size!r}"))
    if not tick.HasField("event_time"):
        errors.append(("event_time", "required"))
    else:
        ts = tick.event_time
        seconds = ts.seconds + ts.nanos / 1e9
        invalid = rules.timestamp_problem(ts)  # nanos not normalised: storage refuses it
        if invalid:
            errors.append(("event_time", invalid))
        elif ts.seconds < EVENT_TIME_MIN_SECONDS:
            errors.append(("event_time", f"is before {EVENT_TIME_MIN_SECONDS} s since the epoch (1970-01-01)"))
        elif ts.seconds < earliest_allowed:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(earliest_allowed))
            errors.append(("event_time", f"is before {since}: ticks are kept {rules_.kept_ticks_days} days "
                                         "(RETENTION_TICKS_DAYS), and an older one could not be deduplicated"))
        elif seconds > latest_allowed:
            errors.append(("event_time", f"is {seconds - latest_allowed + rules_.max_future_skew_seconds:.1f}s "
                                         f"in the future; at most {rules_.max_future_skew_seconds:g}s is allowed"))
    trade_id = tick.trade_id
    if len(trade_id) > rules_.max_trade_id_length:
        errors.append(("trade_id", f"is {len(trade_id)} characters; at most {rules_.max_trade_id_length}"))
    elif not _plain_text(trade_id):
        errors.append(("trade_id", "must not contain control characters"))
    if tick.side not in _SIDES:
        errors.append(("side", f"unknown side {tick.side}"))
    source = tick.source
    if len(source) > MAX_SOURCE_LENGTH:
        errors.append(("source", f"is {len(source)} characters; at most {MAX_SOURCE_LENGTH}"))
    elif not _plain_text(source):
        errors.append(("source", "must not contain control characters"))
    return errors


def _plain_text(value: str) -> bool:
    """No control characters. isprintable() is a quick sufficient test (controls are never printable)."""
    return value.isprintable() or TEXT_PATTERN.match(value) is not None


def _valid_batch(ticks: Sequence[market_pb2.Tick], rules_: TickRules,
                 symbol_status: Callable[[str], bool | None], earliest_allowed: int,
                 latest_allowed: float) -> ValidatedBatch | None:
    """The batch when every tick is valid (the common case), checked in one lean pass; None at the first
    problem. Each distinct symbol is checked once; derived trade ids are only assigned once all are valid."""
    batch = ValidatedBatch()
    by_symbol = batch.by_symbol
    symbols_ok: dict[str, bool] = {}
    sources_ok: dict[str, bool] = {}
    seen: set[tuple[str, int, int, str]] = set()  # the storage's dedup key (symbol, event_time, trade_id)
    derived: list[tuple[market_pb2.Tick, str]] = []
    max_trade_id = rules_.max_trade_id_length
    for tick in ticks:
        symbol = tick.symbol
        ok = symbols_ok.get(symbol)
        if ok is None:
            ok = symbols_ok[symbol] = rules.is_symbol(symbol) and symbol_status(symbol) is True
        # Chained comparisons are false for NaN, so they also check finiteness.
        if (not ok or not (PRICE_MIN <= tick.price <= PRICE_MAX and SIZE_MIN <= tick.size <= SIZE_MAX)
                or not tick.HasField("event_time")):
            return None
        ts = tick.event_time
        seconds, nanos = ts.seconds, ts.nanos  # read once: each read of a field is a call into upb
        # A valid Timestamp (nanos normalised: storage refuses others), within the ticks kept, at most the skew
        # ahead.
        if (not (earliest_allowed <= seconds <= TIMESTAMP_MAX_SECONDS and 0 <= nanos <= 999_999_999)
                or seconds + nanos / 1e9 > latest_allowed):
            return None
        trade_id = tick.trade_id
        if len(trade_id) > max_trade_id or not (trade_id.isprintable() or TEXT_PATTERN.match(trade_id)):
            return None
        source = tick.source
        source_ok = sources_ok.get(source)
        if source_ok is None:
            source_ok = sources_ok[source] = len(source) <= MAX_SOURCE_LENGTH and _plain_text(source)
        if not source_ok or tick.side not in _SIDES:
            return None
        if not trade_id:
            trade_id = derived_trade_id(tick)
            derived.append((tick, trade_id))
        key = (symbol, seconds, nanos // 1000, trade_id)  # storage keeps microseconds
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

