"""The Registration domain's values: tokens, device records and change log entries.

Enum fields hold the contract's enum numbers (herald.type.v1 / herald.registration.v1),
so nothing translates them twice; the servicer only copies them into messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from herald.registration.v1 import device_pb2
from herald.type.v1 import platform_pb2

IOS = platform_pb2.PLATFORM_IOS
ANDROID = platform_pb2.PLATFORM_ANDROID
WEB = platform_pb2.PLATFORM_WEB
PLATFORMS = (IOS, ANDROID, WEB)

NOT_DETERMINED = platform_pb2.AUTHORIZATION_STATUS_NOT_DETERMINED
DENIED = platform_pb2.AUTHORIZATION_STATUS_DENIED
PROVISIONAL = platform_pb2.AUTHORIZATION_STATUS_PROVISIONAL
AUTHORIZED = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED

FOREGROUND = platform_pb2.PUSH_CAPABILITY_FOREGROUND
BACKGROUND = platform_pb2.PUSH_CAPABILITY_BACKGROUND
NONE = platform_pb2.PUSH_CAPABILITY_NONE

# Token kinds as stored in a record (0 = no token).
APNS, FCM, WEB_PUSH = 1, 2, 3
KIND_OF_PLATFORM: dict[int, int] = {IOS: APNS, ANDROID: FCM, WEB: WEB_PUSH}
PROVIDER_OF_KIND: dict[int, int] = {
    APNS: platform_pb2.PROVIDER_APNS,
    FCM: platform_pb2.PROVIDER_FCM,
    WEB_PUSH: platform_pb2.PROVIDER_WEB_PUSH,
}

REGISTERED = device_pb2.TOKEN_CHANGE_KIND_REGISTERED
ROTATED = device_pb2.TOKEN_CHANGE_KIND_ROTATED
BOUND = device_pb2.TOKEN_CHANGE_KIND_BOUND
MOVED = device_pb2.TOKEN_CHANGE_KIND_MOVED
UNBOUND = device_pb2.TOKEN_CHANGE_KIND_UNBOUND
INVALIDATED = device_pb2.TOKEN_CHANGE_KIND_INVALIDATED
UNREGISTERED = device_pb2.TOKEN_CHANGE_KIND_UNREGISTERED
PERMISSION_CHANGED = device_pb2.TOKEN_CHANGE_KIND_PERMISSION_CHANGED


class Token(NamedTuple):
    """A validated push token. `value` is its canonical string (docs/api.md).

    A named tuple rather than a frozen dataclass: one is built for every record read,
    and audiences read every record of an app (a frozen dataclass's init costs ~4x)."""

    kind: int
    value: str
    p256dh: bytes = b""  # Web Push only: the 65-byte uncompressed P-256 point
    auth: bytes = b""  # Web Push only: the 16-byte authentication secret


@dataclass(slots=True)
class ChangeEntry:
    """One token change log entry (herald.registration.v1.TokenChange)."""

    kind: int
    change_ms: int
    nonce: int
    from_user: str = ""
    to_user: str = ""
    redacted_token: str = ""
    previous_redacted_token: str = ""
    reason: str = ""
    provider: int = 0
    provider_ms: int = 0
    authorization_status: int = 0

    @property
    def change_id(self) -> str:
        # Milliseconds first so ids sort by time; the nonce keeps ids of one call unique.
        return f"{self.change_ms:013d}-{self.nonce:04x}"


@dataclass(slots=True)
class DeviceRecord:
    """The stored state of one (app, device): the source of truth for every index."""

    platform: int
    os_version: str
    authorization_status: int
    create_ms: int
    update_ms: int
    last_seen_ms: int
    app_version: str = ""
    locale: str = ""
    time_zone: str = ""
    user_id: str = ""
    apns_environment: int = 0
    token: Token | None = None
    token_update_ms: int = 0
    # The last time a registration carried the current token: what a provider's
    # invalidation timestamp is compared with (a re-registration after it wins).
    token_confirm_ms: int = 0
    # Newest last; capped (see record.DEVICE_LOG_CAP).
    log: list[ChangeEntry] = field(default_factory=list)
