"""Apps and client secrets through gRPC against a real redis-server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import duration_pb2, field_mask_pb2
from redis.asyncio import Redis

from herald.delivery.v1 import credentials_pb2, delivery_service_pb2, delivery_service_pb2_grpc
from herald.identity.v1 import app_pb2, identity_service_pb2
from herald.identity.v1 import identity_service_pb2_grpc as pb_grpc
from herald.type.v1 import platform_pb2
from services.core.status import parse_error
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from tests.integration.identity.conftest import create_app, redis_snapshot

pb = identity_service_pb2


async def _verify(identity, app_id: str, secret: str) -> pb.VerifyClientSecretResponse:
    return await identity.VerifyClientSecret(
        pb.VerifyClientSecretRequest(app_id=app_id, client_secret=secret)
    )


async def test_create_app_returns_the_secret_once_and_a_replay_returns_the_same_app(identity):
    request = pb.CreateAppRequest(
        app=app_pb2.App(display_name="Shop"), app_id="shop", request_id=str(uuid.uuid4())
    )
    first = await identity.CreateApp(request)
    replay = await identity.CreateApp(request)

    assert first.client_secret
    assert not first.replayed
    assert replay.replayed
    assert replay.client_secret == ""
    assert replay.app == first.app
    assert first.app.logout_policy == app_pb2.LOGOUT_POLICY_UNREGISTER
    assert first.app.default_time_zone == "UTC"
    assert first.app.HasField("client_secret_create_time")
    assert not first.app.HasField("previous_client_secret_expire_time")


async def test_a_generated_app_id_is_kept_by_the_replay(identity):
    request = pb.CreateAppRequest(app=app_pb2.App(display_name="Gen"), request_id="req-gen")
    first = await identity.CreateApp(request)
    replay = await identity.CreateApp(request)
    assert first.app.app_id.startswith("app-")
    assert replay.app.app_id == first.app.app_id


async def test_a_request_id_reused_for_another_request_is_rejected(identity):
    await identity.CreateApp(
        pb.CreateAppRequest(app=app_pb2.App(display_name="A"), app_id="app-a", request_id="r1")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.CreateApp(
            pb.CreateAppRequest(app=app_pb2.App(display_name="B"), app_id="app-b", request_id="r1")
        )
    details = parse_error(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "REQUEST_ID_MISMATCH"


async def test_a_taken_app_id_is_already_exists(identity):
    await create_app(identity, "shop")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create_app(identity, "shop")
    assert parse_error(caught.value).reason == "APP_ALREADY_EXISTS"
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_the_secret_is_not_stored_in_clear(identity, redis: Redis):
    _, secret = await create_app(identity)
    rotated = await identity.RotateClientSecret(pb.RotateClientSecretRequest(app_id="shop"))
    for presented in (secret, rotated.client_secret):
        async for key in redis.scan_iter(count=1000):
            kind = str(await redis.type(key))
            values: list[Any] = []
            if "hash" in kind:
                values = [*(await redis.hgetall(key)).values()]
            elif "string" in kind:
                values = [await redis.get(key)]
            elif "zset" in kind:
                values = list(await redis.zrange(key, 0, -1))
            assert all(presented.encode() not in value for value in values), key
            assert presented.encode() not in key


async def test_verify_client_secret_right_wrong_and_unknown_app(identity):
    _, secret = await create_app(identity)

    right = await _verify(identity, "shop", secret)
    wrong = await _verify(identity, "shop", secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    empty = await _verify(identity, "shop", "")
    assert (right.valid, right.match) == (True, pb.SECRET_MATCH_CURRENT)
    assert (wrong.valid, wrong.match) == (False, pb.SECRET_MATCH_NONE)
    assert not empty.valid

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _verify(identity, "nope", secret)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert parse_error(caught.value).reason == "APP_NOT_FOUND"


async def test_rotation_keeps_the_previous_secret_for_the_overlap_window_only(identity):
    _, first = await create_app(identity)
    rotated = await identity.RotateClientSecret(
        pb.RotateClientSecretRequest(
            app_id="shop", overlap=duration_pb2.Duration(nanos=700_000_000)
        )
    )
    second = rotated.client_secret
    assert second
    assert second != first
    assert rotated.app.HasField("previous_client_secret_expire_time")

    assert (await _verify(identity, "shop", second)).match == pb.SECRET_MATCH_CURRENT
    assert (await _verify(identity, "shop", first)).match == pb.SECRET_MATCH_PREVIOUS
    await asyncio.sleep(0.8)
    assert (await _verify(identity, "shop", first)).valid is False
    assert (await _verify(identity, "shop", second)).valid is True


async def test_a_second_rotation_drops_the_secret_before_the_previous_one(identity):
    _, first = await create_app(identity)
    second = (
        await identity.RotateClientSecret(pb.RotateClientSecretRequest(app_id="shop"))
    ).client_secret
    third = (
        await identity.RotateClientSecret(pb.RotateClientSecretRequest(app_id="shop"))
    ).client_secret
    assert (await _verify(identity, "shop", first)).valid is False
    assert (await _verify(identity, "shop", second)).match == pb.SECRET_MATCH_PREVIOUS
    assert (await _verify(identity, "shop", third)).match == pb.SECRET_MATCH_CURRENT


async def test_rotation_with_zero_overlap_revokes_the_old_secret_at_once(identity):
    _, first = await create_app(identity)
    rotated = await identity.RotateClientSecret(
        pb.RotateClientSecretRequest(app_id="shop", overlap=duration_pb2.Duration(seconds=0))
    )
    assert (await _verify(identity, "shop", first)).valid is False
    assert not rotated.app.HasField("previous_client_secret_expire_time")


@pytest.mark.parametrize("seconds", [-1, 31 * 24 * 3600])
async def test_rotation_rejects_a_negative_or_too_long_overlap(identity, redis, seconds):
    await create_app(identity)
    before = await redis_snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.RotateClientSecret(
            pb.RotateClientSecretRequest(
                app_id="shop", overlap=duration_pb2.Duration(seconds=seconds)
            )
        )
    details = parse_error(caught.value)
    assert details.reason == "INVALID_ARGUMENT"
    assert [field for field, _ in details.violations] == ["overlap"]
    assert await redis_snapshot(redis) == before


async def test_invalid_create_lists_every_violation_and_writes_nothing(identity, redis):
    before = await redis_snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.CreateApp(
            pb.CreateAppRequest(
                app=app_pb2.App(display_name="", default_time_zone="Mars/Olympus"),
                app_id="Bad_Id",
                request_id="",
            )
        )
    details = parse_error(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {field for field, _ in details.violations} == {
        "app_id",
        "request_id",
        "app.display_name",
        "app.default_time_zone",
    }
    assert await redis_snapshot(redis) == before


async def test_get_list_update_and_delete_apps(stack):
    # DeleteApp (force) purges the app's devices through Registration: both run here.
    identity = pb_grpc.IdentityServiceStub(stack["identity"])
    for app_id in ("app-c", "app-a", "app-b"):
        await create_app(identity, app_id, display_name=app_id.upper())
    page = await identity.ListApps(pb.ListAppsRequest(page_size=2))
    assert [app.app_id for app in page.apps] == ["app-a", "app-b"]
    rest = await identity.ListApps(pb.ListAppsRequest(page_size=2, page_token=page.next_page_token))
    assert [app.app_id for app in rest.apps] == ["app-c"]
    assert rest.next_page_token == ""

    updated = await identity.UpdateApp(
        pb.UpdateAppRequest(
            app=app_pb2.App(
                app_id="app-a",
                display_name="Renamed",
                logout_policy=app_pb2.LOGOUT_POLICY_KEEP_WITH_LAST_USER,
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["logout_policy"]),
        )
    )
    assert updated.app.display_name == "APP-A"
    assert updated.app.logout_policy == app_pb2.LOGOUT_POLICY_KEEP_WITH_LAST_USER
    fetched = await identity.GetApp(pb.GetAppRequest(app_id="app-a"))
    assert fetched.app == updated.app

    await identity.DeleteApp(pb.DeleteAppRequest(app_id="app-b", force=True))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.GetApp(pb.GetAppRequest(app_id="app-b"))
    assert parse_error(caught.value).reason == "APP_NOT_FOUND"
    listed = await identity.ListApps(pb.ListAppsRequest())
    assert [app.app_id for app in listed.apps] == ["app-a", "app-c"]


async def test_update_app_rejects_a_bad_mask_and_writes_nothing(identity, redis):
    await create_app(identity)
    before = await redis_snapshot(redis)
    for paths in ([], ["app_id"], ["display_name", "nickname"]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity.UpdateApp(
                pb.UpdateAppRequest(
                    app=app_pb2.App(app_id="shop", display_name="X"),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            )
        assert parse_error(caught.value).reason == "INVALID_UPDATE_MASK"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.UpdateApp(
            pb.UpdateAppRequest(
                app=app_pb2.App(app_id="ghost", display_name="X"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
    assert parse_error(caught.value).reason == "APP_NOT_FOUND"
    assert await redis_snapshot(redis) == before


async def test_a_foreign_page_token_is_rejected(identity):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.ListApps(pb.ListAppsRequest(page_token="not-a-token"))
    assert parse_error(caught.value).reason == "INVALID_PAGE_TOKEN"


def _apns_key(app_id: str, environment: int) -> credentials_pb2.Credentials:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return credentials_pb2.Credentials(
        app_id=app_id,
        apns_token=credentials_pb2.ApnsTokenAuth(
            private_key_pem=pem,
            key_id="ABCDE12345",
            team_id="TEAM123456",
            bundle_id="com.example.shop",
            environment=environment,  # type: ignore[arg-type]
        ),
    )


async def test_a_deleted_apps_credentials_go_with_it(stack):
    """Delivery keeps credentials by app id: an app created again with a deleted one's
    id must start without the old app's provider keys."""
    identity = pb_grpc.IdentityServiceStub(stack["identity"])
    delivery = delivery_service_pb2_grpc.DeliveryServiceStub(stack["delivery"])
    await create_app(identity, "shop")
    await create_app(identity, "news")
    for app_id, environment in (
        ("shop", platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT),
        ("shop", platform_pb2.APNS_ENVIRONMENT_PRODUCTION),
        ("news", platform_pb2.APNS_ENVIRONMENT_PRODUCTION),
    ):
        await delivery.PutCredentials(
            delivery_service_pb2.PutCredentialsRequest(credentials=_apns_key(app_id, environment))
        )

    await identity.DeleteApp(pb.DeleteAppRequest(app_id="shop", force=True))
    await create_app(identity, "shop")

    def listed(app_id: str) -> Any:
        return delivery.ListCredentials(delivery_service_pb2.ListCredentialsRequest(app_id=app_id))

    assert list((await listed("shop")).credentials) == []
    assert len((await listed("news")).credentials) == 1  # another app's are untouched


async def test_delete_app_with_delivery_down_fails_and_keeps_the_app(redis, start_services):
    servers = await start_services(IDENTITY_SPEC, REGISTRATION_SPEC)  # no Delivery answers
    async with grpc.aio.insecure_channel(f"127.0.0.1:{servers['identity'].port}") as channel:
        identity = pb_grpc.IdentityServiceStub(channel)
        await create_app(identity, "shop")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity.DeleteApp(pb.DeleteAppRequest(app_id="shop", force=True))
        kept = await identity.GetApp(pb.GetAppRequest(app_id="shop"))

    error = parse_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")
    assert error.metadata["service"] == "delivery"
    assert kept.app.app_id == "shop"  # retry later: nothing was half-deleted
