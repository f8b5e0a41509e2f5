import datetime

from buf.validate import validate_pb2 as _validate_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("consumer_pending", "ack_pending", "last_commit_time", "ticks_per_second", "dead_lettered", "ticks_committed", "duplicates_skipped")
    CONSUMER_PENDING_FIELD_NUMBER: _ClassVar[int]
    ACK_PENDING_FIELD_NUMBER: _ClassVar[int]
    LAST_COMMIT_TIME_FIELD_NUMBER: _ClassVar[int]
    TICKS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    TICKS_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    consumer_pending: int
    ack_pending: int
    last_commit_time: _timestamp_pb2.Timestamp
    ticks_per_second: float
    dead_lettered: int
    ticks_committed: int
    duplicates_skipped: int
    def __init__(self, consumer_pending: _Optional[int] = ..., ack_pending: _Optional[int] = ..., last_commit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ticks_per_second: _Optional[float] = ..., dead_lettered: _Optional[int] = ..., ticks_committed: _Optional[int] = ..., duplicates_skipped: _Optional[int] = ...) -> None: ...

class RebuildRequest(_message.Message):
    __slots__ = ("symbol", "from_time", "to_time")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    FROM_TIME_FIELD_NUMBER: _ClassVar[int]
    TO_TIME_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    from_time: _timestamp_pb2.Timestamp
    to_time: _timestamp_pb2.Timestamp
    def __init__(self, symbol: _Optional[str] = ..., from_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., to_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RebuildResponse(_message.Message):
    __slots__ = ("minutes_rebuilt", "ticks_scanned")
    MINUTES_REBUILT_FIELD_NUMBER: _ClassVar[int]
    TICKS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    minutes_rebuilt: int
    ticks_scanned: int
    def __init__(self, minutes_rebuilt: _Optional[int] = ..., ticks_scanned: _Optional[int] = ...) -> None: ...
