"""What a failed call to another Herald service becomes for Identity's caller.

An unreachable service is UNAVAILABLE (DEPENDENCY_UNAVAILABLE, retry with backoff); a
failure the service reports with a reason (DEVICE_NOT_FOUND, DEVICE_USER_MISMATCH...)
reaches the caller unchanged, field violations included.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.core.errors import FieldViolation, HeraldError, InvalidArgument, Unavailable
from services.core.status import parse_error


def translate(error: grpc.aio.AioRpcError, service: str) -> HeraldError:
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(
            "DEPENDENCY_UNAVAILABLE",
            f"the {service} service did not answer; retry with backoff",
            {"service": service.lower()},
        )
    details = parse_error(error)
    if details.code == grpc.StatusCode.INVALID_ARGUMENT:
        # Pass the service's field violations (with their own reasons) through: the
        # caller must learn which field was wrong, not just that something was.
        return InvalidArgument(
            details.message,
            _violations(error),
            details.reason or "INVALID_ARGUMENT",
            details.metadata,
        )
    return HeraldError(
        details.reason or error.code().name,
        details.message,
        details.metadata,
        details.code,
    )


def _violations(error: grpc.aio.AioRpcError) -> list[FieldViolation]:
    """BadRequest field violations of a failed call, each with its reason."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Unpack(bad):
            return [FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations]
    return []
