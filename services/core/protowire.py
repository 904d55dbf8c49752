"""Protobuf messages written as bytes, for hot paths where building message objects
per item is most of the cost (Campaign's notifications, Registration's audiences).

Only what those paths need of the wire format
(https://protobuf.dev/programming-guides/encoding/): varints, field keys and
length-delimited fields. proto3 leaves out fields at their default value, so writers
skip empty strings and zero numbers; a parser merges repeated occurrences of an
embedded message and keeps the last value of a scalar. Each writer's tests parse its
bytes and compare them with the message built the ordinary way.

An `Encoded` answer goes out as it is: every service's handlers serialize through
`passing_encoded`, so a servicer may yield or return one where a message is expected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LENGTH_DELIMITED = 2
VARINT = 0


def varint(value: int) -> bytes:
    if value < 0:
        value &= 0xFFFF_FFFF_FFFF_FFFF  # a negative int64 is its two's complement
    if 1 << 28 <= value < 1 << 35:  # Unix seconds, nanoseconds: one call, no loop
        return bytes(
            (
                value & 0x7F | 0x80,
                value >> 7 & 0x7F | 0x80,
                value >> 14 & 0x7F | 0x80,
                value >> 21 & 0x7F | 0x80,
                value >> 28,
            )
        )
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


SHORT_LIMIT = 1 << 14
SHORT = [varint(n) for n in range(SHORT_LIMIT)]  # every value below 16,384, pre-encoded


def length(n: int) -> bytes:
    return SHORT[n] if n < SHORT_LIMIT else varint(n)


_LENGTH_DELIMITED_KEYS = [key(number, LENGTH_DELIMITED) for number in range(128)]


def length_delimited(number: int, payload: bytes) -> bytes:
    """A string, bytes or embedded message field."""
    tag = _LENGTH_DELIMITED_KEYS[number] if number < 128 else key(number, LENGTH_DELIMITED)
    return tag + length(len(payload)) + payload


def delimited(field_key: bytes, payload: bytes) -> bytes:
    """`length_delimited` with the field's key already encoded."""
    return field_key + length(len(payload)) + payload


class Encoded:
    """A message already in wire form, sent as it is. A wrapper, not a bytes subclass:
    gRPC's core takes exactly bytes from a serializer."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def passing_encoded(
    serialize: Callable[[Any], bytes] | None,
) -> Callable[[Any], bytes] | None:
    """A response serializer that sends an Encoded answer unchanged."""
    if serialize is None or getattr(serialize, "passes_encoded", False):
        return serialize
    encode = serialize

    def serialize_answer(message: Any) -> bytes:
        return message.data if type(message) is Encoded else encode(message)

    serialize_answer.passes_encoded = True  # type: ignore[attr-defined]
    return serialize_answer
