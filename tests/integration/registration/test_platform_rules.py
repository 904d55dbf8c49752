"""Platform and permission rules, and permission changes taking effect immediately."""

from __future__ import annotations

import grpc
import pytest

from herald.registration.v1 import device_pb2
from herald.registration.v1 import registration_service_pb2 as pb
from herald.type.v1 import platform_pb2
from services.core.status import parse_error
from tests.integration.registration.conftest import (
    IOS,
    PRODUCTION,
    WEB,
    Stack,
    android,
    apns_token,
    audience_ids,
    fcm_token,
    ios,
    web_token,
)

FOREGROUND = platform_pb2.PUSH_CAPABILITY_FOREGROUND
BACKGROUND = platform_pb2.PUSH_CAPABILITY_BACKGROUND
NONE = platform_pb2.PUSH_CAPABILITY_NONE
NOT_DETERMINED = platform_pb2.AUTHORIZATION_STATUS_NOT_DETERMINED
DENIED = platform_pb2.AUTHORIZATION_STATUS_DENIED
PROVISIONAL = platform_pb2.AUTHORIZATION_STATUS_PROVISIONAL
AUTHORIZED = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED
FOREGROUND_ONLY = device_pb2.REACHABILITY_FOREGROUND
VISIBLE = device_pb2.REACHABILITY_VISIBLE


async def permission(stack: Stack, device_id: str, status: int, **fields):
    return await stack.registration.UpdatePermission(
        pb.UpdatePermissionRequest(
            app_id="shop",
            device_id=device_id,
            authorization_status=status,  # type: ignore[arg-type]
            **fields,
        )
    )


async def test_android_12_is_foreground_after_its_first_session(stack: Stack):
    answer = await stack.registration.RegisterDevice(android("a12", "12", fcm_token()))
    assert answer.device.authorization_status == AUTHORIZED
    assert answer.device.capability == FOREGROUND
    assert await audience_ids(stack, reachability=FOREGROUND_ONLY) == ["a12"]


async def test_android_13_is_background_until_permission_is_granted(stack: Stack):
    answer = await stack.registration.RegisterDevice(android("a13", "13", fcm_token()))
    assert answer.device.authorization_status == NOT_DETERMINED
    assert answer.device.capability == BACKGROUND
    assert await audience_ids(stack, reachability=FOREGROUND_ONLY) == []
    assert await audience_ids(stack) == ["a13"]  # background (silent) reachable

    granted = await permission(stack, "a13", AUTHORIZED)
    assert granted.previous_capability == BACKGROUND
    assert granted.device.capability == FOREGROUND
    assert await audience_ids(stack, reachability=FOREGROUND_ONLY) == ["a13"]

    await permission(stack, "a13", DENIED)
    assert await audience_ids(stack, reachability=FOREGROUND_ONLY) == []
    count = await stack.registration.CountAudience(
        pb.CountAudienceRequest(query=pb.AudienceQuery(app_ids=["shop"]))
    )
    assert count.device_count == 1  # still background reachable


async def test_ios_has_no_token_until_authorisation_then_is_foreground(stack: Stack):
    before = await stack.registration.RegisterDevice(ios("i1"))
    assert before.token_update == pb.TOKEN_UPDATE_ABSENT
    assert before.device.capability == NONE
    assert await audience_ids(stack) == []

    token = apns_token()
    after = await permission(stack, "i1", AUTHORIZED, token=token, apns_environment=PRODUCTION)
    assert after.previous_capability == NONE
    assert after.device.capability == FOREGROUND
    assert await audience_ids(stack, reachability=FOREGROUND_ONLY) == ["i1"]


async def test_ios_provisional_is_quiet_not_foreground(stack: Stack):
    answer = await stack.registration.RegisterDevice(
        ios("p1", apns_token(), authorization_status=PROVISIONAL)
    )
    assert answer.device.capability == BACKGROUND
    assert answer.device.provisional
    assert await audience_ids(stack, reachability=FOREGROUND_ONLY) == []
    assert await audience_ids(stack, reachability=VISIBLE) == ["p1"]

    full = await permission(stack, "p1", AUTHORIZED)
    assert full.device.capability == FOREGROUND
    assert not full.device.provisional
    changes = await stack.registration.ListTokenChanges(
        pb.ListTokenChangesRequest(app_id="shop", device_id="p1")
    )
    latest = changes.token_changes[0]
    assert latest.kind == device_pb2.TOKEN_CHANGE_KIND_PERMISSION_CHANGED
    assert latest.authorization_status == AUTHORIZED


async def test_ios_denial_leaves_the_token_background_only(stack: Stack):
    await stack.registration.RegisterDevice(
        ios("i2", apns_token(), authorization_status=AUTHORIZED)
    )
    denied = await permission(stack, "i2", DENIED)
    assert denied.device.capability == BACKGROUND
    assert denied.device.redacted_token
    assert await audience_ids(stack) == ["i2"]
    assert await audience_ids(stack, reachability=VISIBLE) == []


async def test_web_subscribes_only_on_opt_in_and_a_denial_removes_it(stack: Stack):
    none = await stack.registration.RegisterDevice(
        pb.RegisterDeviceRequest(app_id="shop", device_id="w1", platform=WEB, os_version="124")
    )
    assert none.device.capability == NONE
    opted_in = await permission(stack, "w1", AUTHORIZED, token=web_token())
    assert opted_in.device.capability == FOREGROUND
    assert await audience_ids(stack, reachability=FOREGROUND_ONLY) == ["w1"]

    denied = await permission(stack, "w1", DENIED)
    assert denied.device.capability == NONE
    assert denied.device.redacted_token == ""
    assert await audience_ids(stack) == []


async def test_a_web_subscription_with_a_denied_status_is_rejected(stack: Stack):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.registration.RegisterDevice(
            pb.RegisterDeviceRequest(
                app_id="shop",
                device_id="w2",
                platform=WEB,
                os_version="124",
                token=web_token(),
                authorization_status=DENIED,
            )
        )
    details = parse_error(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in details.violations] == ["authorization_status"]


async def test_update_permission_of_an_unknown_device_is_not_found(stack: Stack):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await permission(stack, "ghost", AUTHORIZED)
    assert parse_error(caught.value).reason == "DEVICE_NOT_FOUND"


async def test_list_user_devices_says_push_enabled_for_any_app(stack: Stack):
    secret = stack.client_secret
    await stack.registration.RegisterDevice(
        android("bg", "14", fcm_token(), user_id="bob", client_secret=secret)
    )
    listed = await stack.registration.ListUserDevices(pb.ListUserDevicesRequest(user_id="bob"))
    assert [d.device_id for d in listed.devices] == ["bg"]
    assert not listed.push_enabled_any_app

    await stack.registration.RegisterDevice(
        ios(
            "fg", apns_token(), authorization_status=AUTHORIZED, user_id="bob", client_secret=secret
        )
    )
    listed = await stack.registration.ListUserDevices(
        pb.ListUserDevicesRequest(user_id="bob", page_size=1)
    )
    assert [d.device_id for d in listed.devices] == ["bg"]
    assert listed.push_enabled_any_app
    second = await stack.registration.ListUserDevices(
        pb.ListUserDevicesRequest(user_id="bob", page_size=1, page_token=listed.next_page_token)
    )
    assert [d.device_id for d in second.devices] == ["fg"]
    assert second.devices[0].platform == IOS
    assert second.next_page_token == ""
