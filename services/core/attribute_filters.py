"""User-attribute filters (herald.type.v1.AttributeFilter): compiled once, evaluated
on each user.

Two services ask this question of a user: Campaign, for the `user_attribute`
conditions of an audience (on every device of a fan-out), and Identity, for the
`attribute_filters` of an export segment (on every user exported). Both receive the
same message, and an operator expects an audience and a segment with the same filter
to select the same users, so the rules live here, once:

- `attribute` names a built-in field ("email", "phone", "locale", "time_zone",
  "external_id"; empty counts as absent; it wins over a custom attribute of the same
  name) or a custom attribute by its dotted path ("address.city");
- `exists`: present and not null. Every other condition fails on an absent or null
  value, and on a value of the wrong type;
- `equals` / `in_values`: numbers numerically, anything else by JSON equality of the
  same type (true is not 1);
- `number`: the operator applied to a numeric value (never a bool or a string);
- `before_time` / `after_time`: an ISO 8601 date-time string (UTC when it has no
  offset) or a date (midnight UTC), compared to the microsecond.

`compile_filter()` turns the message into an `AttributeCondition` once (JSON values and
instants converted there, not per user); `holds()` evaluates it on a value that each
service finds in its own user shape with `resolve()`.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from herald.type.v1 import filter_pb2

BUILT_IN_FIELDS = ("email", "phone", "locale", "time_zone", "external_id")


class Comparison(enum.Enum):
    EQUAL = "=="
    NOT_EQUAL = "!="
    LESS = "<"
    LESS_OR_EQUAL = "<="
    GREATER = ">"
    GREATER_OR_EQUAL = ">="


# The wire's ComparisonOperator (shared by number and app-version conditions);
# COMPARISON_OPERATOR_UNSPECIFIED has no comparison.
COMPARISONS: dict[int, Comparison] = {
    filter_pb2.COMPARISON_OPERATOR_EQUAL: Comparison.EQUAL,
    filter_pb2.COMPARISON_OPERATOR_NOT_EQUAL: Comparison.NOT_EQUAL,
    filter_pb2.COMPARISON_OPERATOR_LESS: Comparison.LESS,
    filter_pb2.COMPARISON_OPERATOR_LESS_OR_EQUAL: Comparison.LESS_OR_EQUAL,
    filter_pb2.COMPARISON_OPERATOR_GREATER: Comparison.GREATER,
    filter_pb2.COMPARISON_OPERATOR_GREATER_OR_EQUAL: Comparison.GREATER_OR_EQUAL,
}

_COMPARE: dict[Comparison, Callable[[Any, Any], Any]] = {
    Comparison.EQUAL: operator.eq,
    Comparison.NOT_EQUAL: operator.ne,
    Comparison.LESS: operator.lt,
    Comparison.LESS_OR_EQUAL: operator.le,
    Comparison.GREATER: operator.gt,
    Comparison.GREATER_OR_EQUAL: operator.ge,
}


def compare(comparison: Comparison | None, left: Any, right: Any) -> bool:
    """`left <comparison> right`; no comparison (an unset operator) never holds."""
    return comparison is not None and bool(_COMPARE[comparison](left, right))


class ConditionKind(enum.Enum):
    """The AttributeFilter's `condition` oneof, by field name."""

    EQUALS = "equals"
    IN_VALUES = "in_values"
    EXISTS = "exists"
    NUMBER = "number"
    BEFORE_TIME = "before_time"
    AFTER_TIME = "after_time"


@dataclass(frozen=True)
class AttributeCondition:
    attribute: str
    kind: ConditionKind | None  # None: no condition was set (validation rejects it)
    # By kind: the JSON value (EQUALS), a tuple of them (IN_VALUES), a bool (EXISTS),
    # a float (NUMBER), microseconds since the epoch (BEFORE_TIME, AFTER_TIME).
    value: Any = None
    comparison: Comparison | None = None  # NUMBER only


def compile_filter(message: filter_pb2.AttributeFilter) -> AttributeCondition:
    which = message.WhichOneof("condition")
    kind = ConditionKind(which) if which else None
    value: Any = None
    comparison = None
    if kind is ConditionKind.EQUALS:
        value = json_format.MessageToDict(message.equals)
    elif kind is ConditionKind.IN_VALUES:
        value = tuple(json_format.MessageToDict(item) for item in message.in_values.values)
    elif kind is ConditionKind.EXISTS:
        value = message.exists
    elif kind is ConditionKind.NUMBER:
        value = message.number.value
        comparison = COMPARISONS.get(message.number.operator)
    elif kind is ConditionKind.BEFORE_TIME:
        value = micros(message.before_time)
    elif kind is ConditionKind.AFTER_TIME:
        value = micros(message.after_time)
    return AttributeCondition(message.attribute, kind, value, comparison)


# What a Timestamp may hold (0001-01-01 to 9999-12-31 UTC), in microseconds.
MIN_INSTANT_US = -62_135_596_800 * 1_000_000
MAX_INSTANT_US = 253_402_300_799 * 1_000_000 + 999_999
INSTANT_RANGE = "must be a time from year 1 to year 9999"


def micros(stamp: timestamp_pb2.Timestamp) -> int:
    """Microseconds since the epoch. Not Timestamp.ToMicroseconds(), which raises on a
    time outside years 1-9999: compiling never fails; validation reports such a time
    (`valid_instant`, INSTANT_RANGE)."""
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


def valid_instant(us: int) -> bool:
    return MIN_INSTANT_US <= us <= MAX_INSTANT_US


# -- finding the value ----------------------------------------------------------------------
def resolve(
    path: str, built_in: Callable[[str], Any], attributes: Mapping[str, Any]
) -> tuple[bool, Any]:
    """(found, value) of `path`: `built_in(name)` reads a built-in field of the user,
    `attributes` are its custom attributes."""
    if path in BUILT_IN_FIELDS:
        value = built_in(path)
        return bool(value), value or None
    return lookup(attributes, path)


def lookup(attributes: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """(found, value) for a dotted path such as "address.city"."""
    current: Any = attributes
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return False, None
        current = current[part]
    return True, current


# -- evaluating -----------------------------------------------------------------------------
def holds(condition: AttributeCondition, found: bool, value: Any) -> bool:
    """Whether the condition holds for the attribute's (found, value)."""
    kind = condition.kind
    if kind is ConditionKind.EXISTS:
        return (found and value is not None) == condition.value
    if not found or value is None:
        return False
    if kind is ConditionKind.EQUALS:
        return same(value, condition.value)
    if kind is ConditionKind.IN_VALUES:
        return any(same(value, candidate) for candidate in condition.value)
    if kind is ConditionKind.NUMBER:
        return is_number(value) and compare(condition.comparison, float(value), condition.value)
    if kind is ConditionKind.BEFORE_TIME or kind is ConditionKind.AFTER_TIME:
        instant = instant_us(value)
        if instant is None:
            return False
        if kind is ConditionKind.BEFORE_TIME:
            return instant < condition.value
        return instant > condition.value
    return False


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def same(stored: Any, wanted: Any) -> bool:
    if is_number(stored) and is_number(wanted):
        return float(stored) == float(wanted)
    return type(stored) is type(wanted) and bool(stored == wanted)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def instant_us(value: Any) -> int | None:
    """Microseconds since the epoch of an ISO 8601 date-time or date string, exactly
    (integer arithmetic: a float timestamp would be off by one microsecond at times)."""
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
    return (parsed - _EPOCH) // _MICROSECOND
