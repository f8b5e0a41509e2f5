"""What the server interceptors (metrics, tracing) share: one way to wrap a call's behaviour, and the code it
ended with as the client sees it."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import grpc


class CallEnd:
    """How a call ended: the exception its behaviour raised, if any, and so the code its client got."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def code(self, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
        """The status the client got: an abort's code, UNKNOWN for an unhandled exception (what grpc answers),
        CANCELLED when the call was cancelled under the handler."""
        if self.error is None or isinstance(self.error, grpc.aio.AbortError):
            code = context.code()
            return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK
        if isinstance(self.error, (asyncio.CancelledError, GeneratorExit)):
            return grpc.StatusCode.CANCELLED
        return grpc.StatusCode.UNKNOWN


# What a server interceptor calls to get the handler of a call.
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]

# Wraps one call: entered before the behaviour runs, left when the call ends (read `CallEnd` then).
Around = Callable[[grpc.aio.ServicerContext, CallEnd], AbstractContextManager[None]]


_FACTORIES = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def wrap_handler(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """The handler with its behaviour run inside `around(context)` (a stream: for its whole life)."""

    def unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            ended = CallEnd()
            with around(context, ended):
                try:
                    return await behaviour(request, context)
                except BaseException as exc:
                    ended.error = exc
                    raise
        return call

    def streaming(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            ended = CallEnd()
            with around(context, ended):
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as exc:
                    ended.error = exc
                    raise
        return call

    for kind, factory in _FACTORIES:
        behaviour = getattr(handler, kind)
        if behaviour is None:
            continue
        if inspect.isasyncgenfunction(behaviour):
            wrapped = streaming(behaviour)
        elif inspect.iscoroutinefunction(behaviour):
            wrapped = unary(behaviour)
        else:
            return handler  # a synchronous behaviour runs on grpc's thread pool: not ours to wrap
        return factory(wrapped, handler.request_deserializer, handler.response_serializer)
    return handler


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Runs every call of the platform's own services (not health checks or reflection) inside `around`."""

    def around(self, details: grpc.HandlerCallDetails) -> Around:
        raise NotImplementedError

    async def intercept_service(self, continuation: Continuation,
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith("/grpc."):
            return handler
        return wrap_handler(handler, self.around(handler_call_details))
