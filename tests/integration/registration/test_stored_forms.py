"""The compact stored forms (record format 2, compact device ids, the token index in
parts) give back exactly what was registered, through every RPC that reads them."""

from __future__ import annotations

import base64
import os
import time
import uuid

import pytest

from herald.registration.v1 import device_pb2
from herald.registration.v1 import registration_service_pb2 as pb
from herald.type.v1 import platform_pb2, push_token_pb2
from services.registration.store import token_key
from services.registration.tokens import token_digest
from tests.integration.registration.conftest import (
    ANDROID,
    WEB,
    Stack,
    android,
    audience_ids,
    ios,
)
from tests.web_push_keys import p256dh

AUTHORIZED = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED
FULL = device_pb2.DEVICE_VIEW_FULL
UNCHANGED = pb.TOKEN_UPDATE_UNCHANGED
REMOVED = pb.INVALIDATION_OUTCOME_REMOVED


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def fcm(value: str) -> push_token_pb2.PushToken:
    return push_token_pb2.PushToken(fcm=push_token_pb2.FcmToken(registration_token=value))


def apns(value: str) -> push_token_pb2.PushToken:
    return push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token=value))


# Every shape a token can take, with the canonical form the API gives back.
FCM_SHAPES = {
    "real": b64(os.urandom(16)) + ":APA91b" + b64(os.urandom(100)),
    "one char": "x",
    "dash underscore": "-_" * 40,
    "every length mod 4: 61": b64(os.urandom(45))[:61],
    "every length mod 4: 62": b64(os.urandom(45))[:62],
    "every length mod 4: 63": b64(os.urandom(48))[:63],
    "every length mod 4: 64": b64(os.urandom(48)),
    "long part (varint of 2 bytes)": "a" + b64(os.urandom(300)),
    "colons at both ends": ":" + b64(os.urandom(30)) + ":",
    "many parts": ":".join(b64(os.urandom(n)) for n in (1, 2, 3, 4, 17, 0, 40)),
    "only colons": ":::",
    "at the 1,024 limit": b64(os.urandom(768)),
    "outside base64url stays text": b64(os.urandom(40)) + ".~%=!" + b64(os.urandom(20)),
}


@pytest.mark.parametrize("value", FCM_SHAPES.values(), ids=FCM_SHAPES.keys())
async def test_an_fcm_token_of_any_shape_comes_back_exactly(stack: Stack, value: str):
    first = await stack.registration.RegisterDevice(android("a", "14", fcm(value)))
    assert first.token_update == pb.TOKEN_UPDATE_NEW
    got = await stack.registration.GetDevice(
        pb.GetDeviceRequest(app_id="shop", device_id="a", view=FULL)
    )
    assert got.device.token.fcm.registration_token == value
    # The flush script compares the stored (packed) form with the call's.
    flush = await stack.registration.RegisterDevice(android("a", "14", fcm(value)))
    assert flush.token_update == UNCHANGED
    # The token index finds the device by the exact token, and only by it.
    other = value[:-1] + ("B" if value[-1] != "B" else "C")
    found = await stack.registration.InvalidateTokens(
        pb.InvalidateTokensRequest(
            invalidations=[invalidation(fcm(other)), invalidation(fcm(value))]
        )
    )
    assert [r.outcome for r in found.results] == [pb.INVALIDATION_OUTCOME_NOT_FOUND, REMOVED]
    assert found.results[1].device_id == "a"


@pytest.mark.parametrize(
    "given",
    [
        "a" * 64,
        "0123456789abcdef" * 4,
        "ABCDEF0123456789" * 12 + "abcd",  # 200 hex digits, the upper limit
    ],
)
async def test_an_apns_token_comes_back_in_lower_case_hex(stack: Stack, given: str):
    await stack.registration.RegisterDevice(ios("i", apns(given), authorization_status=AUTHORIZED))
    got = await stack.registration.GetDevice(
        pb.GetDeviceRequest(app_id="shop", device_id="i", view=FULL)
    )
    assert got.device.token.apns.device_token == given.lower()
    flush = await stack.registration.RegisterDevice(ios("i", apns(given)))
    assert flush.token_update == UNCHANGED


async def test_a_web_push_subscription_comes_back_exactly(stack: Stack):
    subscription = push_token_pb2.WebPushSubscription(
        endpoint="https://fcm.googleapis.com/fcm/send/"
        + b64(os.urandom(16))
        + ":APA91b"
        + "x" * 140,
        p256dh=b64(p256dh()),
        auth=b64(os.urandom(16)),
    )
    await stack.registration.RegisterDevice(
        pb.RegisterDeviceRequest(
            app_id="shop",
            device_id="w",
            platform=WEB,
            os_version="124",
            token=push_token_pb2.PushToken(web_push=subscription),
        )
    )
    got = await stack.registration.GetDevice(
        pb.GetDeviceRequest(app_id="shop", device_id="w", view=FULL)
    )
    assert got.device.token.web_push == subscription


UUID = "3f2b8c1e-9d4a-4e7b-8c6f-0a1b2c3d4e5f"
DEVICE_IDS = {
    "uuid": UUID,
    "upper-case uuid (identifierForVendor)": UUID.upper(),
    "mixed-case uuid stays text": UUID[:9] + UUID[9:].upper(),
    "nil uuid": "00000000-0000-0000-0000-000000000000",
    "prefix": "imp-" + UUID,
    "suffix": UUID + "#2",
    "two uuids": UUID + str(uuid.uuid4()).upper(),
    "multibyte prefix at the 128-byte limit": "é" * 46 + UUID,
    "multibyte suffix": UUID + "日本語",
    "128 bytes of multibyte text": "ü" * 64,
    "emoji": "📱" + UUID[:30],
    "uuid without dashes stays text": UUID.replace("-", ""),
    "one byte": "z",
}


async def test_device_ids_of_every_shape_are_kept_exactly(stack: Stack):
    tokens = {}
    for number, device_id in enumerate(DEVICE_IDS.values()):
        token = f"{number}" + b64(os.urandom(120))
        tokens[device_id] = token
        await stack.registration.RegisterDevice(
            android(device_id, "14", fcm(token), user_id="u", client_secret=stack.client_secret)
        )
    expected = sorted(DEVICE_IDS.values())
    listed = await stack.registration.ListDevices(
        pb.ListDevicesRequest(app_id="shop", page_size=100)
    )
    assert sorted(d.device_id for d in listed.devices) == expected
    assert sorted(await audience_ids(stack)) == expected
    users = await stack.registration.ListUserDevices(pb.ListUserDevicesRequest(user_id="u"))
    assert sorted(d.device_id for d in users.devices) == expected
    for device_id, token in tokens.items():
        got = await stack.registration.GetDevice(
            pb.GetDeviceRequest(app_id="shop", device_id=device_id, view=FULL)
        )
        assert got.device.device_id == device_id
        assert got.device.token.fcm.registration_token == token
    # The token index names each device by its compact id: every token finds its own.
    answer = await stack.registration.InvalidateTokens(
        pb.InvalidateTokensRequest(invalidations=[invalidation(fcm(t)) for t in tokens.values()])
    )
    assert [r.device_id for r in answer.results] == list(tokens)
    assert {r.outcome for r in answer.results} == {REMOVED}


async def test_a_token_moves_between_uuid_devices_imported_and_registered(stack: Stack):
    token = b64(os.urandom(16)) + ":APA91b" + b64(os.urandom(100))
    first, second = "imp-" + UUID, UUID.upper()

    async def messages():
        yield pb.ImportDevicesRequest(
            app_id="shop",
            devices=[pb.ImportedDevice(device_id=first, platform=ANDROID, os_version="14")],
        )

    imported = await stack.registration.ImportDevices(messages())
    assert imported.created_count == 1
    await stack.registration.RegisterDevice(android(first, "14", fcm(token)))
    await stack.registration.ImportDevices(_import(second, token))
    held_by_first = await stack.registration.GetDevice(
        pb.GetDeviceRequest(app_id="shop", device_id=first, view=FULL)
    )
    assert not held_by_first.device.HasField("token")
    # Importing the device that holds the token again is not a contest with itself.
    again = await stack.registration.ImportDevices(_import(second, token, app_version="2"))
    assert (again.updated_count, again.failed_count) == (1, 0)
    answer = await stack.registration.InvalidateTokens(
        pb.InvalidateTokensRequest(invalidations=[invalidation(fcm(token))])
    )
    assert (answer.results[0].outcome, answer.results[0].device_id) == (REMOVED, second)


async def test_token_index_parts_stay_compact_hashes(stack: Stack):
    tokens = [b64(os.urandom(16)) + ":APA91b" + b64(os.urandom(100)) for _ in range(200)]

    async def messages():
        yield pb.ImportDevicesRequest(
            app_id="shop",
            devices=[
                pb.ImportedDevice(
                    device_id="imp-" + str(uuid.uuid4()),
                    platform=ANDROID,
                    os_version="14",
                    token=fcm(token),
                )
                for token in tokens
            ],
        )

    assert (await stack.registration.ImportDevices(messages())).created_count == len(tokens)
    # Values of a claim stamp and a compact id stay under Redis' default 64-byte limit
    # of the compact encoding (ziplist on Redis 6, listpack on Redis 7).
    encodings = {
        await stack.redis.object("encoding", token_key("shop", token_digest("shop", token)))
        for token in tokens
    }
    assert encodings <= {b"ziplist", b"listpack"}


def _import(device_id: str, token: str, **fields):
    async def messages():
        yield pb.ImportDevicesRequest(
            app_id="shop",
            devices=[
                pb.ImportedDevice(
                    device_id=device_id,
                    platform=ANDROID,
                    os_version="14",
                    token=fcm(token),
                    **fields,
                )
            ],
        )

    return messages()


def invalidation(token: push_token_pb2.PushToken) -> pb.TokenInvalidation:
    stamp = pb.TokenInvalidation().provider_time
    stamp.FromMilliseconds(time.time_ns() // 1_000_000 + 1000)
    return pb.TokenInvalidation(
        app_id="shop",
        token=token,
        provider=platform_pb2.PROVIDER_FCM,
        provider_reason="UNREGISTERED",
        provider_time=stamp,
    )
