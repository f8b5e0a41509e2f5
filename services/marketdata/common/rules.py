"""The contract's rules, read from the `buf.validate` annotations of the protos (the one place they are written).

Python constants (the symbol pattern, bounds, limits) come from here; low-rate requests are checked with
protovalidate itself (`check`), and the tick batches' fast validator uses the constants below (a test
compares its verdicts with protovalidate's).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import protovalidate
from buf.validate import validate_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from marketdata.common.errors import FieldViolations
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
MAX_WATCH_SYMBOLS = field_rules(query_pb2.WatchTicksRequest.DESCRIPTOR, "symbols").repeated.max_items


def is_symbol(value: str) -> bool:
    return SYMBOL_MIN_LENGTH <= len(value) <= SYMBOL_MAX_LENGTH and SYMBOL_PATTERN.match(value) is not None


def path_text(path: Iterable[validate_pb2.FieldPathElement], root: Descriptor | None = None) -> str:
    """A protovalidate field path as the services name fields: items[3].price. With the root message, a field
    whose proto declares a json_name is named by it (from_time → from), as the API documents it."""
    out = ""
    message = root
    for element in path:
        name = element.field_name
        field = message.fields_by_name.get(name) if message is not None else None
        if field is not None and field.json_name != _camel(name):
            name = field.json_name
        message = field.message_type if field is not None else None
        out += f".{name}" if out else name
        kind = element.WhichOneof("subscript")
        if kind is not None:
            out += f"[{getattr(element, kind)}]"
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_validator = protovalidate.Validator()


def violations(message: Message) -> list[tuple[str, str]]:
    """(field path, description) of every rule the message breaks, as protovalidate finds them."""
    found = []
    for violation in _validator.collect_violations(message):
        proto = violation.proto
        found.append((path_text(_as_google(proto.field).elements, message.DESCRIPTOR), proto.message))
    return found


def _as_google(path: object) -> validate_pb2.FieldPath:
    """protovalidate's FieldPath (a protobuf-py message) as the google.protobuf one."""
    return validate_pb2.FieldPath.FromString(path.to_binary())  # type: ignore[attr-defined]


def check(message: Message, also: FieldViolations | None = None) -> FieldViolations:
    """protovalidate's verdict on a request, as the FieldViolations the services answer with, merged with the
    service's own checks (`also`): a field the service names keeps the service's words, which say what the
    domain allows (e.g. the intervals) where protovalidate can only quote its rule."""
    result = FieldViolations()
    own = also.items if also is not None else []
    named = {field for field, _ in own} | {field.split("[", 1)[0] for field, _ in own}
    by_field: dict[str, list[str]] = {}
    for field, description in violations(message):
        by_field.setdefault(field or "request", []).append(description)
    for field, descriptions in by_field.items():  # one violation per field, naming every rule it breaks
        if field not in named and field.split("[", 1)[0] not in named:
            result.add(field, "; ".join(descriptions))
    for field, description in own:
        result.add(field, description)
    return result
