"""Platform and permission rules: what a device may receive (docs/registration.md).

| platform | token | authorisation | capability |
|---|---|---|---|
| any | none | any | NONE |
| Android <= 12 | yes | not DENIED (default AUTHORIZED) | FOREGROUND |
| Android <= 12 | yes | DENIED (turned off in settings) | BACKGROUND |
| Android >= 13 | yes | AUTHORIZED | FOREGROUND |
| Android >= 13 | yes | NOT_DETERMINED, DENIED | BACKGROUND |
| iOS | yes | AUTHORIZED | FOREGROUND |
| iOS | yes | PROVISIONAL | BACKGROUND, provisional |
| iOS | yes | NOT_DETERMINED, DENIED | BACKGROUND |
| Web | yes (only after opt-in) | AUTHORIZED | FOREGROUND |
"""

from __future__ import annotations

import functools
import re

from services.registration.model import (
    ANDROID,
    AUTHORIZED,
    BACKGROUND,
    DENIED,
    FOREGROUND,
    IOS,
    NONE,
    NOT_DETERMINED,
    PROVISIONAL,
    WEB,
    DeviceRecord,
)

# Android 13 (API 33) introduced the POST_NOTIFICATIONS runtime permission.
ANDROID_RUNTIME_PERMISSION_MAJOR = 13
_LEADING_NUMBER = re.compile(r"^(\d{1,4})")


@functools.lru_cache(maxsize=4096)  # few distinct versions; audiences ask per device
def os_major(os_version: str) -> int | None:
    """The major version ("14" of "14.1"), or None when it does not start with a number."""
    match = _LEADING_NUMBER.match(os_version)
    return int(match.group(1)) if match else None


def asks_permission(platform: int, os_version: str) -> bool:
    """Whether the OS asks the user before the app may show notifications."""
    if platform == ANDROID:
        major = os_major(os_version)
        return major is None or major >= ANDROID_RUNTIME_PERMISSION_MAJOR
    return True


def default_authorization(platform: int, os_version: str, has_token: bool) -> int:
    """The status of a new device whose SDK did not report one."""
    if platform == WEB and has_token:
        return AUTHORIZED  # a Web Push subscription only exists after the user opted in
    return NOT_DETERMINED if asks_permission(platform, os_version) else AUTHORIZED


def capability(record: DeviceRecord) -> tuple[int, bool]:
    """(PushCapability, provisional) of a record."""
    return capability_of(
        record.platform, record.authorization_status, record.os_version, record.token is not None
    )


def capability_of(platform: int, status: int, os_version: str, has_token: bool) -> tuple[int, bool]:
    """(PushCapability, provisional) of a device's fields (the table above)."""
    if not has_token:
        return NONE, False
    if platform == IOS and status == PROVISIONAL:
        return BACKGROUND, True
    if platform == ANDROID and not asks_permission(ANDROID, os_version):
        return (BACKGROUND if status == DENIED else FOREGROUND), False
    return (FOREGROUND if status == AUTHORIZED else BACKGROUND), False


def web_opt_out_removes_subscription(platform: int, status: int) -> bool:
    """Web has no background channel: a denial ends the subscription itself."""
    return platform == WEB and status == DENIED
