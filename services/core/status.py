"""Turns a HeraldError into a rich gRPC status (ErrorInfo, BadRequest, RetryInfo)."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.core.errors import (
    ERROR_DOMAIN,
    HeraldError,
    InvalidArgument,
    ResourceExhausted,
)


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(error: HeraldError) -> status_pb2.Status:
    """The google.rpc.Status a caller receives for `error`."""
    details = [
        _packed(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=dict(error.metadata)
            )
        )
    ]
    if isinstance(error, InvalidArgument) and error.violations:
        details.append(
            _packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=v.reason
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    if isinstance(error, ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after_seconds * 1000))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


def to_grpc_status(error: HeraldError) -> grpc.Status:
    return rpc_status.to_status(to_status(error))


def code_name(code: int) -> str:
    """UPPER_SNAKE name of a google.rpc.Code number, for per-item results."""
    return str(code_pb2.Code.Name(code))


@dataclass(frozen=True)
class ErrorDetails:
    """What a caller learns from a failed RPC: the client-side view of `to_status`."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: tuple[tuple[str, str], ...] = ()  # (field, description)
    retry_after_seconds: float | None = None


def parse_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> ErrorDetails:
    """Reads ErrorInfo, BadRequest and RetryInfo out of a failed call's trailing metadata."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    if status is None:
        return ErrorDetails(code, message)
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    retry = error_details_pb2.RetryInfo()
    reason, domain, metadata = "", "", {}
    violations: tuple[tuple[str, str], ...] = ()
    retry_after = None
    for detail in status.details:
        if detail.Unpack(info):
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Unpack(bad):
            violations = tuple((v.field, v.description) for v in bad.field_violations)
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.ToMilliseconds() / 1000
    return ErrorDetails(code, message, reason, domain, metadata, violations, retry_after)
