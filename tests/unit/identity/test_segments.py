"""Segment conditions on users and devices, without Redis or Registration."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from herald.type.v1 import platform_pb2
from services.core.errors import Validator
from services.identity.registration_client import DeviceSnapshot
from services.identity.segments import (
    AttributeCondition,
    Comparison,
    ConditionKind,
    PushCondition,
    Segment,
    condition_holds,
    push_matches,
    validate,
)
from services.identity.user_model import User

USER = User(
    external_id="kim",
    email="kim@example.com",
    attributes={
        "plan": "gold",
        "age": 31,
        "vip": True,
        "address": {"city": "Lyon"},
        "signup": "2024-03-01",
        "empty": None,
    },
)


def _us(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1_000_000)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (AttributeCondition("plan", ConditionKind.EQUALS, "gold"), True),
        (AttributeCondition("age", ConditionKind.EQUALS, 31.0), True),
        (AttributeCondition("vip", ConditionKind.EQUALS, 1), False),  # a bool is not a number
        (AttributeCondition("address.city", ConditionKind.EQUALS, "Lyon"), True),
        (AttributeCondition("plan", ConditionKind.IN_VALUES, ("silver", "gold")), True),
        (AttributeCondition("plan", ConditionKind.IN_VALUES, ("silver",)), False),
        (AttributeCondition("empty", ConditionKind.EXISTS, True), False),
        (AttributeCondition("missing", ConditionKind.EXISTS, False), True),
        (AttributeCondition("email", ConditionKind.EQUALS, "kim@example.com"), True),
        (AttributeCondition("phone", ConditionKind.EXISTS, False), True),
        (AttributeCondition("age", ConditionKind.NUMBER, 30.0, Comparison.GREATER), True),
        (AttributeCondition("age", ConditionKind.NUMBER, 31.0, Comparison.LESS), False),
        (AttributeCondition("plan", ConditionKind.NUMBER, 1.0, Comparison.GREATER), False),
        (AttributeCondition("signup", ConditionKind.AFTER_TIME, _us("2024-01-01T00:00:00")), True),
        (
            AttributeCondition("signup", ConditionKind.BEFORE_TIME, _us("2024-01-01T00:00:00")),
            False,
        ),
        (AttributeCondition("plan", ConditionKind.BEFORE_TIME, _us("2030-01-01T00:00:00")), False),
    ],
)
def test_attribute_conditions(condition, expected):
    assert condition_holds(condition, USER) is expected


def _device(app_id: str, capability) -> DeviceSnapshot:
    return DeviceSnapshot(
        app_id, "d", platform_pb2.PLATFORM_IOS, "", None, capability, False, 0, "kim"
    )


def test_push_conditions_for_one_app_or_any():
    devices = [
        _device("shop", platform_pb2.PUSH_CAPABILITY_BACKGROUND),
        _device("news", platform_pb2.PUSH_CAPABILITY_FOREGROUND),
    ]
    assert push_matches(PushCondition("", True), devices)
    assert push_matches(PushCondition("news", True), devices)
    assert not push_matches(PushCondition("shop", True), devices)
    assert push_matches(PushCondition("shop", False), devices)
    assert push_matches(None, [])


def test_validation_names_each_bad_filter():
    check = Validator()
    validate(
        Segment(
            (
                AttributeCondition("", ConditionKind.EXISTS, True),
                AttributeCondition("a", None),
                AttributeCondition("a", ConditionKind.NUMBER, 1.0, None),
                AttributeCondition("a", ConditionKind.IN_VALUES, ()),
            )
        ),
        check,
        "segment",
    )
    assert [violation.field for violation in check.violations] == [
        "segment.attribute_filters[0].attribute",
        "segment.attribute_filters[1]",
        "segment.attribute_filters[2].number.operator",
        "segment.attribute_filters[3].in_values.values",
    ]
