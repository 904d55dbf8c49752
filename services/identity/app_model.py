"""What an app (tenant) is in the domain, independent of protobuf and Redis."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class LogoutPolicy(enum.StrEnum):
    # IBM's model, the default: logout unbinds the device from the user.
    UNREGISTER = "unregister"
    # Braze's model: the device stays with the last user until someone else logs in.
    KEEP_WITH_LAST_USER = "keep_with_last_user"


class SecretMatch(enum.Enum):
    NONE = "none"
    CURRENT = "current"
    PREVIOUS = "previous"


class ApiKeyScope(enum.StrEnum):
    REGISTER = "register"
    FULL = "full"


@dataclass(frozen=True)
class App:
    app_id: str
    display_name: str
    logout_policy: LogoutPolicy
    default_time_zone: str
    create_us: int
    update_us: int
    secret_create_us: int
    # 0 when no previous secret is accepted any more.
    previous_secret_expire_us: int


@dataclass(frozen=True)
class AppSecrets:
    """The digests VerifyClientSecret compares against; never leaves the service."""

    current_digest: str
    previous_digest: str
    previous_expire_us: int


@dataclass(frozen=True)
class ApiKey:
    api_key_id: str
    app_id: str
    display_name: str
    scope: ApiKeyScope
    expire_us: int  # 0 = never
    key_prefix: str
    create_us: int
    revoke_us: int  # 0 = active
    last_use_us: int  # 0 = never used
