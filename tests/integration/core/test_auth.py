"""Callers with API keys: scopes, their own app only, admin and internal keys.

Identity and Registration run with `require_api_keys`; every refusal is checked to
change nothing.
"""

from __future__ import annotations

import contextlib
import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from herald.campaign.v1 import (
    campaign_pb2,
    campaign_service_pb2,
    campaign_service_pb2_grpc,
    push_message_pb2,
)
from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc, user_pb2
from herald.registration.v1 import (
    device_pb2,
    registration_service_pb2,
    registration_service_pb2_grpc,
)
from herald.type.v1 import platform_pb2, push_token_pb2
from services.campaign.spec import SPEC as CAMPAIGN
from services.core.auth import ADMIN_KEY_HEADER, API_KEY_HEADER, INTERNAL_KEY_HEADER
from services.core.status import parse_error
from services.identity.spec import SPEC as IDENTITY
from services.registration.spec import SPEC as REGISTRATION

ADMIN = "admin-" + "a" * 40
INTERNAL = "internal-" + "i" * 40
TOKEN = "ab" * 32


@pytest.fixture
async def secured(settings, start_services, redis):  # redis: a freshly emptied database
    secure = settings.model_copy(
        update={
            "require_api_keys": True,
            "admin_key": ADMIN,
            "internal_key": INTERNAL,
            "api_key_cache_seconds": 0.0,
        }
    )
    return await start_services(REGISTRATION, IDENTITY, base=secure)


def _admin() -> tuple[tuple[str, str]]:
    return ((ADMIN_KEY_HEADER, ADMIN),)


def _key(value: str) -> tuple[tuple[str, str]]:
    return ((API_KEY_HEADER, value),)


@pytest.fixture
async def world(secured):
    identity_channel = grpc.aio.insecure_channel(f"127.0.0.1:{secured['identity'].port}")
    registration_channel = grpc.aio.insecure_channel(f"127.0.0.1:{secured['registration'].port}")
    identity = identity_service_pb2_grpc.IdentityServiceStub(identity_channel)
    registration = registration_service_pb2_grpc.RegistrationServiceStub(registration_channel)
    secrets = {}
    keys = {}
    for app_id in ("shop", "news"):
        created = await identity.CreateApp(
            identity_service_pb2.CreateAppRequest(
                app_id=app_id, app=app_pb2.App(display_name=app_id), request_id=str(uuid.uuid4())
            ),
            metadata=_admin(),
        )
        secrets[app_id] = created.client_secret
        for scope in ("REGISTER", "FULL"):
            made = await identity.CreateApiKey(
                identity_service_pb2.CreateApiKeyRequest(
                    app_id=app_id,
                    api_key=app_pb2.ApiKey(
                        display_name=f"{app_id}-{scope.lower()}",
                        scope=app_pb2.ApiKeyScope.Value(f"API_KEY_SCOPE_{scope}"),
                    ),
                ),
                metadata=_admin(),
            )
            keys[(app_id, scope)] = (made.key, made.api_key.api_key_id)
    yield identity, registration, secrets, keys
    await identity_channel.close()
    await registration_channel.close()


def _register(
    app_id: str, device_id: str, **extra: str
) -> registration_service_pb2.RegisterDeviceRequest:
    return registration_service_pb2.RegisterDeviceRequest(
        app_id=app_id,
        device_id=device_id,
        platform=platform_pb2.PLATFORM_IOS,
        os_version="17.4",
        token=push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token=TOKEN)),
        authorization_status=platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED,
        apns_environment=platform_pb2.APNS_ENVIRONMENT_PRODUCTION,
        **extra,
    )


async def _refused(call, request, metadata=()):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, metadata=metadata)
    return parse_error(caught.value)


async def _device_exists(registration, app_id: str, device_id: str) -> bool:
    call = registration.GetDevice(
        registration_service_pb2.GetDeviceRequest(app_id=app_id, device_id=device_id),
        metadata=_admin(),
    )
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call
    code = await call.code()
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
    return code == grpc.StatusCode.OK


async def test_health_needs_no_key(secured):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured['registration'].port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_no_key_and_a_wrong_key_are_unauthenticated_and_change_nothing(world):
    _, registration, _, _ = world
    missing = await _refused(registration.RegisterDevice, _register("shop", "d1"))
    assert (missing.code, missing.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING")
    wrong = await _refused(registration.RegisterDevice, _register("shop", "d1"), _key("hk_nope"))
    assert wrong.code == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.reason == "API_KEY_INVALID"
    assert not await _device_exists(registration, "shop", "d1")


async def test_a_register_key_registers_but_cannot_read_the_apps_devices(world):
    _, registration, _, keys = world
    register_key = keys[("shop", "REGISTER")][0]
    answer = await registration.RegisterDevice(_register("shop", "d1"), metadata=_key(register_key))
    assert answer.device.device_id == "d1"
    refused = await _refused(
        registration.ListDevices,
        registration_service_pb2.ListDevicesRequest(app_id="shop"),
        _key(register_key),
    )
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.reason == "API_KEY_SCOPE_INSUFFICIENT"


async def test_a_key_reaches_only_its_own_apps_data(world):
    _, registration, _, keys = world
    shop_full = keys[("shop", "FULL")][0]
    refused = await _refused(registration.RegisterDevice, _register("news", "n1"), _key(shop_full))
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.reason == "APP_ACCESS_DENIED"
    assert not await _device_exists(registration, "news", "n1")
    listed = await registration.ListDevices(
        registration_service_pb2.ListDevicesRequest(
            app_id="shop", view=device_pb2.DEVICE_VIEW_BASIC
        ),
        metadata=_key(shop_full),
    )
    assert list(listed.devices) == []


async def test_app_keys_cannot_call_internal_or_admin_rpcs(world):
    identity, registration, _, keys = world
    shop_full = keys[("shop", "FULL")][0]
    internal = await _refused(
        registration.InvalidateTokens,
        registration_service_pb2.InvalidateTokensRequest(),
        _key(shop_full),
    )
    assert (internal.code, internal.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "API_KEY_SCOPE_INSUFFICIENT",
    )
    admin = await _refused(
        identity.CreateApp,
        identity_service_pb2.CreateAppRequest(
            app_id="mine", app=app_pb2.App(display_name="m"), request_id=str(uuid.uuid4())
        ),
        _key(shop_full),
    )
    assert (admin.code, admin.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_KEY_REQUIRED")
    wrong_admin = await _refused(
        identity.ListApps, identity_service_pb2.ListAppsRequest(), ((ADMIN_KEY_HEADER, "guess"),)
    )
    assert (wrong_admin.code, wrong_admin.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "ADMIN_KEY_INVALID",
    )


async def test_services_call_each_other_under_auth_with_the_internal_key(world):
    # RegisterDevice with a user id makes Registration ask Identity for the secret.
    _, registration, secrets, keys = world
    register_key = keys[("shop", "REGISTER")][0]
    request = _register("shop", "d2", user_id="alice", client_secret=secrets["shop"])
    answer = await registration.RegisterDevice(request, metadata=_key(register_key))
    assert answer.device.user_id == "alice"


async def test_a_revoked_key_stops_working(world):
    identity, registration, _, keys = world
    key, key_id = keys[("shop", "FULL")]
    await identity.RevokeApiKey(
        identity_service_pb2.RevokeApiKeyRequest(app_id="shop", api_key_id=key_id),
        metadata=_admin(),
    )
    refused = await _refused(
        registration.ListDevices,
        registration_service_pb2.ListDevicesRequest(app_id="shop"),
        _key(key),
    )
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_REVOKED")


async def test_a_streamed_request_naming_another_app_is_refused_and_writes_nothing(world, redis):
    _, registration, _, keys = world
    shop_full = keys[("shop", "FULL")][0]
    before = await redis.dbsize()

    async def messages():
        yield registration_service_pb2.ImportDevicesRequest(app_id="news")

    refused = await _refused(registration.ImportDevices, messages(), _key(shop_full))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "APP_ACCESS_DENIED",
    )
    assert await redis.dbsize() == before


async def test_reads_across_apps_show_an_app_key_only_its_own_apps_part(world):
    identity, registration, secrets, keys = world
    await identity.UpsertUser(
        identity_service_pb2.UpsertUserRequest(user=user_pb2.User(external_id="alice")),
        metadata=_admin(),
    )
    for app_id in ("shop", "news"):
        request = _register(
            app_id, f"{app_id}-phone", user_id="alice", client_secret=secrets[app_id]
        )
        await registration.RegisterDevice(request, metadata=_admin())
    shop_full = keys[("shop", "FULL")][0]

    devices = await registration.ListUserDevices(
        registration_service_pb2.ListUserDevicesRequest(user_id="alice"), metadata=_key(shop_full)
    )
    assert [d.app_id for d in devices.devices] == ["shop"]
    everything = await registration.ListUserDevices(
        registration_service_pb2.ListUserDevicesRequest(user_id="alice"), metadata=_admin()
    )
    assert sorted(d.app_id for d in everything.devices) == ["news", "shop"]

    changes = await registration.ListTokenChanges(
        registration_service_pb2.ListTokenChangesRequest(user_id="alice"), metadata=_key(shop_full)
    )
    assert changes.token_changes
    assert {c.app_id for c in changes.token_changes} == {"shop"}

    state = await identity.GetSubscriptionState(
        identity_service_pb2.GetSubscriptionStateRequest(
            identifier=user_pb2.UserIdentifier(external_id="alice")
        ),
        metadata=_key(shop_full),
    )
    assert [e.push_token.app_id for e in state.entries] == ["shop"]


async def test_a_resource_named_by_id_alone_is_held_to_the_keys_app(
    settings, start_services, redis
):
    secure = settings.model_copy(
        update={
            "require_api_keys": True,
            "admin_key": ADMIN,
            "internal_key": INTERNAL,
            "api_key_cache_seconds": 0.0,
        }
    )
    servers = await start_services(REGISTRATION, IDENTITY, CAMPAIGN, base=secure)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{servers['identity'].port}") as identity_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{servers['campaign'].port}") as campaign_channel,
    ):
        identity = identity_service_pb2_grpc.IdentityServiceStub(identity_channel)
        campaigns = campaign_service_pb2_grpc.CampaignServiceStub(campaign_channel)
        keys = {}
        for app_id in ("shop", "news"):
            await identity.CreateApp(
                identity_service_pb2.CreateAppRequest(
                    app_id=app_id,
                    app=app_pb2.App(display_name=app_id),
                    request_id=str(uuid.uuid4()),
                ),
                metadata=_admin(),
            )
            made = await identity.CreateApiKey(
                identity_service_pb2.CreateApiKeyRequest(
                    app_id=app_id,
                    api_key=app_pb2.ApiKey(
                        display_name="backend", scope=app_pb2.API_KEY_SCOPE_FULL
                    ),
                ),
                metadata=_admin(),
            )
            keys[app_id] = made.key
        created = await campaigns.CreateCampaign(
            campaign_service_pb2.CreateCampaignRequest(
                campaign=campaign_pb2.Campaign(
                    app_id="news",
                    display_name="Launch",
                    message=push_message_pb2.PushMessage(
                        content=push_message_pb2.Content(title="Hi", body="News")
                    ),
                ),
                request_id=str(uuid.uuid4()),
            ),
            metadata=_key(keys["news"]),
        )
        campaign_id = created.campaign.campaign_id
        own = await campaigns.GetCampaign(
            campaign_service_pb2.GetCampaignRequest(campaign_id=campaign_id),
            metadata=_key(keys["news"]),
        )
        assert own.campaign.app_id == "news"
        for rpc, request in (
            (
                campaigns.GetCampaign,
                campaign_service_pb2.GetCampaignRequest(campaign_id=campaign_id),
            ),
            (
                campaigns.DeleteCampaign,
                campaign_service_pb2.DeleteCampaignRequest(campaign_id=campaign_id),
            ),
        ):
            refused = await _refused(rpc, request, _key(keys["shop"]))
            assert (refused.code, refused.reason) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "APP_ACCESS_DENIED",
            )
        still = await campaigns.GetCampaign(
            campaign_service_pb2.GetCampaignRequest(campaign_id=campaign_id), metadata=_admin()
        )
        assert still.campaign.campaign_id == campaign_id


async def _audience(registration, metadata, **request) -> list[tuple[str, str]]:
    """(app, device) of everything a StreamAudience call streams."""
    found = []
    stream = registration.StreamAudience(
        registration_service_pb2.StreamAudienceRequest(**request), metadata=metadata
    )
    async for batch in stream:
        found += [(device.app_id, device.device_id) for device in batch.devices]
    return sorted(found)


async def test_audiences_of_other_apps_are_refused_and_every_app_means_its_own(world):
    """StreamAudience carries full tokens: another app's audience must be out of reach
    of an app key, by name (`app_ids`) and as "every app" (an empty list). (ExportUsers
    reads every app's users: it is the operator's, below.)"""
    _, registration, _, keys = world
    for app_id in ("shop", "news"):
        await registration.RegisterDevice(_register(app_id, f"{app_id}-1"), metadata=_admin())
    shop_full = _key(keys[("shop", "FULL")][0])
    audience = registration_service_pb2.AudienceQuery

    for named in (["news"], ["shop", "news"]):
        query = audience(app_ids=named)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _audience(registration, shop_full, query=query)
        refused = parse_error(caught.value)
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "APP_ACCESS_DENIED",
        ), named
        counted = await _refused(
            registration.CountAudience, registration_service_pb2.CountAudienceRequest(query=query),
            shop_full,
        )  # fmt: skip
        assert counted.reason == "APP_ACCESS_DENIED"

    # "Every app" (no app named, or no query at all) is every app for the operator and
    # the key's own app for an app key.
    assert await _audience(registration, _admin()) == [("news", "news-1"), ("shop", "shop-1")]
    assert await _audience(registration, shop_full) == [("shop", "shop-1")]
    assert await _audience(
        registration, shop_full, query=audience(platforms=[platform_pb2.PLATFORM_IOS])
    ) == [("shop", "shop-1")]
    own = await _audience(registration, shop_full, query=audience(app_ids=["shop"]))
    assert own == [("shop", "shop-1")]
    count = await registration.CountAudience(
        registration_service_pb2.CountAudienceRequest(), metadata=shop_full
    )
    assert count.device_count == 1


def _internal() -> tuple[tuple[str, str]]:
    return ((INTERNAL_KEY_HEADER, INTERNAL),)


def _everyone() -> identity_service_pb2.ExportUsersRequest:
    return identity_service_pb2.ExportUsersRequest(
        selector=identity_service_pb2.ExportSelector(segment=user_pb2.Segment())
    )


async def _exported(identity, request, metadata) -> list[user_pb2.ExportedUser]:
    return [user async for batch in identity.ExportUsers(request, metadata=metadata)
            for user in batch.users]  # fmt: skip


async def _bound_user(registration, app_id: str, device_id: str) -> str:
    answer = await registration.GetDevice(
        registration_service_pb2.GetDeviceRequest(app_id=app_id, device_id=device_id),
        metadata=_admin(),
    )
    return answer.device.user_id


async def _alice_in_both_apps(identity, registration, secrets) -> None:
    """alice, shared by the apps, with one phone in shop and one in news."""
    await identity.UpsertUser(
        identity_service_pb2.UpsertUserRequest(
            user=user_pb2.User(external_id="alice", email="alice@example.com")
        ),
        metadata=_admin(),
    )
    for app_id in ("shop", "news"):
        request = _register(
            app_id, f"{app_id}-phone", user_id="alice", client_secret=secrets[app_id]
        )
        await registration.RegisterDevice(request, metadata=_admin())


async def test_rpcs_on_the_whole_user_directory_need_the_admin_key_and_change_nothing(world, redis):
    """Users are shared by the apps: one app's key must not erase a user (which unbinds
    the user's devices in every app) nor read every user."""
    identity, registration, secrets, keys = world
    await _alice_in_both_apps(identity, registration, secrets)
    before = await redis.dbsize()

    for scope in ("FULL", "REGISTER"):
        shop_key = _key(keys[("shop", scope)][0])
        denials = [
            (
                "DeleteUser",
                await _refused(
                    identity.DeleteUser,
                    identity_service_pb2.DeleteUserRequest(external_id="alice"),
                    shop_key,
                ),
            ),
            (
                "ListUsers",
                await _refused(
                    identity.ListUsers, identity_service_pb2.ListUsersRequest(), shop_key
                ),
            ),
        ]
        # Every user, or every user with only the key's own app's tokens: both refused.
        for request in (_everyone(), identity_service_pb2.ExportUsersRequest(app_ids=["shop"])):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _exported(identity, request, shop_key)
            denials.append(("ExportUsers", parse_error(caught.value)))
        for rpc, refused in denials:
            assert (refused.code, refused.reason) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "ADMIN_KEY_REQUIRED",
            ), (scope, rpc)
            assert refused.metadata["rpc"] == rpc
            assert "user directory" in refused.message

    # Nothing changed: alice is whole, and bound to her phone in each app.
    assert await redis.dbsize() == before
    kept = await identity.GetUser(
        identity_service_pb2.GetUserRequest(external_id="alice"), metadata=_admin()
    )
    assert kept.user.email == "alice@example.com"
    assert await _bound_user(registration, "shop", "shop-phone") == "alice"
    assert await _bound_user(registration, "news", "news-phone") == "alice"

    # The operator (and Herald's own services) may.
    for metadata in (_admin(), _internal()):
        listed = await identity.ListUsers(
            identity_service_pb2.ListUsersRequest(), metadata=metadata
        )
        assert [u.external_id for u in listed.users] == ["alice"]
    [exported] = await _exported(identity, _everyone(), _admin())
    assert exported.user.external_id == "alice"
    assert sorted(t.app_id for t in exported.push_tokens) == ["news", "shop"]
    deleted = await identity.DeleteUser(
        identity_service_pb2.DeleteUserRequest(external_id="alice"), metadata=_admin()
    )
    assert (deleted.deleted, deleted.unbound_device_count) == (True, 2)
    assert await _bound_user(registration, "shop", "shop-phone") == ""
    assert await _bound_user(registration, "news", "news-phone") == ""


async def test_an_app_key_reads_and_writes_one_shared_user_by_id(world):
    identity, _, _, keys = world
    shop, news = _key(keys[("shop", "FULL")][0]), _key(keys[("news", "FULL")][0])
    upserted = await identity.UpsertUser(
        identity_service_pb2.UpsertUserRequest(
            user=user_pb2.User(external_id="bob", email="bob@example.com")
        ),
        metadata=shop,
    )
    assert upserted.created
    # The profile is the deployment's, not the app's: another app sees and edits it.
    seen = await identity.GetUser(
        identity_service_pb2.GetUserRequest(external_id="bob"), metadata=news
    )
    assert seen.user.email == "bob@example.com"
    found = await identity.LookupUser(
        identity_service_pb2.LookupUserRequest(
            identifier=user_pb2.UserIdentifier(email="bob@example.com")
        ),
        metadata=news,
    )
    assert found.user.external_id == "bob"
    updated = await identity.UpdateUser(
        identity_service_pb2.UpdateUserRequest(
            user=user_pb2.User(external_id="bob", locale="fr-FR"),
            update_mask=field_mask_pb2.FieldMask(paths=["locale"]),
        ),
        metadata=news,
    )
    assert updated.user.locale == "fr-FR"
    batch = await identity.BatchGetUsers(
        identity_service_pb2.BatchGetUsersRequest(external_ids=["bob", "nobody"]), metadata=shop
    )
    assert [(u.external_id, u.locale) for u in batch.users] == [("bob", "fr-FR")]
    assert list(batch.missing_external_ids) == ["nobody"]


async def test_subscription_state_for_an_app_key_is_its_own_apps_part(world):
    """Neither the other app's devices nor its push state reach an app key: "push
    enabled for any app" is read over the key's own app."""
    identity, registration, secrets, keys = world
    await identity.UpsertUser(
        identity_service_pb2.UpsertUserRequest(user=user_pb2.User(external_id="alice")),
        metadata=_admin(),
    )
    for app_id, status in (
        ("shop", platform_pb2.AUTHORIZATION_STATUS_PROVISIONAL),  # background only
        ("news", platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED),  # foreground
    ):
        request = _register(
            app_id, f"{app_id}-phone", user_id="alice", client_secret=secrets[app_id]
        )
        request.authorization_status = status
        await registration.RegisterDevice(request, metadata=_admin())

    async def state(metadata) -> identity_service_pb2.GetSubscriptionStateResponse:
        return await identity.GetSubscriptionState(
            identity_service_pb2.GetSubscriptionStateRequest(
                identifier=user_pb2.UserIdentifier(external_id="alice")
            ),
            metadata=metadata,
        )

    shop = await state(_key(keys[("shop", "FULL")][0]))
    assert [(e.label, e.push_token.device_id) for e in shop.entries] == [
        ("Background: shop", "shop-phone")
    ]
    assert not shop.push_enabled_any_app
    assert b"news" not in shop.SerializeToString()
    news = await state(_key(keys[("news", "FULL")][0]))
    assert [(e.label, e.push_token.device_id) for e in news.entries] == [
        ("Foreground: news", "news-phone")
    ]
    assert news.push_enabled_any_app
    operator = await state(_admin())
    assert sorted(e.push_token.device_id for e in operator.entries) == ["news-phone", "shop-phone"]
    assert operator.push_enabled_any_app

    # Registration's ListUserDevices answers the same flag, held the same way.
    async def listed(metadata) -> registration_service_pb2.ListUserDevicesResponse:
        return await registration.ListUserDevices(
            registration_service_pb2.ListUserDevicesRequest(user_id="alice"), metadata=metadata
        )

    shop_devices = await listed(_key(keys[("shop", "FULL")][0]))
    assert [d.device_id for d in shop_devices.devices] == ["shop-phone"]
    assert not shop_devices.push_enabled_any_app
    assert (await listed(_key(keys[("news", "FULL")][0]))).push_enabled_any_app
    assert (await listed(_admin())).push_enabled_any_app
