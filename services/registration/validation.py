"""Request validation: every violation of a request is found before anything is written.

Field paths are those of the request messages ("token.apns.device_token",
"devices[3].os_version" is built by the caller with a prefix). The call's reason is
TOKEN_MALFORMED or TOKEN_PLATFORM_MISMATCH when every violation is of that kind, and
INVALID_ARGUMENT otherwise (the field violations always list each problem).
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from dataclasses import dataclass

from services.core.errors import FieldViolation, InvalidArgument, Validator
from services.registration.model import (
    ANDROID,
    APNS,
    AUTHORIZED,
    DENIED,
    KIND_OF_PLATFORM,
    PLATFORMS,
    WEB,
    Token,
)
from services.registration.rules import os_major
from services.registration.tokens import (
    KIND_NAMES,
    TOKEN_PLATFORM_MISMATCH,
    TokenInput,
    check_token,
)

# Every limit below is in bytes of UTF-8 (the record stores texts with a one-byte
# length). MAX_USER_ID is also Identity's external id limit (identifiers.py).
MAX_ID = 128
MAX_APP_ID = 63
MAX_USER_ID = 255
MAX_OS_VERSION = 32
MAX_APP_VERSION = 64
MAX_LOCALE = 35
MAX_TIME_ZONE = 64
MAX_REASON = 200
MAX_SECRET = 256
AUTHORIZATION_STATUSES = range(0, 5)
APNS_ENVIRONMENTS = range(0, 3)

_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@dataclass(frozen=True, slots=True)
class DeviceInput:
    """The device fields of RegisterDevice and of one ImportDevices item."""

    device_id: str
    platform: int
    os_version: str
    app_version: str = ""
    locale: str = ""
    time_zone: str = ""
    token: TokenInput | None = None
    authorization_status: int = 0
    apns_environment: int = 0
    user_id: str = ""


@dataclass(frozen=True, slots=True)
class ValidDevice:
    """A DeviceInput that passed validation, with its token canonicalised."""

    given: DeviceInput
    token: Token | None


def fail(check: Validator) -> None:
    """Raises the collected violations with the most specific reason that covers all."""
    if not check.violations:
        return
    reasons = {v.reason for v in check.violations}
    reason = reasons.pop() if len(reasons) == 1 and "" not in reasons else "INVALID_ARGUMENT"
    raise InvalidArgument("the request has invalid fields", check.violations, reason)


def violations_reason(violations: list[FieldViolation]) -> str:
    reasons = {v.reason for v in violations}
    return reasons.pop() if len(reasons) == 1 and "" not in reasons else "INVALID_ARGUMENT"


def utf8_length(value: str) -> int:
    return len(value.encode())


def _text_problem(value: str, limit: int) -> str:
    # Limits are counted in bytes of UTF-8, the unit the packed record stores (a
    # 150-character "é…" id is 300 bytes): a text that passes is stored whole.
    if utf8_length(value) > limit or _CONTROL.search(value):
        return f"must be at most {limit} bytes in UTF-8, without control characters"
    return ""


def check_id(check: Validator, path: str, value: str, limit: int = MAX_ID) -> None:
    if not value:
        check.add(path, "is required")
    elif problem := _text_problem(value, limit):
        check.add(path, problem)


def check_optional_text(check: Validator, path: str, value: str, limit: int) -> None:
    if problem := _text_problem(value, limit):
        check.add(path, problem)


def check_platform(check: Validator, path: str, platform: int) -> bool:
    if platform not in PLATFORMS:
        check.add(path, "must be PLATFORM_IOS, PLATFORM_ANDROID or PLATFORM_WEB")
        return False
    return True


def check_token_for_platform(
    check: Validator,
    prefix: str,
    platform: int | None,
    token: TokenInput | None,
    authorization_status: int,
    apns_environment: int,
) -> Token | None:
    """The token's shape, its kind against the platform, and what the kind implies."""
    if token is None:
        return None
    valid = check_token(check, f"{prefix}token", token)
    if valid is None or platform is None:
        return valid
    expected = KIND_OF_PLATFORM[platform]
    if valid.kind != expected:
        check.add(
            f"{prefix}token",
            f"a {KIND_NAMES[valid.kind]} token cannot belong to a "
            f"{KIND_NAMES[expected]} platform device",
            TOKEN_PLATFORM_MISMATCH,
        )
        return None
    if valid.kind == APNS and apns_environment == 0:
        check.add(
            f"{prefix}apns_environment",
            "is required with an APNs token (production or development)",
            TOKEN_PLATFORM_MISMATCH,
        )
        return None
    if platform == WEB and authorization_status not in (0, AUTHORIZED):
        check.add(
            f"{prefix}authorization_status",
            "a Web Push subscription exists only after the user opted in (AUTHORIZED)",
        )
        return None
    return valid


def check_device(check: Validator, prefix: str, given: DeviceInput) -> Token | None:
    """Validates one device; violations get `prefix` ("" or "devices[3].")."""
    check_id(check, f"{prefix}device_id", given.device_id)
    platform_ok = check_platform(check, f"{prefix}platform", given.platform)
    if not given.os_version:
        check.add(f"{prefix}os_version", "is required")
    else:
        check_optional_text(check, f"{prefix}os_version", given.os_version, MAX_OS_VERSION)
        if given.platform == ANDROID and os_major(given.os_version) is None:
            check.add(f"{prefix}os_version", 'must start with the major version, like "14"')
    check_optional_text(check, f"{prefix}app_version", given.app_version, MAX_APP_VERSION)
    if given.locale and (len(given.locale) > MAX_LOCALE or not _LOCALE.match(given.locale)):
        check.add(f"{prefix}locale", 'must be a BCP 47 tag such as "en-US"')
    if given.time_zone and given.time_zone not in _time_zones():
        check.add(f"{prefix}time_zone", 'must be an IANA time zone such as "Europe/Paris"')
    if given.authorization_status not in AUTHORIZATION_STATUSES:
        check.add(f"{prefix}authorization_status", "is not a known AuthorizationStatus")
    if given.apns_environment not in APNS_ENVIRONMENTS:
        check.add(f"{prefix}apns_environment", "is not a known ApnsEnvironment")
    if given.user_id:
        check_optional_text(check, f"{prefix}user_id", given.user_id, MAX_USER_ID)
    return check_token_for_platform(
        check,
        prefix,
        given.platform if platform_ok else None,
        given.token,
        given.authorization_status,
        given.apns_environment,
    )


def check_permission_change(
    check: Validator, platform: int, status: int, token: TokenInput | None, environment: int
) -> Token | None:
    """UpdatePermission's own rules once the device (and so its platform) is known."""
    if status == DENIED and platform == WEB and token is not None:
        check.add("token", "a denial cannot carry a new Web Push subscription")
        return None
    return check_token_for_platform(check, "", platform, token, status, environment)
