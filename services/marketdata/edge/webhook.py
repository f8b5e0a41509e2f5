"""The tick webhook's hot path: `POST /api/v1/webhooks/ticks` without connexion's per-request work.

The generic path (connexion: security, JSON-schema validation of the whole body, `json_format.ParseDict`)
costs ~70 CPU-ms per 1,000 ticks. Here, in order:

1. the API key is checked before the body is read: a request without one goes to connexion, which answers
   401 without reading it; a key is verified once with ingest (an empty PublishTicks: the key interceptor
   answers before validation) and the verdict kept for a while;
2. the body is read up to `EDGE_MAX_BODY_BYTES` (after `Content-Encoding: gzip` decoding), else 413;
3. `application/json`: decoded by msgspec straight into typed structs (`TicksBody`: the document's types, no
   dictionary per tick, no schema pass) and turned into the PublishTicksRequest field by field; a batch over
   INGEST_MAX_BATCH_TICKS is answered 400 naming the limit; the request goes to ingest over a small pool of
   channels. Ingest validates every value.
4. `application/x-ndjson`: one tick per line, sent as IngestService.StreamTicks batches while the body
   streams in (cut at the end of each received chunk and at the batch limit).

The contract's error bodies stay those of the generic path: anything the fast conversion does not take as
it is (a type error, an unknown field, a non-canonical time, malformed JSON, another media type), and
any batch ingest refuses as INVALID_ARGUMENT, is replayed through connexion (decoded body, same headers), which
names every bad field exactly as before. The fast path only ever accepts what the generic path accepts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import date
from functools import lru_cache
from typing import Any

import grpc
import msgspec
from google.protobuf import json_format
from connexion.json_schema import Draft4RequestValidator
from starlette.datastructures import Headers
from starlette.responses import Response

from marketdata.edge.gateway import (
    BODY_FORMATS,
    REQUEST_ID,
    UPSTREAM_LATENCY,
    EdgeProblem,
    Upstreams,
    body_problem,
    check_api_key_characters,
    parse_error_violation,
    problem_from_exception,
    problem_response,
    rpc_error_response,
    to_json_bytes,
)
from marketdata.v1 import ingest_pb2, market_pb2

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

TICKS_PATH = "/api/v1/webhooks/ticks"
INGEST_SERVICE = "marketdata.v1.IngestService"
PUBLISH_METHOD = "/marketdata.v1.IngestService/PublishTicks"
STREAM_METHOD = "/marketdata.v1.IngestService/StreamTicks"
NDJSON = "application/x-ndjson"
# How long ingest's verdict on an API key is kept: a revoked key still works this long at the edge's key
# check, but every call is checked again by ingest itself, so this only bounds wasted parsing.
KEY_GOOD_SECONDS = 60.0
KEY_BAD_SECONDS = 5.0
MAX_KEYS_REMEMBERED = 1024

SIDES = {value.name: value.number for value in market_pb2.Side.DESCRIPTOR.values}
# The canonical RFC 3339 form producers send (`2024-05-01T12:00:00.123Z`); any other form takes the generic
# path. Years before 1971 too: the document's eventTime pattern has its own view of early 1970.
_MINUTE = re.compile(r"([0-9]{4})-([0-9][0-9])-([0-9][0-9])T([0-9][0-9]):([0-9][0-9])")
_NANOS_PER_UNIT = {digits: 10 ** (9 - digits) for digits in range(1, 10)}  # of a fraction with that many digits
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class NotFast(Exception):
    """The input is not in the form the fast conversion takes; the generic path decides."""


@lru_cache(maxsize=4096)
def _minute_start(prefix: str) -> int:
    """Seconds since the epoch of `YYYY-MM-DDThh:mm` (ticks of a batch share few minutes: parsed once)."""
    match = _MINUTE.fullmatch(prefix)
    if match is None:
        raise NotFast
    year, month, day, hour, minute = map(int, match.groups())
    if year < 1971 or hour > 23 or minute > 59:
        raise NotFast
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise NotFast from None
    return days * 86_400 + hour * 3_600 + minute * 60


@lru_cache(maxsize=8192)
def _second_start(prefix: str) -> int:
    """Seconds since the epoch of `YYYY-MM-DDThh:mm:ss` (a batch's ticks share few seconds: parsed once)."""
    second = prefix[17:19]
    if len(prefix) != 19 or prefix[16] != ":" or not (second.isascii() and second.isdigit()) or second > "59":
        raise NotFast
    return _minute_start(prefix[:16]) + int(second)


def event_time_of(text: str) -> tuple[int, int]:
    """(seconds, nanos) of a canonical RFC 3339 UTC time."""
    start = _second_start(text[:19])
    if len(text) == 20 and text[19] == "Z":
        return start, 0
    # `.` and 1-9 ASCII digits, then `Z`; by string tests, not a regex: this runs once per tick.
    fraction = text[20:-1]
    unit = _NANOS_PER_UNIT.get(len(fraction))
    if unit is None or text[19] != "." or text[-1] != "Z" or not (fraction.isascii() and fraction.isdigit()):
        raise NotFast
    return start, int(fraction) * unit


class TickInput(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """The document's TickInput as types only (an int is a number, null is no field's value, unknown fields
    are refused, absent ones take the proto's defaults); the values are ingest's to judge."""

    symbol: str
    price: float
    event_time: str
    size: float = 0.0
    side: str = "SIDE_UNSPECIFIED"
    trade_id: str = ""
    source: str = ""


class TicksBody(msgspec.Struct, forbid_unknown_fields=True):
    items: list[TickInput]


TICKS_BODY = msgspec.json.Decoder(TicksBody)
TICK_LINE = msgspec.json.Decoder(TickInput)
# What msgspec raises for a body it does not take: malformed JSON or other types (ValidationError is a
# DecodeError), bytes that are not UTF-8, or (decoding without a type) nesting deeper than Python's stack.
NOT_DECODED = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def add_ticks(items: Any, ticks: list[TickInput]) -> None:
    """Appends the decoded ticks to a repeated Tick field; NotFast for a side or time the document's
    TickInput would not take as it is (or would read another way)."""
    add = items.add
    for tick in ticks:
        side = SIDES.get(tick.side, -1)
        if side < 0:
            raise NotFast
        seconds, nanos = event_time_of(tick.event_time)
        event_time = add(symbol=tick.symbol, price=tick.price, size=tick.size, side=side, trade_id=tick.trade_id,
                         source=tick.source).event_time
        event_time.seconds = seconds
        event_time.nanos = nanos


class BodyTooLarge(Exception):
    """More than EDGE_MAX_BODY_BYTES (decoded), or an NDJSON line longer than that."""


class ClientGone(Exception):
    """The client disconnected before its body was read: nobody to answer."""


class BodyReader:
    """The request body as decoded chunks (gzip-decoded when `Content-Encoding: gzip`); each read is given the
    bytes it may still take, so a gzip bomb is stopped after `limit` decoded bytes, not after inflating. A
    client that sends nothing for `idle_seconds` is answered 408: a stalled body never holds a connection."""

    def __init__(self, receive: Any, encoding: str, limit: int, idle_seconds: float) -> None:
        self.receive = receive
        self.limit = limit
        self.idle_seconds = idle_seconds
        self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
        self.more = True

    async def chunk(self, budget: int) -> bytes:
        """The next decoded chunk (b"" at the end); BodyTooLarge when it would exceed `budget` bytes."""
        while self.more:
            try:
                async with asyncio.timeout(self.idle_seconds):
                    message = await self.receive()
            except TimeoutError:
                raise EdgeProblem(408, f"the request body stalled: nothing arrived for {self.idle_seconds:g} s "
                                       "(REQUEST_TIMEOUT_SECONDS)", headers={"connection": "close"}) from None
            if message["type"] == "http.disconnect":
                raise ClientGone
            data = message.get("body", b"")
            self.more = message.get("more_body", False)
            if self.decoder is not None:
                try:
                    data = self.decoder.decompress(data, budget + 1)
                except zlib.error as exc:
                    raise EdgeProblem(400, f"request body is not valid gzip: {exc}") from None
                if self.decoder.unconsumed_tail:
                    raise BodyTooLarge
                if not self.more and not self.decoder.eof:
                    raise EdgeProblem(400, "request body is not valid gzip: truncated stream")
            if len(data) > budget:
                raise BodyTooLarge
            if data:
                return data
        return b""

    async def read_all(self) -> bytes:
        parts = []
        size = 0
        while True:
            data = await self.chunk(self.limit - size)
            if not data:
                return b"".join(parts)
            parts.append(data)
            size += len(data)


class KeyVerdicts:
    """Ingest's verdict on API keys, asked once per key and kept for a while (bounded)."""

    def __init__(self, check: Callable[[str], Awaitable[grpc.aio.AioRpcError | None]]) -> None:
        self._check = check
        self._verdicts: dict[str, tuple[float, grpc.aio.AioRpcError | None]] = {}

    async def refusal(self, key: str) -> grpc.aio.AioRpcError | None:
        """Ingest's UNAUTHENTICATED error for a bad key; None for a good one (or when ingest cannot say:
        the call itself will)."""
        now = time.monotonic()
        known = self._verdicts.get(key)
        if known is not None and known[0] > now:
            return known[1]
        error = await self._check(key)
        if error is None or error.code() == grpc.StatusCode.UNAUTHENTICATED:
            if len(self._verdicts) >= MAX_KEYS_REMEMBERED:
                self._verdicts.clear()
            self._verdicts[key] = (now + (KEY_BAD_SECONDS if error else KEY_GOOD_SECONDS), error)
        return error if error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED else None

    def forget(self, key: str) -> None:
        self._verdicts.pop(key, None)


def too_large(limit: int) -> Response:
    return problem_response(413, f"request body is larger than {limit} bytes (EDGE_MAX_BODY_BYTES; after gzip "
                                 "decoding, per line for NDJSON): send smaller batches",
                            violations=[("body", f"at most {limit} bytes")], headers={"connection": "close"})


def body_reader(headers: Headers, receive: Any, limit: int, idle_seconds: float) -> BodyReader:
    """The reader of a request's body: 415 for a Content-Encoding other than gzip or identity, BodyTooLarge when
    the declared length already is."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise EdgeProblem(415, f"Content-Encoding {encoding!r} is not supported: send gzip or identity")
    declared = headers.get("content-length", "")
    if encoding != "gzip" and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    return BodyReader(receive, encoding, limit, idle_seconds)


async def buffered(scope: dict[str, Any], receive: Any, limit: int,
                   idle_seconds: float) -> tuple[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]]]:
    """The request with its body read now (gzip-decoded, at most `limit` bytes): what connexion's routes are
    given, so every body has the tick webhook's limits (size, encoding, stalls)."""
    reader = body_reader(Headers(scope=scope), receive, limit, idle_seconds)
    return _replay(scope, await reader.read_all())


def _utf8(content_type: str) -> bool:
    """JSON in UTF-8 (no charset, or charset=utf-8): the only encoding msgspec reads."""
    parameters = content_type.lower().replace(" ", "").split(";")[1:]
    return all(p in ("charset=utf-8", "charset=\"utf-8\"") for p in parameters if p.startswith("charset="))


def _replay(scope: dict[str, Any], body: bytes) -> tuple[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]]]:
    """The scope and receive of the same request with an already read (decoded) body."""
    headers = [(k, v) for k, v in scope.get("headers", ()) if k not in (b"content-encoding", b"content-length")]
    headers.append((b"content-length", str(len(body)).encode()))
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # like a client that stays connected
        return {"type": "http.disconnect"}

    return {**scope, "headers": headers}, receive


def _json_response(message: Any) -> Response:
    return Response(to_json_bytes(message), media_type="application/json")


_ITEM_INDEX = re.compile(r"(?<![\w.\]])items\[(\d+)\]")


# ingest's summary of a StreamTicks batch it refused (ingest/server.py).
_REJECTED_BATCH = re.compile(r"batch (\d+) rejected \((\d+) ticks of the \d+ earlier batches were accepted\): (.*)",
                             re.DOTALL)


def shift_items(field: str, offset: int) -> str:
    """`items[3].price` of a batch that starts at tick `offset` of a stream → `items[offset+3].price` (in a
    field path or a sentence naming fields)."""
    return _ITEM_INDEX.sub(lambda m: f"items[{int(m.group(1)) + offset}]", field) if offset else field


class TickWebhook:
    """The ASGI handler of POST /api/v1/webhooks/ticks; `generic` is the connexion app (the generic path)."""

    def __init__(self, generic: ASGIApp, upstreams: Upstreams, *, max_body_bytes: int, max_batch_ticks: int,
                 timeout: float, tick_validator: Any) -> None:
        self.generic = generic
        self.max_body_bytes = max_body_bytes
        self.max_batch_ticks = max_batch_ticks
        self.timeout = timeout
        self.tick_validator = tick_validator
        channels = upstreams.pool(INGEST_SERVICE)
        self._publish = itertools.cycle([
            channel.unary_unary(PUBLISH_METHOD, request_serializer=ingest_pb2.PublishTicksRequest.SerializeToString,
                                response_deserializer=ingest_pb2.PublishTicksResponse.FromString)
            for channel in channels])
        self._stream = itertools.cycle([
            channel.stream_unary(STREAM_METHOD, request_serializer=ingest_pb2.StreamTicksRequest.SerializeToString,
                                 response_deserializer=ingest_pb2.StreamTicksResponse.FromString)
            for channel in channels])
        self.keys = KeyVerdicts(self._check_key)

    @staticmethod
    def handles(scope: Mapping[str, Any]) -> bool:
        return scope.get("method") == "POST" and scope.get("path") == TICKS_PATH

    async def _check_key(self, key: str) -> grpc.aio.AioRpcError | None:
        # An empty batch: the key interceptor answers first (UNAUTHENTICATED), a good key gets INVALID_ARGUMENT.
        try:
            await next(self._publish)(ingest_pb2.PublishTicksRequest(), timeout=self.timeout,
                                      metadata=[("x-api-key", key)])
        except grpc.aio.AioRpcError as exc:
            return exc if exc.code() == grpc.StatusCode.UNAUTHENTICATED else None
        return None

    def _metadata(self, key: str) -> list[tuple[str, str]]:
        request_id = REQUEST_ID.get()
        return [("x-api-key", key), ("x-request-id", request_id)] if request_id else [("x-api-key", key)]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = Headers(scope=scope)
        key = headers.get("x-api-key", "")
        if not key or scope.get("query_string"):
            # connexion answers: 401 without reading the body, or 400 naming the unknown query parameters
            await self.generic(scope, receive, send)
            return
        try:
            response = await self._answer(scope, headers, receive, send, key)
        except ClientGone:
            return
        except EdgeProblem as exc:
            response = problem_from_exception(exc)
        except BodyTooLarge:
            response = too_large(self.max_body_bytes)
        if response is not None:
            await response(scope, receive, send)

    async def _answer(self, scope: dict[str, Any], headers: Headers, receive: Any, send: Any,
                      key: str) -> Response | None:
        check_api_key_characters(key)
        refusal = await self.keys.refusal(key)
        if refusal is not None:
            return rpc_error_response(refusal)
        reader = body_reader(headers, receive, self.max_body_bytes, self.timeout)
        content_type = headers.get("content-type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type == NDJSON:
            return await self._stream_ticks(reader, key)
        body = await reader.read_all()
        if media_type == "application/json" and _utf8(content_type):
            response = await self._publish_ticks(body, key)
            if response is not None:
                return response
        # The generic path: connexion's media type, JSON and schema checks, then the same call.
        replay_scope, replay_receive = _replay(scope, body)
        await self.generic(replay_scope, replay_receive, send)
        return None

    async def _publish_ticks(self, body: bytes, key: str) -> Response | None:
        """The answer of the fast path, None when the generic path must answer."""
        try:
            ticks = TICKS_BODY.decode(body).items
        except NOT_DECODED:
            # The generic path names the bad fields, but a batch over the limit is refused for its size first.
            try:
                document = msgspec.json.decode(body)
            except NOT_DECODED:
                return None
            if type(document) is dict and type(document.get("items")) is list:
                self._check_batch_size(len(document["items"]))
            return None
        self._check_batch_size(len(ticks))
        request = ingest_pb2.PublishTicksRequest()
        try:
            add_ticks(request.items, ticks)
        except NotFast:
            return None
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            reply = await next(self._publish)(request, timeout=self.timeout, metadata=self._metadata(key))
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                return None  # the generic path names every bad field, as it always has
            if code == grpc.StatusCode.UNAUTHENTICATED:
                self.keys.forget(key)  # revoked since ingest last said yes
            return rpc_error_response(exc, request.DESCRIPTOR)
        finally:
            UPSTREAM_LATENCY.labels(PUBLISH_METHOD, code.name).observe(time.perf_counter() - started)
        return _json_response(reply)

    def _check_batch_size(self, count: int) -> None:
        if count > self.max_batch_ticks:
            description = f"{count} ticks in one batch; at most {self.max_batch_ticks} are allowed"
            raise EdgeProblem(400, f"invalid request body: items: {description} (INGEST_MAX_BATCH_TICKS)",
                              violations=[("items", description)])

    async def _stream_ticks(self, reader: BodyReader, key: str) -> Response:
        """An NDJSON body (one tick per line) as one StreamTicks call; batches are cut where the body's
        chunks end and at the batch limit, so a slow producer's ticks are durable as they come."""
        batches: asyncio.Queue[ingest_pb2.StreamTicksRequest | None] = asyncio.Queue(maxsize=4)
        offsets: list[int] = []  # the stream position of each batch's first tick
        call = next(self._stream)(self._drain(batches), timeout=None, metadata=self._metadata(key))
        finished = asyncio.ensure_future(call)
        position = 0
        problem: EdgeProblem | None = None

        async def offer(batch: ingest_pb2.StreamTicksRequest | None) -> None:
            # Back-pressure from ingest, unless the call has ended (then nobody takes the batch).
            put = asyncio.ensure_future(batches.put(batch))
            await asyncio.wait({put, finished}, return_when=asyncio.FIRST_COMPLETED)
            put.cancel()

        async def flush(batch: ingest_pb2.StreamTicksRequest) -> None:
            offsets.append(position - len(batch.items))
            await offer(batch)

        try:
            pending = b""
            batch = ingest_pb2.StreamTicksRequest()
            while problem is None and not finished.done():
                data = await reader.chunk(self.max_body_bytes - len(pending))
                ended = not data
                parts = (pending + data).split(b"\n")
                pending = b"" if ended else parts.pop()
                for line in parts:
                    if not line.strip():
                        continue
                    problem = self._add_line(batch.items, line, position)
                    if problem is not None:
                        break
                    position += 1
                    if len(batch.items) == self.max_batch_ticks:
                        await flush(batch)
                        batch = ingest_pb2.StreamTicksRequest()
                if batch.items:
                    await flush(batch)
                    batch = ingest_pb2.StreamTicksRequest()
                if ended:
                    break
            await offer(None)
        except BaseException:
            call.cancel()
            finished.cancel()
            raise
        try:
            reply = await finished
        except grpc.aio.AioRpcError as exc:
            response = rpc_error_response(exc, ingest_pb2.StreamTicksRequest.DESCRIPTOR)
            return self._shifted(response, exc, offsets)
        if problem is not None:
            problem.detail = (f"{problem.detail}; the {reply.accepted} ticks before it were accepted "
                              f"({reply.duplicates} duplicates)")
            raise problem
        return _json_response(reply)

    def _add_line(self, items: Any, line: bytes, position: int) -> EdgeProblem | None:
        """Adds a line's tick to the batch, or returns the problem naming every bad field of it (as
        items[position], its place in the stream)."""
        name = f"items[{position}]"
        try:
            try:
                add_ticks(items, [TICK_LINE.decode(line)])
                return None
            except (msgspec.ValidationError, NotFast):
                # Read as the generic path reads JSON (a number beyond a double is inf), for the validator,
                # which names what is wrong with it.
                tick = json.loads(line)
        except (*NOT_DECODED, ValueError) as exc:
            description = f"line is not valid JSON: {exc}"
            return EdgeProblem(400, f"invalid request body: {name}: {description}", violations=[(name, description)])
        problem = body_problem(self.tick_validator, tick, name)
        if problem is not None:
            return problem
        # A tick the document takes in a form the fast conversion does not (an offset, an early date): the
        # generic conversion, as for a JSON body.
        try:
            items.append(json_format.ParseDict(tick, market_pb2.Tick()))
        except json_format.ParseError as exc:
            field, reason = parse_error_violation(exc)
            return EdgeProblem(400, f"invalid request body: {name}.{field}: {reason}",
                               violations=[(f"{name}.{field}", reason)])
        return None

    @staticmethod
    def _shifted(response: Response, exc: grpc.aio.AioRpcError, offsets: list[int]) -> Response:
        """Ingest names items[i] of the batch it refused; the client knows the stream's positions."""
        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
            return response
        body = msgspec.json.decode(response.body)
        detail = body["detail"]
        batch = _REJECTED_BATCH.match(detail)
        offset = offsets[int(batch.group(1))] if batch and int(batch.group(1)) < len(offsets) else 0
        if batch:  # the batches are the edge's cut, not the client's: say it in stream positions
            detail = f"{shift_items(batch.group(3), offset)}; the {batch.group(2)} ticks before it were accepted"
        violations = [(shift_items(v["field"], offset), v["description"]) for v in body.get("violations", ())]
        return problem_response(response.status_code, detail, grpc_code=exc.code(), violations=violations)

    @staticmethod
    async def _drain(batches: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        while (batch := await batches.get()) is not None:
            yield batch


def tick_schema_validator(document: Mapping[str, Any]) -> Any:
    """The generic path's validator (Draft 4, date-times as protobuf reads them) of the document's TickInput."""
    schema = {**document["components"]["schemas"]["TickInput"], "components": document["components"]}
    return Draft4RequestValidator(schema, format_checker=BODY_FORMATS)
