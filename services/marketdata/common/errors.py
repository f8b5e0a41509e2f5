"""Errors: gRPC errors with google.rpc details (INVALID_ARGUMENT carries a BadRequest naming the bad fields, within
a size every client takes), and the exit of a server that cannot listen."""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


class PortInUseError(SystemExit):
    """A server (gRPC or the HTTP edge) cannot listen: the process exits naming the setting to change, BIND_HOST
    when the host is the problem, the port's setting otherwise."""

    def __init__(self, host: str, port: int, setting: str) -> None:
        problem = _bind_problem(host)
        if problem:
            super().__init__(f"cannot listen on {host}:{port}: BIND_HOST {problem}; set BIND_HOST to an address "
                             "of this machine (or 0.0.0.0 for all of them)")
        else:
            super().__init__(f"cannot listen on {host}:{port}: port {port} is already in use or not allowed "
                             f"(set {setting} to another port)")


def _bind_problem(host: str) -> str | None:
    """Why nothing can listen on host, whatever the port: it does not resolve, or is not an address of this machine."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        return f"{host} does not resolve ({exc.strerror})"
    with socket.socket(family, kind) as sock:
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine"
    return None


# An error's status travels in trailers: grpc-message (percent-encoded) and grpc-status-details-bin (the Status
# again, message included; base64 on the wire). C-core clients (grpcio, the edge) refuse trailers over their
# 8 KiB metadata limit with RESOURCE_EXHAUSTED and lose the details, so an INVALID_ARGUMENT keeps both within a
# budget well under it: echoed values are cut to a short prefix, each description and field path is capped, and
# the violations that do not fit end in one entry counting them ("N more problems not listed").
MAX_STATUS_BYTES = 4096  # grpc-message as sent + grpc-status-details-bin in base64
MAX_MESSAGE_BYTES = 512  # grpc-message as sent
MAX_DESCRIPTION_CHARS = 240
MAX_FIELD_CHARS = 120
ECHO_CHARS = 24  # of a client's value quoted in a description
ELLIPSIS = "\u2026"
# Room kept for the "N more problems not listed" entry and for length prefixes growing by a byte or two.
_SUMMARY_ENTRY_BYTES = 256


def quoted(value: str, limit: int = ECHO_CHARS) -> str:
    """A client's value as a description quotes it: repr, cut to `limit` characters with its length when longer
    ('sym0usdt'; 'AAAAAAAAAAAAAAAAAAAAAAAA'… (9000 characters))."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}{ELLIPSIS} ({len(value)} characters)"


def clipped(text: str, limit: int) -> str:
    """text cut to at most `limit` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit - 1] + ELLIPSIS


def message_bytes(text: str) -> int:
    """Bytes of text as grpc-message carries it: UTF-8, each byte outside printable ASCII (and %) as %XX."""
    data = text.encode("utf-8", "surrogatepass")
    return len(data) + 2 * sum(1 for b in data if b < 0x20 or b > 0x7E or b == 0x25)


def _clip_message(text: str, limit: int) -> str:
    if message_bytes(text) <= limit:
        return text
    room = limit - message_bytes(ELLIPSIS)
    size = 0
    for index, char in enumerate(text):
        size += message_bytes(char)
        if size > room:
            return text[:index] + ELLIPSIS
    return text


def not_listed(count: int) -> str:
    return f"{count} more problems not listed"


@dataclass
class FieldViolations:
    """Collects field violations; `abort_if_any` turns them into one INVALID_ARGUMENT. `unlisted` counts problems
    found but not collected (a validator that stops collecting); the status reports them with those it cannot
    fit in its budget."""

    items: list[tuple[str, str]] = field(default_factory=list)
    unlisted: int = 0

    def add(self, field_path: str, description: str) -> None:
        self.items.append((field_path, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def status(self, summary: str | None = None) -> status_pb2.Status:
        return invalid_argument_status(self.items, summary, self.unlisted)

    async def abort_if_any(self, context: grpc.aio.ServicerContext, summary: str | None = None) -> None:
        if self.items:
            await context.abort_with_status(rpc_status.to_status(self.status(summary)))


def invalid_argument_status(violations: list[tuple[str, str]], summary: str | None = None,
                            unlisted: int = 0) -> status_pb2.Status:
    """INVALID_ARGUMENT with a BadRequest of the violations, in order, as many as fit MAX_STATUS_BYTES (with the
    message); the rest, and `unlisted` more, are counted by a last entry. The message names the first few."""
    items = [(clipped(path, MAX_FIELD_CHARS), clipped(description, MAX_DESCRIPTION_CHARS))
             for path, description in violations]
    total = len(items) + unlisted
    message = _clip_message(summary if summary is not None else _summary(items, total), MAX_MESSAGE_BYTES)
    empty = _status(message, [])
    # base64 of the details, plus the message as sent, within the budget; the summary entry's room kept aside.
    room = (MAX_STATUS_BYTES - message_bytes(message)) * 3 // 4 - empty.ByteSize() - _SUMMARY_ENTRY_BYTES
    kept: list[error_details_pb2.BadRequest.FieldViolation] = []
    for path, description in items:
        violation = error_details_pb2.BadRequest.FieldViolation(field=path, description=description)
        size = violation.ByteSize()
        room -= 1 + _varint_bytes(size) + size
        if room < 0:
            break
        kept.append(violation)
    omitted = total - len(kept)
    if omitted:
        rest = [path for path, _ in items[len(kept):]] or [path for path, _ in items]
        kept.append(error_details_pb2.BadRequest.FieldViolation(field=_common_root(rest),
                                                                description=not_listed(omitted)))
    return _status(message, kept)


def within_budget(violations: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The violations as an INVALID_ARGUMENT carries them (as many as fit its budget, then the count of the rest):
    the same list for an HTTP problem, whose body the edge keeps as small."""
    bad_request = error_details_pb2.BadRequest()
    invalid_argument_status(list(violations), "").details[0].Unpack(bad_request)
    return [(v.field, v.description) for v in bad_request.field_violations]


def _status(message: str, violations: list[error_details_pb2.BadRequest.FieldViolation]) -> status_pb2.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=violations))
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])


def _summary(items: list[tuple[str, str]], total: int) -> str:
    """`invalid argument: f: why; g: why (and N more)`: the first five violations, or as many as fit."""
    shown: list[str] = []
    room = MAX_MESSAGE_BYTES - 64  # the prefix and the count
    for path, description in items[:5]:
        entry = f"{path}: {description}"
        room -= message_bytes(entry) + 2
        if room < 0 and shown:
            break
        shown.append(entry)
    more = f" (and {total - len(shown)} more)" if total > len(shown) else ""
    return _clip_message(f"invalid argument: {'; '.join(shown)}", MAX_MESSAGE_BYTES - len(more)) + more


def _common_root(paths: list[str]) -> str:
    """The top-level field all the paths are in (items for items[3].price), else `request`."""
    roots = {re.split(r"[.\[]", path, maxsplit=1)[0] for path in paths}
    return roots.pop() if len(roots) == 1 and "" not in roots else "request"


def _varint_bytes(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def field_violations_of(error: grpc.aio.AioRpcError | grpc.RpcError) -> list[tuple[str, str]]:
    """Reads the BadRequest field violations out of a client-side error (used by the edge and the tests)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    violations: list[tuple[str, str]] = []
    if status is None:
        return violations
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend((v.field, v.description) for v in bad_request.field_violations)
    return violations
