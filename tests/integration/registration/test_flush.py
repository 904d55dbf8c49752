"""Session-start flushes take one script call when nothing but last_seen changes; any
call that says something new still changes the device exactly as before."""

from __future__ import annotations

import asyncio

from herald.registration.v1 import device_pb2
from herald.registration.v1 import registration_service_pb2 as pb
from herald.type.v1 import platform_pb2
from tests.integration.registration.conftest import Stack, android, apns_token, fcm_token, ios

AUTHORIZED = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED
DENIED = platform_pb2.AUTHORIZATION_STATUS_DENIED
DEVELOPMENT = platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT
BACKGROUND = platform_pb2.PUSH_CAPABILITY_BACKGROUND


async def _kinds(stack: Stack, device_id: str) -> list[int]:
    changes = await stack.registration.ListTokenChanges(
        pb.ListTokenChangesRequest(app_id="shop", device_id=device_id)
    )
    return [c.kind for c in changes.token_changes]


async def _registered_then(stack: Stack, first: pb.RegisterDeviceRequest, second):
    before = await stack.registration.RegisterDevice(first)
    await asyncio.sleep(0.005)  # the clock is in milliseconds: last_seen must move
    after = await stack.registration.RegisterDevice(second)
    return before.device, after


async def test_a_flush_leaving_optional_fields_empty_keeps_them_and_changes_only_last_seen(
    stack: Stack,
):
    token = fcm_token()
    full = android("a1", "14", token, app_version="4.1", locale="fr-FR", time_zone="Europe/Paris")
    before, after = await _registered_then(stack, full, android("a1", "14", token))

    assert not after.created
    assert after.token_update == pb.TOKEN_UPDATE_UNCHANGED
    assert after.device.app_version == "4.1"
    assert after.device.locale == "fr-FR"
    assert after.device.time_zone == "Europe/Paris"
    assert after.device.update_time == before.update_time
    assert after.device.last_seen_time.ToMilliseconds() > before.last_seen_time.ToMilliseconds()
    assert await _kinds(stack, "a1") == [device_pb2.TOKEN_CHANGE_KIND_REGISTERED]


async def test_a_flush_without_a_token_keeps_the_token(stack: Stack):
    token = apns_token()
    before, after = await _registered_then(
        stack, ios("i1", token, authorization_status=AUTHORIZED), ios("i1")
    )
    assert after.token_update == pb.TOKEN_UPDATE_UNCHANGED
    assert after.device.redacted_token == before.redacted_token
    assert after.device.update_time == before.update_time


async def test_a_flush_with_a_new_app_version_updates_the_device(stack: Stack):
    token = fcm_token()
    before, after = await _registered_then(
        stack,
        android("a2", "14", token, app_version="4.1"),
        android("a2", "14", token, app_version="4.2"),
    )
    assert after.device.app_version == "4.2"
    assert after.device.update_time.ToMilliseconds() > before.update_time.ToMilliseconds()


async def test_a_flush_with_a_new_apns_environment_for_the_same_token_updates_it(stack: Stack):
    token = apns_token()
    second = ios("i2", token, authorization_status=AUTHORIZED)
    second.apns_environment = DEVELOPMENT
    before, after = await _registered_then(
        stack, ios("i2", token, authorization_status=AUTHORIZED), second
    )
    assert after.token_update == pb.TOKEN_UPDATE_UNCHANGED
    assert after.device.apns_environment == DEVELOPMENT
    assert after.device.update_time.ToMilliseconds() > before.update_time.ToMilliseconds()


async def test_a_flush_reporting_a_denial_changes_the_permission(stack: Stack):
    token = apns_token()
    _, after = await _registered_then(
        stack,
        ios("i3", token, authorization_status=AUTHORIZED),
        ios("i3", token, authorization_status=DENIED),
    )
    assert after.device.authorization_status == DENIED
    assert after.device.capability == BACKGROUND
    assert await _kinds(stack, "i3") == [
        device_pb2.TOKEN_CHANGE_KIND_PERMISSION_CHANGED,
        device_pb2.TOKEN_CHANGE_KIND_REGISTERED,
    ]


async def test_a_flush_on_another_platform_re_registers_the_device(stack: Stack):
    _, after = await _registered_then(
        stack, ios("x1", apns_token(), authorization_status=AUTHORIZED), android("x1", "14")
    )
    assert after.device.platform == platform_pb2.PLATFORM_ANDROID
    assert after.token_update == pb.TOKEN_UPDATE_ABSENT
    assert after.device.redacted_token == ""
