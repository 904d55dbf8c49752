"""Domain errors: the one vocabulary services use to fail.

Servicers and domain code raise these; `services.core.interceptors` turns each into a
gRPC status carrying `google.rpc.ErrorInfo` (and `BadRequest` / `RetryInfo` where they
apply). Nothing else in Herald builds a status by hand, so every failure a caller sees
has a stable UPPER_SNAKE_CASE reason in the domain below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc

ERROR_DOMAIN = "herald.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: `field` is a path such as `devices[3].token`."""

    field: str
    description: str
    reason: str = ""


@dataclass
class HeraldError(Exception):
    """A failure the caller should see, with a stable reason and a gRPC status code."""

    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidArgument(HeraldError):
    """The request is malformed; nothing was changed. Carries BadRequest field violations."""

    def __init__(
        self,
        message: str,
        violations: Iterable[FieldViolation] = (),
        reason: str = "INVALID_ARGUMENT",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.violations = tuple(violations)
        super().__init__(reason, message, metadata or {}, grpc.StatusCode.INVALID_ARGUMENT)


class NotFound(HeraldError):
    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None):
        super().__init__(reason, message, metadata or {}, grpc.StatusCode.NOT_FOUND)


class AlreadyExists(HeraldError):
    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None):
        super().__init__(reason, message, metadata or {}, grpc.StatusCode.ALREADY_EXISTS)


class FailedPrecondition(HeraldError):
    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None):
        super().__init__(reason, message, metadata or {}, grpc.StatusCode.FAILED_PRECONDITION)


class Aborted(HeraldError):
    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None):
        super().__init__(reason, message, metadata or {}, grpc.StatusCode.ABORTED)


class Unauthenticated(HeraldError):
    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None):
        super().__init__(reason, message, metadata or {}, grpc.StatusCode.UNAUTHENTICATED)


class PermissionDenied(HeraldError):
    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None):
        super().__init__(reason, message, metadata or {}, grpc.StatusCode.PERMISSION_DENIED)


class ResourceExhausted(HeraldError):
    """Backpressure: the caller should retry after `retry_after_seconds` (sent as RetryInfo)."""

    def __init__(
        self,
        reason: str,
        message: str,
        retry_after_seconds: float,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(reason, message, metadata or {}, grpc.StatusCode.RESOURCE_EXHAUSTED)


class Unavailable(HeraldError):
    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None):
        super().__init__(reason, message, metadata or {}, grpc.StatusCode.UNAVAILABLE)


class OutOfRange(HeraldError):
    """A position past what exists (an expired stream cursor): restart from a valid one."""

    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None):
        super().__init__(reason, message, metadata or {}, grpc.StatusCode.OUT_OF_RANGE)


class Unimplemented(HeraldError):
    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None):
        super().__init__(reason, message, metadata or {}, grpc.StatusCode.UNIMPLEMENTED)


class Validator:
    """Collects every field violation of a request before failing once.

    Callers see all their mistakes in one answer instead of fixing them one by one.
    """

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field_path: str, description: str, reason: str = "") -> None:
        self.violations.append(FieldViolation(field_path, description, reason))

    def require(self, condition: bool, field_path: str, description: str) -> None:
        if not condition:
            self.add(field_path, description)

    def raise_if_any(self, message: str = "the request has invalid fields") -> None:
        if self.violations:
            raise InvalidArgument(message, self.violations)
