"""The contract's rules, read from the `buf.validate` annotations of the protos (the one place they are written).

Python constants (the symbol pattern, bounds, limits) come from here; low-rate requests are checked with
protovalidate itself (`check`), and the tick batches' fast validator uses the constants below (a test
compares its verdicts with protovalidate's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import protovalidate
from buf.validate import validate_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from marketdata.common.errors import FieldViolations, quoted
from marketdata.v1 import ingest_pb2, market_pb2, query_pb2


def field_rules(message: Descriptor, name: str) -> validate_pb2.FieldRules:
    """The buf.validate rules of one field (empty when it has none)."""
    return message.fields_by_name[name].GetOptions().Extensions[validate_pb2.field]


_TICK = market_pb2.Tick.DESCRIPTOR
_SYMBOL_RULES = field_rules(_TICK, "symbol").string

# Symbols: segments of A-Z0-9 joined by single '.', '_' or '-', so always a valid NATS subject token sequence.
# Public although only is_symbol uses it here: the tests hold the migration's CHECK and the OpenAPI document to it.
SYMBOL_PATTERN = re.compile(_SYMBOL_RULES.pattern)
SYMBOL_MIN_LENGTH = _SYMBOL_RULES.min_len
SYMBOL_MAX_LENGTH = _SYMBOL_RULES.max_len
SYMBOL_RULE_TEXT = (f"{SYMBOL_MIN_LENGTH} to {SYMBOL_MAX_LENGTH} characters: segments of A-Z and 0-9 joined by "
                    "single '.', '_' or '-'")

PRICE_MIN = field_rules(_TICK, "price").double.gte
PRICE_MAX = field_rules(_TICK, "price").double.lte
SIZE_MIN = field_rules(_TICK, "size").double.gte
SIZE_MAX = field_rules(_TICK, "size").double.lte
EVENT_TIME_MIN_SECONDS = field_rules(_TICK, "event_time").timestamp.gte.seconds
TRADE_ID_MAX_LENGTH = field_rules(_TICK, "trade_id").string.max_len
SOURCE_MAX_LENGTH = field_rules(_TICK, "source").string.max_len
# Ids and sources: no control characters (C0, DEL, C1).
TEXT_PATTERN = re.compile(field_rules(_TICK, "trade_id").string.pattern)
MAX_BATCH_TICKS = field_rules(ingest_pb2.PublishTicksRequest.DESCRIPTOR, "items").repeated.max_items

_HISTORY = query_pb2.GetHistoryRequest.DESCRIPTOR
HISTORY_MAX_LIMIT = field_rules(_HISTORY, "limit").uint32.lte
# The words of the query service's own checks of GetHistory's interval and GetTicker's window_size (which the
# patterns of their buf.validate rules express).
INTERVAL_RULE = ("must be 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w or 1M, or <n>m / <n>h dividing "
                 "a day, <n>d up to 31d, <n>w up to 52w, <n>M up to 12M")
WINDOW_RULE = "must be <n>m (1 to 59), <n>h (1 to 23) or <n>d (1 to 7)"
MAX_WATCH_SYMBOLS = field_rules(query_pb2.WatchTicksRequest.DESCRIPTOR, "symbols").repeated.max_items


# GetTicker's and WatchTicker's entries: symbols separated by commas.
_SYMBOL_CORE = _SYMBOL_RULES.pattern.removeprefix("^").removesuffix("$")
SYMBOL_LIST_PATTERN = f"^{_SYMBOL_CORE}(,{_SYMBOL_CORE})*$"

# google.protobuf.Timestamp's own range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z, normalised.
TIMESTAMP_MIN_SECONDS = -62_135_596_800
TIMESTAMP_MAX_SECONDS = 253_402_300_799
TIMESTAMP_RULE_TEXT = ("must be a valid timestamp between 0001-01-01 and 9999-12-31 (nanos from 0 to "
                       "999,999,999)")
_TIMESTAMP = "google.protobuf.Timestamp"


def is_symbol(value: str) -> bool:
    return SYMBOL_MIN_LENGTH <= len(value) <= SYMBOL_MAX_LENGTH and SYMBOL_PATTERN.match(value) is not None


def symbol_problem(symbol: str) -> str | None:
    """Why a value is not a symbol (the one wording of every RPC), or None. The value is quoted cut short."""
    if not symbol:
        return "required"
    if not is_symbol(symbol):
        return f"{quoted(symbol)} is not a symbol: {SYMBOL_RULE_TEXT}"
    return None


def symbol_list_problem(value: str) -> str | None:
    """Why a comma-separated list of symbols is not one, or None."""
    if not value:
        return "is empty: give symbols separated by single commas"
    parts = value.split(",")
    if not all(parts):
        return f"{quoted(value)} has an empty symbol: separate symbols by single commas"
    return next((problem for problem in map(symbol_problem, parts) if problem), None)


# A value breaking one of these patterns of the protos is described in the services' words, not by the regex:
# over gRPC (protovalidate's violations) and over HTTP (the edge's check of the OpenAPI document, which has the
# same patterns).
PATTERN_PROBLEMS: dict[str, Callable[[str], str | None]] = {
    _SYMBOL_RULES.pattern: symbol_problem,
    SYMBOL_LIST_PATTERN: symbol_list_problem,
    field_rules(_HISTORY, "interval").string.pattern: lambda value: INTERVAL_RULE,
    field_rules(query_pb2.GetTickerRequest.DESCRIPTOR, "window_size").string.pattern: lambda value: WINDOW_RULE,
}


def timestamp_problem(ts: Timestamp) -> str | None:
    """Why a google.protobuf.Timestamp is not a valid one (out of its range, or nanos not normalised), or None.
    protovalidate compares such timestamps as if they were normalised (nanos 1999999999 as a second more)."""
    if not (TIMESTAMP_MIN_SECONDS <= ts.seconds <= TIMESTAMP_MAX_SECONDS and 0 <= ts.nanos <= 999_999_999):
        return TIMESTAMP_RULE_TEXT
    return None


def path_text(path: Iterable[validate_pb2.FieldPathElement]) -> str:
    """A protovalidate field path as the services name fields over gRPC, by proto names: items[3].price,
    from_time (the edge renames them to the JSON names for HTTP)."""
    out = ""
    for element in path:
        out += f".{element.field_name}" if out else element.field_name
        kind = element.WhichOneof("subscript")
        if kind is not None:
            out += f"[{getattr(element, kind)}]"
    return out


_validator = protovalidate.Validator()


def violations(message: Message) -> list[tuple[str, str]]:
    """(field path, description) of every rule the message breaks, as protovalidate finds them, in the words
    the services use: a symbol field's problem as symbol_problem words it, a missing required field
    `required`. Timestamps that are not valid ones (nanos outside 0..999,999,999, seconds outside 0001 to
    9999), which protovalidate reads as if normalised, are named too: storage refuses them."""
    bad_times = dict(_timestamp_violations(message))
    found = []
    for violation in _validator.collect_violations(message):
        proto = violation.proto
        elements = _as_google(proto.field).elements
        path = path_text(elements)
        if path in bad_times and proto.rule_id.startswith("timestamp."):
            continue  # compared as if normalised: the timestamp's own problem says it
        found.append((path, _description(proto, elements, message.DESCRIPTOR, violation.field_value)))
    found.extend(bad_times.items())
    return found


def _description(proto: object, elements: Iterable[validate_pb2.FieldPathElement], root: Descriptor,
                 value: object) -> str:
    """protovalidate's message, or the services' words for the same problem."""
    rule_id = proto.rule_id  # type: ignore[attr-defined]
    if rule_id == "required":
        return "required"
    field = _last_field(elements, root)
    if field is not None and isinstance(value, str) and rule_id.startswith("string."):
        rules_ = field.GetOptions().Extensions[validate_pb2.field]
        pattern = (rules_.repeated.items.string.pattern if rules_.HasField("repeated")
                   else rules_.string.pattern)
        worded = PATTERN_PROBLEMS.get(pattern)
        if worded is not None:
            return worded(value) or proto.message  # type: ignore[attr-defined]
    return proto.message  # type: ignore[attr-defined]


def _last_field(elements: Iterable[validate_pb2.FieldPathElement], root: Descriptor) -> FieldDescriptor | None:
    field, message = None, root
    for element in elements:
        field = message.fields_by_name.get(element.field_name) if message is not None else None
        if field is None:
            return None
        message = field.message_type
    return field


def _timestamp_violations(message: Message, prefix: str = "") -> Iterable[tuple[str, str]]:
    """(path, problem) of every set Timestamp in the message that is not a valid one, at any depth."""
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type.GetOptions().map_entry:
            continue
        name = f"{prefix}.{field.name}" if prefix else field.name
        repeated = field.is_repeated
        for index, item in enumerate(value if repeated else [value]):
            path = f"{name}[{index}]" if repeated else name
            if field.message_type.full_name == _TIMESTAMP:
                problem = timestamp_problem(item)
                if problem:
                    yield path, problem
            else:
                yield from _timestamp_violations(item, path)


def _as_google(path: object) -> validate_pb2.FieldPath:
    """protovalidate's FieldPath (a protobuf-py message) as the google.protobuf one."""
    return validate_pb2.FieldPath.FromString(path.to_binary())  # type: ignore[attr-defined]


def check(message: Message, also: FieldViolations | None = None) -> FieldViolations:
    """protovalidate's verdict on a request, as the FieldViolations the services answer with, merged with the
    service's own checks (`also`): a field the service names keeps the service's words, which say what the
    domain allows (e.g. the intervals) where protovalidate can only quote its rule."""
    result = FieldViolations()
    own = also.items if also is not None else []
    named = {name for field, _ in own for name in (field, field.split("[", 1)[0])}
    by_field: dict[str, list[str]] = {}
    for field, description in violations(message):
        by_field.setdefault(field or "request", []).append(description)
    for field, descriptions in by_field.items():  # one violation per field, naming every rule it breaks
        if field not in named and field.split("[", 1)[0] not in named:
            result.add(field, "; ".join(dict.fromkeys(descriptions)))
    for field, description in own:
        result.add(field, description)
    result.unlisted = also.unlisted if also is not None else 0
    return result
