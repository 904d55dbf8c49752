"""StreamAudience's wire-form answers parse to the messages built field by field."""

from __future__ import annotations

import itertools

import pytest

from herald.registration.v1 import device_pb2, registration_service_pb2
from herald.type.v1 import push_token_pb2
from services.registration import audience_wire, record, rules
from services.registration.audience import Matched
from services.registration.model import (
    ANDROID,
    APNS,
    AUTHORIZED,
    DENIED,
    FCM,
    IOS,
    NOT_DETERMINED,
    PROVISIONAL,
    WEB,
    WEB_PUSH,
    DeviceRecord,
    Token,
)
from services.registration.tokens import encode_base64url

TOKENS = {
    "apns": Token(APNS, "0a" * 32),
    "fcm packed": Token(FCM, "cXbD3:APA91b" + "Hk_-9z" * 25),
    "fcm as text": Token(FCM, "odd.token/with+chars"),  # outside base64url: kept as text
    "web": Token(WEB_PUSH, "https://push.example.net/s/ü1", b"\x04" + b"k" * 64, b"a" * 16),
    "none": None,
}
PLATFORM_OF = {APNS: IOS, FCM: ANDROID, WEB_PUSH: WEB}


def _expected(app_id: str, device_id: str, rec: DeviceRecord) -> device_pb2.AudienceDevice:
    """The AudienceDevice as the ordinary message API builds it."""
    capability, provisional = rules.capability(rec)
    message = device_pb2.AudienceDevice(
        app_id=app_id,
        device_id=device_id,
        platform=rec.platform,  # type: ignore[arg-type]
        apns_environment=rec.apns_environment,  # type: ignore[arg-type]
        user_id=rec.user_id,
        capability=capability,  # type: ignore[arg-type]
        provisional=provisional,
        locale=rec.locale,
        time_zone=rec.time_zone,
        app_version=rec.app_version,
    )
    token = rec.token
    if token is not None and token.kind == APNS:
        message.token.apns.device_token = token.value
    elif token is not None and token.kind == FCM:
        message.token.fcm.registration_token = token.value
    elif token is not None:
        message.token.web_push.CopyFrom(
            push_token_pb2.WebPushSubscription(
                endpoint=token.value,
                p256dh=encode_base64url(token.p256dh),
                auth=encode_base64url(token.auth),
            )
        )
    if rec.last_seen_ms:
        message.last_seen_time.FromMilliseconds(rec.last_seen_ms)
    return message


def _records() -> list[DeviceRecord]:
    shapes = itertools.product(
        TOKENS.values(),
        [NOT_DETERMINED, DENIED, PROVISIONAL, AUTHORIZED],
        [("", "", "", "", ""), ("12", "4.2.0", "pt-BR", "América/São_Paulo", "user-ü")],
        [0, 1_700_000_000_000, 1_700_000_000_123, 999],
        [0, 2],
    )
    records = []
    for token, status, texts, seen, environment in shapes:
        platform = PLATFORM_OF[token.kind] if token else IOS
        os_version, app_version, locale, time_zone, user_id = texts
        records.append(
            DeviceRecord(
                platform,
                os_version,
                status,
                5,
                6,
                seen,
                app_version,
                locale,
                time_zone,
                user_id,
                environment if platform == IOS else 0,
                token,
                7,
                8,
            )
        )
    return records


@pytest.mark.parametrize("rec", _records())
def test_a_device_in_wire_form_parses_to_the_message_built_field_by_field(rec):
    view = record.audience_view(record.pack(rec))
    wire = audience_wire.device(audience_wire.app_field("app-1"), "dev-ü-7", view)
    assert device_pb2.AudienceDevice.FromString(wire) == _expected("app-1", "dev-ü-7", rec)


@pytest.mark.parametrize("rec", _records()[::7])
def test_the_audience_view_says_what_the_full_record_says(rec):
    packed = record.pack(rec)
    view, full = record.audience_view(packed), record.unpack(packed)
    assert record.token_of(view.token_kind, view.token_raw, view.web_keys) == full.token
    assert view.has_token == (full.token is not None)
    for name in (
        "platform",
        "os_version",
        "authorization_status",
        "last_seen_ms",
        "app_version",
        "locale",
        "time_zone",
        "user_id",
        "apns_environment",
    ):
        assert getattr(view, name) == getattr(full, name), name


@pytest.mark.parametrize("streamed", [0, 3, 1_000_000])
def test_a_response_carries_its_devices_of_several_apps_the_cursor_and_the_count(streamed):
    recs = _records()[:3]
    batch = [
        Matched(app_id, 0, f"d{i}", record.audience_view(record.pack(rec)))
        for i, (app_id, rec) in enumerate(zip(["app-a", "app-b", "app-a"], recs, strict=True))
    ]
    answer = audience_wire.ResponseWriter().response(batch, "cursor-after-d2", streamed)
    parsed = registration_service_pb2.StreamAudienceResponse.FromString(answer.data)
    assert parsed == registration_service_pb2.StreamAudienceResponse(
        devices=[_expected(m.app_id, m.device_id, rec) for m, rec in zip(batch, recs, strict=True)],
        cursor="cursor-after-d2",
        streamed_count=streamed,
    )
