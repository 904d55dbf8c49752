"""RegisterDevice: idempotent flushes, rotation, one subscription per device, secrets."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from herald.registration.v1 import device_pb2
from herald.registration.v1 import registration_service_pb2 as pb
from herald.type.v1 import platform_pb2
from services.core.status import parse_error
from tests.integration.registration.conftest import (
    Stack,
    android,
    apns_token,
    fcm_token,
    ios,
    redis_snapshot,
)

FOREGROUND = platform_pb2.PUSH_CAPABILITY_FOREGROUND
AUTHORIZED = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED


async def test_the_same_flush_twice_changes_only_last_seen(stack: Stack):
    token = apns_token()
    first = await stack.registration.RegisterDevice(
        ios("d1", token, authorization_status=AUTHORIZED, locale="fr-FR", app_version="4.1")
    )
    assert first.created
    assert first.token_update == pb.TOKEN_UPDATE_NEW
    assert first.device.capability == FOREGROUND
    await asyncio.sleep(0.005)  # the clock is in milliseconds: last_seen must move
    second = await stack.registration.RegisterDevice(
        ios("d1", token, authorization_status=AUTHORIZED, locale="fr-FR", app_version="4.1")
    )
    assert not second.created
    assert second.token_update == pb.TOKEN_UPDATE_UNCHANGED
    assert (
        second.device.last_seen_time.ToMilliseconds() > first.device.last_seen_time.ToMilliseconds()
    )
    for name in ("create_time", "update_time", "token_update_time"):
        assert getattr(second.device, name) == getattr(first.device, name), name
    first.device.ClearField("last_seen_time")
    second.device.ClearField("last_seen_time")
    assert first.device == second.device
    changes = await stack.registration.ListTokenChanges(
        pb.ListTokenChangesRequest(app_id="shop", device_id="d1")
    )
    assert [c.kind for c in changes.token_changes] == [device_pb2.TOKEN_CHANGE_KIND_REGISTERED]


async def test_a_new_token_rotates_and_the_old_one_no_longer_resolves(stack: Stack):
    old, new = fcm_token(), fcm_token()
    await stack.registration.RegisterDevice(android("a1", "12", old))
    rotated = await stack.registration.RegisterDevice(android("a1", "12", new))
    assert rotated.token_update == pb.TOKEN_UPDATE_ROTATED

    listed = await stack.registration.ListDevices(
        pb.ListDevicesRequest(app_id="shop", view=device_pb2.DEVICE_VIEW_FULL)
    )
    assert [d.token for d in listed.devices] == [new]
    answer = await stack.registration.InvalidateTokens(
        pb.InvalidateTokensRequest(
            invalidations=[
                pb.TokenInvalidation(
                    app_id="shop",
                    token=old,
                    provider=platform_pb2.PROVIDER_FCM,
                    provider_reason="UNREGISTERED",
                    provider_time=rotated.device.update_time,
                )
            ]
        )
    )
    assert answer.results[0].outcome == pb.INVALIDATION_OUTCOME_NOT_FOUND
    changes = await stack.registration.ListTokenChanges(
        pb.ListTokenChangesRequest(app_id="shop", device_id="a1")
    )
    assert changes.token_changes[0].kind == device_pb2.TOKEN_CHANGE_KIND_ROTATED
    assert changes.token_changes[0].previous_redacted_token
    assert old.fcm.registration_token not in str(changes)


async def test_a_token_registered_on_another_device_belongs_to_the_newest(stack: Stack):
    shared = fcm_token()
    await stack.registration.RegisterDevice(android("old-install", "14", shared))
    await stack.registration.RegisterDevice(android("new-install", "14", shared))
    full = device_pb2.DEVICE_VIEW_FULL
    old = await stack.registration.GetDevice(
        pb.GetDeviceRequest(app_id="shop", device_id="old-install", view=full)
    )
    new = await stack.registration.GetDevice(
        pb.GetDeviceRequest(app_id="shop", device_id="new-install", view=full)
    )
    assert not old.device.HasField("token")
    assert old.device.capability == platform_pb2.PUSH_CAPABILITY_NONE
    assert new.device.token == shared


async def test_binding_a_user_needs_the_client_secret(stack: Stack):
    before = await redis_snapshot(stack.redis)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stack.registration.RegisterDevice(ios("d1", apns_token(), user_id="alice"))
    details = parse_error(missing.value)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.reason == "CLIENT_SECRET_REQUIRED"

    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await stack.registration.RegisterDevice(
            ios("d1", apns_token(), user_id="alice", client_secret="not-the-secret")
        )
    details = parse_error(wrong.value)
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "CLIENT_SECRET_INVALID"
    assert await redis_snapshot(stack.redis) == before

    bound = await stack.registration.RegisterDevice(
        ios("d1", apns_token(), user_id="alice", client_secret=stack.client_secret)
    )
    assert bound.device.user_id == "alice"


async def test_anonymous_registration_needs_no_secret(stack: Stack):
    answer = await stack.registration.RegisterDevice(android("anon", "11", fcm_token()))
    assert answer.device.user_id == ""
    assert answer.device.capability == FOREGROUND


async def test_an_unknown_app_is_not_found_and_writes_nothing(stack: Stack):
    before = await redis_snapshot(stack.redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.registration.RegisterDevice(android("x", "14", fcm_token(), app_id="nope"))
    details = parse_error(caught.value)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "APP_NOT_FOUND"
    assert await redis_snapshot(stack.redis) == before
