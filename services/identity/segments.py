"""Segments: which users an export selects, by attributes and by push reachability.

Syntax (herald.identity.v1.Segment): every attribute filter must hold (AND), and the
optional push condition must hold too. A filter addresses a custom attribute by its
dotted path ("address.city") or a built-in field by name ("email", "phone", "locale",
"time_zone", "external_id"; a built-in wins over a custom attribute of the same name).
Conditions: equals (numbers numerically, everything else by JSON equality of the same
type), in (equals one of up to 1,000 values), exists (present and not null), a number
comparison, and before/after an instant for ISO 8601 date or date-time strings (a date
alone is midnight UTC, a time without offset is UTC). A value of the wrong type never
matches. These rules are services/core/attribute_filters.py, which Campaign's audiences
use too. The push condition asks for (enabled=true) or excludes (enabled=false) users
with a foreground-capable device in one app, or in any app when app_id is empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from herald.type.v1 import platform_pb2
from services.core.attribute_filters import (
    INSTANT_RANGE,
    AttributeCondition,
    Comparison,
    ConditionKind,
    holds,
    resolve,
    valid_instant,
)
from services.core.errors import Validator
from services.identity.registration_client import DeviceSnapshot
from services.identity.user_model import User

__all__ = [
    "AttributeCondition",
    "Comparison",
    "ConditionKind",
    "PushCondition",
    "Segment",
    "attributes_match",
    "condition_holds",
    "push_matches",
    "validate",
]

MAX_FILTERS = 50
MAX_VALUES = 1000


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
        elif condition.kind in (
            ConditionKind.BEFORE_TIME,
            ConditionKind.AFTER_TIME,
        ) and not valid_instant(condition.value):
            check.add(f"{field}.{condition.kind.value}", INSTANT_RANGE)


def condition_holds(condition: AttributeCondition, user: User) -> bool:
    found, value = resolve(condition.attribute, lambda name: getattr(user, name), user.attributes)
    return holds(condition, found, value)


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
