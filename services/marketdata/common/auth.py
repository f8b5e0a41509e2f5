"""API keys for every IngestService call: metadata x-api-key, compared in constant time, else UNAUTHENTICATED."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

import grpc

from marketdata.common.interceptors import Continuation

API_KEY_HEADER = "x-api-key"


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: Sequence[str], method_prefix: str) -> None:
        self._keys = [key.encode() for key in keys]
        self._prefix = method_prefix

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
        if handler is None or not handler_call_details.method.startswith(self._prefix):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        if self.is_valid(metadata.get(API_KEY_HEADER)):
            return handler
        message = ("missing API key: send it in the x-api-key metadata" if API_KEY_HEADER not in metadata
                   else "invalid API key")

        async def deny(_request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
