"""Identity with Registration behind it: login/logout on devices, subscription state,
export, and deleting a user with devices. Both services run for real."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2
from redis.asyncio import Redis

from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc, user_pb2
from herald.registration.v1 import registration_service_pb2, registration_service_pb2_grpc
from herald.type.v1 import filter_pb2, platform_pb2, push_token_pb2
from services.core.status import parse_error
from tests.integration.identity.conftest import create_app, redis_snapshot

pb = identity_service_pb2
reg = registration_service_pb2
APNS_TOKEN = "a1b2c3d4" * 8
FCM_TOKEN = "fcm:APA91b" + "x" * 140


@pytest.fixture
def identity(stack) -> identity_service_pb2_grpc.IdentityServiceAsyncStub:
    return identity_service_pb2_grpc.IdentityServiceStub(stack["identity"])


@pytest.fixture
def registration(stack) -> registration_service_pb2_grpc.RegistrationServiceAsyncStub:
    return registration_service_pb2_grpc.RegistrationServiceStub(stack["registration"])


async def _android(
    registration, app_id: str, device_id: str, token: str = FCM_TOKEN, os_version: str = "12"
):
    return await registration.RegisterDevice(
        reg.RegisterDeviceRequest(
            app_id=app_id,
            device_id=device_id,
            platform=platform_pb2.PLATFORM_ANDROID,
            os_version=os_version,
            token=push_token_pb2.PushToken(fcm=push_token_pb2.FcmToken(registration_token=token)),
        )
    )


async def _ios(registration, app_id: str, device_id: str, status, token: str | None = APNS_TOKEN):
    request = reg.RegisterDeviceRequest(
        app_id=app_id,
        device_id=device_id,
        platform=platform_pb2.PLATFORM_IOS,
        os_version="17.4",
        authorization_status=status,
    )
    if token:
        request.token.apns.device_token = token
        request.apns_environment = platform_pb2.APNS_ENVIRONMENT_PRODUCTION
    return await registration.RegisterDevice(request)


async def _login(identity, app_id, device_id, external_id, secret, create_user=True):
    return await identity.ChangeUser(
        pb.ChangeUserRequest(
            app_id=app_id,
            device_id=device_id,
            external_id=external_id,
            client_secret=secret,
            create_user=create_user,
        )
    )


async def _bound_user(registration, app_id: str, device_id: str) -> str:
    answer = await registration.GetDevice(reg.GetDeviceRequest(app_id=app_id, device_id=device_id))
    return answer.device.user_id


async def _failure(call):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return parse_error(caught.value)


async def test_change_user_needs_the_right_secret_and_moves_the_device(
    identity, registration, redis: Redis
):
    _, secret = await create_app(identity)
    await _android(registration, "shop", "phone-1")
    before = await redis_snapshot(redis)

    missing = await _failure(_login(identity, "shop", "phone-1", "charlie", ""))
    assert (missing.code, missing.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CLIENT_SECRET_REQUIRED",
    )
    wrong = await _failure(_login(identity, "shop", "phone-1", "charlie", "not-the-secret"))
    assert (wrong.code, wrong.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CLIENT_SECRET_INVALID",
    )
    unknown_user = await _failure(
        _login(identity, "shop", "phone-1", "charlie", secret, create_user=False)
    )
    assert unknown_user.reason == "USER_NOT_FOUND"
    unknown_device = await _failure(_login(identity, "shop", "phone-9", "charlie", secret))
    assert unknown_device.reason == "DEVICE_NOT_FOUND"
    assert await redis_snapshot(redis) == before  # nothing changed, no user created

    charlie = await _login(identity, "shop", "phone-1", "charlie", secret)
    assert (charlie.previous_external_id, charlie.external_id, charlie.changed) == (
        "",
        "charlie",
        True,
    )
    again = await _login(identity, "shop", "phone-1", "charlie", secret)
    assert not again.changed
    kim = await _login(identity, "shop", "phone-1", "kim", secret)
    assert (kim.previous_external_id, kim.external_id, kim.changed) == ("charlie", "kim", True)

    assert await _bound_user(registration, "shop", "phone-1") == "kim"
    charlie_devices = await registration.ListUserDevices(
        reg.ListUserDevicesRequest(user_id="charlie")
    )
    assert list(charlie_devices.devices) == []
    assert (await identity.GetUser(pb.GetUserRequest(external_id="kim"))).user.external_id == "kim"


async def test_logout_unregisters_by_default_and_a_stale_logout_cannot_unbind_the_next_user(
    identity, registration
):
    _, secret = await create_app(identity)
    await _android(registration, "shop", "phone-1")
    await _login(identity, "shop", "phone-1", "kim", secret)

    stale = await _failure(
        identity.Logout(
            pb.LogoutRequest(
                app_id="shop", device_id="phone-1", client_secret=secret, external_id="charlie"
            )
        )
    )
    assert (stale.code, stale.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "DEVICE_USER_MISMATCH",
    )
    assert await _bound_user(registration, "shop", "phone-1") == "kim"
    wrong = await _failure(
        identity.Logout(pb.LogoutRequest(app_id="shop", device_id="phone-1", client_secret="nope"))
    )
    assert wrong.reason == "CLIENT_SECRET_INVALID"

    out = await identity.Logout(
        pb.LogoutRequest(
            app_id="shop", device_id="phone-1", client_secret=secret, external_id="kim"
        )
    )
    assert (out.previous_external_id, out.applied_policy, out.changed) == (
        "kim",
        app_pb2.LOGOUT_POLICY_UNREGISTER,
        True,
    )
    assert await _bound_user(registration, "shop", "phone-1") == ""
    repeated = await identity.Logout(
        pb.LogoutRequest(
            app_id="shop", device_id="phone-1", client_secret=secret, external_id="kim"
        )
    )
    assert (repeated.previous_external_id, repeated.changed) == ("", False)


async def test_logout_keeps_the_device_with_the_last_user_under_brazes_policy(
    identity, registration
):
    _, secret = await create_app(identity, logout_policy=app_pb2.LOGOUT_POLICY_KEEP_WITH_LAST_USER)
    await _android(registration, "shop", "phone-1")
    await _login(identity, "shop", "phone-1", "kim", secret)
    out = await identity.Logout(
        pb.LogoutRequest(app_id="shop", device_id="phone-1", client_secret=secret)
    )
    assert (out.previous_external_id, out.applied_policy, out.changed) == (
        "kim",
        app_pb2.LOGOUT_POLICY_KEEP_WITH_LAST_USER,
        False,
    )
    assert await _bound_user(registration, "shop", "phone-1") == "kim"


async def test_subscription_state_labels_every_device_of_the_user(identity, registration):
    _, shop_secret = await create_app(identity, "shop", "Shop")
    _, news_secret = await create_app(identity, "news", "News")
    _, gone_secret = await create_app(identity, "gone", "Gone")
    await identity.UpsertUser(
        pb.UpsertUserRequest(
            user=user_pb2.User(external_id="kim", email="kim@example.com", phone="+33612345678")
        )
    )
    await _android(registration, "shop", "android-12")
    await _ios(registration, "news", "iphone", platform_pb2.AUTHORIZATION_STATUS_PROVISIONAL)
    await _android(registration, "gone", "tablet", token=FCM_TOKEN + "t")
    await _login(identity, "shop", "android-12", "kim", shop_secret)
    await _login(identity, "news", "iphone", "kim", news_secret)
    await _login(identity, "gone", "tablet", "kim", gone_secret)
    await identity.DeleteApp(pb.DeleteAppRequest(app_id="gone", force=True))

    for identifier in (
        user_pb2.UserIdentifier(external_id="kim"),
        user_pb2.UserIdentifier(email="KIM@example.com"),
        user_pb2.UserIdentifier(phone="+33 6 12 34 56 78"),
    ):
        state = await identity.GetSubscriptionState(
            pb.GetSubscriptionStateRequest(identifier=identifier)
        )
        assert state.external_id == "kim"
        by_device = {entry.push_token.device_id: entry for entry in state.entries}
        assert by_device["android-12"].label == "Foreground: Shop"
        assert by_device["iphone"].label == "Background: News"
        assert by_device["iphone"].push_token.provisional
        # DeleteApp (force) purged the deleted app's devices through Registration.
        assert "tablet" not in by_device
        assert by_device["android-12"].push_token.platform == platform_pb2.PLATFORM_ANDROID
        assert by_device["android-12"].push_token.redacted_token
        assert FCM_TOKEN not in by_device["android-12"].push_token.redacted_token
        assert not by_device["android-12"].push_token.HasField("token")
        assert state.push_enabled_any_app

    missing = await _failure(
        identity.GetSubscriptionState(
            pb.GetSubscriptionStateRequest(
                identifier=user_pb2.UserIdentifier(email="x@example.com")
            )
        )
    )
    assert missing.reason == "USER_NOT_FOUND"


def _attributes(**values) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


async def _export(identity, **request) -> list[pb.ExportUsersResponse]:
    return [batch async for batch in identity.ExportUsers(pb.ExportUsersRequest(**request))]


async def _three_users(identity, registration) -> None:
    _, secret = await create_app(identity, "shop", "Shop")
    users = {"ana": "gold", "bob": "gold", "cy": "silver"}
    for external_id, plan in users.items():
        await identity.UpsertUser(
            pb.UpsertUserRequest(
                user=user_pb2.User(
                    external_id=external_id,
                    email=f"{external_id}@example.com",
                    attributes=_attributes(plan=plan),
                )
            )
        )
    await _android(registration, "shop", "ana-phone", token=FCM_TOKEN + "ana")
    await _android(registration, "shop", "cy-phone", token=FCM_TOKEN + "cy")
    await _login(identity, "shop", "ana-phone", "ana", secret)
    await _login(identity, "shop", "cy-phone", "cy", secret)


async def test_export_by_identifiers_redacts_tokens_unless_asked(identity, registration):
    await _three_users(identity, registration)
    selector = pb.ExportSelector(
        identifiers=pb.UserIdentifierList(
            identifiers=[
                user_pb2.UserIdentifier(external_id="ana"),
                user_pb2.UserIdentifier(email="nobody@example.com"),
                user_pb2.UserIdentifier(email="BOB@example.com"),
            ]
        )
    )
    [batch] = await _export(identity, selector=selector)
    assert [user.user.external_id for user in batch.users] == ["ana", "bob"]
    assert [item.email for item in batch.not_found] == ["nobody@example.com"]
    [token] = batch.users[0].push_tokens
    assert (token.app_id, token.app_name, token.device_id) == ("shop", "Shop", "ana-phone")
    assert token.capability == platform_pb2.PUSH_CAPABILITY_FOREGROUND
    assert token.platform == platform_pb2.PLATFORM_ANDROID
    assert not token.provisional
    seen = await registration.GetDevice(reg.GetDeviceRequest(app_id="shop", device_id="ana-phone"))
    assert token.last_seen_time == seen.device.last_seen_time
    assert token.last_seen_time.seconds > 0
    assert token.redacted_token
    assert not token.HasField("token")
    assert list(batch.users[1].push_tokens) == []

    [full] = await _export(identity, selector=selector, include_full_tokens=True)
    assert full.users[0].push_tokens[0].token.fcm.registration_token == FCM_TOKEN + "ana"

    first, second = await _export(identity, selector=selector, batch_size=2)
    assert [user.user.external_id for user in first.users] == ["ana"]
    assert [user.user.external_id for user in second.users] == ["bob"]
    resumed = await _export(identity, selector=selector, batch_size=2, cursor=first.cursor)
    assert [user.user.external_id for batch in resumed for user in batch.users] == ["bob"]


async def test_export_by_segment_filters_attributes_and_push(identity, registration):
    await _three_users(identity, registration)
    gold = filter_pb2.AttributeFilter(
        attribute="plan", equals=struct_pb2.Value(string_value="gold")
    )

    async def ids(segment: user_pb2.Segment, **request) -> list[str]:
        batches = await _export(identity, selector=pb.ExportSelector(segment=segment), **request)
        return sorted(user.user.external_id for batch in batches for user in batch.users)

    assert await ids(user_pb2.Segment(attribute_filters=[gold])) == ["ana", "bob"]
    enabled = user_pb2.PushEnabledCondition(app_id="shop", enabled=True)
    assert await ids(user_pb2.Segment(attribute_filters=[gold], push_enabled=enabled)) == ["ana"]
    disabled = user_pb2.PushEnabledCondition(enabled=False)
    assert await ids(user_pb2.Segment(attribute_filters=[gold], push_enabled=disabled)) == ["bob"]
    assert await ids(user_pb2.Segment()) == ["ana", "bob", "cy"]

    batches = await _export(
        identity, selector=pb.ExportSelector(segment=user_pb2.Segment()), batch_size=1
    )
    assert sum(len(batch.users) for batch in batches) == 3
    resumed = await _export(
        identity,
        selector=pb.ExportSelector(segment=user_pb2.Segment()),
        batch_size=1,
        cursor=batches[0].cursor,
    )
    assert sum(len(batch.users) for batch in resumed) == 2

    bad = await _failure(
        _export(
            identity,
            selector=pb.ExportSelector(segment=user_pb2.Segment()),
            cursor=batches[0].cursor + "x",
        )
    )
    assert bad.reason == "INVALID_CURSOR"


async def test_delete_user_unbinds_their_devices(identity, registration):
    _, secret = await create_app(identity)
    await _android(registration, "shop", "phone-1")
    await _login(identity, "shop", "phone-1", "kim", secret)
    deleted = await identity.DeleteUser(pb.DeleteUserRequest(external_id="kim"))
    assert (deleted.deleted, deleted.unbound_device_count) == (True, 1)
    assert await _bound_user(registration, "shop", "phone-1") == ""


async def test_an_app_with_devices_is_deleted_only_with_force(identity, registration):
    _, secret = await create_app(identity)
    await _android(registration, "shop", "phone-1")
    refused = await _failure(identity.DeleteApp(pb.DeleteAppRequest(app_id="shop")))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "APP_HAS_DEVICES",
    )
    assert (await identity.GetApp(pb.GetAppRequest(app_id="shop"))).app.app_id == "shop"
    unknown_app = await _failure(_login(identity, "ghost", "phone-1", "kim", secret))
    assert (unknown_app.code, unknown_app.reason) == (grpc.StatusCode.NOT_FOUND, "APP_NOT_FOUND")
    await identity.DeleteApp(pb.DeleteAppRequest(app_id="shop", force=True))
