"""Several users on one device, unregistering, and provider invalidations."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import timestamp_pb2

from herald.registration.v1 import device_pb2
from herald.registration.v1 import registration_service_pb2 as pb
from herald.type.v1 import platform_pb2
from services.core.status import parse_error
from tests.integration.registration.conftest import (
    Stack,
    apns_token,
    audience_ids,
    fcm_token,
    ios,
)

AUTHORIZED = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED
MOVED = device_pb2.TOKEN_CHANGE_KIND_MOVED


def at(ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def apns_invalidation(token, provider_ms: int, device_id: str = "") -> pb.TokenInvalidation:
    return pb.TokenInvalidation(
        app_id="shop",
        token=token,
        provider=platform_pb2.PROVIDER_APNS,
        provider_reason="Unregistered",
        provider_time=at(provider_ms),
        device_id=device_id,
    )


async def user_ids_of(stack: Stack, user_id: str) -> list[str]:
    listed = await stack.registration.ListUserDevices(pb.ListUserDevicesRequest(user_id=user_id))
    return [d.device_id for d in listed.devices]


async def test_change_user_moves_the_token_atomically_and_logs_it(stack: Stack):
    token = apns_token()
    secret = stack.client_secret
    await stack.registration.RegisterDevice(
        ios("shared", token, authorization_status=AUTHORIZED, user_id="alice", client_secret=secret)
    )
    moved = await stack.registration.RegisterDevice(
        ios("shared", token, user_id="bob", client_secret=secret)
    )
    assert moved.previous_user_id == "alice"
    assert moved.device.user_id == "bob"
    assert await user_ids_of(stack, "alice") == []
    assert await user_ids_of(stack, "bob") == ["shared"]
    assert await audience_ids(stack, user_ids=["alice"]) == []
    assert await audience_ids(stack, user_ids=["bob"]) == ["shared"]

    selectors: list[dict[str, str]] = [
        {"app_id": "shop", "device_id": "shared"},
        {"user_id": "alice"},
        {"user_id": "bob"},
    ]
    for selector in selectors:
        log = await stack.registration.ListTokenChanges(
            pb.ListTokenChangesRequest(kinds=[MOVED], **selector)  # type: ignore[arg-type]
        )
        [entry] = log.token_changes
        assert (entry.from_user_id, entry.to_user_id) == ("alice", "bob")
        assert entry.change_time.ToMilliseconds() > 0
        assert entry.redacted_token.startswith(token.apns.device_token[:4])
        assert token.apns.device_token not in entry.redacted_token

    # It stays with bob until someone else logs in: an anonymous flush keeps the binding.
    flushed = await stack.registration.RegisterDevice(ios("shared", token))
    assert flushed.device.user_id == "bob"


async def test_assign_device_user_is_a_compare_and_set(stack: Stack):
    await stack.registration.RegisterDevice(ios("d", apns_token()))
    bound = await stack.registration.AssignDeviceUser(
        pb.AssignDeviceUserRequest(
            app_id="shop", device_id="d", user_id="carol", expect_unbound=True
        )
    )
    assert bound.changed
    assert bound.device.user_id == "carol"
    again = await stack.registration.AssignDeviceUser(
        pb.AssignDeviceUserRequest(app_id="shop", device_id="d", user_id="carol")
    )
    assert not again.changed

    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stack.registration.AssignDeviceUser(
            pb.AssignDeviceUserRequest(
                app_id="shop", device_id="d", user_id="", expected_user_id="dave", reason="logout"
            )
        )
    details = parse_error(stale.value)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "DEVICE_USER_MISMATCH"

    unbound = await stack.registration.AssignDeviceUser(
        pb.AssignDeviceUserRequest(
            app_id="shop", device_id="d", user_id="", expected_user_id="carol", reason="logout"
        )
    )
    assert unbound.previous_user_id == "carol"
    assert unbound.device.user_id == ""
    assert unbound.device.redacted_token  # still registered, anonymously
    log = await stack.registration.ListTokenChanges(pb.ListTokenChangesRequest(user_id="carol"))
    assert [c.kind for c in log.token_changes] == [
        device_pb2.TOKEN_CHANGE_KIND_UNBOUND,
        device_pb2.TOKEN_CHANGE_KIND_BOUND,
    ]
    assert log.token_changes[0].reason == "logout"


async def test_unregister_removes_the_device_and_its_binding(stack: Stack):
    secret = stack.client_secret
    await stack.registration.RegisterDevice(
        ios("gone", apns_token(), user_id="erin", client_secret=secret)
    )
    answer = await stack.registration.UnregisterDevice(
        pb.UnregisterDeviceRequest(app_id="shop", device_id="gone", reason="user asked")
    )
    assert answer.removed
    assert answer.previous_user_id == "erin"
    assert await user_ids_of(stack, "erin") == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.registration.GetDevice(pb.GetDeviceRequest(app_id="shop", device_id="gone"))
    assert parse_error(caught.value).reason == "DEVICE_NOT_FOUND"
    log = await stack.registration.ListTokenChanges(pb.ListTokenChangesRequest(user_id="erin"))
    assert log.token_changes[0].kind == device_pb2.TOKEN_CHANGE_KIND_UNREGISTERED
    assert log.token_changes[0].reason == "user asked"

    again = await stack.registration.UnregisterDevice(
        pb.UnregisterDeviceRequest(app_id="shop", device_id="gone", allow_missing=True)
    )
    assert not again.removed


async def test_an_invalidation_older_than_the_reregistration_keeps_the_token(stack: Stack):
    token = apns_token()
    first = await stack.registration.RegisterDevice(
        ios("i", token, authorization_status=AUTHORIZED)
    )
    registered_ms = first.device.token_update_time.ToMilliseconds()
    answer = await stack.registration.InvalidateTokens(
        pb.InvalidateTokensRequest(invalidations=[apns_invalidation(token, registered_ms - 1)])
    )
    assert answer.results[0].outcome == pb.INVALIDATION_OUTCOME_KEPT_REREGISTERED
    assert answer.results[0].device_id == "i"
    assert await audience_ids(stack) == ["i"]


async def test_a_newer_invalidation_removes_the_token_and_a_reinstall_restores_it(stack: Stack):
    token = apns_token()
    secret = stack.client_secret
    first = await stack.registration.RegisterDevice(
        ios("i", token, authorization_status=AUTHORIZED, user_id="fay", client_secret=secret)
    )
    provider_ms = first.device.token_update_time.ToMilliseconds() + 1
    answer = await stack.registration.InvalidateTokens(
        pb.InvalidateTokensRequest(invalidations=[apns_invalidation(token, provider_ms)])
    )
    result = answer.results[0]
    assert result.outcome == pb.INVALIDATION_OUTCOME_REMOVED
    assert (result.device_id, result.user_id) == ("i", "fay")
    assert await audience_ids(stack) == []
    device = (
        await stack.registration.GetDevice(pb.GetDeviceRequest(app_id="shop", device_id="i"))
    ).device
    assert device.capability == platform_pb2.PUSH_CAPABILITY_NONE
    log = await stack.registration.ListTokenChanges(pb.ListTokenChangesRequest(user_id="fay"))
    invalidated = log.token_changes[0]
    assert invalidated.kind == device_pb2.TOKEN_CHANGE_KIND_INVALIDATED
    assert invalidated.reason == "Unregistered"
    assert invalidated.provider == platform_pb2.PROVIDER_APNS
    assert invalidated.provider_time.ToMilliseconds() == provider_ms

    again = await stack.registration.InvalidateTokens(
        pb.InvalidateTokensRequest(invalidations=[apns_invalidation(token, provider_ms)])
    )
    assert again.results[0].outcome == pb.INVALIDATION_OUTCOME_NOT_FOUND

    fresh = apns_token()
    # The device is still bound to fay: a new token on it needs the client secret.
    reinstalled = await stack.registration.RegisterDevice(
        ios("i", fresh, authorization_status=AUTHORIZED, client_secret=secret)
    )
    assert reinstalled.token_update == pb.TOKEN_UPDATE_NEW
    assert await audience_ids(stack) == ["i"]


async def test_invalidation_items_are_independent(stack: Stack):
    token = apns_token()
    await stack.registration.RegisterDevice(ios("i", token))
    bad = pb.TokenInvalidation(
        app_id="shop",
        token=fcm_token(),
        provider=platform_pb2.PROVIDER_APNS,
        provider_reason="Unregistered",
    )
    answer = await stack.registration.InvalidateTokens(
        pb.InvalidateTokensRequest(
            invalidations=[
                bad,
                apns_invalidation(token, time.time_ns() // 1_000_000 + 1000),
                apns_invalidation(apns_token(), 1),
            ]
        )
    )
    outcomes = [r.outcome for r in answer.results]
    assert outcomes == [
        pb.INVALIDATION_OUTCOME_ERROR,
        pb.INVALIDATION_OUTCOME_REMOVED,
        pb.INVALIDATION_OUTCOME_NOT_FOUND,
    ]
    error = answer.results[0].error
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert {v.field for v in error.field_violations} == {"provider", "provider_time"}

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.registration.InvalidateTokens(pb.InvalidateTokensRequest())
    assert parse_error(caught.value).reason == "BATCH_TOO_LARGE"
