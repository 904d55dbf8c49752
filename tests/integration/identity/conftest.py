"""Fixtures for Identity tests: a real Identity server (alone or with Registration)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from redis.asyncio import Redis

from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc
from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC


@pytest.fixture
async def identity(
    redis: Redis, start_service
) -> AsyncIterator[identity_service_pb2_grpc.IdentityServiceAsyncStub]:
    """A stub on an Identity server of its own (no Registration behind it)."""
    server = await start_service(IDENTITY_SPEC)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield identity_service_pb2_grpc.IdentityServiceStub(channel)


@pytest.fixture
async def stack(redis: Redis, start_services) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """Identity, Registration and Delivery wired to each other (DeleteApp purges the
    app's devices in Registration and its credentials in Delivery); channels by name."""
    servers = await start_services(IDENTITY_SPEC, REGISTRATION_SPEC, DELIVERY_SPEC)
    channels = {
        name: grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        for name, server in servers.items()
    }
    yield channels
    for channel in channels.values():
        await channel.close(None)


async def create_app(
    identity: identity_service_pb2_grpc.IdentityServiceAsyncStub,
    app_id: str = "shop",
    display_name: str = "Shop",
    logout_policy: int = app_pb2.LOGOUT_POLICY_UNSPECIFIED,
) -> tuple[app_pb2.App, str]:
    """Creates an app; returns it with its client secret."""
    answer = await identity.CreateApp(
        identity_service_pb2.CreateAppRequest(
            app=app_pb2.App(display_name=display_name, logout_policy=logout_policy),  # type: ignore[arg-type]
            app_id=app_id,
            request_id=str(uuid.uuid4()),
        )
    )
    return answer.app, answer.client_secret


async def redis_snapshot(redis: Redis) -> dict[bytes, bytes | None]:
    """Every key with a dump of its value: equal snapshots mean nothing was written."""
    snapshot = {}
    async for key in redis.scan_iter(count=1000):
        snapshot[key] = await redis.dump(key)
    return snapshot
