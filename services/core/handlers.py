"""Wrapping a gRPC method handler: the one mechanism every per-call wrapper uses.

A wrapper supplies two decorators: one for behaviours that answer once (unary and
client-streaming RPCs) and one for behaviours that stream answers. The RPC wrapper
(rpc_wrapper.py) applies them once per method at start-up; `WrappingInterceptor` still
lets a class state its decorators per method (auth.py), and works as a grpc.aio
interceptor too. `rewrap` applies the
right one and keeps the handler's (de)serializers; `answers` iterates a streaming
behaviour's answers whether it yields them or writes them with `context.write`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.core.protowire import passing_encoded

Behavior = Callable[..., Any]
Decorator = Callable[[Behavior, bool], Behavior]  # (behavior, request_streaming) -> behavior


def rewrap(
    handler: grpc.RpcMethodHandler, answer_once: Decorator, answer_stream: Decorator
) -> grpc.RpcMethodHandler:
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler, answer_once, False),
        ("stream_unary", grpc.stream_unary_rpc_method_handler, answer_once, True),
        ("unary_stream", grpc.unary_stream_rpc_method_handler, answer_stream, False),
        ("stream_stream", grpc.stream_stream_rpc_method_handler, answer_stream, True),
    )
    for attribute, make, decorate, request_streaming in kinds:
        behavior = getattr(handler, attribute)
        if behavior is not None:
            return make(
                decorate(behavior, request_streaming),
                request_deserializer=handler.request_deserializer,
                response_serializer=passing_encoded(handler.response_serializer),
            )
    return handler


async def answer(result: Any) -> Any:
    """The single answer of a behaviour that may or may not be a coroutine."""
    return await result if inspect.isawaitable(result) else result


async def answers(result: Any) -> AsyncIterator[Any]:
    """A streaming behaviour's answers, whether it yields them or writes them itself."""
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result
    else:
        for item in result:
            yield item


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that wraps handlers with the decorators it picks per method."""

    def decorators(self, method: str) -> tuple[Decorator, Decorator] | None:
        """(answer_once, answer_stream) for `method`, or None to leave its handler alone."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        chosen = None if handler is None else self.decorators(handler_call_details.method)
        return handler if chosen is None else rewrap(handler, *chosen)
