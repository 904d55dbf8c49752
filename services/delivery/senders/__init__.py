"""One sender per provider: authentication, pooled transport, and reading the answer.

A sender turns a built `ProviderRequest` into a `ProviderAnswer`; it never decides what
to do about the answer (that is services/delivery/actions.py).
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Protocol

from services.delivery.credentials import Credential
from services.delivery.payloads import ProviderRequest


@dataclass(frozen=True)
class ProviderAnswer:
    status: int  # HTTP status; 0 when no answer (see reason)
    reason: str  # APNs reason, FCM errorCode, Web Push status, or a transport reason
    provider_id: str = ""  # apns-id, FCM message name, Web Push Location
    provider_time: float | None = None  # epoch seconds (APNs 410 timestamp)
    retry_after: float | None = None  # seconds
    connection_id: str = ""
    error: str = ""  # safe to log: no token, no secret
    violations: tuple[str, ...] = ()  # FCM BadRequest field paths
    transport: bool = False  # no HTTP answer at all


class Sender(Protocol):
    async def send(
        self, credential: Credential, request: ProviderRequest, origin: str, time_limit: float
    ) -> ProviderAnswer: ...

    async def close(self) -> None: ...


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
