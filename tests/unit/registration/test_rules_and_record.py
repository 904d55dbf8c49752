"""Platform rules, token validation and the record codec, without sockets."""

from __future__ import annotations

import pytest

from services.core.errors import Validator
from services.registration import changes, record, rules
from services.registration.audience import version_key
from services.registration.model import (
    ANDROID,
    APNS,
    AUTHORIZED,
    BACKGROUND,
    DENIED,
    FCM,
    FOREGROUND,
    IOS,
    NONE,
    NOT_DETERMINED,
    PROVISIONAL,
    WEB,
    WEB_PUSH,
    ChangeEntry,
    DeviceRecord,
    Token,
)
from services.registration.tokens import TokenInput, check_token, redact_token
from services.registration.validation import DeviceInput

APNS_TOKEN = Token(APNS, "ab" * 32)
FCM_TOKEN = Token(FCM, "fcm:" + "x" * 150)
WEB_TOKEN = Token(WEB_PUSH, "https://push.example.net/s/1", b"\x04" + b"k" * 64, b"a" * 16)


def device(platform: int, os_version: str, status: int, token: Token | None) -> DeviceRecord:
    return DeviceRecord(platform, os_version, status, 1, 1, 1, token=token)


@pytest.mark.parametrize(
    ("platform", "os_version", "status", "token", "expected"),
    [
        (ANDROID, "12", AUTHORIZED, FCM_TOKEN, (FOREGROUND, False)),
        (ANDROID, "12", DENIED, FCM_TOKEN, (BACKGROUND, False)),
        (ANDROID, "13", NOT_DETERMINED, FCM_TOKEN, (BACKGROUND, False)),
        (ANDROID, "14", AUTHORIZED, FCM_TOKEN, (FOREGROUND, False)),
        (IOS, "17.4", PROVISIONAL, APNS_TOKEN, (BACKGROUND, True)),
        (IOS, "17.4", DENIED, APNS_TOKEN, (BACKGROUND, False)),
        (IOS, "17.4", AUTHORIZED, APNS_TOKEN, (FOREGROUND, False)),
        (IOS, "17.4", AUTHORIZED, None, (NONE, False)),
        (WEB, "124", AUTHORIZED, WEB_TOKEN, (FOREGROUND, False)),
        (ANDROID, "14", DENIED, FCM_TOKEN, (BACKGROUND, False)),
        (ANDROID, "13", AUTHORIZED, None, (NONE, False)),
        (WEB, "124", AUTHORIZED, None, (NONE, False)),
    ],
)
def test_capability_follows_the_platform_table(platform, os_version, status, token, expected):
    assert rules.capability(device(platform, os_version, status, token)) == expected


def test_new_devices_get_their_platform_default():
    assert rules.default_authorization(ANDROID, "12", True) == AUTHORIZED
    assert rules.default_authorization(ANDROID, "13", True) == NOT_DETERMINED
    assert rules.default_authorization(IOS, "17", False) == NOT_DETERMINED
    assert rules.default_authorization(WEB, "124", True) == AUTHORIZED


def test_apns_tokens_are_lowercased_and_checked():
    check = Validator()
    token = check_token(check, "token", TokenInput(APNS, apns_device_token="AB" * 32))
    assert token == Token(APNS, "ab" * 32)
    check_token(check, "token", TokenInput(APNS, apns_device_token="xyz"))
    assert [(v.field, v.reason) for v in check.violations] == [
        ("token.apns.device_token", "TOKEN_MALFORMED")
    ]


def test_redaction_hides_the_middle_of_tokens():
    assert redact_token(APNS_TOKEN) == "abab…abab"
    web = Token(WEB_PUSH, "https://push.example.net/abc/secret-part-1234", b"\x04" * 65, b"a" * 16)
    assert redact_token(web) == "https://push.example.net/…1234"


def test_a_record_survives_packing_with_its_log():
    rec = DeviceRecord(
        IOS,
        "17.4",
        AUTHORIZED,
        1_700_000_000_000,
        1_700_000_000_001,
        1_700_000_000_002,
        app_version="4.1",
        locale="fr-FR",
        time_zone="Europe/Paris",
        user_id="alice",
        apns_environment=1,
        token=APNS_TOKEN,
        token_update_ms=5,
        token_confirm_ms=6,
        log=[ChangeEntry(kind=1, change_ms=7, nonce=9, to_user="alice", reason="r")],
    )
    assert record.unpack(record.pack(rec)) == rec
    web = DeviceRecord(
        WEB,
        "124",
        AUTHORIZED,
        1,
        1,
        1,
        token=Token(WEB_PUSH, "https://x.y/z", b"\x04" * 65, b"k" * 16),
    )
    assert record.unpack(record.pack(web)) == web


def test_the_device_log_is_capped():
    rec = device(IOS, "17", AUTHORIZED, APNS_TOKEN)
    rec.log = [ChangeEntry(kind=1, change_ms=i, nonce=i) for i in range(20)]
    kept = record.unpack(record.pack(rec)).log
    assert [e.change_ms for e in kept] == list(range(20 - record.DEVICE_LOG_CAP, 20))


def test_a_flush_changes_only_last_seen():
    given = DeviceInput("d", IOS, "17", token=None, apns_environment=1)
    first = changes.register(None, given, APNS_TOKEN, now=100).new
    assert first is not None
    again = changes.register(first, given, APNS_TOKEN, now=200)
    assert again.entries == []
    assert again.new is not None
    assert (again.new.update_ms, again.new.last_seen_ms, again.new.token_update_ms) == (
        100,
        200,
        100,
    )
    assert again.new.token_confirm_ms == 200


def test_versions_compare_numerically_with_prereleases_first():
    assert version_key("4.10") > version_key("4.9")
    assert version_key("4.0") == version_key("4")
    assert version_key("5.0-beta") < version_key("5.0")
    assert version_key("v5") is None
