import datetime

from buf.validate import validate_pb2 as _validate_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from marketdata.v1 import events_pb2 as _events_pb2
from marketdata.v1 import market_pb2 as _market_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListSymbolsRequest(_message.Message):
    __slots__ = ("active",)
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    active: bool
    def __init__(self, active: _Optional[bool] = ...) -> None: ...

class ListSymbolsResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_market_pb2.Symbol]
    def __init__(self, items: _Optional[_Iterable[_Union[_market_pb2.Symbol, _Mapping]]] = ...) -> None: ...

class GetLatestRequest(_message.Message):
    __slots__ = ("symbol",)
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    def __init__(self, symbol: _Optional[str] = ...) -> None: ...

class GetLatestResponse(_message.Message):
    __slots__ = ("symbol", "last_tick", "candle", "metrics")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    LAST_TICK_FIELD_NUMBER: _ClassVar[int]
    CANDLE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    last_tick: _market_pb2.Tick
    candle: _market_pb2.Candle
    metrics: _market_pb2.MinuteMetrics
    def __init__(self, symbol: _Optional[str] = ..., last_tick: _Optional[_Union[_market_pb2.Tick, _Mapping]] = ..., candle: _Optional[_Union[_market_pb2.Candle, _Mapping]] = ..., metrics: _Optional[_Union[_market_pb2.MinuteMetrics, _Mapping]] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("symbol", "view", "interval", "from_time", "to_time", "limit", "time_zone", "order", "page_token", "fill", "numbers")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    FROM_TIME_FIELD_NUMBER: _ClassVar[int]
    TO_TIME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILL_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    view: str
    interval: str
    from_time: _timestamp_pb2.Timestamp
    to_time: _timestamp_pb2.Timestamp
    limit: int
    time_zone: str
    order: str
    page_token: str
    fill: str
    numbers: str
    def __init__(self, symbol: _Optional[str] = ..., view: _Optional[str] = ..., interval: _Optional[str] = ..., from_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., to_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., time_zone: _Optional[str] = ..., order: _Optional[str] = ..., page_token: _Optional[str] = ..., fill: _Optional[str] = ..., numbers: _Optional[str] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("symbol", "view", "interval", "ticks", "metrics", "candles", "next_page_token", "time_zone")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    TICKS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CANDLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    view: str
    interval: str
    ticks: _containers.RepeatedCompositeFieldContainer[_market_pb2.Tick]
    metrics: _containers.RepeatedCompositeFieldContainer[_market_pb2.MinuteMetrics]
    candles: _containers.RepeatedCompositeFieldContainer[_market_pb2.Candle]
    next_page_token: str
    time_zone: str
    def __init__(self, symbol: _Optional[str] = ..., view: _Optional[str] = ..., interval: _Optional[str] = ..., ticks: _Optional[_Iterable[_Union[_market_pb2.Tick, _Mapping]]] = ..., metrics: _Optional[_Iterable[_Union[_market_pb2.MinuteMetrics, _Mapping]]] = ..., candles: _Optional[_Iterable[_Union[_market_pb2.Candle, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., time_zone: _Optional[str] = ...) -> None: ...

class GetTickerRequest(_message.Message):
    __slots__ = ("symbol", "window_size")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    symbol: _containers.RepeatedScalarFieldContainer[str]
    window_size: str
    def __init__(self, symbol: _Optional[_Iterable[str]] = ..., window_size: _Optional[str] = ...) -> None: ...

class GetTickerResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_market_pb2.Ticker]
    def __init__(self, items: _Optional[_Iterable[_Union[_market_pb2.Ticker, _Mapping]]] = ...) -> None: ...

class WatchTickerRequest(_message.Message):
    __slots__ = ("symbol", "window_size")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    symbol: _containers.RepeatedScalarFieldContainer[str]
    window_size: str
    def __init__(self, symbol: _Optional[_Iterable[str]] = ..., window_size: _Optional[str] = ...) -> None: ...

class WatchTickerResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_market_pb2.Ticker]
    def __init__(self, items: _Optional[_Iterable[_Union[_market_pb2.Ticker, _Mapping]]] = ...) -> None: ...

class WatchTicksRequest(_message.Message):
    __slots__ = ("symbols",)
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchTicksResponse(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: _events_pb2.LiveUpdate
    def __init__(self, update: _Optional[_Union[_events_pb2.LiveUpdate, _Mapping]] = ...) -> None: ...
