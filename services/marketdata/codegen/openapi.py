"""Builds the edge's OpenAPI 3 document from the descriptor set, the way grpc-gateway's openapiv2 generator does.

* Paths and methods come from the `google.api.http` annotations of the RPCs. Path parameters are the
  `{field}` templates; with `body: "*"` the whole request message is the JSON body; for a rule without a
  body every remaining field that is a scalar, an enum, a repeated scalar or a google.protobuf.Timestamp
  becomes a query parameter (nested messages are not query parameters).
* Schemas follow the protobuf JSON mapping: lowerCamelCase (or json_name) property names, int64 family as
  strings, Timestamps as RFC 3339 `date-time` strings, enums by name, floating point as numbers. Response
  schemas list as required every field that always appears in a response (fields without presence,
  printed with their default values); `optional`, message and oneof fields are never required.
  Request-body schemas (`...Input`) require nothing and reject unknown properties.
* Request schemas carry the `buf.validate` rules of their fields (protovalidate annotations, the one place
  the rules are written): string pattern/minLength/maxLength/enum (`in`), number minimum/maximum (with
  exclusiveMinimum/exclusiveMaximum for gt/lt), repeated minItems/maxItems and the rules of their items,
  and `required` for fields marked required or whose default value (absent in proto3 JSON) breaks a rule. Response schemas describe what is stored and stay unconstrained.
* Descriptions are the proto comments.
* A small fixed table adds the edge's own routes (health, live stream): they are marked `x-edge-route`
  and have no RPC behind them. Every RPC-backed operation carries `x-grpc-method` (`/pkg.Service/Method`).

`build(descriptor_set)` returns the document; `write(descriptor_set, target)` writes it (sorted, stable).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buf.validate import validate_pb2
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

PACKAGE = "marketdata.v1"
API_TITLE = "marketdata"
API_VERSION = "v1"
API_DESCRIPTION = (
    "Realtime market data. The REST operations are generated from the gRPC services' `google.api.http` "
    "annotations and translated one to one into gRPC calls by the edge; JSON follows the protobuf JSON "
    "mapping (lowerCamelCase names, 64-bit integers as strings, timestamps in RFC 3339). Errors are "
    "`application/problem+json` with the gRPC status name in `grpcCode` and the invalid fields in `violations`."
)
PROBLEM_MEDIA_TYPE = "application/problem+json"
API_KEY_SCHEME = "ApiKey"
# Services whose calls need the `x-api-key` header (their proto comment says so); the key is checked by the
# service itself, the edge only requires that one is sent.
API_KEY_SERVICES = frozenset({f"{PACKAGE}.IngestService"})

# Responses the edge tags with an ETag and answers with 304 when If-None-Match names it (edge/gateway.py).
REVALIDATED_RESPONSES = frozenset({f"{PACKAGE}.GetHistoryResponse"})

# Symbols per /realtime/ticks stream (edge/server.py enforces the same number).
MAX_STREAM_SYMBOLS = 50

# HTTP statuses documented for every RPC-backed operation, with the gRPC codes behind them.
ERROR_RESPONSES = {
    "400": "Invalid argument (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE) or a request that does "
           "not match this document; `violations` names the fields.",
    "404": "Not found (NOT_FOUND).",
    "429": "Rate limited (RESOURCE_EXHAUSTED).",
    "503": "The service behind the edge is unavailable (UNAVAILABLE).",
    "504": "The service behind the edge did not answer in time (DEADLINE_EXCEEDED).",
    "default": "Any other error, with its gRPC code in `grpcCode`.",
}

_FD = descriptor_pb2.FieldDescriptorProto
_INT64_TYPES = {_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64}
_UINT64_TYPES = {_FD.TYPE_UINT64, _FD.TYPE_FIXED64}
_INT32_TYPES = {_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32}
_UINT32_TYPES = {_FD.TYPE_UINT32, _FD.TYPE_FIXED32}

# Well-known types with a JSON form of their own.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time",
                                   "description": "RFC 3339 date-time, for example 2024-05-01T12:00:00Z."},
    ".google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
                                  "description": "Duration in seconds with an `s` suffix, for example 1.5s."},
    ".google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    ".google.protobuf.Struct": {"type": "object"},
    ".google.protobuf.Value": {},
    ".google.protobuf.StringValue": {"type": "string"},
    ".google.protobuf.BoolValue": {"type": "boolean"},
    ".google.protobuf.DoubleValue": {"type": "number"},
    ".google.protobuf.FloatValue": {"type": "number"},
    ".google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    ".google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    ".google.protobuf.Int64Value": {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"},
    ".google.protobuf.UInt64Value": {"type": "string", "format": "uint64", "pattern": r"^[0-9]+$"},
}
# Message types that may be query parameters (grpc-gateway treats them as scalars).
_QUERY_MESSAGES = {".google.protobuf.Timestamp", ".google.protobuf.Duration"}


@dataclass(frozen=True)
class HttpRoute:
    """One `google.api.http` binding of an RPC."""

    service: str          # full name, e.g. marketdata.v1.QueryService
    method: str           # e.g. GetHistory
    http_method: str      # lower case
    path: str             # OpenAPI template, e.g. /api/v1/ticks/{symbol}/history
    body: str             # "", "*" or a field name
    input_type: str       # full name with leading dot
    output_type: str

    @property
    def grpc_method(self) -> str:
        return f"/{self.service}/{self.method}"

    @property
    def operation_id(self) -> str:
        return f"{self.service}.{self.method}"


def rule_bindings(rule: http_pb2.HttpRule) -> Iterable[tuple[str, str, str]]:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        yield rule.custom.kind.lower(), rule.custom.path, rule.body
    elif pattern:
        yield pattern, getattr(rule, pattern), rule.body
    for extra in rule.additional_bindings:
        yield from rule_bindings(extra)


def http_routes(descriptor_set: descriptor_pb2.FileDescriptorSet, package: str = PACKAGE) -> list[HttpRoute]:
    """Every HTTP binding of every RPC of `package`, in file/service/method order."""
    routes = []
    for file in descriptor_set.file:
        if file.package != package:
            continue
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                if method.client_streaming or method.server_streaming:
                    raise ValueError(f"{service.name}.{method.name}: streaming RPCs cannot have HTTP bindings here")
                rule = method.options.Extensions[annotations_pb2.http]
                for http_method, path, body in rule_bindings(rule):
                    routes.append(HttpRoute(f"{file.package}.{service.name}", method.name, http_method,
                                            openapi_path(path), body, method.input_type, method.output_type))
    return routes


def openapi_path(template: str) -> str:
    # google.api.http allows {field=pattern}; OpenAPI only {field}.
    return re.sub(r"\{([^}=]*)(=[^}]*)?\}", r"{\1}", template)


def path_fields(path: str) -> list[str]:
    return re.findall(r"\{([^}]*)\}", path)


class _Index:
    """Messages, enums and comments of a descriptor set by full name."""

    def __init__(self, descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[tuple[str, ...], str] = {}
        for file in descriptor_set.file:
            locations = {tuple(loc.path): loc for loc in file.source_code_info.location}

            def comment(path: tuple[int, ...]) -> str:
                loc = locations.get(path)
                if loc is None:
                    return ""
                text = loc.leading_comments or loc.trailing_comments
                return "\n".join(line.strip() for line in text.strip().splitlines()).strip()

            prefix = f".{file.package}" if file.package else ""
            for index, message in enumerate(file.message_type):
                self._add_message(f"{prefix}.{message.name}", message, (4, index), comment)
            for index, enum in enumerate(file.enum_type):
                self._add_enum(f"{prefix}.{enum.name}", enum, (5, index), comment)
            for s_index, service in enumerate(file.service):
                name = f"{prefix}.{service.name}"
                self.comments[(name,)] = comment((6, s_index))
                for m_index, method in enumerate(service.method):
                    self.comments[(name, method.name)] = comment((6, s_index, 2, m_index))

    def _add_message(self, name: str, message: descriptor_pb2.DescriptorProto, path: tuple[int, ...],
                     comment: Any) -> None:
        self.messages[name] = message
        self.comments[(name,)] = comment(path)
        for index, field in enumerate(message.field):
            self.comments[(name, field.name)] = comment((*path, 2, index))
        for index, nested in enumerate(message.nested_type):
            self._add_message(f"{name}.{nested.name}", nested, (*path, 3, index), comment)
        for index, enum in enumerate(message.enum_type):
            self._add_enum(f"{name}.{enum.name}", enum, (*path, 4, index), comment)

    def _add_enum(self, name: str, enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...],
                  comment: Any) -> None:
        self.enums[name] = enum
        self.comments[(name,)] = comment(path)


def _field(message: descriptor_pb2.DescriptorProto, name: str) -> descriptor_pb2.FieldDescriptorProto:
    return next(field for field in message.field if field.name == name)


def _has_presence(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    return (field.proto3_optional or field.HasField("oneof_index")
            or (field.type == _FD.TYPE_MESSAGE and field.label != _FD.LABEL_REPEATED))


class _Builder:
    def __init__(self, descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
        self.index = _Index(descriptor_set)
        self.schemas: dict[str, dict[str, Any]] = {}
        short_names: dict[str, list[str]] = {}
        for full in [*self.index.messages, *self.index.enums]:
            short_names.setdefault(full.rsplit(".", 1)[-1], []).append(full)
        self._names = {full: (short if len(fulls) == 1 else full.lstrip("."))
                       for short, fulls in short_names.items() for full in fulls}

    # -- schemas ---------------------------------------------------------------------------------------------
    def schema_name(self, full_name: str, request: bool) -> str:
        name = self._names[full_name]
        if request and not name.endswith("Request"):
            name += "Input"
        return name

    def ref(self, full_name: str, request: bool) -> dict[str, Any]:
        if full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full_name])
        if full_name in self.index.enums:
            name = self._names[full_name]
            if name not in self.schemas:
                enum = self.index.enums[full_name]
                self.schemas[name] = {"type": "string", "enum": [value.name for value in enum.value],
                                      **self._description((full_name,))}
            return {"$ref": f"#/components/schemas/{name}"}
        name = self.schema_name(full_name, request)
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder against recursion
            self.schemas[name] = self.message_schema(full_name, request)
        return {"$ref": f"#/components/schemas/{name}"}

    def _description(self, key: tuple[str, ...]) -> dict[str, str]:
        text = self.index.comments.get(key, "")
        return {"description": text} if text else {}

    def message_schema(self, full_name: str, request: bool) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in self.index.messages[full_name].field:
            name = field.json_name  # protoc fills it in every descriptor set (lowerCamelCase unless declared)
            schema = self.field_schema(field, request)
            description = self.index.comments.get((full_name, field.name), "")
            if description:
                schema = {**schema, "description": description} if "$ref" not in schema else {
                    "allOf": [schema], "description": description}
            properties[name] = schema
            if not request and not _has_presence(field):
                required.append(name)
            if request and absent_is_invalid(field):
                required.append(name)
        schema: dict[str, Any] = {"type": "object", **self._description((full_name,)), "properties": properties}
        if required:
            schema["required"] = required
        if request:
            schema["additionalProperties"] = False
        return schema

    def _is_map(self, field: descriptor_pb2.FieldDescriptorProto) -> bool:
        if field.type != _FD.TYPE_MESSAGE or field.label != _FD.LABEL_REPEATED:
            return False
        entry = self.index.messages.get(field.type_name)
        return bool(entry and entry.options.map_entry)

    def field_schema(self, field: descriptor_pb2.FieldDescriptorProto, request: bool) -> dict[str, Any]:
        if self._is_map(field):
            value = _field(self.index.messages[field.type_name], "value")
            return {"type": "object", "additionalProperties": self.single_schema(value, request)}
        rules = field_rules(field) if request else validate_pb2.FieldRules()
        single = self.single_schema(field, request)
        if field.label == _FD.LABEL_REPEATED:
            repeated = rules.repeated
            array: dict[str, Any] = {"type": "array", "items": _constrained(single, repeated.items)}
            if repeated.HasField("min_items"):
                array["minItems"] = repeated.min_items
            if repeated.HasField("max_items"):
                array["maxItems"] = repeated.max_items
            return array
        return _constrained(single, rules)

    def single_schema(self, field: descriptor_pb2.FieldDescriptorProto, request: bool) -> dict[str, Any]:
        kind = field.type
        if kind in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT):
            return {"type": "number", "format": "double" if kind == _FD.TYPE_DOUBLE else "float"}
        if kind in _INT32_TYPES:
            return {"type": "integer", "format": "int32", "minimum": -2**31, "maximum": 2**31 - 1}
        if kind in _UINT32_TYPES:
            return {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1}
        if kind in _INT64_TYPES:
            return {"type": "string", "format": "int64", "pattern": r"^-?[0-9]{1,19}$"}
        if kind in _UINT64_TYPES:
            return {"type": "string", "format": "uint64", "pattern": r"^[0-9]{1,20}$"}
        if kind == _FD.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == _FD.TYPE_STRING:
            return {"type": "string"}
        if kind == _FD.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        if kind in (_FD.TYPE_ENUM, _FD.TYPE_MESSAGE):
            return self.ref(field.type_name, request)
        raise ValueError(f"unsupported field type {kind} of {field.name}")

    # -- operations ------------------------------------------------------------------------------------------
    def parameters(self, route: HttpRoute) -> list[dict[str, Any]]:
        message = self.index.messages[route.input_type]
        fields = {field.name: field for field in message.field}
        params = []
        in_path = path_fields(route.path)
        for name in in_path:
            if name not in fields:
                raise ValueError(f"{route.operation_id}: path field {name!r} is not a field of {route.input_type}")
            field = fields[name]
            params.append({"name": name, "in": "path", "required": True,
                           "schema": _constrained(self.single_schema(field, True), field_rules(field)),
                           **self._description((route.input_type, name))})
        if route.body:
            return params
        for field in message.field:
            if field.name in in_path:
                continue
            if field.type == _FD.TYPE_MESSAGE and field.type_name not in _QUERY_MESSAGES:
                continue  # nested messages are not query parameters
            if self._is_map(field):
                continue
            schema = self.field_schema(field, True)
            param: dict[str, Any] = {"name": field.json_name, "in": "query", "required": False, "schema": schema,
                                     **self._description((route.input_type, field.name))}
            if field.label == _FD.LABEL_REPEATED:
                param.update(style="form", explode=True)
            params.append(param)
        return params

    def operation(self, route: HttpRoute) -> dict[str, Any]:
        summary = self.index.comments.get((f".{route.service}", route.method), "")
        secured = route.service in API_KEY_SERVICES
        parameters = self.parameters(route)
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "tags": [route.service.rsplit(".", 1)[-1]],
            "summary": summary.split("\n", 1)[0],
            "description": summary,
            "x-grpc-method": route.grpc_method,
            **({"parameters": parameters} if parameters else {}),
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {
                    "schema": self.ref(route.output_type, False)}}},
                **{code: {"$ref": f"#/components/responses/Problem{code.capitalize()}"}
                   for code in [*ERROR_RESPONSES, *(_EXTRA_ERRORS if secured else ())]},
            },
        }
        if route.output_type.lstrip(".") in REVALIDATED_RESPONSES:
            operation["responses"]["200"]["headers"] = {"ETag": {
                "description": "A weak tag of the page; send it in If-None-Match to revalidate.",
                "schema": {"type": "string"}}}
            operation["responses"]["304"] = {
                "description": "Not modified: the page is still the one the If-None-Match tag names (no body)."}
        if route.body:
            if route.body == "*":
                schema = self.ref(route.input_type, True)
            else:
                schema = self.field_schema(_field(self.index.messages[route.input_type], route.body), True)
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": schema}}}
        if secured:
            operation["security"] = [{API_KEY_SCHEME: []}]
        return operation


def field_rules(field: descriptor_pb2.FieldDescriptorProto) -> validate_pb2.FieldRules:
    """The buf.validate rules of a field (empty when it has none)."""
    return field.options.Extensions[validate_pb2.field]


def absent_is_invalid(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    """Whether a request must carry the field: marked required, or its default (what an absent field reads as
    in proto3: "", 0, no items) breaks its rules."""
    rules = field_rules(field)
    if rules.required:
        return True
    kind = rules.WhichOneof("type")
    if kind == "repeated":
        return rules.repeated.min_items > 0
    if kind == "string":
        typed = rules.string
        return typed.min_len > 0 or (typed.HasField("pattern") and re.search(typed.pattern, "") is None)
    if kind in _NUMERIC_RULES:
        typed = getattr(rules, kind)
        return ((typed.HasField("gt") and not 0 > typed.gt) or (typed.HasField("gte") and not 0 >= typed.gte)
                or (typed.HasField("lt") and not 0 < typed.lt) or (typed.HasField("lte") and not 0 <= typed.lte))
    return False


# JSON Schema keywords of the buf.validate rules of a scalar kind: (rule, keyword, exclusive keyword).
_BOUNDS = (("gte", "minimum", None), ("gt", "minimum", "exclusiveMinimum"),
           ("lte", "maximum", None), ("lt", "maximum", "exclusiveMaximum"))
_FROM_EPOCH_PATTERN = r"^(1969-12-31T|(19[7-9][0-9]|[2-9][0-9]{3})-)"
_NUMERIC_RULES = ("double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
                  "fixed32", "fixed64", "sfixed32", "sfixed64")


def _constrained(schema: dict[str, Any], rules: validate_pb2.FieldRules) -> dict[str, Any]:
    """The schema of one value with the JSON Schema form of its buf.validate rules (OpenAPI 3.0 keywords)."""
    kind = rules.WhichOneof("type")
    if kind is None:
        return schema
    schema = dict(schema)
    typed = getattr(rules, kind)
    if kind == "string":
        if typed.HasField("pattern"):
            schema["pattern"] = typed.pattern
        if typed.HasField("min_len"):
            schema["minLength"] = typed.min_len
        if typed.HasField("max_len"):
            schema["maxLength"] = typed.max_len
        if getattr(typed, "in"):
            schema["enum"] = list(getattr(typed, "in"))
    elif kind == "timestamp" and typed.HasField("gte") and typed.gte.seconds == 0 and typed.gte.nanos == 0:
        # Not before the epoch, as a pattern on the RFC 3339 text: the years from 1970 and the last day of 1969
        # (a time of it is after the epoch in a negative offset). The pattern never refuses a time the rule
        # takes; the service judges the two days around the epoch exactly.
        schema["pattern"] = _FROM_EPOCH_PATTERN
    elif kind in _NUMERIC_RULES:
        for rule, keyword, exclusive in _BOUNDS:
            if typed.HasField(rule):
                value = getattr(typed, rule)
                # 64-bit integers are JSON strings: their bounds cannot be JSON Schema keywords.
                if schema.get("type") in ("number", "integer"):
                    schema[keyword] = int(value) if schema["type"] == "integer" else value
                    if exclusive:
                        schema[exclusive] = True
    return schema


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details, as answered by every error of the edge.",
    "required": ["type", "title", "status", "detail", "grpcCode", "violations"],
    "properties": {
        "type": {"type": "string", "description": "`about:blank`."},
        "title": {"type": "string", "description": "The HTTP reason phrase."},
        "status": {"type": "integer", "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "grpcCode": {"type": "string", "description": "The gRPC status name behind the error, e.g. INVALID_ARGUMENT."},
        "violations": {
            "type": "array",
            "description": "The invalid fields (google.rpc.BadRequest field violations), e.g. `items[3].price`; "
                           "empty when the error is not about fields.",
            "items": {"type": "object", "required": ["field", "description"], "properties": {
                "field": {"type": "string"}, "description": {"type": "string"}}},
        },
        "requestId": {"type": "string", "description": "The request id (`x-request-id`) of the failed request."},
    },
}

# HTTP statuses documented in addition for the operations of API_KEY_SERVICES.
_EXTRA_ERRORS = {"401": "No or an unknown API key (UNAUTHENTICATED).",
                 "403": "The API key may not do this (PERMISSION_DENIED)."}

RESYNC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Payload of `event: resync`: the updates since Last-Event-ID cannot be replayed (or the live feed "
                   "was interrupted); reload history, then carry on with the stream.",
    "required": ["reason"],
    "properties": {
        "reason": {"type": "string", "description": "Why, for a person."},
        "lastEventId": {"type": "string", "description": "The Last-Event-ID the client reconnected with, if any."},
    },
    "additionalProperties": False,
}


def event_schema(stream: str, events: str, data: str, data_schemas: dict[str, Any],
                 resumable: bool = False) -> dict[str, Any]:
    """One Server-Sent Event of a stream as an SSE parser reads it (OpenAPI 3.0: the media type's schema
    describes each event). `data` is one line of JSON whose schema (`x-data-schemas`) depends on `event`;
    only a resumable stream sends an `id`."""
    resume = {"id": {"type": "string", "pattern": "^[0-9a-f]+-[0-9]+$",
                     "description": "Position in the edge's stream, for Last-Event-ID."}} if resumable else {}
    return {
        "type": "object",
        "description": f"One Server-Sent Event of the {stream} stream, as sent: {events} "
                       "Comment lines (`: ping`) and the opening `retry:` carry no event.",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": list(data_schemas)},
            "data": {"type": "string", "description": f"One line of JSON: {data}"},
            **resume,
            "retry": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
        "x-data-schemas": data_schemas,
    }


def stream_symbols_pattern(symbol: validate_pb2.StringRules) -> str:
    """One or more symbols (the proto's rule of Tick.symbol) separated by commas."""
    one = symbol.pattern.removeprefix("^").removesuffix("$")
    return f"^{one}(,{one})*$"


def stream_symbols_parameter(symbol: validate_pb2.StringRules, most: int) -> dict[str, Any]:
    """The `symbol` query parameter of a stream: repeated, or comma-separated, at most `most` symbols."""
    return {"name": "symbol", "in": "query", "required": True, "style": "form", "explode": True,
            "description": f"Symbols to watch: repeat the parameter or separate them by commas (at most {most}).",
            "schema": {"type": "array", "minItems": 1, "maxItems": most,
                       "items": {"type": "string", "pattern": stream_symbols_pattern(symbol),
                                 "minLength": symbol.min_len, "maxLength": (symbol.max_len + 1) * most}}}


def _edge_routes(symbol: validate_pb2.StringRules, window_size: validate_pb2.StringRules,
                 max_ticker_symbols: int) -> dict[str, dict[str, Any]]:
    """The fixed table of the edge's own routes (no RPC behind them)."""
    status = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
    readiness = {"type": "object", "required": ["status", "dependencies"], "properties": {
        "status": {"type": "string", "enum": ["ready", "degraded"]},
        "dependencies": {"type": "object", "additionalProperties": {"type": "string"},
                         "description": "grpc.health.v1 status of each upstream service, and the edge's NATS "
                                        "connection (`nats`: CONNECTED or DISCONNECTED)."},
        "degraded": {"type": "array", "items": {"type": "string"},
                     "description": "Dependencies that are down while the edge still serves (e.g. `nats`: "
                                    "no live updates over SSE; the ingest service: no webhooks)."}}}
    return {
        "/api/v1/health/liveness": {"get": {
            "operationId": "marketdata.edge.server.liveness", "tags": ["Health"], "x-edge-route": True,
            "summary": "The edge process is up.",
            "description": "Answers 200 while the process runs, whatever its dependencies.",
            "responses": {"200": {"description": "Alive", "content": {"application/json": {"schema": status}}}},
        }},
        "/api/v1/health/readiness": {"get": {
            "operationId": "marketdata.edge.server.readiness", "tags": ["Health"], "x-edge-route": True,
            "summary": "The edge can serve requests.",
            "description": "200 while the query service (history, the dashboard's data) reports SERVING through "
                           "grpc.health.v1; `status` is `degraded`, naming what is down, when the ingest service or "
                           "the edge's NATS connection (live updates over SSE) is not; 503 naming the query "
                           "service when it is not SERVING.",
            "responses": {
                "200": {"description": "Ready", "content": {"application/json": {"schema": readiness}}},
                "503": {"$ref": "#/components/responses/Problem503"},
            },
        }},
        "/realtime/ticks": {"get": {
            "operationId": "marketdata.edge.sse.stream", "tags": ["Realtime"], "x-edge-route": True,
            "summary": "Live updates of symbols as Server-Sent Events.",
            "description": (
                "A `text/event-stream` of `event: update` whose `data` is a LiveUpdate (`symbol`, `lastTick`, "
                "`candle`, `commitTime`, the same JSON as the REST API), sent after each commit of the aggregator. "
                "Every update has an `id`; a client reconnecting with `Last-Event-ID` receives the updates it "
                "missed when the edge still has them, else an `event: resync` telling it to reload history. "
                "Comments (`: ping`) keep the connection alive. A client that cannot keep up receives only the "
                "latest update per symbol and is disconnected if it stays behind. Symbols that do not exist yet "
                "are accepted (their updates start once they trade)."),
            "parameters": [
                stream_symbols_parameter(symbol, MAX_STREAM_SYMBOLS),
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "description": "Id of the last update received, sent by EventSource when it reconnects.",
                 "schema": {"type": "string", "maxLength": 200}},
            ],
            "responses": {
                "200": {"description": "The event stream", "content": {"text/event-stream": {
                    "schema": {"$ref": "#/components/schemas/LiveEvent"}}}},
                "400": {"$ref": "#/components/responses/Problem400"},
                "503": {"$ref": "#/components/responses/Problem503"},
            },
        }},
        "/realtime/ticker": {"get": {
            "operationId": "marketdata.edge.server.ticker_stream", "tags": ["Realtime"], "x-edge-route": True,
            "summary": "Live rolling-window tickers of a watchlist as Server-Sent Events.",
            "description": (
                "A `text/event-stream` of `event: ticker` whose `data` is a WatchTickerResponse (`items`: Tickers "
                "as GET /api/v1/ticker/24hr answers them): first every symbol, then at most once a second the "
                "tickers of the symbols that traded (QueryService.WatchTicker). Comments (`: ping`) keep the "
                "connection alive."),
            "parameters": [
                stream_symbols_parameter(symbol, max_ticker_symbols),
                {"name": "windowSize", "in": "query", "required": False,
                 "description": "Length of the rolling window, as for /api/v1/ticker/24hr (default 1d).",
                 "schema": {"type": "string", "pattern": window_size.pattern}},
            ],
            "responses": {
                "200": {"description": "The event stream", "content": {"text/event-stream": {
                    "schema": {"$ref": "#/components/schemas/TickerEvent"}}}},
                "400": {"$ref": "#/components/responses/Problem400"},
                "404": {"$ref": "#/components/responses/Problem404"},
                "503": {"$ref": "#/components/responses/Problem503"},
            },
        }},
    }


def build(descriptor_set: Path) -> dict[str, Any]:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    builder = _Builder(descriptors)
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    for route in http_routes(descriptors):
        methods = paths.setdefault(route.path, {})
        if route.http_method in methods:
            raise ValueError(f"{route.http_method.upper()} {route.path} is bound to two RPCs")
        methods[route.http_method] = builder.operation(route)
        tags[route.service.rsplit(".", 1)[-1]] = builder.index.comments.get((f".{route.service}",), "")
    live_update = builder.ref(f".{PACKAGE}.LiveUpdate", False)
    watch_ticker_response = builder.ref(f".{PACKAGE}.WatchTickerResponse", False)
    messages = builder.index.messages
    symbol_rules = field_rules(_field(messages[f".{PACKAGE}.Tick"], "symbol")).string
    window_rules = field_rules(_field(messages[f".{PACKAGE}.WatchTickerRequest"], "window_size")).string
    # A /realtime/ticker stream takes as many symbols as a watch stream (rules.MAX_WATCH_SYMBOLS, which
    # WatchTicker enforces); read here from the descriptor set, not from the modules being regenerated.
    max_ticker_symbols = field_rules(_field(messages[f".{PACKAGE}.WatchTicksRequest"], "symbols")).repeated.max_items
    for path, methods in _edge_routes(symbol_rules, window_rules, max_ticker_symbols).items():
        if path in paths:
            raise ValueError(f"{path} is both an RPC binding and an edge route")
        paths[path] = methods
    responses = {f"Problem{code.capitalize()}": {"description": text, "content": {PROBLEM_MEDIA_TYPE: {
                     "schema": {"$ref": "#/components/schemas/Problem"}}}}
                 for code, text in {**ERROR_RESPONSES, **_EXTRA_ERRORS}.items()}
    return {
        "openapi": "3.0.3",
        "info": {"title": API_TITLE, "version": API_VERSION, "description": API_DESCRIPTION},
        "tags": [{"name": name, "description": text} for name, text in tags.items()]
                + [{"name": "Health", "description": "Liveness and readiness of the edge."},
                   {"name": "Realtime", "description": "Server-Sent Events."}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {**dict(sorted(builder.schemas.items())), "Problem": PROBLEM_SCHEMA,
                        "LiveEvent": event_schema(
                            "live", "`event: update` with a LiveUpdate as `data` (the same JSON as the REST API) "
                            "and an `id` to resume from, or `event: resync` with a Resync.",
                            "a LiveUpdate (update) or a Resync (resync).",
                            {"update": live_update, "resync": {"$ref": "#/components/schemas/Resync"}}, resumable=True),
                        "Resync": RESYNC_SCHEMA,
                        "TickerEvent": event_schema(
                            "ticker", "`event: ticker` with a WatchTickerResponse as `data`.",
                            "a WatchTickerResponse.", {"ticker": watch_ticker_response})},
            "responses": dict(sorted(responses.items())),
            "securitySchemes": {API_KEY_SCHEME: {
                "type": "apiKey", "in": "header", "name": "x-api-key",
                "description": "API key, checked by the ingest service.",
                "x-apikeyInfoFunc": "marketdata.edge.gateway.forward_api_key"}},
        },
    }


def write(descriptor_set: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(build(descriptor_set), indent=2) + "\n")
    return target
