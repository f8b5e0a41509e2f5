"""The edge's compiled proto3 JSON mapping (gateway.message_to_dict) against json_format's, on random instances of
every message of the contract: REST answers and SSE frames must not change by being made faster."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from marketdata.edge.gateway import message_to_dict, to_json_bytes
from marketdata.v1 import aggregator_pb2, events_pb2, ingest_pb2, market_pb2, query_pb2

FILES = (aggregator_pb2, events_pb2, ingest_pb2, market_pb2, query_pb2)
DOUBLES = (0.0, -0.0, 1.5, -2.25, 1e-300, 5e-324, 1.7976931348623157e308, 43000.123456789012345, math.inf, -math.inf,
           math.nan)
STRINGS = ("", "BTCUSDT", "ü€𝄞", '"quoted"\\', "line\nbreak")


def all_messages() -> list[Descriptor]:
    found: list[Descriptor] = []

    def walk(descriptor: Descriptor) -> None:
        if not descriptor.GetOptions().map_entry:
            found.append(descriptor)
        for nested in descriptor.nested_types:
            walk(nested)

    for module in FILES:
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            walk(descriptor)
    return found


def scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return rng.choice(DOUBLES)
    if kind == FieldDescriptor.CPPTYPE_FLOAT:
        return rng.choice((0.0, 0.1, -3.5, math.inf))
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return rng.random() < 0.5
    if kind == FieldDescriptor.CPPTYPE_STRING:
        return rng.choice(STRINGS).encode() if field.type == FieldDescriptor.TYPE_BYTES else rng.choice(STRINGS)
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        return rng.choice(numbers + [max(numbers) + 7])  # an open enum may carry a number it does not name
    if kind in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_INT32):
        bits = 63 if kind == FieldDescriptor.CPPTYPE_INT64 else 31
        return rng.choice((0, 1, -1, 2**bits - 1, -(2**bits)))
    bits = 64 if kind == FieldDescriptor.CPPTYPE_UINT64 else 32
    return rng.choice((0, 1, 2**bits - 1))


def fill(message: Any, rng: random.Random, depth: int = 0) -> Any:
    if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        message.seconds = rng.choice((0, 1_700_000_000, 253_402_300_799))
        message.nanos = rng.choice((0, 1_000_000, 123_000, 7))
        return message
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue  # unset: printed as its default, or absent when it has presence
        is_message = field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        if field.is_repeated:
            target = getattr(message, field.name)
            for _ in range(rng.randint(0, 3)):
                if field.message_type is not None and field.message_type.GetOptions().map_entry:
                    key_field = field.message_type.fields_by_name["key"]
                    value_field = field.message_type.fields_by_name["value"]
                    key = scalar(key_field, rng)
                    if value_field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                        fill(target[key], rng, depth + 1)
                    else:
                        target[key] = scalar(value_field, rng)
                elif is_message:
                    if depth < 3:
                        fill(target.add(), rng, depth + 1)
                else:
                    target.append(scalar(field, rng))
        elif is_message:
            if depth < 3:
                fill(getattr(message, field.name), rng, depth + 1)
                if not message.HasField(field.name):
                    getattr(message, field.name).SetInParent()
        else:
            setattr(message, field.name, scalar(field, rng))
    return message


@pytest.mark.parametrize("descriptor", all_messages(), ids=lambda d: d.full_name)
def test_every_message_maps_to_json_as_json_format_maps_it(descriptor: Descriptor) -> None:
    rng = random.Random(descriptor.full_name)
    message_class = message_factory.GetMessageClass(descriptor)
    for _ in range(60):
        message = fill(message_class(), rng)
        expected = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        assert message_to_dict(message) == expected
        assert json.loads(to_json_bytes(message)) == expected


def test_a_page_of_candles_maps_as_before() -> None:
    response = query_pb2.GetHistoryResponse(symbol="BTCUSDT", interval="1m", time_zone="UTC")
    for n in range(500):
        candle = response.candles.add(symbol="BTCUSDT", open=100 + n, high=101 + n, low=99 + n, close=100.5 + n,
                                      volume=1.25, trades=n, vwap=100.25 + n, closed=n < 499)
        candle.time.seconds = 1_700_000_000 + 60 * n
        candle.close_time.seconds = 1_700_000_060 + 60 * n
        if n >= 9:
            candle.sma10 = 100.0 + n
    expected = json_format.MessageToDict(response, always_print_fields_with_no_presence=True)
    assert json.loads(to_json_bytes(response)) == expected
    assert expected["candles"][0]["time"] == "2023-11-14T22:13:20Z" and "sma10" not in expected["candles"][0]
