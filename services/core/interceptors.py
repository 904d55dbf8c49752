"""Request ids and the mapping of domain errors to gRPC statuses, for every RPC.

The request id comes from `x-request-id` metadata (or is new); it is bound to the
call's context so every log line of that call carries it, and returned to the caller
in the trailing metadata. Unexpected exceptions become INTERNAL with a generic
message: their text may hold data that must not leak (tokens, secrets), so it is only
logged, with the request id to find it. rpc_wrapper.py applies these to each call.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import grpc

from services.core.errors import HeraldError
from services.core.status import to_grpc_status

REQUEST_ID_HEADER = "x-request-id"
log = logging.getLogger("herald.rpc")

INTERNAL = HeraldError(
    "INTERNAL",
    "internal error; the request id in the trailing metadata finds it in the logs",
    code=grpc.StatusCode.INTERNAL,
)


def request_id_of(metadata: Mapping[str, Any]) -> str:
    """The caller's request id (at most 128 characters), or a new one."""
    given = metadata.get(REQUEST_ID_HEADER)
    if isinstance(given, str) and given:
        return given[:128]
    return uuid.uuid4().hex


def failure_of(method: str, error: Exception) -> tuple[HeraldError, Exception | None]:
    """The status to answer for `error`, and the error itself when it was a crash."""
    if isinstance(error, HeraldError):
        log.info(
            "rpc failed", extra={"rpc": method, "reason": error.reason, "code": error.code.name}
        )
        return error, None
    log.exception("rpc crashed", extra={"rpc": method}, exc_info=error)
    return INTERNAL, error


async def abort_with(
    context: grpc.aio.ServicerContext, error: HeraldError, request_id: str
) -> None:
    """Ends the call with `error`'s rich status (raises grpc.aio.AbortError)."""
    status = to_grpc_status(error)
    metadata = (*status.trailing_metadata, (REQUEST_ID_HEADER, request_id))
    await context.abort(status.code, status.details, metadata)
