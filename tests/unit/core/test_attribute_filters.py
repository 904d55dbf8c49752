"""The attribute-filter rules Campaign's audiences and Identity's segments share:
one AttributeFilter message, compiled once, must select the same users in both."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from herald.campaign.v1 import audience_pb2
from herald.identity.v1 import user_pb2
from herald.type.v1 import filter_pb2 as F
from services.campaign import audience as audiences
from services.core.attribute_filters import (
    INSTANT_RANGE,
    Comparison,
    ConditionKind,
    compare,
    compile_filter,
    holds,
    instant_us,
    resolve,
    valid_instant,
)
from services.core.errors import FieldViolation, Validator
from services.identity import export_messages, segments

USER: dict[str, Any] = {
    "external_id": "kim",
    "email": "kim@example.com",
    "phone": "",
    "attributes": {
        "plan": "gold",
        "age": 31,
        "vip": True,
        "address": {"city": "Lyon"},
        "signup": "2024-03-01",
        "seen": "2024-03-01T10:00:00.000001+00:00",
        "empty": None,
        "email": "custom@example.com",
    },
}


def _value(data: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    if isinstance(data, bool):
        value.bool_value = data
    elif isinstance(data, int | float):
        value.number_value = data
    else:
        value.string_value = data
    return value


def _at(text: str) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString(text)
    return stamp


def _matches(message: F.AttributeFilter) -> bool:
    condition = compile_filter(message)
    found, value = resolve(condition.attribute, USER.get, USER["attributes"])
    return holds(condition, found, value)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (F.AttributeFilter(attribute="plan", equals=_value("gold")), True),
        (F.AttributeFilter(attribute="age", equals=_value(31.0)), True),
        (F.AttributeFilter(attribute="vip", equals=_value(1)), False),  # a bool is no number
        (F.AttributeFilter(attribute="vip", equals=_value(True)), True),
        (F.AttributeFilter(attribute="address.city", equals=_value("Lyon")), True),
        (F.AttributeFilter(attribute="address.city.name", equals=_value("Lyon")), False),
        (
            F.AttributeFilter(
                attribute="plan", in_values=F.ValueList(values=[_value("silver"), _value("gold")])
            ),
            True,
        ),
        (F.AttributeFilter(attribute="plan", in_values=F.ValueList(values=[_value(1)])), False),
        (F.AttributeFilter(attribute="empty", exists=True), False),
        (F.AttributeFilter(attribute="empty", exists=False), True),
        (F.AttributeFilter(attribute="missing", exists=False), True),
        # Built-in fields win over a custom attribute of the same name; empty is absent.
        (F.AttributeFilter(attribute="email", equals=_value("kim@example.com")), True),
        (F.AttributeFilter(attribute="phone", exists=False), True),
        (
            F.AttributeFilter(
                attribute="age",
                number=F.NumberComparison(operator=F.COMPARISON_OPERATOR_GREATER, value=30),
            ),
            True,
        ),
        (
            F.AttributeFilter(
                attribute="age",
                number=F.NumberComparison(operator=F.COMPARISON_OPERATOR_LESS, value=31),
            ),
            False,
        ),
        (
            F.AttributeFilter(
                attribute="plan",
                number=F.NumberComparison(operator=F.COMPARISON_OPERATOR_NOT_EQUAL, value=1),
            ),
            False,  # a string is never compared as a number
        ),
        (
            F.AttributeFilter(attribute="age", number=F.NumberComparison(value=31)),
            False,  # no operator: validation rejects it; evaluation never holds
        ),
        (F.AttributeFilter(attribute="signup", after_time=_at("2024-01-01T00:00:00Z")), True),
        (F.AttributeFilter(attribute="signup", before_time=_at("2024-01-01T00:00:00Z")), False),
        (F.AttributeFilter(attribute="signup", after_time=_at("2024-03-01T00:00:00Z")), False),
        (F.AttributeFilter(attribute="plan", before_time=_at("2030-01-01T00:00:00Z")), False),
        (F.AttributeFilter(attribute="plan"), False),  # no condition
    ],
)
def test_conditions(message, expected):
    assert _matches(message) is expected


def test_times_compare_to_the_microsecond():
    after = F.AttributeFilter(attribute="seen", after_time=_at("2024-03-01T10:00:00Z"))
    before = F.AttributeFilter(attribute="seen", before_time=_at("2024-03-01T10:00:00.000002Z"))
    same = F.AttributeFilter(attribute="seen", after_time=_at("2024-03-01T10:00:00.000001Z"))

    assert _matches(after)
    assert _matches(before)
    assert not _matches(same)


def test_instants_of_dates_offsets_and_other_values():
    assert instant_us("1970-01-01") == 0
    assert instant_us("1970-01-01T01:00:00+01:00") == 0
    assert instant_us("1969-12-31T23:59:59.999999") == -1
    assert instant_us("2024-03-01T10:00:00.000001Z") == 1_709_287_200_000_001
    # Exact where a float timestamp is not (it gives ...038480 here: 6 µs early).
    assert instant_us("3903-12-27T22:36:55.038486Z") == 61_030_708_615_038_486
    assert instant_us("next tuesday") is None
    assert instant_us(1_709_287_200) is None


def test_compiled_once_with_the_values_converted():
    condition = compile_filter(
        F.AttributeFilter(
            attribute="age",
            number=F.NumberComparison(operator=F.COMPARISON_OPERATOR_GREATER_OR_EQUAL, value=18),
        )
    )
    assert (condition.kind, condition.value, condition.comparison) == (
        ConditionKind.NUMBER,
        18.0,
        Comparison.GREATER_OR_EQUAL,
    )
    listed = compile_filter(
        F.AttributeFilter(attribute="plan", in_values=F.ValueList(values=[_value("a"), _value(2)]))
    )
    assert listed.value == ("a", 2)
    timed = compile_filter(
        F.AttributeFilter(attribute="t", before_time=_at("1970-01-01T00:00:01Z"))
    )
    assert timed.value == 1_000_000


def test_compare_without_an_operator_never_holds():
    assert compare(Comparison.LESS_OR_EQUAL, (4, 10), (4, 10))
    assert not compare(None, 1, 1)


def test_a_time_outside_years_1_to_9999_compiles_and_both_services_refuse_it():
    # protobuf's own conversions raise on such a Timestamp; compiling must not (a
    # stored campaign is compiled at every fan-out), validation must say what is wrong.
    far = timestamp_pb2.Timestamp(seconds=10**12)
    condition = compile_filter(F.AttributeFilter(attribute="signup", before_time=far))
    assert condition.value == 10**18
    assert not valid_instant(condition.value)
    assert valid_instant(
        compile_filter(F.AttributeFilter(before_time=_at("9999-12-31T23:59:59.999999Z"))).value
    )
    assert valid_instant(
        compile_filter(F.AttributeFilter(after_time=_at("0001-01-01T00:00:00Z"))).value
    )

    audience = audience_pb2.Audience(
        filter=audience_pb2.AudienceFilter(
            user_attribute=F.AttributeFilter(attribute="signup", before_time=far)
        )
    )
    assert audiences.validate(audience) == [
        FieldViolation(
            "audience.filter.user_attribute.before_time", INSTANT_RANGE, audiences.AUDIENCE_INVALID
        )
    ]
    check = Validator()
    segment = export_messages.segment(
        user_pb2.Segment(attribute_filters=[F.AttributeFilter(attribute="signup", after_time=far)])
    )
    segments.validate(segment, check, "selector.segment")
    assert check.violations == [
        FieldViolation("selector.segment.attribute_filters[0].after_time", INSTANT_RANGE)
    ]
