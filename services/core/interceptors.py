"""The one server interceptor that maps domain errors to gRPC statuses.

It also binds the request id (from `x-request-id` metadata, or a new one) to the
context of the call so every log line of that call carries it, and returns it to the
caller in the trailing metadata. Unexpected exceptions become INTERNAL with a generic
message: their text may hold data that must not leak (tokens, secrets), so it is only
logged, with the request id to find it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from services.core.errors import HeraldError
from services.core.handlers import Behavior, Decorator, WrappingInterceptor, answer, answers
from services.core.logs import request_id_var
from services.core.status import to_grpc_status

REQUEST_ID_HEADER = "x-request-id"
log = logging.getLogger("herald.rpc")

_INTERNAL = HeraldError(
    "INTERNAL",
    "internal error; the request id in the trailing metadata finds it in the logs",
    code=grpc.StatusCode.INTERNAL,
)


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and value:
            return value[:128]
    return uuid.uuid4().hex


async def _abort(context: grpc.aio.ServicerContext, error: HeraldError, request_id: str) -> None:
    status = to_grpc_status(error)
    metadata = (*status.trailing_metadata, (REQUEST_ID_HEADER, request_id))
    await context.abort(status.code, status.details, metadata)


def _log_failure(method: str, error: BaseException) -> HeraldError:
    if isinstance(error, HeraldError):
        log.info(
            "rpc failed", extra={"rpc": method, "reason": error.reason, "code": error.code.name}
        )
        return error
    log.exception("rpc crashed", extra={"rpc": method}, exc_info=error)
    return _INTERNAL


class ErrorInterceptor(WrappingInterceptor):
    """Wraps every handler: request id in, domain errors out as rich statuses."""

    def decorators(self, method: str) -> tuple[Decorator, Decorator]:
        return (
            lambda behavior, _: _answer_once(behavior, method),
            lambda behavior, _: _answer_stream(behavior, method),
        )


def _answer_once(behavior: Behavior, method: str) -> Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        request_id = _request_id(context)
        token = request_id_var.set(request_id)
        try:
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            return await answer(behavior(request, context))
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as error:  # every failure becomes a status
            await _abort(context, _log_failure(method, error), request_id)
            return None
        finally:
            request_id_var.reset(token)

    return wrapper


def _answer_stream(behavior: Behavior, method: str) -> Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        request_id = _request_id(context)
        token = request_id_var.set(request_id)
        try:
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            async for item in answers(behavior(request, context)):
                yield item
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as error:  # every failure becomes a status
            await _abort(context, _log_failure(method, error), request_id)
        finally:
            request_id_var.reset(token)

    return wrapper
