import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from marketdata.v1 import market_pb2 as _market_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TickBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_market_pb2.Tick]
    def __init__(self, items: _Optional[_Iterable[_Union[_market_pb2.Tick, _Mapping]]] = ...) -> None: ...

class LiveUpdate(_message.Message):
    __slots__ = ("symbol", "last_tick", "candle", "commit_time")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    LAST_TICK_FIELD_NUMBER: _ClassVar[int]
    CANDLE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIME_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    last_tick: _market_pb2.Tick
    candle: _market_pb2.Candle
    commit_time: _timestamp_pb2.Timestamp
    def __init__(self, symbol: _Optional[str] = ..., last_tick: _Optional[_Union[_market_pb2.Tick, _Mapping]] = ..., candle: _Optional[_Union[_market_pb2.Candle, _Mapping]] = ..., commit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("subject", "stream_sequence", "reason", "payload", "time")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    STREAM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    subject: str
    stream_sequence: int
    reason: str
    payload: bytes
    time: _timestamp_pb2.Timestamp
    def __init__(self, subject: _Optional[str] = ..., stream_sequence: _Optional[int] = ..., reason: _Optional[str] = ..., payload: _Optional[bytes] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
