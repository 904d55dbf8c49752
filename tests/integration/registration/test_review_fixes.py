"""Through gRPC, against a real redis-server: the fixes of review issue 3."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from herald.identity.v1 import app_pb2, identity_service_pb2, user_pb2
from herald.registration.v1 import device_pb2
from herald.registration.v1 import registration_service_pb2 as pb
from herald.type.v1 import platform_pb2
from services.core.status import parse_error
from tests.integration.registration.conftest import (
    WEB,
    Stack,
    android,
    apns_token,
    fcm_token,
    ios,
    redis_snapshot,
    web_token,
)

AUTHORIZED = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED
PROVISIONAL = platform_pb2.AUTHORIZATION_STATUS_PROVISIONAL
DENIED = platform_pb2.AUTHORIZATION_STATUS_DENIED


def _ms(offset_ms: int = 0) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(time.time_ns() // 1_000_000 + offset_ms)
    return stamp


def _invalidation(token, provider, provider_time, reason="Unregistered") -> pb.TokenInvalidation:
    return pb.TokenInvalidation(
        app_id="shop",
        token=token,
        provider=provider,
        provider_reason=reason,
        provider_time=provider_time,
    )


async def _failure(call) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    details = parse_error(caught.value)
    return details.code, details.reason, list(details.violations)


async def _device(stack: Stack, device_id: str, app_id: str = "shop") -> device_pb2.Device:
    answer = await stack.registration.GetDevice(
        pb.GetDeviceRequest(app_id=app_id, device_id=device_id, view=device_pb2.DEVICE_VIEW_FULL)
    )
    return answer.device


# -- item 2: multibyte text -------------------------------------------------------------


async def test_a_multibyte_external_id_binds_and_lists_whole(stack: Stack):
    user = "é" * 150  # 300 bytes of UTF-8: over the limit in bytes, under it in characters
    await stack.registration.RegisterDevice(android("mb", "12", fcm_token()))
    code, reason, violations = await _failure(
        stack.registration.RegisterDevice(
            android("mb", "12", user_id=user, client_secret=stack.client_secret)
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert violations == [
        ("user_id", "must be at most 255 bytes in UTF-8, without control characters")
    ]
    code, _, violations = await _failure(
        stack.identity.ChangeUser(
            identity_service_pb2.ChangeUserRequest(
                app_id="shop",
                device_id="mb",
                external_id=user,
                client_secret=stack.client_secret,
                create_user=True,
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in violations] == ["external_id"]
    assert "255 bytes in UTF-8" in violations[0][1]

    fits = "é" * 127  # 254 bytes
    await stack.identity.ChangeUser(
        identity_service_pb2.ChangeUserRequest(
            app_id="shop",
            device_id="mb",
            external_id=fits,
            client_secret=stack.client_secret,
            create_user=True,
        )
    )
    assert (await _device(stack, "mb")).user_id == fits
    flushed = await stack.registration.RegisterDevice(
        android("mb", "12", user_id=fits, client_secret=stack.client_secret)
    )
    assert flushed.previous_user_id == ""  # the same user: nothing moved
    listed = await stack.registration.ListUserDevices(pb.ListUserDevicesRequest(user_id=fits))
    assert [d.device_id for d in listed.devices] == ["mb"]
    device_id = "ü" * 64  # 128 bytes
    await stack.registration.RegisterDevice(
        android(device_id, "12", fcm_token(), user_id=fits, client_secret=stack.client_secret)
    )
    log = await stack.registration.ListTokenChanges(pb.ListTokenChangesRequest(user_id=fits))
    assert {c.device_id for c in log.token_changes} == {"mb", device_id}


async def test_identity_passes_registration_field_violations_through(stack: Stack):
    code, reason, violations = await _failure(
        stack.identity.ChangeUser(
            identity_service_pb2.ChangeUserRequest(
                app_id="shop",
                device_id="d" * 129,
                external_id="kim",
                client_secret=stack.client_secret,
                create_user=True,
            )
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert [field for field, _ in violations] == ["device_id"]


# -- item 3: timestamps out of range ------------------------------------------------------


async def test_an_import_with_a_time_before_1970_writes_nothing_for_it(stack: Stack):
    await stack.registration.RegisterDevice(android("warm", "12", fcm_token()))
    before = await redis_snapshot(stack.redis)

    async def messages():
        yield pb.ImportDevicesRequest(
            app_id="shop",
            devices=[
                pb.ImportedDevice(
                    device_id="old",
                    platform=platform_pb2.PLATFORM_ANDROID,
                    os_version="12",
                    token=fcm_token(),
                    user_id="imported-user",
                    last_seen_time=timestamp_pb2.Timestamp(seconds=-100),
                ),
                pb.ImportedDevice(
                    device_id="future",
                    platform=platform_pb2.PLATFORM_ANDROID,
                    os_version="12",
                    token=fcm_token(),
                    last_seen_time=timestamp_pb2.Timestamp(seconds=10**12),
                ),
            ],
        )

    answer = await stack.registration.ImportDevices(messages())
    assert (answer.received_count, answer.failed_count, answer.created_count) == (2, 2, 0)
    assert [(e.index, e.error.field_violations[0].field) for e in answer.errors] == [
        (0, "last_seen_time"),
        (1, "last_seen_time"),
    ]
    assert await redis_snapshot(stack.redis) == before


async def test_a_bad_provider_time_is_an_item_error_and_never_removes(stack: Stack):
    token, other = fcm_token(), fcm_token()
    await stack.registration.RegisterDevice(android("ff", "12", token))
    await stack.registration.RegisterDevice(android("ok", "12", other))
    fcm = platform_pb2.PROVIDER_FCM
    answer = await stack.registration.InvalidateTokens(
        pb.InvalidateTokensRequest(
            invalidations=[
                _invalidation(token, fcm, timestamp_pb2.Timestamp(seconds=10**12)),
                _invalidation(token, fcm, _ms(2 * 3600 * 1000)),  # valid, but 2 h ahead
                _invalidation(token, fcm, timestamp_pb2.Timestamp(seconds=-5)),
                _invalidation(other, fcm, _ms(1000)),
            ]
        )
    )
    outcomes = [r.outcome for r in answer.results]
    assert outcomes == [pb.INVALIDATION_OUTCOME_ERROR] * 3 + [pb.INVALIDATION_OUTCOME_REMOVED]
    for result in answer.results[:3]:
        assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert [v.field for v in result.error.field_violations] == ["provider_time"]
    assert (await _device(stack, "ff")).HasField("token")
    assert not (await _device(stack, "ok")).HasField("token")


# -- item 4: Web denial through RegisterDevice -------------------------------------------


async def test_a_web_denial_through_register_device_removes_the_subscription(stack: Stack):
    request = pb.RegisterDeviceRequest(
        app_id="shop", device_id="w", platform=WEB, os_version="124", token=web_token()
    )
    await stack.registration.RegisterDevice(request)
    denied = await stack.registration.RegisterDevice(
        pb.RegisterDeviceRequest(
            app_id="shop",
            device_id="w",
            platform=WEB,
            os_version="124",
            authorization_status=DENIED,
        )
    )
    assert denied.device.capability == platform_pb2.PUSH_CAPABILITY_NONE
    assert not denied.device.redacted_token
    log = await stack.registration.ListTokenChanges(
        pb.ListTokenChangesRequest(app_id="shop", device_id="w")
    )
    assert (log.token_changes[0].kind, log.token_changes[0].reason) == (
        device_pb2.TOKEN_CHANGE_KIND_UNREGISTERED,
        "opt_out",
    )


# -- item 5: a deleted app's devices -----------------------------------------------------


async def _every_app_audience(stack: Stack) -> list[tuple[str, str]]:
    found = []
    async for answer in stack.registration.StreamAudience(
        pb.StreamAudienceRequest(query=pb.AudienceQuery())
    ):
        found += [(d.app_id, d.device_id) for d in answer.devices]
    return found


async def _create(stack: Stack, app_id: str) -> str:
    created = await stack.identity.CreateApp(
        identity_service_pb2.CreateAppRequest(
            app=app_pb2.App(display_name=app_id), app_id=app_id, request_id=str(uuid.uuid4())
        )
    )
    return created.client_secret


async def test_a_force_deleted_app_takes_its_devices_along(stack_with_delivery: Stack):
    stack = stack_with_delivery
    secret = await _create(stack, "old-app")
    await stack.registration.RegisterDevice(android("o1", "12", fcm_token(), app_id="old-app"))
    await stack.registration.RegisterDevice(
        android("o2", "12", fcm_token(), app_id="old-app", user_id="uma", client_secret=secret)
    )
    await stack.registration.RegisterDevice(android("s1", "12", fcm_token()))
    assert ("old-app", "o1") in await _every_app_audience(stack)
    code, reason, _ = await _failure(
        stack.identity.DeleteApp(identity_service_pb2.DeleteAppRequest(app_id="old-app"))
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "APP_HAS_DEVICES")
    await stack.identity.DeleteApp(
        identity_service_pb2.DeleteAppRequest(app_id="old-app", force=True)
    )
    assert await _every_app_audience(stack) == [("shop", "s1")]
    listed = await stack.registration.ListUserDevices(pb.ListUserDevicesRequest(user_id="uma"))
    assert list(listed.devices) == []
    await _create(stack, "old-app")  # the same id again: it starts empty
    again = await stack.registration.ListDevices(pb.ListDevicesRequest(app_id="old-app"))
    assert list(again.devices) == []
    count = await stack.registration.CountAudience(
        pb.CountAudienceRequest(query=pb.AudienceQuery(app_ids=["old-app"]))
    )
    assert count.device_count == 0


# -- item 6: a revoked secret stops at once ----------------------------------------------


async def test_a_secret_revoked_with_zero_overlap_stops_working_at_once(stack: Stack):
    old = stack.client_secret
    await stack.registration.RegisterDevice(
        android("s1", "12", fcm_token(), user_id="u1", client_secret=old)
    )
    rotated = await stack.identity.RotateClientSecret(
        identity_service_pb2.RotateClientSecretRequest(
            app_id="shop", overlap=duration_pb2.Duration(seconds=0)
        )
    )
    code, reason, _ = await _failure(
        stack.registration.RegisterDevice(
            android("s2", "12", fcm_token(), user_id="u2", client_secret=old)
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CLIENT_SECRET_INVALID")
    code, reason, _ = await _failure(
        stack.registration.RegisterDevice(android("s1", "12", user_id="u1", client_secret=old))
    )
    assert reason == "CLIENT_SECRET_INVALID"
    await stack.registration.RegisterDevice(
        android("s2", "12", fcm_token(), user_id="u2", client_secret=rotated.client_secret)
    )


# -- item 7: no token hijack on a bound device -------------------------------------------


async def test_a_new_token_on_a_bound_device_needs_the_secret(stack: Stack):
    mine = fcm_token()
    await stack.registration.RegisterDevice(
        android("victim", "12", mine, user_id="alice", client_secret=stack.client_secret)
    )
    before = await redis_snapshot(stack.redis)
    attacker = fcm_token()
    code, reason, _ = await _failure(
        stack.registration.RegisterDevice(android("victim", "12", attacker))
    )
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CLIENT_SECRET_REQUIRED")
    code, reason, _ = await _failure(
        stack.registration.RegisterDevice(
            android("victim", "12", attacker, client_secret="wrong-secret")
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CLIENT_SECRET_INVALID")
    code, reason, _ = await _failure(
        stack.registration.UpdatePermission(
            pb.UpdatePermissionRequest(
                app_id="shop",
                device_id="victim",
                authorization_status=AUTHORIZED,
                token=attacker,
            )
        )
    )
    assert reason == "CLIENT_SECRET_REQUIRED"
    assert await redis_snapshot(stack.redis) == before
    # A flush with the device's own token, or any change but the token, needs nothing.
    await stack.registration.RegisterDevice(android("victim", "12", mine, app_version="2"))
    rotated = await stack.registration.RegisterDevice(
        android("victim", "12", attacker, client_secret=stack.client_secret)
    )
    assert rotated.token_update == pb.TOKEN_UPDATE_ROTATED
    assert rotated.device.user_id == "alice"


# -- item 9: Web endpoints ---------------------------------------------------------------


# p256dh: 65 bytes starting 0x04 that are no P-256 point; no message could ever be
# encrypted to it, so the subscription is refused when it arrives.
OFF_CURVE = base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).decode().rstrip("=")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("endpoint", "https://push.example.net/a\nb"),
        ("endpoint", "https://user:pw@push.example.net/x"),
        ("endpoint", "https://push.example.net/é"),
        ("endpoint", "http://push.example.net/x"),
        ("endpoint", "https://[::1/push/x"),
        ("p256dh", OFF_CURVE),
    ],
)
async def test_bad_web_subscriptions_are_malformed_and_write_nothing(
    stack: Stack, field: str, value: str
):
    token = web_token()
    setattr(token.web_push, field, value)
    before = await redis_snapshot(stack.redis)
    code, reason, violations = await _failure(
        stack.registration.RegisterDevice(
            pb.RegisterDeviceRequest(
                app_id="shop", device_id="w", platform=WEB, os_version="124", token=token
            )
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TOKEN_MALFORMED")
    assert [name for name, _ in violations] == [f"token.web_push.{field}"]
    assert await redis_snapshot(stack.redis) == before


# -- item 12: invalidation outcomes per provider, MOVED through Identity -----------------


async def test_a_flush_with_the_same_token_after_the_provider_time_keeps_it(stack: Stack):
    token = fcm_token()
    await stack.registration.RegisterDevice(android("fl", "12", token))
    await asyncio.sleep(0.005)
    provider_time = _ms()
    await asyncio.sleep(0.005)
    await stack.registration.RegisterDevice(android("fl", "12", token))  # reinstall, same token
    answer = await stack.registration.InvalidateTokens(
        pb.InvalidateTokensRequest(
            invalidations=[_invalidation(token, platform_pb2.PROVIDER_FCM, provider_time)]
        )
    )
    assert answer.results[0].outcome == pb.INVALIDATION_OUTCOME_KEPT_REREGISTERED
    assert (await _device(stack, "fl")).HasField("token")


@pytest.mark.parametrize(
    ("make_token", "platform", "provider", "reason"),
    [
        (fcm_token, platform_pb2.PLATFORM_ANDROID, platform_pb2.PROVIDER_FCM, "UNREGISTERED"),
        (web_token, WEB, platform_pb2.PROVIDER_WEB_PUSH, "410 Gone"),
        (apns_token, platform_pb2.PLATFORM_IOS, platform_pb2.PROVIDER_APNS, "Unregistered"),
    ],
)
async def test_each_provider_removal_removes_the_token(
    stack: Stack, make_token, platform, provider, reason
):
    token = make_token()
    request = pb.RegisterDeviceRequest(
        app_id="shop",
        device_id="dead",
        platform=platform,
        os_version="124" if platform == WEB else "14",
        token=token,
        user_id="ivy",
        client_secret=stack.client_secret,
    )
    if platform == platform_pb2.PLATFORM_IOS:
        request.apns_environment = platform_pb2.APNS_ENVIRONMENT_PRODUCTION
    await stack.registration.RegisterDevice(request)
    answer = await stack.registration.InvalidateTokens(
        pb.InvalidateTokensRequest(
            invalidations=[_invalidation(token, provider, _ms(1000), reason)]
        )
    )
    result = answer.results[0]
    assert (result.outcome, result.device_id, result.user_id) == (
        pb.INVALIDATION_OUTCOME_REMOVED,
        "dead",
        "ivy",
    )
    device = await _device(stack, "dead")
    assert not device.HasField("token")
    assert device.user_id == "ivy"
    log = await stack.registration.ListTokenChanges(pb.ListTokenChangesRequest(user_id="ivy"))
    entry = log.token_changes[0]
    assert (entry.kind, entry.reason, entry.provider) == (
        device_pb2.TOKEN_CHANGE_KIND_INVALIDATED,
        reason,
        provider,
    )


async def test_change_user_through_identity_logs_moved(stack: Stack):
    token = fcm_token()
    await stack.registration.RegisterDevice(android("shared", "12", token))
    for user in ("ann", "ben"):
        await stack.identity.ChangeUser(
            identity_service_pb2.ChangeUserRequest(
                app_id="shop",
                device_id="shared",
                external_id=user,
                client_secret=stack.client_secret,
                create_user=True,
            )
        )
    log = await stack.registration.ListTokenChanges(pb.ListTokenChangesRequest(user_id="ann"))
    moved = log.token_changes[0]
    assert (moved.kind, moved.from_user_id, moved.to_user_id, moved.reason) == (
        device_pb2.TOKEN_CHANGE_KIND_MOVED,
        "ann",
        "ben",
        "login",
    )
    assert moved.redacted_token
    assert moved.redacted_token != token.fcm.registration_token
    assert token.fcm.registration_token not in str(log)
    assert moved.change_time.seconds > 0
    ann = await stack.registration.ListUserDevices(pb.ListUserDevicesRequest(user_id="ann"))
    assert list(ann.devices) == []


# -- item 13: BatchListUserDevices and the export that uses it ---------------------------


async def test_batch_list_user_devices_answers_each_user_in_order(stack: Stack):
    secret = stack.client_secret
    await stack.registration.RegisterDevice(
        ios(
            "p", apns_token(), user_id="pia", client_secret=secret, authorization_status=PROVISIONAL
        )
    )
    await stack.registration.RegisterDevice(
        android("q", "12", fcm_token(), user_id="quinn", client_secret=secret)
    )
    answer = await stack.registration.BatchListUserDevices(
        pb.BatchListUserDevicesRequest(user_ids=["quinn", "nobody", "pia"])
    )
    assert [(u.user_id, [d.device_id for d in u.devices]) for u in answer.users] == [
        ("quinn", ["q"]),
        ("nobody", []),
        ("pia", ["p"]),
    ]
    assert [u.push_enabled_any_app for u in answer.users] == [True, False, False]
    code, reason, _ = await _failure(
        stack.registration.BatchListUserDevices(
            pb.BatchListUserDevicesRequest(user_ids=[f"u{i}" for i in range(1001)])
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE")

    await stack.identity.UpsertUser(
        identity_service_pb2.UpsertUserRequest(user=user_pb2.User(external_id="pia"))
    )
    batches = [
        batch
        async for batch in stack.identity.ExportUsers(
            identity_service_pb2.ExportUsersRequest(
                selector=identity_service_pb2.ExportSelector(
                    identifiers=identity_service_pb2.UserIdentifierList(
                        identifiers=[user_pb2.UserIdentifier(external_id="pia")]
                    )
                )
            )
        )
    ]
    [token] = batches[0].users[0].push_tokens
    device = await _device(stack, "p")
    assert token.platform == platform_pb2.PLATFORM_IOS
    assert token.provisional
    assert token.capability == platform_pb2.PUSH_CAPABILITY_BACKGROUND
    assert token.last_seen_time == device.last_seen_time


async def test_an_imported_device_gets_no_registered_entry(stack: Stack):
    async def messages():
        yield pb.ImportDevicesRequest(
            app_id="shop",
            devices=[
                pb.ImportedDevice(
                    device_id="imp",
                    platform=platform_pb2.PLATFORM_ANDROID,
                    os_version="12",
                    token=fcm_token(),
                    user_id="ida",
                )
            ],
        )

    answer = await stack.registration.ImportDevices(messages())
    assert answer.created_count == 1
    log = await stack.registration.ListTokenChanges(
        pb.ListTokenChangesRequest(app_id="shop", device_id="imp")
    )
    # The previous provider's history is not ours: no REGISTERED, only the binding.
    assert [c.kind for c in log.token_changes] == [device_pb2.TOKEN_CHANGE_KIND_BOUND]
    by_user = await stack.registration.ListTokenChanges(pb.ListTokenChangesRequest(user_id="ida"))
    assert [c.kind for c in by_user.token_changes] == [device_pb2.TOKEN_CHANGE_KIND_BOUND]
