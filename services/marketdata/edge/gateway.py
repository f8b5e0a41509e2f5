"""The generic REST → gRPC translation, the grpc-gateway way, and the edge's one error shape.

Every operation of the OpenAPI document that carries `x-grpc-method` is served by one generic handler:
path, query and body → request message (json_format.ParseDict) → unary call on a grpc.aio channel
(method looked up in the descriptor pool) → response message → JSON (proto3 JSON with every field,
message_to_dict).
gRPC errors become `application/problem+json` through one status table.
"""

from __future__ import annotations

import contextvars
import hashlib
import itertools
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlencode

import grpc
import msgspec
from connexion.exceptions import ProblemException
from connexion.json_schema import Draft4RequestValidator
from connexion.validators import JSONRequestBodyValidator, ParameterValidator
from google.api import annotations_pb2
from google.protobuf import descriptor_pool, json_format, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from jsonschema import Draft4Validator, FormatChecker, ValidationError
from jsonschema.exceptions import best_match
from prometheus_client import Histogram
from starlette.datastructures import URL, QueryParams
from starlette.responses import Response

# Registers every marketdata.v1 service and message in the default descriptor pool.
from marketdata.codegen.openapi import REVALIDATED_RESPONSES, openapi_path, path_fields, rule_bindings
from marketdata.common import rules
from marketdata.common.channels import open_channel
from marketdata.common.errors import clipped, field_violations_of, quoted, within_budget
from marketdata.common.metrics import LATENCY_BUCKETS
from marketdata.v1 import aggregator_pb2, events_pb2, ingest_pb2, market_pb2, query_pb2  # noqa: F401

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# The one table from gRPC status to HTTP status (grpc-gateway's mapping).
GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# For errors the edge raises itself (validation, security, routing): the gRPC code a service would have used.
HTTP_TO_GRPC: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

UPSTREAM_LATENCY = Histogram(
    "edge_grpc_client_seconds", "Duration of the gRPC calls the edge makes for REST operations",
    ["grpc_method", "grpc_code"], buckets=LATENCY_BUCKETS)


def http_status(code: grpc.StatusCode) -> int:
    """HTTP status of a gRPC status code (500 for any code not in the table)."""
    return GRPC_TO_HTTP.get(code, 500)


Violations = Iterable[tuple[str, str]]


def reason(status: int) -> str:
    """The reason phrase of an HTTP status; "Error" for one outside the standard (499)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# A problem's detail names the first violations; the violations themselves keep to the budget of an
# INVALID_ARGUMENT (common.errors), so a body of 10,000 bad ticks is a 400 of a few KiB, not of megabytes.
MAX_DETAIL_CHARS = 1024


def problem_response(status: int, detail: str, *, grpc_code: grpc.StatusCode | None = None,
                     violations: Violations = (), headers: Mapping[str, str] | None = None,
                     title: str | None = None) -> Response:
    grpc_code = grpc_code or HTTP_TO_GRPC.get(
        status, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.UNKNOWN)
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or reason(status),
        "status": status,
        "detail": clipped(detail, MAX_DETAIL_CHARS),
        "grpcCode": grpc_code.name,
        "violations": [{"field": field, "description": description}
                       for field, description in within_budget(violations)] if violations else [],
    }
    request_id = REQUEST_ID.get()
    if request_id:
        body["requestId"] = request_id
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE,
                    headers=dict(headers or {}))


class EdgeProblem(ProblemException):
    """A problem raised inside connexion's stack (validation, handlers); rendered by `problem_from_exception`."""

    def __init__(self, status: int, detail: str, *, violations: Violations = (),
                 grpc_code: grpc.StatusCode | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status=status, title=reason(status), detail=detail,
                         headers=dict(headers or {}))
        self.violations = list(violations)
        self.grpc_code = grpc_code


_PARAMETER_NAME = re.compile(r"parameter '([^']+)'")


def problem_from_exception(exc: Exception) -> Response:
    """Renders connexion's and starlette's errors in the edge's problem shape."""
    if isinstance(exc, EdgeProblem):
        return problem_response(exc.status, exc.detail or "", grpc_code=exc.grpc_code, violations=exc.violations,
                                headers=exc.headers)
    if isinstance(exc, ProblemException):
        detail = str(exc.detail or exc.title or "")
        if exc.status == 401 and detail == "No authorization token provided":
            detail = "no API key: send it in the x-api-key header"
        violations: list[tuple[str, str]] = []
        named = _PARAMETER_NAME.search(detail)
        if named and exc.status == 400:
            violations.append((named.group(1), detail))
        return problem_response(exc.status, detail, violations=violations, headers=exc.headers,
                                title=exc.title if exc.title else None)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return problem_response(status, str(getattr(exc, "detail", "") or reason(status)),
                                headers=getattr(exc, "headers", None))
    # The client gets the request id to quote, never the exception's text; the log has both.
    request_id = REQUEST_ID.get()
    log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
    return problem_response(500, f"internal error (request id {request_id})", grpc_code=grpc.StatusCode.INTERNAL)


# ---- validation with field names ---------------------------------------------------------------------------

def field_path(parts: Iterable[Any]) -> str:
    """('items', 3, 'price') → 'items[3].price'."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# Of a client's value quoted by the edge's own checks: enough for any timestamp (the services quote 24).
PARAMETER_ECHO_CHARS = 64


def _json_text(value: Any) -> str:
    """A value as JSON shows it (null, true, [1]), shortened; strings quoted as jsonschema quotes them, cut as
    the services cut the values they echo ('SSS…' (9000 characters)), though long enough for any timestamp."""
    if isinstance(value, str):
        return quoted(value, PARAMETER_ECHO_CHARS)
    return clipped(json.dumps(value, default=str), 80)


def _message(error: ValidationError) -> str:
    """jsonschema's message, with the value it starts with in JSON terms (null, not Python's None) and cut short;
    a symbol's, an interval's or a window's as the services word it."""
    if error.validator == "type":
        return f"{_json_text(error.instance)} is not of type {error.validator_value!r}"
    worded = rules.PATTERN_PROBLEMS.get(error.schema.get("pattern")) if isinstance(error.schema, dict) else None
    if worded is not None and isinstance(error.instance, str) and error.validator in ("pattern", "minLength",
                                                                                        "maxLength"):
        return worded(error.instance) or error.message
    shown = repr(error.instance)
    if error.message.startswith(shown):
        return _json_text(error.instance) + error.message[len(shown):]
    return error.message


def violation_of(error: ValidationError, root: str = "") -> tuple[str, str]:
    path = field_path([*([root] if root else []), *error.absolute_path])
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set((error.schema or {}).get("properties", {}))
        extra = sorted(k for k in error.instance if k not in known)
        if extra:
            return (f"{path}.{extra[0]}" if path else extra[0]), f"unknown field {_json_text(extra[0])}"
    if error.validator == "required" and isinstance(error.validator_value, list):
        match = re.match(r"'([^']+)' is a required property", error.message)
        if match:
            return (f"{path}.{match.group(1)}" if path else match.group(1)), error.message
    return path, _message(error)


# RFC 3339's offset: hours 00-23, minutes 00-59 (protobuf's Python parser takes +99:99 too).
_OFFSET = re.compile(r"[+-]([0-9]{2}):([0-9]{2})$")


def _is_timestamp(value: object) -> bool:
    """RFC 3339 as the protobuf JSON mapping reads it (what json_format.ParseDict will accept), with a valid
    offset."""
    if not isinstance(value, str):
        return True  # the type keyword reports non-strings
    offset = _OFFSET.search(value)
    if offset is not None and (int(offset.group(1)) > 23 or int(offset.group(2)) > 59):
        return False
    try:
        timestamp_pb2.Timestamp().FromJsonString(value)
    except ValueError:
        return False
    return True


def _not_json(literal: str) -> Any:
    raise ValueError(f"{literal} is not a JSON value")


# Formats checked in request bodies and parameters, so a bad date-time is named with every other bad field at once.
BODY_FORMATS = FormatChecker(formats=())
BODY_FORMATS.checks("date-time")(_is_timestamp)


class EdgeBodyValidator(JSONRequestBodyValidator):
    """connexion's JSON body validation, failing with the edge's problem naming the field (items[0].price)."""

    @property
    def _validator(self) -> Any:
        return Draft4RequestValidator(self._schema, format_checker=BODY_FORMATS)

    async def _parse(self, stream: Any, scope: Any) -> Any:
        raw = b"".join([chunk async for chunk in stream])
        try:
            text = raw.decode(self._encoding)
            # NaN and Infinity are not JSON, though Python's json reads them.
            return json.loads(text, parse_constant=_not_json) if text else None
        except UnicodeDecodeError as exc:
            raise EdgeProblem(400, f"request body is not valid {self._encoding}: {exc.reason} at byte {exc.start}") \
                from None
        except ValueError as exc:  # JSONDecodeError, or a NaN / Infinity literal
            raise EdgeProblem(400, f"request body is not valid JSON: {exc}") from None
        except RecursionError:  # json.loads on arrays or objects nested thousands deep
            raise EdgeProblem(400, "request body is not valid JSON: nested too deeply") from None

    def _validate(self, body: Any) -> dict | None:
        if body is None and not self._nullable:
            raise EdgeProblem(400, "request body must not be empty")
        problem = body_problem(self._validator, body)
        if problem is not None:
            raise problem
        return body


MAX_BODY_ERRORS = 1000


def body_problem(validator: Any, body: Any, root: str = "") -> EdgeProblem | None:
    """Every violation of `body` against the validator's schema as one 400 problem (None when valid); field
    paths start at `root` (`items[12]` for one line of an NDJSON stream)."""
    # Every error, not only the first: a batch with a type error and a bad value names both. Ordered
    # by position in the body (items[0] before items[3]), in the schema's order within one item.
    # At most MAX_BODY_ERRORS are looked at: a body of 10,000 bad items would otherwise cost seconds of CPU.
    found = list(itertools.islice(validator.iter_errors(body), MAX_BODY_ERRORS + 1))
    errors = sorted(found[:MAX_BODY_ERRORS],
                    key=lambda error: [part for part in error.absolute_path if isinstance(part, int)])
    if not errors:
        return None
    by_field: dict[str, list[str]] = {}
    for error in errors:  # one violation per field, naming every rule it breaks
        field, description = violation_of(error, root)
        by_field.setdefault(field or "body", []).append(description)
    violations = [(field, "; ".join(descriptions)) for field, descriptions in by_field.items()]
    if len(found) > MAX_BODY_ERRORS:
        violations.append((root or "body", f"more problems not looked for after the first {MAX_BODY_ERRORS}"))
    first = f"{violations[0][0]}: {violations[0][1]}"
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return EdgeProblem(400, f"invalid request body: {first}{more}", violations=violations)


class EdgeParameterValidator(ParameterValidator):
    """connexion's parameter validation, failing with the edge's problem naming every bad parameter."""

    @staticmethod
    def validate_parameter(parameter_type: str, value: Any, param: dict[str, Any],
                           param_name: str | None = None) -> str | None:
        """connexion's check of one value, with date-times checked as protobuf reads them (as in bodies)."""
        if value is None:
            return "is required" if param.get("required") else None
        error = best_match(Draft4Validator(param.get("schema", param), format_checker=BODY_FORMATS).iter_errors(value))
        return None if error is None else _message(error)

    def validate_request(self, request: Any) -> None:
        if self.strict_validation:
            extra = self.validate_query_parameter_list(request, security_params=self.security_query_params)
            if extra:
                names = sorted(extra)
                raise EdgeProblem(400, f"unknown query parameter(s): {', '.join(names)}",
                                  violations=[(name, "unknown query parameter") for name in names])
        bad: list[tuple[str, str, str]] = []  # (location, name, description)
        given = QueryParams(request.scope.get("query_string", b""))
        checks = (("query", self.validate_query_parameter), ("path", self.validate_path_parameter),
                  ("header", self.validate_header_parameter), ("cookie", self.validate_cookie_parameter))
        for location, check in checks:
            for param in self.parameters.get(location, []):
                # A field that is not repeated takes one value (grpc-gateway refuses more too): no silent last-wins.
                if (location == "query" and param.get("schema", {}).get("type") != "array"
                        and len(given.getlist(param["name"])) > 1):
                    bad.append((location, param["name"], "given more than once; this parameter takes one value"))
                elif error := check(param, request):
                    bad.append((location, param["name"], str(error).split("\n", 1)[0]))
        if bad:
            location, name, description = bad[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise EdgeProblem(400, f"invalid {location} parameter {name!r}: {description}{more}",
                              violations=[(name, description) for _, name, description in bad])


def forward_api_key(api_key: str, required_scopes: Any = None) -> dict[str, str] | None:
    """connexion's x-apikeyInfoFunc: any non-empty key is forwarded; the service behind decides."""
    return {"sub": "api-key"} if api_key else None


# ---- the generic handler -----------------------------------------------------------------------------------

_PARSE_PATH = re.compile(r' at "?[A-Za-z0-9_]+\.?((?:[A-Za-z0-9_]+|\[\d+\]|\.(?=[A-Za-z_\[]))*)')
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)"')


def parse_error_violation(error: json_format.ParseError) -> tuple[str, str]:
    """The field a json_format.ParseError is about: 'items[0].price', and the innermost reason."""
    text = str(error)
    match = _PARSE_PATH.search(text)
    path = match.group(1).strip(".") if match else ""
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        path = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
    reason = text.split(" at ", 1)[0].rsplit("field: ", 1)[-1].split("\n", 1)[0].strip()
    return path or "body", reason or text


@dataclass
class Operation:
    """One RPC-backed operation: where its request fields come from and which method it calls."""

    operation_id: str
    grpc_method: str
    method: MethodDescriptor
    body: str
    path_fields: tuple[str, ...]

    def __post_init__(self) -> None:
        self.request_class = message_factory.GetMessageClass(self.method.input_type)
        self.response_class = message_factory.GetMessageClass(self.method.output_type)
        self.service_name = self.method.containing_service.full_name


def find_method(grpc_method: str) -> MethodDescriptor:
    service_name, method_name = grpc_method.strip("/").split("/", 1)
    service = descriptor_pool.Default().FindServiceByName(service_name)
    method = service.methods_by_name.get(method_name)
    if method is None:
        raise LookupError(f"{grpc_method}: no such RPC in the descriptors")
    return method


def http_rules(method: MethodDescriptor) -> list[tuple[str, str, str]]:
    """(http method, path, body) of every google.api.http binding of an RPC."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    return [(verb, openapi_path(path), body)
            for verb, path, body in rule_bindings(options.Extensions[annotations_pb2.http])]


def operations_of(document: Mapping[str, Any]) -> dict[str, Operation]:
    """The RPC-backed operations of the document, checked against the descriptors' annotations."""
    found: dict[str, Operation] = {}
    for path, methods in document.get("paths", {}).items():
        for verb, spec in methods.items():
            if not isinstance(spec, dict) or "x-grpc-method" not in spec:
                continue
            method = find_method(spec["x-grpc-method"])
            rules = [rule for rule in http_rules(method) if rule[0] == verb and rule[1] == path]
            if not rules:
                raise LookupError(f"{verb.upper()} {path}: {spec['x-grpc-method']} has no such HTTP binding")
            found[spec["operationId"]] = Operation(spec["operationId"], spec["x-grpc-method"], method,
                                                   rules[0][2], tuple(path_fields(path)))
    return found


CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024),
                   ("grpc.max_send_message_length", 64 * 1024 * 1024)]


class Upstreams:
    """One grpc.aio channel per upstream address, created once and balanced over the address's replicas
    (common.channels); stubs are looked up by service name. `pools` gives a service more channels of its
    own (the tick webhook's ingest calls): one HTTP/2 connection serialises its frames through one
    completion queue, a few connections spread large batches."""

    def __init__(self, addresses: Mapping[str, str], pools: Mapping[str, int] | None = None) -> None:
        self.addresses = dict(addresses)
        self._by_address = {address: open_channel(address, CHANNEL_OPTIONS)
                            for address in sorted(set(self.addresses.values()))}
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}
        # A local subchannel pool per channel: otherwise channels with equal targets and options share
        # one connection, and the pool would be one channel.
        self._pools = {service: [open_channel(self.addresses[service],
                                              [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)])
                                 for _ in range(size)]
                       for service, size in (pools or {}).items() if size > 0}

    def pool(self, service: str) -> list[grpc.aio.Channel]:
        """The service's own channels (its shared channel when it has no pool)."""
        return self._pools.get(service) or [self.channel(service)]

    def channel(self, service: str) -> grpc.aio.Channel:
        try:
            return self._by_address[self.addresses[service]]
        except KeyError:
            raise LookupError(f"no upstream address for {service}") from None

    def unary(self, operation: Operation) -> grpc.aio.UnaryUnaryMultiCallable:
        call = self._calls.get(operation.grpc_method)
        if call is None:
            call = self.channel(operation.service_name).unary_unary(
                operation.grpc_method,
                request_serializer=operation.request_class.SerializeToString,
                response_deserializer=operation.response_class.FromString)
            self._calls[operation.grpc_method] = call
        return call

    async def close(self) -> None:
        for channel in [*self._by_address.values(), *(c for pool in self._pools.values() for c in pool)]:
            await channel.close()


def is_metadata_value(value: str) -> bool:
    """gRPC metadata values (non-binary) are printable ASCII."""
    return value.isascii() and value.isprintable()


def check_api_key_characters(api_key: str) -> None:
    """401 for an x-api-key header gRPC metadata cannot carry (no API key has such characters)."""
    if not is_metadata_value(api_key):
        raise EdgeProblem(401, "the x-api-key header has characters no API key has",
                          grpc_code=grpc.StatusCode.UNAUTHENTICATED)


def to_json_bytes(message: Any) -> bytes:
    """The message as its proto3 JSON, every field without presence printed (MessageToDict with
    always_print_fields_with_no_presence=True), compact."""
    return msgspec.json.encode(message_to_dict(message))


# json_format walks each message generically: ~9 ms for a page of 500 candles, most of a REST history answer's
# time. The same mapping compiled once per message type costs a fraction of it (tests/edge/test_json_mapping.py
# compares the two on every message of the contract). Types it does not cover go to json_format whole.
_TO_DICT: dict[str, Callable[[Any], Any]] = {}
_INT64_TYPES = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def message_to_dict(message: Any) -> Any:
    """What json_format.MessageToDict(message, always_print_fields_with_no_presence=True) returns."""
    descriptor = message.DESCRIPTOR
    convert = _TO_DICT.get(descriptor.full_name)
    if convert is None:
        convert = _TO_DICT[descriptor.full_name] = _compile_to_dict(descriptor)
    return convert(message)


def _generic_to_dict(message: Any) -> Any:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def _double(value: float) -> float | str:
    if value - value == 0:  # finite
        return value
    return "NaN" if value != value else _NON_FINITE[value]


def _value_of(field: FieldDescriptor) -> Callable[[Any], Any] | None:
    """How one value of the field becomes JSON (None: as it is); raises LookupError for what is not covered."""
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            raise LookupError("map")
        return message_to_dict
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        names = {value.number: value.name for value in field.enum_type.values}
        if field.enum_type.is_closed or field.enum_type.full_name == "google.protobuf.NullValue":
            raise LookupError("closed or null enum")
        return lambda number: names.get(number, number)
    if kind in _INT64_TYPES:
        return str
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    if kind == FieldDescriptor.CPPTYPE_FLOAT or field.type == FieldDescriptor.TYPE_BYTES:
        raise LookupError("float or bytes")
    return None  # int32, uint32, bool, string: as they are


def _compile_to_dict(descriptor: Descriptor) -> Callable[[Any], Any]:
    if descriptor.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return lambda message: message.ToJsonString()
    if descriptor.file.name.startswith("google/protobuf/") or _ENUM_JSON_NAMES:
        return _generic_to_dict  # Any, Struct, wrappers, ...; or enum values with JSON names of their own
    try:
        fields = [(field.name, field.json_name, _value_of(field), field.has_presence, field.is_repeated)
                  for field in descriptor.fields]
    except LookupError:
        return _generic_to_dict

    def to_dict(message: Any) -> dict[str, Any]:
        out = {}
        for name, json_name, value, presence, repeated in fields:
            if presence and not message.HasField(name):
                continue
            got = getattr(message, name)
            if repeated:
                out[json_name] = [value(item) for item in got] if value else list(got)
            else:
                out[json_name] = value(got) if value else got
        return out

    return to_dict


def _enum_json_names() -> bool:
    try:
        descriptor_pool.Default().FindExtensionByName("pb.enumvalue.json")
    except KeyError:
        return False
    return True


_ENUM_JSON_NAMES = _enum_json_names()


class Gateway:
    """Builds the handler of each RPC-backed operation."""

    def __init__(self, document: Mapping[str, Any], upstreams: Upstreams, timeout: float,
                 request_headers: Callable[[], Mapping[str, str]],
                 request_url: Callable[[], URL] | None = None) -> None:
        self.operations = operations_of(document)
        self.upstreams = upstreams
        self.timeout = timeout
        self._headers = request_headers
        self._url = request_url

    def handler(self, operation_id: str) -> Callable[..., Awaitable[Response]] | None:
        operation = self.operations.get(operation_id)
        if operation is None:
            return None

        async def handle(**kwargs: Any) -> Response:
            return await self.call(operation, kwargs)

        handle.__name__ = operation_id.rsplit(".", 1)[-1]
        return handle

    def build_request(self, operation: Operation, arguments: Mapping[str, Any]) -> Any:
        if operation.body == "*":
            fields = dict(arguments.get("body") or {})
        elif operation.body:
            fields = {operation.body: arguments.get("body")}
        else:
            fields = {name: value for name, value in arguments.items() if name != "body" and value is not None}
        for name in operation.path_fields:
            if name in arguments:
                fields[name] = arguments[name]
        request = operation.request_class()
        try:
            json_format.ParseDict(fields, request, ignore_unknown_fields=False)
        except json_format.ParseError as exc:
            field, reason = parse_error_violation(exc)
            raise EdgeProblem(400, f"invalid request: {field}: {reason}", violations=[(field, reason)]) from None
        return request

    def metadata(self) -> list[tuple[str, str]]:
        headers = self._headers()
        metadata = []
        api_key = headers.get("x-api-key")
        if api_key:
            check_api_key_characters(api_key)
            metadata.append(("x-api-key", api_key))
        request_id = REQUEST_ID.get()
        if request_id:
            metadata.append(("x-request-id", request_id))
        return metadata

    async def call(self, operation: Operation, arguments: Mapping[str, Any]) -> Response:
        request = self.build_request(operation, arguments)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            response = await self.upstreams.unary(operation)(request, timeout=self.timeout,
                                                              metadata=self.metadata())
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            return rpc_error_response(exc, operation.method.input_type)
        finally:
            UPSTREAM_LATENCY.labels(operation.grpc_method, code.name).observe(time.perf_counter() - started)
        return self.json_response(request, response)

    def json_response(self, request: Any, response: Any) -> Response:
        """The response as JSON, with a `Link: <...>; rel="next"` when it has a next page, and an ETag and
        caching headers for history pages (a 304 when the client already holds the page)."""
        body = to_json_bytes(response)
        headers: dict[str, str] = {}
        token = getattr(response, "next_page_token", "")
        if token and self._url is not None:
            headers["link"] = f'<{next_page_url(self._url(), token)}>; rel="next"'
        if response.DESCRIPTOR.full_name in REVALIDATED_RESPONSES:
            # Weak: the same page is sent gzip-compressed or not (a strong tag names one byte sequence).
            opaque = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            headers["etag"] = f"W/{opaque}"
            headers["cache-control"] = history_cache_control(request, response, time.time())
            held = {tag.strip().removeprefix("W/") for tag in (self._headers().get("if-none-match") or "").split(",")}
            if opaque in held or "*" in held:
                return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)


# A page of closed candles before a past `to` changes only if trades arrive late: clients and proxies may
# keep it this long without asking again (and revalidate with If-None-Match after).
CLOSED_PAGE_MAX_AGE_SECONDS = 60


def history_cache_control(request: Any, response: Any, now: float) -> str:
    """`public, max-age` for a candle page that is final (every candle closed, the range ends in the past),
    `no-cache` (revalidate with the ETag) for anything that may still grow."""
    final = (response.candles and request.HasField("to_time") and request.to_time.seconds <= now
             and all(candle.closed for candle in response.candles))
    return f"public, max-age={CLOSED_PAGE_MAX_AGE_SECONDS}" if final else "no-cache"


def next_page_url(url: URL, token: str) -> str:
    """The request's path and query with pageToken set to the next page's token."""
    query = [(name, value) for name, value in parse_qsl(url.query, keep_blank_values=True) if name != "pageToken"]
    return f"{url.path}?{urlencode([*query, ('pageToken', token)])}"


_PATH_PART = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\]]*\])*)$")


def json_field_path(message: Descriptor, path: str) -> str:
    """A service's field path in proto names (items[0].event_time) in the JSON names of the REST API
    (items[0].eventTime); parts it cannot resolve are kept as they are."""
    if not path:
        return path
    out, current = [], message
    for part in path.split("."):
        match = _PATH_PART.match(part)
        field = (current.fields_by_name.get(match.group(1)) or current.fields_by_camelcase_name.get(match.group(1))
                 if (match and current is not None) else None)
        if field is None or match is None:
            out.append(part)
            current = None
            continue
        out.append(field.json_name + match.group(2))
        current = field.message_type
    return ".".join(out)


def rpc_error_response(exc: grpc.aio.AioRpcError, request_type: Descriptor | None = None) -> Response:
    code = exc.code()
    status = http_status(code)
    try:
        violations = field_violations_of(exc)
    except Exception:  # noqa: BLE001 - malformed details must not hide the error itself
        violations = []
    detail = exc.details() or code.name
    if request_type is not None:
        named = [(field, json_field_path(request_type, field), description) for field, description in violations]
        violations = [(json_name, description) for _, json_name, description in named]
        # The summary names the same fields as the violations: in the names of the JSON the client sent.
        for field, json_name, _ in named:
            if field != json_name:
                detail = re.sub(rf"(?<![\w.\]]){re.escape(field)}:", lambda _, name=json_name: f"{name}:", detail)
    if status >= 500:
        log.warning("upstream error", extra={"grpc_code": code.name, "detail": detail})
    return problem_response(status, detail, grpc_code=code, violations=violations)
