"""BatchGetUsers' answer written from the stored records, without a User object per user.

A campaign reads every user of its audience through BatchGetUsers, a few attributes
each. Building a User dataclass, then a message with a Struct filled key by key in
Python, then copying it into the response cost more than reading the records. Here each
record's stored values (user_store.read_records) go to protobuf wire format directly
(https://protobuf.dev/programming-guides/encoding/): strings are the bytes Redis
returned, the attributes JSON is decoded once and only the masked keys are written, and
the concatenation is sent as it is (services/core/protowire.py's Encoded).

The bytes are those of the message user_messages.user_to_proto builds (fields in number
order, unset ones left out; a Struct as map entries {1: key, 2: Value}, numbers as
doubles as Struct.update stores them): tests/unit/identity/test_user_wire.py compares
the two.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from services.core.protowire import SHORT, SHORT_LIMIT, Encoded, delimited, varint
from services.identity import attributes
from services.identity.user_patches import ATTRIBUTE_PREFIX

# Field keys (number << 3 | wire type), pre-encoded. Wire types: 0 varint, 1 64-bit,
# 2 length-delimited.
_USER_EXTERNAL_ID = b"\x0a"
_STRING_KEY_OF = {"email": b"\x12", "phone": b"\x1a", "time_zone": b"\x2a", "locale": b"\x32"}
_USER_ATTRIBUTES = b"\x22"
_TIME_KEY_OF = {"create_us": b"\x3a", "update_us": b"\x42"}
_TIMESTAMP_SECONDS, _TIMESTAMP_NANOS = b"\x08", b"\x10"
_RESPONSE_USER, _RESPONSE_MISSING = b"\x0a", b"\x12"
_STRUCT_ENTRY, _ENTRY_KEY, _ENTRY_VALUE = b"\x0a", b"\x0a", b"\x12"
_LIST_VALUE = b"\x0a"
# google.protobuf.Value's oneof: a member at its default value is still written.
_NULL = b"\x08\x00"
_NUMBER, _STRING, _TRUE, _FALSE = b"\x11", b"\x1a", b"\x20\x01", b"\x20\x00"
_STRUCT_VALUE, _LIST_VALUE_VALUE = b"\x2a", b"\x32"

_DOUBLE = struct.Struct("<d").pack
_MICROS_PER_SECOND = 1_000_000


def _value(value: Any) -> bytes:
    """A google.protobuf.Value, as Struct.update fills it from a JSON value."""
    if isinstance(value, str):
        return delimited(_STRING, value.encode())
    if value is None:
        return _NULL
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    if isinstance(value, int | float):
        return _NUMBER + _DOUBLE(value)
    if isinstance(value, dict):
        return delimited(_STRUCT_VALUE, _struct(value.items()))
    if isinstance(value, list):
        return delimited(
            _LIST_VALUE_VALUE, b"".join(delimited(_LIST_VALUE, _value(item)) for item in value)
        )
    raise ValueError(f"not a JSON value: {type(value).__name__}")


def _struct(items: Any) -> bytes:
    """A google.protobuf.Struct's fields from (key, JSON value) pairs."""
    return b"".join(
        delimited(
            _STRUCT_ENTRY,
            delimited(_ENTRY_KEY, key.encode()) + delimited(_ENTRY_VALUE, _value(value)),
        )
        for key, value in items
    )


def _timestamp(micros: int) -> bytes:
    seconds, rest = divmod(micros, _MICROS_PER_SECOND)
    return (_TIMESTAMP_SECONDS + varint(seconds) if seconds else b"") + (
        _TIMESTAMP_NANOS + varint(rest * 1000) if rest else b""
    )


FieldWriter = Callable[[bytes], bytes]


def _string_writer(key: bytes) -> FieldWriter:
    return lambda stored: delimited(key, stored)


def _time_writer(key: bytes) -> FieldWriter:
    def write(stored: bytes) -> bytes:
        micros = int(stored)
        # As app_messages.timestamp: 0 leaves the field unset.
        return delimited(key, _timestamp(micros)) if micros else b""

    return write


def _attributes_writer(keys: tuple[str, ...] | None) -> FieldWriter:
    """All attributes (keys None) or only those keys, in mask order; nothing when the
    user has none of them (the field stays unset, as an empty Struct is not sent)."""
    if keys is None:

        def write_all(stored: bytes) -> bytes:
            found = attributes.decode_stored(stored)
            return delimited(_USER_ATTRIBUTES, _struct(found.items())) if found else b""

        return write_all
    # Per user this runs for every masked key: each map entry's key field is written
    # once here, and a string value (the usual kind) is written inline.
    picked = [(key, delimited(_ENTRY_KEY, key.encode())) for key in keys]

    def write_picked(stored: bytes, short: list[bytes] = SHORT) -> bytes:
        # `short[n] if n < SHORT_LIMIT else varint(n)` is _length inlined: this runs
        # for every user of an audience.
        found = attributes.decode_stored(stored)
        entries = []
        for key, entry_key in picked:
            if key in found:
                value = found[key]
                if type(value) is str:
                    raw = value.encode()
                    n = len(raw)
                    value_bytes = _STRING + (short[n] if n < SHORT_LIMIT else varint(n)) + raw
                else:
                    value_bytes = _value(value)
                n = len(value_bytes)
                entry = (
                    entry_key
                    + _ENTRY_VALUE
                    + (short[n] if n < SHORT_LIMIT else varint(n))
                    + value_bytes
                )
                n = len(entry)
                entries.append(_STRUCT_ENTRY + (short[n] if n < SHORT_LIMIT else varint(n)) + entry)
        if not entries:
            return b""
        body = b"".join(entries)
        return delimited(_USER_ATTRIBUTES, body)

    return write_picked


def _attribute_keys(read_mask: Sequence[str]) -> tuple[str, ...] | None:
    """The attribute keys a mask shows; None for all of them (no mask, or "attributes").

    "attributes.<key>" names a top-level key, dots included, as UpdateUser's masks do."""
    if not read_mask or "attributes" in read_mask:
        return None
    return tuple(
        dict.fromkeys(
            path[len(ATTRIBUTE_PREFIX) :] for path in read_mask if path.startswith(ATTRIBUTE_PREFIX)
        )
    )


def field_writers(read_mask: Sequence[str], record_fields: Sequence[str]) -> list[FieldWriter]:
    """One writer per record field read (names of user_store.RECORD_FIELD_OF, in that
    order, which is the User message's field order)."""
    writers: list[FieldWriter] = []
    for name in record_fields:
        if name == "attributes":
            writers.append(_attributes_writer(_attribute_keys(read_mask)))
        elif name in _TIME_KEY_OF:
            writers.append(_time_writer(_TIME_KEY_OF[name]))
        else:
            writers.append(_string_writer(_STRING_KEY_OF[name]))
    return writers


def batch_get_response(
    found: Sequence[tuple[str, Sequence[bytes | None]]],
    missing: Sequence[str],
    read_mask: Sequence[str],
    record_fields: Sequence[str],
) -> Encoded:
    """The BatchGetUsersResponse in wire form: `found` users (external id, stored
    values of `record_fields`, then the version) in order, then `missing`."""
    writers = field_writers(read_mask, record_fields)
    short = SHORT
    parts: list[bytes] = []
    for external_id, values in found:
        raw_id = external_id.encode()
        n = len(raw_id)  # not checked against MAX_EXTERNAL_ID: a stored id is short
        user = [_USER_EXTERNAL_ID, short[n] if n < SHORT_LIMIT else varint(n), raw_id]
        for write, stored in zip(writers, values, strict=False):  # the version is left
            if stored is not None:
                user.append(write(stored))
        encoded = b"".join(user)
        n = len(encoded)
        parts += (_RESPONSE_USER, short[n] if n < SHORT_LIMIT else varint(n), encoded)
    parts.extend(delimited(_RESPONSE_MISSING, external_id.encode()) for external_id in missing)
    return Encoded(b"".join(parts))
