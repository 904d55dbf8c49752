"""Payload building per platform, size limits, and RFC 8291 encryption (no sockets)."""

from __future__ import annotations

import base64
import json

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import struct_pb2

from herald.delivery.v1 import notification_pb2
from herald.type.v1 import push_options_pb2, push_token_pb2
from services.core.errors import InvalidArgument
from services.delivery.payloads import apns, fcm, webpush

PT = push_options_pb2
TOKEN = "ab" * 32


def n_apns(**fields) -> notification_pb2.Notification:
    top = {k: fields.pop(k) for k in ("collapse_id",) if k in fields}
    if "notification_priority" in fields:
        top["priority"] = fields.pop("notification_priority")
    return notification_pb2.Notification(
        app_id="a",
        token=push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token=TOKEN)),
        apns=notification_pb2.ApnsPayload(**fields),
        **top,
    )


def headers(request) -> dict[str, str]:
    return dict(request.headers)


def test_apns_alert_with_every_aps_field():
    custom = struct_pb2.Struct()
    custom.update({"order": "42"})
    request = apns.build(
        n_apns(
            title="T",
            subtitle="S",
            body="B",
            badge=0,
            sound="s.caf",
            category="C",
            thread_id="th",
            mutable_content=True,
            interruption_level=PT.INTERRUPTION_LEVEL_TIME_SENSITIVE,
            relevance_score=0.5,
            custom_data=custom,
            collapse_id="c1",
        ),
        "dev.app",
        "id-1",
        now=1000,
    )
    body = json.loads(request.body)
    assert body == {
        "aps": {
            "alert": {"title": "T", "subtitle": "S", "body": "B"},
            "badge": 0,
            "sound": "s.caf",
            "category": "C",
            "thread-id": "th",
            "mutable-content": 1,
            "interruption-level": "time-sensitive",
            "relevance-score": 0.5,
        },
        "order": "42",
    }
    assert headers(request) == {
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-topic": "dev.app",
        "apns-expiration": str(1000 + 28 * 86400),
        "apns-id": "id-1",
        "apns-collapse-id": "c1",
    }
    assert request.path == f"/3/device/{TOKEN}"


def test_apns_background_is_priority_5_and_push_type_suffixes():
    background = apns.build(n_apns(content_available=True), "dev.app", "i")
    assert (headers(background)["apns-push-type"], headers(background)["apns-priority"]) == (
        "background",
        "5",
    )
    voip = apns.build(
        n_apns(push_type=PT.APNS_PUSH_TYPE_VOIP, raw_payload_json='{"call":1}'), "dev.app", "i"
    )
    assert headers(voip)["apns-topic"] == "dev.app.voip"
    live = apns.build(
        n_apns(push_type=PT.APNS_PUSH_TYPE_LIVEACTIVITY, raw_payload_json="{}"), "dev.app", "i"
    )
    assert headers(live)["apns-topic"] == "dev.app.push-type.liveactivity"
    normal = apns.build(
        n_apns(title="x", notification_priority=PT.NOTIFICATION_PRIORITY_NORMAL), "dev.app", "i"
    )
    assert headers(normal)["apns-priority"] == "5"


def test_apns_ttl_zero_is_expiration_zero():
    n = n_apns(title="x")
    n.ttl.FromSeconds(0)
    assert headers(apns.build(n, "dev.app", "i"))["apns-expiration"] == "0"


@pytest.mark.parametrize(
    ("fields", "path", "reason"),
    [
        ({"body": "x" * 4100}, "notification.apns.body", "PAYLOAD_TOO_LARGE"),
        ({"collapse_id": "c" * 65}, "notification.collapse_id", "INVALID_ARGUMENT"),
        (
            {"content_available": True, "priority": 10},
            "notification.apns.priority",
            "INVALID_ARGUMENT",
        ),
        ({"raw_payload_json": "[1]"}, "notification.apns.raw_payload_json", "INVALID_ARGUMENT"),
    ],
)
@pytest.mark.parametrize("entry", ["build", "check"])
def test_apns_rejections_name_the_field(fields, path, reason, entry):
    # check() is what Enqueue runs: it must refuse exactly what build() refuses.
    def run(n: notification_pb2.Notification) -> object:
        return apns.build(n, "dev.app", "i") if entry == "build" else apns.check(n)

    with pytest.raises(InvalidArgument) as error:
        run(n_apns(**fields))
    assert error.value.reason == reason
    assert path in [v.field for v in error.value.violations]


def test_apns_voip_may_use_5120_bytes():
    big = '{"call":"' + "x" * 4500 + '"}'
    apns.build(n_apns(push_type=PT.APNS_PUSH_TYPE_VOIP, raw_payload_json=big), "dev.app", "i")
    with pytest.raises(InvalidArgument):
        apns.build(n_apns(push_type=PT.APNS_PUSH_TYPE_ALERT, raw_payload_json=big), "dev.app", "i")


def n_fcm(**fields) -> notification_pb2.Notification:
    return notification_pb2.Notification(
        app_id="a",
        token=push_token_pb2.PushToken(
            fcm=push_token_pb2.FcmToken(registration_token="tok-123456789012345")
        ),
        fcm=notification_pb2.FcmPayload(**fields),
        collapse_id="news",
    )


def test_fcm_message_fields():
    n = n_fcm(
        title="T",
        body="B",
        image_url="https://i",
        data={"k": "v"},
        channel_id="ch",
        color="#aabbcc",
        android_priority=PT.ANDROID_PRIORITY_NORMAL,
        analytics_label="lbl",
        direct_boot_ok=True,
    )
    n.ttl.FromSeconds(120)
    body = json.loads(fcm.build(n, "proj").body)
    assert body == {
        "message": {
            "token": "tok-123456789012345",
            "data": {"k": "v"},
            "notification": {"title": "T", "body": "B", "image": "https://i"},
            "android": {
                "priority": "NORMAL",
                "ttl": "120s",
                "collapse_key": "news",
                "direct_boot_ok": True,
                "notification": {"channel_id": "ch", "color": "#aabbcc"},
            },
            "fcm_options": {"analytics_label": "lbl"},
        }
    }
    assert fcm.build(n, "proj").path == "/v1/projects/proj/messages:send"


@pytest.mark.parametrize("entry", ["build", "check"])
def test_fcm_rejections(entry):
    def run(n: notification_pb2.Notification) -> object:
        return fcm.build(n, "p") if entry == "build" else fcm.check(n)

    with pytest.raises(InvalidArgument) as reserved:
        run(n_fcm(data={"google.x": "1", "from": "x"}))
    assert {v.field for v in reserved.value.violations} == {
        'notification.fcm.data["google.x"]',
        'notification.fcm.data["from"]',
    }
    with pytest.raises(InvalidArgument) as big:
        run(n_fcm(data={"k": "x" * 4100}))
    assert big.value.reason == "PAYLOAD_TOO_LARGE"
    assert big.value.violations[0].field == "notification.fcm.data"


def _subscription() -> tuple[ec.EllipticCurvePrivateKey, bytes, push_token_pb2.PushToken]:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    auth = b"0123456789abcdef"

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    token = push_token_pb2.PushToken(
        web_push=push_token_pb2.WebPushSubscription(
            endpoint="https://push.example/s/1?x=1", p256dh=b64(raw), auth=b64(auth)
        )
    )
    return key, auth, token


def test_webpush_encrypts_per_rfc_8291_and_sets_headers():
    key, auth, token = _subscription()
    n = notification_pb2.Notification(
        app_id="a",
        token=token,
        collapse_id="promo",
        web_push=notification_pb2.WebPushPayload(
            title="T",
            body="B",
            url="https://u",
            data={"k": "v"},
            actions=[notification_pb2.WebPushAction(action="a", title="A")],
            urgency=PT.WEB_PUSH_URGENCY_LOW,
        ),
    )
    n.ttl.FromSeconds(60)
    request = webpush.build(n)
    plain = http_ece.decrypt(request.body, private_key=key, auth_secret=auth, version="aes128gcm")
    assert json.loads(plain) == {
        "title": "T",
        "body": "B",
        "url": "https://u",
        "actions": [{"action": "a", "title": "A"}],
        "data": {"k": "v"},
    }
    assert headers(request) == {
        "ttl": "60",
        "urgency": "low",
        "content-encoding": "aes128gcm",
        "content-type": "application/octet-stream",
        "topic": "promo",
    }
    assert request.path == "/s/1?x=1"
    assert len(request.body) == len(plain) + 103


def test_webpush_size_limit_is_4096_on_the_wire():
    _, _, token = _subscription()
    fits = notification_pb2.Notification(
        app_id="a", token=token, web_push=notification_pb2.WebPushPayload(raw_payload=b"x" * 3993)
    )
    assert len(webpush.build(fits).body) == 4096
    over = notification_pb2.Notification(
        app_id="a", token=token, web_push=notification_pb2.WebPushPayload(raw_payload=b"x" * 3994)
    )
    for entry in (webpush.build, webpush.check):
        with pytest.raises(InvalidArgument) as error:
            entry(over)
        assert (error.value.reason, error.value.violations[0].field) == (
            "PAYLOAD_TOO_LARGE",
            "notification.web_push.raw_payload",
        )


def test_fcm_message_at_the_limit_passes_and_one_byte_more_is_refused():
    # FCM counts the message without its token: a long token must not push it over.
    empty = n_fcm()
    base = len(fcm.check(empty).encode())
    data_overhead = len(',"data":{"k":""}')
    fits = n_fcm(data={"k": "x" * (fcm.MAX_MESSAGE - base - data_overhead)})
    fits.token.fcm.registration_token = "t" * 4000
    assert len(fcm.check(fits).encode()) == fcm.MAX_MESSAGE
    json.loads(fcm.build(fits, "p").body)
    over = n_fcm(data={"k": "x" * (fcm.MAX_MESSAGE - base - data_overhead + 1)})
    with pytest.raises(InvalidArgument):
        fcm.build(over, "p")
