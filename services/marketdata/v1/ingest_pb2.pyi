from buf.validate import validate_pb2 as _validate_pb2
from google.api import annotations_pb2 as _annotations_pb2
from marketdata.v1 import market_pb2 as _market_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishTicksRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_market_pb2.Tick]
    def __init__(self, items: _Optional[_Iterable[_Union[_market_pb2.Tick, _Mapping]]] = ...) -> None: ...

class PublishTicksResponse(_message.Message):
    __slots__ = ("accepted", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class StreamTicksRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_market_pb2.Tick]
    def __init__(self, items: _Optional[_Iterable[_Union[_market_pb2.Tick, _Mapping]]] = ...) -> None: ...

class StreamTicksResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "batches")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    batches: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., batches: _Optional[int] = ...) -> None: ...

class UpsertSymbolsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_market_pb2.Symbol]
    def __init__(self, items: _Optional[_Iterable[_Union[_market_pb2.Symbol, _Mapping]]] = ...) -> None: ...

class UpsertSymbolsResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...
