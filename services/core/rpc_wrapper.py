"""One wrapper around every RPC handler, applied once when the server starts.

Per call it does what four grpc.aio interceptors used to do one after the other:
trace (a server span, services/core/server_spans.py), bind the request id (from
`x-request-id` or a new one, echoed in the trailing metadata), record latency and
status (metrics.py), and map domain errors to rich statuses (interceptors.py). The
auth checks (AuthInterceptor's decorators, auth.py) sit inside it, so their refusals
become statuses like any other domain error.

Why at start-up rather than as interceptors: grpc.aio runs interceptors on every call
(each one an extra coroutine that rebuilds the method handler and its closures), and
the OpenTelemetry one also proxies the servicer context. Wrapping each method's
handler once, and handing grpc.aio no interceptors at all, leaves one coroutine frame
per call around the servicer. `WrappingRegistrar` stands in for the server while the
services, health and reflection register their handlers, and wraps them as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer
from opentelemetry.sdk.trace import TracerProvider

from services.core.handlers import Behavior, WrappingInterceptor, answers, rewrap
from services.core.interceptors import REQUEST_ID_HEADER, abort_with, failure_of, request_id_of
from services.core.logs import request_id_var
from services.core.metrics import Metrics
from services.core.server_spans import ServerSpans

_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED


class RpcWrapper:
    """Wraps method handlers: tracing, request id, metrics and error mapping in one frame."""

    def __init__(
        self,
        provider: TracerProvider,
        metrics: Metrics,
        inner: WrappingInterceptor | None = None,
    ) -> None:
        self.provider = provider
        self.metrics = metrics
        self.inner = inner  # the auth checks, applied inside (closest to the servicer)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> Any:
        if handler is None:
            return None
        chosen = self.inner.decorators(method) if self.inner is not None else None
        if chosen is not None:
            handler = rewrap(handler, *chosen)
        call = _MethodCalls(method, ServerSpans(self.provider, method), self.metrics)
        return rewrap(handler, lambda b, _: call.answer_once(b), lambda b, _: call.answer_stream(b))


class _MethodCalls:
    """The per-call work for one method; what can be computed once is computed here."""

    def __init__(self, method: str, spans: ServerSpans, metrics: Metrics) -> None:
        self.method = method
        self.spans = spans
        service, _, rpc = method.lstrip("/").partition("/")
        self._histogram = metrics.rpc_duration
        self._labels: dict[grpc.StatusCode, dict[str, str]] = {
            code: {"rpc.service": service, "rpc.method": rpc, "rpc.grpc.status_code": code.name}
            for code in grpc.StatusCode
        }

    def _enter(self, context: grpc.aio.ServicerContext) -> tuple[str, Any, Any, Any]:
        metadata: Mapping[str, Any] = dict(context.invocation_metadata() or ())
        request_id = request_id_of(metadata)
        bound = request_id_var.set(request_id)
        span, attached = self.spans.start(metadata, context)
        context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
        return request_id, bound, span, attached

    def _exit(
        self,
        started: float,
        bound: Any,
        span: Any,
        attached: Any,
        code: grpc.StatusCode,
        details: str,
        crash: BaseException | None,
    ) -> None:
        self.spans.end(span, attached, code, details, crash)
        self._histogram.record(time.perf_counter() - started, self._labels[code])
        with contextlib.suppress(ValueError):
            # A stream the caller abandoned may be closed by the loop's async-generator
            # finalizer, in another context than the one the id was bound in.
            request_id_var.reset(bound)

    def answer_once(self, behavior: Behavior) -> Behavior:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            request_id, bound, span, attached = self._enter(context)
            code, details, crash = _OK, "", None
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
                code = context.code() or _OK  # a servicer may set_code and return
                return result
            except grpc.aio.AbortError:
                code, details = context.code() or grpc.StatusCode.UNKNOWN, context.details() or ""
                raise
            except asyncio.CancelledError:
                code = _CANCELLED
                raise
            except Exception as error:  # every failure becomes a status
                failure, crash = failure_of(self.method, error)
                code, details = failure.code, failure.message
                await abort_with(context, failure, request_id)
            finally:
                self._exit(started, bound, span, attached, code, details, crash)

        return call

    def answer_stream(self, behavior: Behavior) -> Behavior:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            request_id, bound, span, attached = self._enter(context)
            code, details, crash = _OK, "", None
            try:
                async for item in answers(behavior(request, context)):
                    yield item
                code = context.code() or _OK
            except grpc.aio.AbortError:
                code, details = context.code() or grpc.StatusCode.UNKNOWN, context.details() or ""
                raise
            except (asyncio.CancelledError, GeneratorExit):  # the caller went away
                code = _CANCELLED
                raise
            except Exception as error:  # every failure becomes a status
                failure, crash = failure_of(self.method, error)
                code, details = failure.code, failure.message
                await abort_with(context, failure, request_id)
            finally:
                self._exit(started, bound, span, attached, code, details, crash)

        return call


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose answers are wrapped, once per method."""

    def __init__(self, handler: grpc.GenericRpcHandler, wrapper: RpcWrapper) -> None:
        self._handler = handler
        self._wrapper = wrapper
        self._wrapped: dict[str, Any] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        if method not in self._wrapped:
            found = self._handler.service(handler_call_details)
            if found is None:
                return None  # not ours: grpc asks the next handler or answers UNIMPLEMENTED
            self._wrapped[method] = self._wrapper.wrap(method, found)
        return self._wrapped[method]


class WrappingRegistrar:
    """Stands in for the grpc.aio server while handlers are added: wraps each one."""

    def __init__(self, server: grpc.aio.Server, wrapper: RpcWrapper) -> None:
        self._server: Any = server  # add_registered_method_handlers is not in grpc's stubs
        self._wrapper = wrapper

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedGenericHandler(handler, self._wrapper) for handler in handlers)
        )

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self._server.add_registered_method_handlers(
            service,
            {
                name: self._wrapper.wrap(f"/{service}/{name}", handler)
                for name, handler in handlers.items()
            },
        )

    def enable_reflection(self, service_names: tuple[str, ...]) -> None:
        # grpc_reflection's enable_server_reflection picks its asyncio servicer only for
        # a real grpc.aio.Server; this is the same registration, through the wrapper.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            ReflectionServicer(service_names), self
        )
