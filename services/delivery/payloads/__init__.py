"""Provider requests built from one Herald Notification (one module per provider)."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import duration_pb2

from herald.delivery.v1 import notification_pb2
from services.core.errors import FieldViolation, InvalidArgument

PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
DEFAULT_TTL_SECONDS = 28 * 24 * 3600  # what the contract promises when ttl is unset
MAX_TTL_SECONDS = 28 * 24 * 3600


@dataclass(frozen=True)
class ProviderRequest:
    """An HTTP request for a provider, minus authentication (added by the sender)."""

    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def ttl_seconds(notification: notification_pb2.Notification) -> int:
    """The notification's TTL in whole seconds (0 = now or never)."""
    if not notification.HasField("ttl"):
        return DEFAULT_TTL_SECONDS
    return duration_seconds(notification.ttl)


def duration_seconds(duration: duration_pb2.Duration) -> int:
    return max(0, int(duration.seconds + (1 if duration.nanos > 0 else 0)))


def too_large(path: str, size: int, limit: int, what: str) -> InvalidArgument:
    return InvalidArgument(
        f"the {what} is {size} bytes; the limit is {limit}",
        [
            FieldViolation(
                path,
                f"makes the {what} {size} bytes, over the {limit}-byte limit",
                PAYLOAD_TOO_LARGE,
            )
        ],
        reason=PAYLOAD_TOO_LARGE,
    )
