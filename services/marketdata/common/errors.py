"""Errors: gRPC errors with google.rpc details (INVALID_ARGUMENT carries a BadRequest naming every bad field), and
the exit of a server that cannot listen."""

from __future__ import annotations

import errno
import socket
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


@dataclass
class FieldViolations:
    """Collects field violations; `abort_if_any` turns them into one INVALID_ARGUMENT."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append((field_path, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def status(self, summary: str | None = None) -> status_pb2.Status:
        return invalid_argument_status(self.items, summary)

    async def abort_if_any(self, context: grpc.aio.ServicerContext, summary: str | None = None) -> None:
        if self.items:
            await context.abort_with_status(rpc_status.to_status(self.status(summary)))


def invalid_argument_status(violations: list[tuple[str, str]], summary: str | None = None) -> status_pb2.Status:
    bad_request = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=path, description=description)
        for path, description in violations
    ])
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    if summary is None:
        shown = "; ".join(f"{path}: {description}" for path, description in violations[:5])
        more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
        summary = f"invalid argument: {shown}{more}"
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=summary, details=[detail])


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
