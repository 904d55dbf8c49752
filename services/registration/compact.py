"""Compact byte forms of device ids and FCM tokens, for memory (docs/keys/registration.md).

At a million devices every byte of a device id or a token is stored once or twice per
device (the device hash field, the token index value, the record), and Redis rounds
each string up to its allocator's size class, so a few bytes less can move a string to
the next class down. Both forms round-trip exactly: whatever does not fit the compact
shape is stored as it came.

Device ids: a UUID inside the id (all lower-case or all upper-case hex, with its dashes,
as iOS's identifierForVendor and most SDKs produce) is stored as its 16 bytes:
`u8 tag, u8 prefix length, prefix, 16 bytes, suffix`. Any other id is its UTF-8. The
tags (0x80, 0x81) are UTF-8 continuation bytes, which never start a valid UTF-8 string,
so the two forms can never be taken for each other and equal ids always have equal
forms (the token index scripts compare device ids by their stored bytes).

FCM tokens: `<instance id>:<APA91b...>`, each part base64url characters. Each
':'-separated part is stored as a varint character count and its characters' 6-bit
values packed (ceil(6n/8) bytes): ~25 % less than the text.
"""

from __future__ import annotations

import binascii
import functools
import re

UUID_LOWER, UUID_UPPER = 0x80, 0x81
_UUID_CHARS = 36
_UUID = re.compile(
    r"(?P<lower>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"|(?P<upper>[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12})"
)
_BASE64URL_AND_COLON = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_:"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


@functools.lru_cache(maxsize=16_384)
def pack_device_id(device_id: str) -> bytes:
    """The stored form of a device id (a hash field and a token index value's tail).

    Memoised: a write names its device three or four times (record read, token claim,
    record write, confirm), an import message 5,000 devices at once."""
    size = len(device_id)
    if size >= _UUID_CHARS:
        # Most ids end with their UUID (the whole id, or after a prefix): tried first.
        found = _UUID.fullmatch(device_id, size - _UUID_CHARS) or _UUID.search(device_id)
        if found is not None:
            start, end = found.span()
            prefix = device_id[:start].encode()
            if len(prefix) <= 0xFF:
                return (
                    bytes((UUID_UPPER if found.lastgroup == "upper" else UUID_LOWER, len(prefix)))
                    + prefix
                    + bytes.fromhex(found.group().replace("-", ""))
                    + device_id[end:].encode()
                )
    return device_id.encode()


def unpack_device_id(data: bytes) -> str:
    """The device id of a stored form (pack_device_id's inverse)."""
    if not data or data[0] not in (UUID_LOWER, UUID_UPPER):
        return data.decode(errors="replace")
    return unpack_device_id_bytes(data).decode(errors="replace")


def unpack_device_id_bytes(data: bytes) -> bytes:
    """The UTF-8 device id of a stored form: what audiences sort and compare, built
    without a str in between (they read every device of an app)."""
    if not data or data[0] not in (UUID_LOWER, UUID_UPPER):
        return data
    start = 2 + data[1]
    digits = binascii.hexlify(data[start : start + 16])
    if data[0] == UUID_UPPER:
        digits = digits.upper()
    return b"".join(
        (
            data[2:start],
            digits[:8],
            b"-",
            digits[8:12],
            b"-",
            digits[12:16],
            b"-",
            digits[16:20],
            b"-",
            digits[20:],
            data[start + 16 :],
        )
    )


def pack_fcm(token: str) -> bytes | None:
    """The packed form of an FCM token, or None when it is not base64url parts joined by
    ':' or packing would not make it shorter (the record then keeps the text)."""
    text = token.encode()
    if text.translate(None, _BASE64URL_AND_COLON):  # a character outside the alphabet
        return None
    out = []
    # binascii directly (base64.urlsafe_b64decode costs ~3x): this runs for every
    # Android registration and import.
    for part in text.translate(_TO_STANDARD).split(b":"):
        count = len(part)
        out.append(_VARINTS[count] if count < len(_VARINTS) else _varint(count))
        if count:
            # Padding with "A" (value 0) makes whole base64 quanta; only the bytes that
            # hold the part's own 6n bits are kept.
            out.append(binascii.a2b_base64(part + _PADDING[count & 3])[: (6 * count + 7) // 8])
    packed = b"".join(out)
    return packed if len(packed) < len(text) else None


def _varint(value: int) -> bytes:
    """7 bits a byte, low bits first, the high bit set on all but the last byte."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINTS = [_varint(count) for count in range(1025)]  # every FCM token part length
_PADDING = (b"", b"AAA", b"AA", b"A")


def unpack_fcm(data: bytes) -> str:
    """The FCM token of a packed form (pack_fcm's inverse)."""
    parts = []
    at, size = 0, len(data)
    while at < size:
        count = data[at]
        at += 1
        if count >= 0x80:  # a longer varint (a part of 128 characters or more)
            count &= 0x7F
            shift = 7
            while True:
                byte = data[at]
                at += 1
                count |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
        used = (6 * count + 7) // 8
        parts.append(binascii.b2a_base64(data[at : at + used], newline=False)[:count])
        at += used
    return b":".join(parts).translate(_TO_URLSAFE).decode()
