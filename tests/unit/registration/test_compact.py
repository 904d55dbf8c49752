"""The compact forms of device ids and FCM tokens round-trip exactly, and the record
format 2 keeps every token shape (APNs hex, FCM packed or text, Web Push)."""

from __future__ import annotations

import base64
import random
import uuid

import pytest

from services.registration import record
from services.registration.compact import (
    UUID_LOWER,
    UUID_UPPER,
    pack_device_id,
    pack_fcm,
    unpack_device_id,
    unpack_fcm,
)
from services.registration.model import (
    ANDROID,
    APNS,
    AUTHORIZED,
    FCM,
    IOS,
    WEB,
    WEB_PUSH,
    DeviceRecord,
    Token,
)
from services.registration.store import device_id_bytes
from services.registration.validation import MAX_ID

BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
UUID = "3f2b8c1e-9d4a-4e7b-8c6f-0a1b2c3d4e5f"


def _device_ids() -> list[str]:
    rng = random.Random(3)
    ids = [
        UUID,
        UUID.upper(),
        UUID[:8] + UUID[8:].upper(),  # mixed case: kept as text
        "imp-" + UUID,
        UUID + "-suffix",
        "é" * 46 + UUID,  # the prefix fills the 128-byte limit
        "x" * 92 + UUID,
        UUID + "€" * 30,
        "ü" * 64,
        "0" * 36,
        UUID.replace("-", ""),
        "a",
        "\x7f" + UUID,
        "日本" + UUID.upper() + "語",
        UUID + str(uuid.uuid4()).upper(),
    ]
    alphabet = "ab-09éü€📱" + "ABCDEF"
    for _ in range(2000):
        size = rng.randint(1, 40)
        text = "".join(rng.choice(alphabet) for _ in range(size))
        if rng.random() < 0.5:
            cut = rng.randint(0, len(text))
            made = str(uuid.UUID(int=rng.getrandbits(128)))
            text = text[:cut] + (made.upper() if rng.random() < 0.5 else made) + text[cut:]
        if len(text.encode()) <= MAX_ID:
            ids.append(text)
    return ids


DEVICE_IDS = _device_ids()


def test_every_device_id_shape_round_trips():
    for device_id in DEVICE_IDS:
        packed = pack_device_id(device_id)
        assert unpack_device_id(packed) == device_id
        assert device_id_bytes(packed) == device_id.encode()
        assert len(packed) <= len(device_id.encode())


def test_device_ids_with_a_uuid_take_16_bytes_for_it_and_others_stay_text():
    assert len(pack_device_id(UUID)) == 18
    assert len(pack_device_id("imp-" + UUID)) == 22
    assert pack_device_id(UUID.upper())[0] == UUID_UPPER
    assert pack_device_id(UUID)[0] == UUID_LOWER
    for text in ("ü" * 64, "0" * 36, UUID[:8] + UUID[8:].upper(), UUID.replace("-", "")):
        assert pack_device_id(text) == text.encode()


def test_distinct_device_ids_never_share_a_stored_form():
    # The token index scripts compare device ids by their stored bytes.
    forms = {pack_device_id(d) for d in set(DEVICE_IDS)}
    assert len(forms) == len(set(DEVICE_IDS))


def _fcm_tokens() -> list[str]:
    rng = random.Random(5)
    tokens = [
        "x",
        ":",
        ":::",
        "-_" * 512,
        "A" * 1024,
        base64.urlsafe_b64encode(bytes(range(16))).decode().rstrip("=") + ":APA91b" + "Zz9-_" * 27,
        "with.dot" * 10,
        "equals=" * 10,
    ]
    for size in range(1, 300):
        tokens.append("".join(rng.choice(BASE64URL + ":") for _ in range(size)))
    for size in (127, 128, 129, 255, 256, 1023, 1024):
        tokens.append("".join(rng.choice(BASE64URL) for _ in range(size)))
    return tokens


@pytest.mark.parametrize("size_group", range(4))
def test_every_fcm_token_shape_round_trips(size_group: int):
    for token in _fcm_tokens()[size_group::4]:
        packed = pack_fcm(token)
        if packed is not None:
            assert len(packed) < len(token)
            assert unpack_fcm(packed) == token


def test_fcm_tokens_outside_base64url_are_not_packed():
    assert pack_fcm("abc.def" * 20) is None
    assert pack_fcm("abc=" * 20) is None
    assert pack_fcm("ab cd" * 20) is None
    assert pack_fcm(":") is None  # packing would not be shorter


def _round_trip(token: Token, platform: int) -> Token | None:
    rec = DeviceRecord(
        platform,
        "14",
        AUTHORIZED,
        1_700_000_000_000,
        1_700_000_000_001,
        1_700_000_000_002,
        app_version="4.12.0",
        locale="fr-FR",
        time_zone="Europe/Paris",
        token=token,
        token_update_ms=1_700_000_000_003,
        token_confirm_ms=1_700_000_000_004,
    )
    again = record.unpack(record.pack(rec))
    assert again == rec
    return again.token


def test_records_keep_every_token_shape():
    for token in _fcm_tokens():
        assert _round_trip(Token(FCM, token), ANDROID) == Token(FCM, token)
    for digits in (64, 66, 200):
        hex_token = bytes(range(digits // 2)).hex()
        assert _round_trip(Token(APNS, hex_token), IOS) == Token(APNS, hex_token)
    web = Token(WEB_PUSH, "https://push.example.net/" + "p" * 2000, b"\x04" * 65, b"a" * 16)
    assert _round_trip(web, WEB) == web


def test_a_real_looking_fcm_record_is_smaller_than_with_the_text():
    token = (
        base64.urlsafe_b64encode(bytes(range(16))).decode().rstrip("=")
        + ":APA91b"
        + base64.urlsafe_b64encode(bytes(range(100))).decode().rstrip("=")
    )
    kind, stored = record.stored_token(Token(FCM, token))
    assert kind == record.FCM_PACKED
    assert len(stored) <= len(token) * 3 // 4 + 4


def test_a_record_of_another_version_is_refused():
    packed = record.pack(DeviceRecord(ANDROID, "14", AUTHORIZED, 1, 2, 3))
    assert packed[0] == record.VERSION == 2
    with pytest.raises(ValueError, match="version 1"):
        record.unpack(b"\x01" + packed[1:])
