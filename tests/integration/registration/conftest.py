"""Registration and Identity wired to each other on a real redis-server; helpers."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from redis.asyncio import Redis

from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc
from herald.registration.v1 import registration_service_pb2 as pb
from herald.registration.v1 import registration_service_pb2_grpc
from herald.type.v1 import platform_pb2, push_token_pb2
from services.core.server import ServiceSpec
from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from tests.web_push_keys import p256dh

IOS = platform_pb2.PLATFORM_IOS
ANDROID = platform_pb2.PLATFORM_ANDROID
WEB = platform_pb2.PLATFORM_WEB
PRODUCTION = platform_pb2.APNS_ENVIRONMENT_PRODUCTION


@dataclass
class Stack:
    registration: registration_service_pb2_grpc.RegistrationServiceAsyncStub
    identity: identity_service_pb2_grpc.IdentityServiceAsyncStub
    redis: Redis
    app_id: str
    client_secret: str


@pytest.fixture
async def stack(redis: Redis, start_services) -> AsyncIterator[Stack]:
    async for started in _stack(redis, start_services):
        yield started


@pytest.fixture
async def stack_with_delivery(redis: Redis, start_services) -> AsyncIterator[Stack]:
    """The stack with Delivery too: Identity's DeleteApp removes the app's credentials
    there."""
    async for started in _stack(redis, start_services, DELIVERY_SPEC):
        yield started


async def _stack(redis: Redis, start_services, *more: ServiceSpec) -> AsyncIterator[Stack]:
    servers = await start_services(REGISTRATION_SPEC, IDENTITY_SPEC, *more)
    registration_channel = grpc.aio.insecure_channel(f"127.0.0.1:{servers['registration'].port}")
    identity_channel = grpc.aio.insecure_channel(f"127.0.0.1:{servers['identity'].port}")
    identity: identity_service_pb2_grpc.IdentityServiceAsyncStub = (
        identity_service_pb2_grpc.IdentityServiceStub(identity_channel)
    )
    created = await identity.CreateApp(
        identity_service_pb2.CreateAppRequest(
            app=app_pb2.App(display_name="Shop"), app_id="shop", request_id=str(uuid.uuid4())
        )
    )
    registration: registration_service_pb2_grpc.RegistrationServiceAsyncStub = (
        registration_service_pb2_grpc.RegistrationServiceStub(registration_channel)
    )
    yield Stack(registration, identity, redis, "shop", created.client_secret)
    await registration_channel.close(None)
    await identity_channel.close(None)


def apns_token(seed: str = "") -> push_token_pb2.PushToken:
    raw = (seed.encode().hex() + os.urandom(32).hex())[:64] if seed else os.urandom(32).hex()
    return push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token=raw))


def fcm_token() -> push_token_pb2.PushToken:
    value = (
        base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        + ":APA91b"
        + (base64.urlsafe_b64encode(os.urandom(100)).decode().rstrip("="))
    )
    return push_token_pb2.PushToken(fcm=push_token_pb2.FcmToken(registration_token=value))


def web_token() -> push_token_pb2.PushToken:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return push_token_pb2.PushToken(
        web_push=push_token_pb2.WebPushSubscription(
            endpoint=f"https://push.example.net/send/{uuid.uuid4().hex}",
            p256dh=b64(p256dh()),
            auth=b64(os.urandom(16)),
        )
    )


def ios(device_id: str, token=None, **fields) -> pb.RegisterDeviceRequest:
    return pb.RegisterDeviceRequest(
        app_id=fields.pop("app_id", "shop"),
        device_id=device_id,
        platform=IOS,
        os_version=fields.pop("os_version", "17.4"),
        token=token,
        apns_environment=PRODUCTION if token is not None else 0,  # type: ignore[arg-type]
        **fields,
    )


def android(device_id: str, os_version: str, token=None, **fields) -> pb.RegisterDeviceRequest:
    return pb.RegisterDeviceRequest(
        app_id=fields.pop("app_id", "shop"),
        device_id=device_id,
        platform=ANDROID,
        os_version=os_version,
        token=token,
        **fields,
    )


async def redis_snapshot(redis: Redis) -> dict[bytes, bytes | None]:
    """Every key with a dump of its value: equal snapshots mean nothing was written."""
    snapshot = {}
    async for key in redis.scan_iter(count=1000):
        snapshot[key] = await redis.dump(key)
    return snapshot


async def audience_ids(stack: Stack, **query) -> list[str]:
    ids = []
    async for response in stack.registration.StreamAudience(
        pb.StreamAudienceRequest(query=pb.AudienceQuery(app_ids=["shop"], **query))
    ):
        ids += [d.device_id for d in response.devices]
    return ids
