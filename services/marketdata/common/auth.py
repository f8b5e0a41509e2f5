"""API keys for the calls that write (every IngestService call, AggregatorService.Rebuild): metadata x-api-key,
compared in constant time, else UNAUTHENTICATED."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

import grpc

from marketdata.common.interceptors import Continuation

API_KEY_HEADER = "x-api-key"


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Guards the methods whose full names start with one of method_prefixes."""

    def __init__(self, keys: Sequence[str], *method_prefixes: str) -> None:
        self._keys = [key.encode() for key in keys]
        self._prefixes = method_prefixes

    def is_valid(self, key: str | bytes | None) -> bool:
        if key is None:
            return False
        candidate = key.encode() if isinstance(key, str) else key
        valid = False
        for known in self._keys:  # no early exit: the time taken does not depend on which key matched
            valid |= hmac.compare_digest(candidate, known)
        return valid

    async def intercept_service(self, continuation: Continuation,
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self._prefixes):
            return handler
        keys = [value for key, value in handler_call_details.invocation_metadata or () if key == API_KEY_HEADER]
        if len(keys) == 1 and self.is_valid(keys[0]):
            return handler
        # Two keys are refused, whichever is valid: which one would count is nobody's guess.
        message = ("missing API key: send it in the x-api-key metadata" if not keys
                   else "invalid API key" if len(keys) == 1 else "send one x-api-key, not several")

        async def deny(_request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
