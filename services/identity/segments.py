"""Segments: which users an export selects, by attributes and by push reachability.

Syntax (herald.identity.v1.Segment): every attribute filter must hold (AND), and the
optional push condition must hold too. A filter addresses a custom attribute by its
dotted path ("address.city") or a built-in field by name ("email", "phone", "locale",
"time_zone", "external_id"; a built-in wins over a custom attribute of the same name).
Conditions: equals (numbers numerically, everything else by JSON equality of the same
type), in (equals one of up to 1,000 values), exists (present and not null), a number
comparison, and before/after an instant for ISO 8601 date or date-time strings (a date
alone is midnight UTC, a time without offset is UTC). A value of the wrong type never
matches. The push condition asks for (enabled=true) or excludes (enabled=false) users
with a foreground-capable device in one app, or in any app when app_id is empty.
"""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from herald.type.v1 import platform_pb2
from services.core.errors import Validator
from services.identity import attributes as attribute_paths
from services.identity.registration_client import DeviceSnapshot
from services.identity.user_model import User

MAX_FILTERS = 50
MAX_VALUES = 1000
BUILT_IN_FIELDS = ("email", "phone", "locale", "time_zone", "external_id")


class Comparison(enum.Enum):
    EQUAL = "=="
    NOT_EQUAL = "!="
    LESS = "<"
    LESS_OR_EQUAL = "<="
    GREATER = ">"
    GREATER_OR_EQUAL = ">="


_COMPARE: dict[Comparison, Callable[[float, float], bool]] = {
    Comparison.EQUAL: operator.eq,
    Comparison.NOT_EQUAL: operator.ne,
    Comparison.LESS: operator.lt,
    Comparison.LESS_OR_EQUAL: operator.le,
    Comparison.GREATER: operator.gt,
    Comparison.GREATER_OR_EQUAL: operator.ge,
}


class ConditionKind(enum.Enum):
    EQUALS = "equals"
    IN_VALUES = "in_values"
    EXISTS = "exists"
    NUMBER = "number"
    BEFORE_TIME = "before_time"
    AFTER_TIME = "after_time"


@dataclass(frozen=True)
class AttributeCondition:
    attribute: str
    kind: ConditionKind | None  # None: no condition was set (rejected)
    value: Any = None  # JSON value, tuple of values, bool, float or instant (us)
    comparison: Comparison | None = None  # NUMBER only


@dataclass(frozen=True)
class PushCondition:
    app_id: str  # empty: any app
    enabled: bool


@dataclass(frozen=True)
class Segment:
    attribute_filters: tuple[AttributeCondition, ...] = ()
    push_enabled: PushCondition | None = None


def validate(segment: Segment, check: Validator, prefix: str) -> None:
    if len(segment.attribute_filters) > MAX_FILTERS:
        check.add(f"{prefix}.attribute_filters", f"at most {MAX_FILTERS} filters")
    for index, condition in enumerate(segment.attribute_filters):
        field = f"{prefix}.attribute_filters[{index}]"
        check.require(bool(condition.attribute), f"{field}.attribute", "is required")
        if condition.kind is None:
            check.add(field, "set one condition (equals, in_values, exists, number, ...)")
        elif condition.kind is ConditionKind.NUMBER and condition.comparison is None:
            check.add(f"{field}.number.operator", "is required")
        elif condition.kind is ConditionKind.NUMBER and not math.isfinite(condition.value):
            check.add(f"{field}.number.value", "must be a finite number")
        elif condition.kind is ConditionKind.IN_VALUES and not (
            1 <= len(condition.value) <= MAX_VALUES
        ):
            check.add(f"{field}.in_values.values", f"must hold 1 to {MAX_VALUES} values")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(stored: Any, wanted: Any) -> bool:
    if _is_number(stored) and _is_number(wanted):
        return float(stored) == float(wanted)
    return type(stored) is type(wanted) and stored == wanted


def _instant_us(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1_000_000)


def _resolve(user: User, path: str) -> tuple[bool, Any]:
    if path in BUILT_IN_FIELDS:
        value = getattr(user, path)
        return (bool(value), value or None)
    return attribute_paths.lookup(user.attributes, path)


def condition_holds(condition: AttributeCondition, user: User) -> bool:
    found, value = _resolve(user, condition.attribute)
    kind = condition.kind
    if kind is ConditionKind.EXISTS:
        return (found and value is not None) == condition.value
    if not found or value is None:
        return False
    if kind is ConditionKind.EQUALS:
        return _same(value, condition.value)
    if kind is ConditionKind.IN_VALUES:
        return any(_same(value, candidate) for candidate in condition.value)
    if kind is ConditionKind.NUMBER:
        assert condition.comparison is not None
        return _is_number(value) and _COMPARE[condition.comparison](float(value), condition.value)
    instant = _instant_us(value)
    if instant is None:
        return False
    if kind is ConditionKind.BEFORE_TIME:
        return instant < condition.value
    return instant > condition.value


def attributes_match(segment: Segment, user: User) -> bool:
    return all(condition_holds(condition, user) for condition in segment.attribute_filters)


def push_matches(condition: PushCondition | None, devices: Sequence[DeviceSnapshot]) -> bool:
    if condition is None:
        return True
    enabled = any(
        device.capability == platform_pb2.PUSH_CAPABILITY_FOREGROUND
        and (not condition.app_id or device.app_id == condition.app_id)
        for device in devices
    )
    return enabled == condition.enabled
