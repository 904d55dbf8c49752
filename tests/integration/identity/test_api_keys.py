"""API keys: shown once, stored as digests, verified, listed, revoked, expired."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import timestamp_pb2
from redis.asyncio import Redis

from herald.identity.v1 import app_pb2, identity_service_pb2
from herald.identity.v1 import identity_service_pb2_grpc as pb_grpc
from services.core.status import parse_error
from tests.integration.identity.conftest import create_app, redis_snapshot

pb = identity_service_pb2


async def _create_key(identity, name: str, scope=app_pb2.API_KEY_SCOPE_FULL, expire_time=None):
    return await identity.CreateApiKey(
        pb.CreateApiKeyRequest(
            app_id="shop",
            api_key=app_pb2.ApiKey(display_name=name, scope=scope, expire_time=expire_time),
        )
    )


async def _failure(call):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return parse_error(caught.value)


async def test_a_key_is_shown_once_verified_and_never_stored_in_clear(identity, redis: Redis):
    await create_app(identity)
    created = await _create_key(identity, "ios-gateway", app_pb2.API_KEY_SCOPE_REGISTER)
    assert created.key.startswith("hk_live_")
    assert created.api_key.key_prefix == created.key[:12]
    verified = await identity.VerifyApiKey(pb.VerifyApiKeyRequest(key=created.key))
    assert verified.api_key.app_id == "shop"
    assert verified.api_key.scope == app_pb2.API_KEY_SCOPE_REGISTER
    assert verified.api_key.HasField("last_use_time")
    async for key in redis.scan_iter(count=1000):
        assert created.key.encode() not in key
        assert created.key.encode() not in (await redis.dump(key) or b"")

    unknown = await _failure(identity.VerifyApiKey(pb.VerifyApiKeyRequest(key="hk_live_nope")))
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")


async def test_revoked_and_expired_keys_stop_working(identity):
    await create_app(identity)
    revoked = await _create_key(identity, "old")
    after = await identity.RevokeApiKey(
        pb.RevokeApiKeyRequest(app_id="shop", api_key_id=revoked.api_key.api_key_id)
    )
    assert after.api_key.HasField("revoke_time")
    again = await identity.RevokeApiKey(
        pb.RevokeApiKeyRequest(app_id="shop", api_key_id=revoked.api_key.api_key_id)
    )
    assert again.api_key.revoke_time == after.api_key.revoke_time
    failure = await _failure(identity.VerifyApiKey(pb.VerifyApiKeyRequest(key=revoked.key)))
    assert failure.reason == "API_KEY_REVOKED"

    soon = timestamp_pb2.Timestamp()
    soon.FromMicroseconds(int((time.time() + 0.3) * 1_000_000))
    expiring = await _create_key(identity, "short", expire_time=soon)
    await identity.VerifyApiKey(pb.VerifyApiKeyRequest(key=expiring.key))
    await asyncio.sleep(0.4)
    failure = await _failure(identity.VerifyApiKey(pb.VerifyApiKeyRequest(key=expiring.key)))
    assert failure.reason == "API_KEY_EXPIRED"

    missing = await _failure(
        identity.RevokeApiKey(pb.RevokeApiKeyRequest(app_id="shop", api_key_id="key-x"))
    )
    assert missing.reason == "API_KEY_NOT_FOUND"


async def test_keys_are_listed_newest_first_with_revoked_ones_on_request(identity):
    await create_app(identity)
    names = ["one", "two", "three"]
    created = [await _create_key(identity, name) for name in names]
    await identity.RevokeApiKey(
        pb.RevokeApiKeyRequest(app_id="shop", api_key_id=created[1].api_key.api_key_id)
    )

    active = await identity.ListApiKeys(pb.ListApiKeysRequest(app_id="shop"))
    assert [key.display_name for key in active.api_keys] == ["three", "one"]
    first = await identity.ListApiKeys(
        pb.ListApiKeysRequest(app_id="shop", show_revoked=True, page_size=2)
    )
    assert [key.display_name for key in first.api_keys] == ["three", "two"]
    rest = await identity.ListApiKeys(
        pb.ListApiKeysRequest(
            app_id="shop", show_revoked=True, page_size=2, page_token=first.next_page_token
        )
    )
    assert [key.display_name for key in rest.api_keys] == ["one"]
    assert rest.next_page_token == ""
    foreign = await _failure(
        identity.ListApiKeys(pb.ListApiKeysRequest(app_id="shop", page_token=first.next_page_token))
    )
    assert foreign.reason == "INVALID_PAGE_TOKEN"


async def test_bad_key_requests_write_nothing(identity, redis: Redis):
    await create_app(identity)
    before = await redis_snapshot(redis)
    past = timestamp_pb2.Timestamp(seconds=1)
    bad = await _failure(
        identity.CreateApiKey(
            pb.CreateApiKeyRequest(
                app_id="shop", api_key=app_pb2.ApiKey(display_name="", expire_time=past)
            )
        )
    )
    assert bad.reason == "INVALID_ARGUMENT"
    assert {field for field, _ in bad.violations} == {
        "api_key.display_name",
        "api_key.scope",
        "api_key.expire_time",
    }
    unknown = await _failure(
        identity.CreateApiKey(
            pb.CreateApiKeyRequest(
                app_id="ghost",
                api_key=app_pb2.ApiKey(display_name="k", scope=app_pb2.API_KEY_SCOPE_FULL),
            )
        )
    )
    assert unknown.reason == "APP_NOT_FOUND"
    assert await redis_snapshot(redis) == before


async def test_deleting_an_app_deletes_its_keys(stack, redis: Redis):
    identity = pb_grpc.IdentityServiceStub(stack["identity"])
    await create_app(identity)
    created = await _create_key(identity, "k")
    await identity.DeleteApp(pb.DeleteAppRequest(app_id="shop", force=True))
    failure = await _failure(identity.VerifyApiKey(pb.VerifyApiKeyRequest(key=created.key)))
    assert failure.reason == "API_KEY_INVALID"
    assert [key async for key in redis.scan_iter(match="idn:*")] == []
