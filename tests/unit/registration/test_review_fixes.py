"""Unit tests for review issue 3: UTF-8 limits, the record codec with multibyte text,
Web endpoint checks, timestamp ranges, the Web denial through RegisterDevice."""

from __future__ import annotations

import base64

import pytest
from google.protobuf import timestamp_pb2

from services.core.errors import Validator
from services.registration import changes, record
from services.registration.messages import INVALID_TIME, millis
from services.registration.model import (
    ANDROID,
    DENIED,
    FCM,
    UNREGISTERED,
    WEB,
    WEB_PUSH,
    ChangeEntry,
    DeviceRecord,
    Token,
)
from services.registration.tokens import TokenInput, check_token, redact_token
from services.registration.validation import DeviceInput, check_device
from tests.web_push_keys import p256dh


def test_multibyte_texts_survive_packing_whole():
    user = "é" * 127  # 254 bytes: inside the 255-byte limit, twice as many bytes as chars
    rec = DeviceRecord(
        ANDROID,
        "14",
        DENIED,
        1,
        2,
        3,
        app_version="ü" * 32,
        user_id=user,
        token=Token(FCM, "t:" + "x" * 160),
        log=[ChangeEntry(1, 5, 7, from_user="ö" * 120, to_user=user, reason="ß" * 100)],
    )
    again = record.unpack(record.pack(rec))
    assert again == rec
    packed = record.pack_user_entry("shop", "ü" * 64, rec.log[0])  # 128 bytes of device id
    assert record.unpack_user_entry(packed) == ("shop", "ü" * 64, rec.log[0])


def test_an_oversized_stored_text_is_refused_not_cut():
    rec = DeviceRecord(ANDROID, "14", DENIED, 1, 2, 3, user_id="é" * 128)  # 256 bytes
    with pytest.raises(ValueError, match="255"):
        record.pack(rec)
    # Display texts are clipped on a character boundary instead.
    assert record.clip_utf8("é" * 200).encode() == ("é" * 127).encode()


LIMITS = {"user_id": 255, "device_id": 128, "app_version": 64, "os_version": 32}


@pytest.mark.parametrize(
    ("field", "given"),
    [
        ("user_id", DeviceInput("d", ANDROID, "14", user_id="é" * 128)),
        ("device_id", DeviceInput("é" * 65, ANDROID, "14")),
        ("app_version", DeviceInput("d", ANDROID, "14", app_version="é" * 33)),
        ("os_version", DeviceInput("d", ANDROID, "1" + "é" * 16)),
    ],
)
def test_limits_are_counted_in_utf8_bytes(field, given):
    check = Validator()
    check_device(check, "", given)
    described = f"must be at most {LIMITS[field]} bytes in UTF-8, without control characters"
    assert [(v.field, v.description) for v in check.violations] == [(field, described)]


def _web(endpoint: str) -> TokenInput:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return TokenInput(
        WEB_PUSH,
        web_endpoint=endpoint,
        web_p256dh=b64(p256dh()),
        web_auth=b64(b"a" * 16),
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://push.example.net/a\nb",
        "https://push.example.net/a\tb",
        "https://push.example.net/a b",
        "https://user:pw@push.example.net/x",
        "https://user@push.example.net/x",
        "https://push.example.net/é",
        "https://pùsh.example.net/x",
        "http://push.example.net/x",
        "https:///x",
        "https://push.example.net:99999/x",
        "push.example.net/x",
    ],
)
def test_web_endpoints_must_be_plain_https_urls(endpoint):
    check = Validator()
    assert check_token(check, "token", _web(endpoint)) is None
    assert [(v.field, v.reason) for v in check.violations] == [
        ("token.web_push.endpoint", "TOKEN_MALFORMED")
    ]


def test_a_good_web_endpoint_passes_and_redacts_without_its_path():
    check = Validator()
    token = check_token(check, "token", _web("https://fcm.googleapis.com/fcm/send/abc:def-123"))
    assert token is not None
    assert not check.violations
    assert redact_token(token) == "https://fcm.googleapis.com/…-123"


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        (timestamp_pb2.Timestamp(seconds=-100), INVALID_TIME),
        (timestamp_pb2.Timestamp(seconds=10**12), INVALID_TIME),
        (timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5_000_000), 1_700_000_000_005),
    ],
)
def test_timestamps_out_of_the_stored_range_are_flagged_not_raised(stamp, expected):
    assert millis(stamp, True) == expected
    assert millis(stamp, False) == 0


def test_a_web_denial_through_register_removes_the_subscription():
    token = Token(WEB_PUSH, "https://push.example.net/s/1", b"\x04" + b"k" * 64, b"a" * 16)
    subscribed = changes.register(None, DeviceInput("w", WEB, "124"), token, now=100).new
    assert subscribed is not None
    assert subscribed.token == token
    denied = changes.register(
        subscribed, DeviceInput("w", WEB, "124", authorization_status=DENIED), None, now=200
    )
    assert denied.new is not None
    assert denied.new.token is None
    assert denied.new.authorization_status == DENIED
    assert [(e.kind, e.reason) for e in denied.entries][-1] == (UNREGISTERED, "opt_out")
