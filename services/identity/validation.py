"""Small checks shared by the domain modules (names, time zones, locales, masks)."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Sequence
from functools import lru_cache

from services.core.errors import FieldViolation, InvalidArgument, Validator

_APP_ID = re.compile(r"[a-z0-9-]{3,63}")
_LOCALE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")

INVALID_UPDATE_MASK = "INVALID_UPDATE_MASK"


def is_app_id(value: str) -> bool:
    return _APP_ID.fullmatch(value) is not None


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_time_zone(value: str) -> bool:
    return value in _time_zones()


def is_locale(value: str) -> bool:
    return len(value) <= 35 and _LOCALE.fullmatch(value) is not None


def check_update_mask(
    paths: Sequence[str], allowed: Iterable[str], prefixes: Iterable[str] = ()
) -> None:
    """Raises INVALID_UPDATE_MASK naming every path that is not updatable."""
    allowed_set = set(allowed)
    prefix_list = tuple(prefixes)
    if not paths:
        raise InvalidArgument(
            "update_mask must name at least one field",
            [FieldViolation("update_mask", "must name at least one field")],
            reason=INVALID_UPDATE_MASK,
        )
    bad = [
        FieldViolation(f"update_mask.paths[{index}]", f"{path!r} cannot be updated")
        for index, path in enumerate(paths)
        if path not in allowed_set
        and not any(path.startswith(prefix) and len(path) > len(prefix) for prefix in prefix_list)
    ]
    if bad:
        raise InvalidArgument(
            "update_mask names fields that cannot be updated", bad, reason=INVALID_UPDATE_MASK
        )


def raise_collected(check: Validator) -> None:
    """Like Validator.raise_if_any, but a violation's own reason (for example
    ATTRIBUTES_TOO_LARGE) becomes the status reason when it is the only kind present."""
    if not check.violations:
        return
    reasons = {violation.reason for violation in check.violations if violation.reason}
    reason = reasons.pop() if len(reasons) == 1 else "INVALID_ARGUMENT"
    raise InvalidArgument("the request has invalid fields", check.violations, reason=reason)
