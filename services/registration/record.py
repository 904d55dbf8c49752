"""The compact binary form of a device record and of change log entries.

One record is one field of its shard's hash (docs/keys/registration.md). Packing it
by hand keeps a registered device near 100 bytes (APNs) instead of the 400+ a hash
per device costs, which is what lets 1M devices fit the memory budget.

Layout (version 2), big-endian:
    u8 version, u8 platform, u8 authorization, u8 apns environment, u8 stored token kind
    (0 none, 1 APNs, 2 FCM as text, 3 Web Push, 4 FCM packed),
    5 x u48 milliseconds: create, update, last seen, token update, token confirm,
    str8 os_version, str8 app_version, str8 locale, str8 time_zone, str8 user_id,
    str16 token (APNs: the raw bytes of the hex; FCM: compact.pack_fcm's form when it
    is shorter, else the text; Web: the endpoint's UTF-8),
    Web only: 65 bytes p256dh, 16 bytes auth,
    u8 entry count, entries (str16 each: see pack_entry), oldest first.
Version 1 (FCM always as text) was never deployed: nothing reads it.
Lua scripts compare whole records (compare-and-set); only flush_device.lua reads
fields of this layout.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from services.registration.compact import pack_fcm, unpack_fcm
from services.registration.model import APNS, FCM, WEB_PUSH, ChangeEntry, DeviceRecord, Token

VERSION = 2
# The token kind byte of a record: model's kinds, and FCM_PACKED for an FCM token stored
# in compact.pack_fcm's form (the same token always gets the same form).
FCM_PACKED = 4
DEVICE_LOG_CAP = 8  # the newest entries kept in the record; the user log keeps more

_ENTRY_HEAD = struct.Struct(">BHB B")
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")


class _Writer:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def ms(self, value: int) -> None:
        self.parts.append(value.to_bytes(6, "big"))

    def str8(self, value: str) -> None:
        # Never cut silently: a cut id would name another user or device (validation
        # bounds every stored text at 255 bytes of UTF-8; display texts are clipped
        # on a character boundary with clip_utf8 before they get here).
        raw = value.encode()
        if len(raw) > 255:
            raise ValueError(f"a stored text is {len(raw)} bytes of UTF-8; the limit is 255")
        self.parts.append(_U8.pack(len(raw)) + raw)

    def bytes16(self, raw: bytes) -> None:
        self.parts.append(_U16.pack(len(raw)) + raw)

    def done(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    __slots__ = ("at", "data")

    def __init__(self, data: bytes, at: int = 0) -> None:
        self.data = data
        self.at = at

    def ms(self) -> int:
        value = int.from_bytes(self.data[self.at : self.at + 6], "big")
        self.at += 6
        return value

    def u8(self) -> int:
        value = self.data[self.at]
        self.at += 1
        return value

    def raw(self, size: int) -> bytes:
        value = self.data[self.at : self.at + size]
        self.at += size
        return value

    def str8(self) -> str:
        return self.raw(self.u8()).decode(errors="replace")

    def bytes16(self) -> bytes:
        (size,) = _U16.unpack_from(self.data, self.at)
        self.at += 2
        return self.raw(size)


def clip_utf8(text: str, limit: int = 255) -> str:
    """`text` cut to at most `limit` bytes of UTF-8 on a character boundary."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode(errors="ignore")


def pack_entry(entry: ChangeEntry) -> bytes:
    out = _Writer()
    out.parts.append(
        _ENTRY_HEAD.pack(entry.kind, entry.nonce, entry.provider, entry.authorization_status)
    )
    out.ms(entry.change_ms)
    out.ms(entry.provider_ms)
    out.str8(entry.from_user)
    out.str8(entry.to_user)
    for text in (entry.redacted_token, entry.previous_redacted_token, entry.reason):
        out.str8(clip_utf8(text))
    return out.done()


def unpack_entry(data: bytes) -> ChangeEntry:
    kind, nonce, provider, status = _ENTRY_HEAD.unpack_from(data, 0)
    read = _Reader(data, _ENTRY_HEAD.size)
    change_ms, provider_ms = read.ms(), read.ms()
    return ChangeEntry(
        kind=kind,
        change_ms=change_ms,
        nonce=nonce,
        provider=provider,
        authorization_status=status,
        provider_ms=provider_ms,
        from_user=read.str8(),
        to_user=read.str8(),
        redacted_token=read.str8(),
        previous_redacted_token=read.str8(),
        reason=read.str8(),
    )


def stored_token(token: Token | None) -> tuple[int, bytes]:
    """(the record's token kind byte, the token's bytes) as the record stores a token:
    APNs as the raw bytes of its hex, FCM packed when that is shorter."""
    if token is None:
        return 0, b""
    if token.kind == APNS:
        return APNS, bytes.fromhex(token.value)
    if token.kind == FCM:
        packed = pack_fcm(token.value)
        if packed is not None:
            return FCM_PACKED, packed
    return token.kind, token.value.encode()


def flush_arguments(
    platform: int,
    authorization_status: int,
    apns_environment: int,
    texts: tuple[str, str, str, str, str],
    token: Token | None,
    now_ms: int,
) -> list[bytes | str | int]:
    """ARGV 2.. of scripts/flush_device.lua (store.flush puts the device's field first),
    which reads this layout: what the stored record must already say (0 and "" =
    whatever it says) for a flush to change only times; the token as stored_token
    gives it (kind byte and bytes).

    `texts` are os_version, app_version, locale, time_zone, user_id, in record order."""
    kind, stored = stored_token(token)
    return [
        platform,
        authorization_status,
        apns_environment,
        *texts,
        kind,
        stored,
        now_ms.to_bytes(6, "big"),
    ]


# The fixed part of a record: the header and the five u48 times, each as u16 + u32
# (struct has no 6-byte integer); one unpack_from instead of a call per field, since
# audiences unpack every record of an app.
_FIXED = struct.Struct(">BBBBB" + "HI" * 5)


def pack(record: DeviceRecord) -> bytes:
    token = record.token
    kind, stored = stored_token(token)
    create, update, seen = record.create_ms, record.update_ms, record.last_seen_ms
    token_update, confirm = record.token_update_ms, record.token_confirm_ms
    # One struct call for the header and the times, the texts joined once: imports
    # pack every device they write.
    parts = [
        _FIXED.pack(
            VERSION,
            record.platform,
            record.authorization_status,
            record.apns_environment,
            kind,
            create >> 32,
            create & 0xFFFFFFFF,
            update >> 32,
            update & 0xFFFFFFFF,
            seen >> 32,
            seen & 0xFFFFFFFF,
            token_update >> 32,
            token_update & 0xFFFFFFFF,
            confirm >> 32,
            confirm & 0xFFFFFFFF,
        )
    ]
    for text in (
        record.os_version,
        record.app_version,
        record.locale,
        record.time_zone,
        record.user_id,
    ):
        raw = text.encode()
        if len(raw) > 255:  # never cut silently (see _Writer.str8)
            raise ValueError(f"a stored text is {len(raw)} bytes of UTF-8; the limit is 255")
        parts.append(_LENGTH8[len(raw)])
        parts.append(raw)
    parts.append(_U16.pack(len(stored)))
    parts.append(stored)
    if token is not None and token.kind == WEB_PUSH:
        parts.append(token.p256dh + token.auth)
    entries = record.log[-DEVICE_LOG_CAP:]
    parts.append(_LENGTH8[len(entries)])
    for entry in entries:
        packed = pack_entry(entry)
        parts.append(_U16.pack(len(packed)))
        parts.append(packed)
    return b"".join(parts)


_LENGTH8 = [bytes([size]) for size in range(256)]


class AudienceView(NamedTuple):
    """What an audience reads of a record: the fields it filters on and streams, the
    token as stored. Audiences walk every record of an app, and this skips what
    unpack builds for the rest of Registration (the Token, the times nobody filters on,
    the DeviceRecord). A named tuple: the cheapest object to build per record."""

    platform: int
    os_version: str
    authorization_status: int
    last_seen_ms: int
    app_version: str
    locale: str
    time_zone: str
    user_id: str
    apns_environment: int
    token_kind: int  # the stored kind byte: FCM_PACKED for a packed FCM token
    token_raw: bytes
    web_keys: bytes  # Web Push: p256dh (65 bytes) then auth (16 bytes)

    @property
    def has_token(self) -> bool:
        return self.token_kind != 0


def _read(data: bytes) -> tuple[tuple[int, ...], list[str], bytes, bytes, int]:
    """(the fixed part, the five texts, the stored token, its Web keys, where the log
    starts) of a record."""
    fixed = _FIXED.unpack_from(data, 0)
    if fixed[0] != VERSION:
        raise ValueError(f"unknown device record version {fixed[0]}")
    at = _FIXED.size
    texts = []
    for _ in range(5):  # os_version, app_version, locale, time_zone, user_id
        end = at + 1 + data[at]
        texts.append(data[at + 1 : end].decode(errors="replace"))
        at = end
    size = (data[at] << 8) | data[at + 1]
    token_raw = data[at + 2 : at + 2 + size]
    at += 2 + size
    web_keys = b""
    if fixed[4] == WEB_PUSH:
        web_keys = data[at : at + 81]
        at += 81
    return fixed, texts, token_raw, web_keys, at


def token_of(kind: int, raw: bytes, web_keys: bytes) -> Token | None:
    """The Token of a record's stored token kind byte, bytes and Web keys."""
    if kind == APNS:
        return Token(APNS, raw.hex())
    if kind == FCM_PACKED:
        return Token(FCM, unpack_fcm(raw))
    if kind == WEB_PUSH:
        return Token(WEB_PUSH, raw.decode(), web_keys[:65], web_keys[65:])
    if kind:
        return Token(kind, raw.decode())
    return None


def audience_view(data: bytes) -> AudienceView:
    fixed, texts, token_raw, web_keys, _ = _read(data)
    os_version, app_version, locale, time_zone, user_id = texts
    platform, status, environment, kind = fixed[1:5]
    last_seen = (fixed[9] << 32) | fixed[10]
    return AudienceView(
        platform, os_version, status, last_seen, app_version, locale, time_zone, user_id,
        environment, kind, token_raw, web_keys,
    )  # fmt: skip


def unpack(data: bytes, with_log: bool = True) -> DeviceRecord:
    fixed, texts, token_raw, web_keys, at = _read(data)
    log: list[ChangeEntry] = []
    if with_log:
        read = _Reader(data, at)
        for _ in range(read.u8()):
            log.append(unpack_entry(read.bytes16()))
    # Positional: keyword arguments cost a third of the time here (the order is
    # DeviceRecord's field order).
    return DeviceRecord(
        fixed[1],  # platform
        texts[0],  # os_version
        fixed[2],  # authorization status
        (fixed[5] << 32) | fixed[6],  # create
        (fixed[7] << 32) | fixed[8],  # update
        (fixed[9] << 32) | fixed[10],  # last seen
        texts[1],  # app_version
        texts[2],  # locale
        texts[3],  # time_zone
        texts[4],  # user_id
        fixed[3],  # APNs environment
        token_of(fixed[4], token_raw, web_keys),
        (fixed[11] << 32) | fixed[12],  # token update
        (fixed[13] << 32) | fixed[14],  # token confirm
        log,
    )


def pack_user_entry(app_id: str, device_id: str, entry: ChangeEntry) -> bytes:
    """A user log entry: the device's entry prefixed by which (app, device) it is about."""
    out = _Writer()
    out.str8(app_id)
    out.str8(device_id)
    out.parts.append(pack_entry(entry))
    return out.done()


def unpack_user_entry(data: bytes) -> tuple[str, str, ChangeEntry]:
    read = _Reader(data)
    app_id, device_id = read.str8(), read.str8()
    return app_id, device_id, unpack_entry(data[read.at :])
