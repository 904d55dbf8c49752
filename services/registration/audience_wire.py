"""StreamAudience's answers written as protobuf bytes straight from the stored records.

An audience streams every device of its apps. Unpacking each record into a
DeviceRecord and building an AudienceDevice from it was most of StreamAudience's cost
per device; here each field goes from the record (record.AudienceView) into the wire
form (services/core/protowire.py). tests/unit/registration/test_audience_wire.py parses
these bytes and compares them with the message built field by field, for every token
kind and every field at and off its default.
"""

from __future__ import annotations

from herald.registration.v1 import device_pb2, registration_service_pb2
from herald.type.v1 import push_token_pb2
from services.core.protowire import (
    LENGTH_DELIMITED,
    SHORT,
    VARINT,
    Encoded,
    delimited,
    length,
    length_delimited,
    varint,
)
from services.core.protowire import key as field_key
from services.registration.audience import Matched
from services.registration.compact import unpack_fcm
from services.registration.model import APNS, FCM, WEB_PUSH
from services.registration.record import FCM_PACKED, AudienceView
from services.registration.rules import capability_of
from services.registration.tokens import encode_base64url


def _number(message: type, name: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[name].number)  # type: ignore[attr-defined]


_D = device_pb2.AudienceDevice
_APP_ID = _number(_D, "app_id")
_DEVICE_ID = field_key(_number(_D, "device_id"), LENGTH_DELIMITED)
_USER_ID = field_key(_number(_D, "user_id"), LENGTH_DELIMITED)
_LOCALE = field_key(_number(_D, "locale"), LENGTH_DELIMITED)
_TIME_ZONE = field_key(_number(_D, "time_zone"), LENGTH_DELIMITED)
_APP_VERSION = field_key(_number(_D, "app_version"), LENGTH_DELIMITED)
_TOKEN = field_key(_number(_D, "token"), LENGTH_DELIMITED)
_LAST_SEEN = field_key(_number(_D, "last_seen_time"), LENGTH_DELIMITED)
# Enum and bool fields: the key and the value together, pre-encoded for small values.
_PLATFORM = [field_key(_number(_D, "platform"), VARINT) + varint(v) for v in range(128)]
_ENVIRONMENT = [field_key(_number(_D, "apns_environment"), VARINT) + varint(v) for v in range(128)]
_CAPABILITY = [field_key(_number(_D, "capability"), VARINT) + varint(v) for v in range(128)]
_PROVISIONAL = field_key(_number(_D, "provisional"), VARINT) + b"\x01"
_SECONDS, _NANOS = field_key(1, VARINT), field_key(2, VARINT)  # google.protobuf.Timestamp

_P = push_token_pb2.PushToken
_APNS = _number(_P, "apns")
_FCM = _number(_P, "fcm")
_WEB_PUSH = _number(_P, "web_push")
_APNS_TOKEN = _number(push_token_pb2.ApnsToken, "device_token")
_FCM_TOKEN = _number(push_token_pb2.FcmToken, "registration_token")
_W = push_token_pb2.WebPushSubscription
_ENDPOINT, _P256DH, _AUTH = (_number(_W, name) for name in ("endpoint", "p256dh", "auth"))

_R = registration_service_pb2.StreamAudienceResponse
_DEVICES = field_key(_number(_R, "devices"), LENGTH_DELIMITED)
_CURSOR = _number(_R, "cursor")
_STREAMED = field_key(_number(_R, "streamed_count"), VARINT)


def app_field(app_id: str) -> bytes:
    """The app id field, written once per app of a stream."""
    return length_delimited(_APP_ID, app_id.encode())


def _text(tag: bytes, value: str) -> bytes:
    return delimited(tag, value.encode()) if value else b""


_APNS_FIELD, _FCM_FIELD, _WEB_PUSH_FIELD = (
    field_key(number, LENGTH_DELIMITED) for number in (_APNS, _FCM, _WEB_PUSH)
)
_APNS_TOKEN_FIELD = field_key(_APNS_TOKEN, LENGTH_DELIMITED)
_FCM_TOKEN_FIELD = field_key(_FCM_TOKEN, LENGTH_DELIMITED)


def _token(view: AudienceView) -> bytes:
    kind = view.token_kind
    if kind == APNS:
        value = view.token_raw.hex().encode()
        token = delimited(_APNS_FIELD, delimited(_APNS_TOKEN_FIELD, value))
    elif kind in (FCM_PACKED, FCM):
        value = unpack_fcm(view.token_raw).encode() if kind == FCM_PACKED else view.token_raw
        token = delimited(_FCM_FIELD, delimited(_FCM_TOKEN_FIELD, value))
    elif kind == WEB_PUSH:
        keys = view.web_keys
        inner = (
            length_delimited(_ENDPOINT, view.token_raw)
            + length_delimited(_P256DH, encode_base64url(keys[:65]).encode())
            + length_delimited(_AUTH, encode_base64url(keys[65:]).encode())
        )
        token = delimited(_WEB_PUSH_FIELD, inner)
    else:
        return b""
    return delimited(_TOKEN, token)


# Timestamp.nanos of each millisecond, with its key.
_NANOS_OF = [b""] + [_NANOS + varint(millis * 1_000_000) for millis in range(1, 1000)]


def _timestamp(ms: int) -> bytes:
    if not ms:
        return b""
    seconds, millis = divmod(ms, 1000)
    stamp = (_SECONDS + varint(seconds) if seconds else b"") + _NANOS_OF[millis]
    return _LAST_SEEN + SHORT[len(stamp)] + stamp


def device(app: bytes, device_id: str, view: AudienceView) -> bytes:
    """One AudienceDevice; `app` is app_field(app id)."""
    capability, provisional = capability_of(
        view.platform, view.authorization_status, view.os_version, view.token_kind != 0
    )
    raw_id = device_id.encode()
    return b"".join(
        (
            app,
            _DEVICE_ID,
            length(len(raw_id)),
            raw_id,
            _PLATFORM[view.platform] if view.platform else b"",
            _token(view),
            _ENVIRONMENT[view.apns_environment] if view.apns_environment else b"",
            _text(_USER_ID, view.user_id),
            _CAPABILITY[capability] if capability else b"",
            _PROVISIONAL if provisional else b"",
            _text(_LOCALE, view.locale),
            _text(_TIME_ZONE, view.time_zone),
            _text(_APP_VERSION, view.app_version),
            _timestamp(view.last_seen_ms),
        )
    )


class ResponseWriter:
    """The StreamAudienceResponses of one stream (each app's id field written once)."""

    def __init__(self) -> None:
        self._apps: dict[str, bytes] = {}

    def response(self, batch: list[Matched], cursor: str, streamed: int) -> Encoded:
        apps = self._apps
        devices = []
        for matched in batch:
            app = apps.get(matched.app_id)
            if app is None:
                app = apps[matched.app_id] = app_field(matched.app_id)
            devices.append(device(app, matched.device_id, matched.record))
        return response(devices, cursor, streamed)


def response(devices: list[bytes], cursor: str, streamed: int) -> Encoded:
    """A StreamAudienceResponse of these encoded devices."""
    parts = [delimited(_DEVICES, d) for d in devices]
    parts.append(length_delimited(_CURSOR, cursor.encode()))
    if streamed:
        parts.append(_STREAMED + varint(streamed))
    return Encoded(b"".join(parts))
