"""Delivery against the provider sandboxes over TLS and a real redis-server.

One sandbox stack per session (ephemeral ports), reset after each test; Delivery's
settings point every provider origin at it and trust its CA, nothing else changes.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from redis.asyncio import Redis

from herald.delivery.v1 import credentials_pb2, delivery_service_pb2_grpc, notification_pb2
from herald.type.v1 import platform_pb2, push_token_pb2
from services.core.config import Settings
from services.core.server import RunningServer
from services.delivery import credentials as creds
from services.delivery.circuit import CircuitBreakers
from services.delivery.dispatch import Dispatcher
from services.delivery.registration import RegistrationClient
from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.delivery.transport.pool import PoolOptions
from services.sandbox import SandboxStack

APP = "shop"
DEV = platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT
PROD = platform_pb2.APNS_ENVIRONMENT_PRODUCTION


@pytest.fixture(scope="session")
async def sandbox(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SandboxStack]:
    async with SandboxStack.start(tmp_path_factory.mktemp("sandbox"), ports=0) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _fresh_sandbox(sandbox: SandboxStack) -> Iterator[None]:
    yield
    sandbox.reset()


@pytest.fixture
def delivery_settings(settings: Settings, sandbox: SandboxStack) -> Settings:
    apns = f"https://127.0.0.1:{sandbox.apns_port}"
    return settings.model_copy(
        update={
            "apns_production_origin": apns,
            "apns_development_origin": apns,
            "fcm_origin": f"https://127.0.0.1:{sandbox.fcm_port}",
            "provider_ca_file": str(sandbox.ca_file),
            "delivery_port": 0,
        }
    )


@pytest.fixture
async def registration_channel() -> AsyncIterator[grpc.aio.Channel]:
    # Nothing listens here: invalidation answers UNAVAILABLE, which must not break a send.
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    yield channel
    await channel.close(None)


@pytest.fixture
async def dispatcher(
    delivery_settings: Settings, redis: Redis, registration_channel
) -> AsyncIterator[Dispatcher]:
    d = make_dispatcher(delivery_settings, redis, registration_channel)
    yield d
    await d.close()


def make_dispatcher(
    settings: Settings, redis: Redis, channel: grpc.aio.Channel, **kwargs: Any
) -> Dispatcher:
    quick = PoolOptions(max_connections=2, connect_timeout=2.0, reconnect_base_seconds=0.05)
    kwargs.setdefault("pool_options", {"apns": quick, "fcm": quick, "webpush": quick})
    kwargs.setdefault("circuit", CircuitBreakers(open_seconds=30.0))
    kwargs.setdefault("send_timeout", 3.0)
    return Dispatcher(settings, redis, RegistrationClient(lambda: channel, timeout=0.5), **kwargs)


# -- credentials ------------------------------------------------------------------------
def apns_credentials(
    sandbox: SandboxStack, environment: int = DEV, app_id: str = APP, **overrides: Any
) -> credentials_pb2.Credentials:
    demo = sandbox.credentials
    assert demo is not None
    auth = credentials_pb2.ApnsTokenAuth(
        private_key_pem=overrides.pop("private_key_pem", demo.apns_key_file.read_text()),
        key_id=overrides.pop("key_id", demo.apns_key_id),
        team_id=overrides.pop("team_id", demo.apns_team_id),
        bundle_id=overrides.pop("bundle_id", demo.apns_bundle_id),
        environment=environment,  # type: ignore[arg-type]
    )
    return credentials_pb2.Credentials(app_id=app_id, apns_token=auth)


def fcm_credentials(
    sandbox: SandboxStack, app_id: str = APP, **overrides: Any
) -> credentials_pb2.Credentials:
    demo = sandbox.credentials
    assert demo is not None
    info = json.loads(demo.fcm_service_account_file.read_text())
    info.update(overrides)
    return credentials_pb2.Credentials(
        app_id=app_id, fcm=credentials_pb2.FcmServiceAccount(service_account_json=json.dumps(info))
    )


def vapid_credentials(sandbox: SandboxStack, app_id: str = APP) -> credentials_pb2.Credentials:
    demo = sandbox.credentials
    assert demo is not None
    return credentials_pb2.Credentials(
        app_id=app_id,
        web_push=credentials_pb2.WebPushVapid(
            private_key=demo.vapid_private_key_file.read_text(), subject=demo.vapid_subject
        ),
    )


async def put(dispatcher: Dispatcher, message: credentials_pb2.Credentials) -> creds.Credential:
    stored, _ = await dispatcher.store.put(creds.validate(message))
    dispatcher.credentials.invalidate(stored.slot)
    return stored


# -- notifications ----------------------------------------------------------------------
def apns_notification(
    token: str, environment: int = DEV, **apns: Any
) -> notification_pb2.Notification:
    apns.setdefault("title", "Hello")
    apns.setdefault("body", "Bonjour")
    return notification_pb2.Notification(
        notification_id=str(uuid.uuid4()),
        app_id=APP,
        token=push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token=token)),
        apns_environment=environment,  # type: ignore[arg-type]
        apns=notification_pb2.ApnsPayload(**apns),
    )


def new_fcm_token() -> str:
    return os.urandom(16).hex() + ":APA91b" + os.urandom(60).hex()


def fcm_notification(token: str, **fcm: Any) -> notification_pb2.Notification:
    fcm.setdefault("title", "Hello")
    fcm.setdefault("body", "Hola")
    return notification_pb2.Notification(
        notification_id=str(uuid.uuid4()),
        app_id=APP,
        token=push_token_pb2.PushToken(fcm=push_token_pb2.FcmToken(registration_token=token)),
        fcm=notification_pb2.FcmPayload(**fcm),
    )


def webpush_notification(subscription: dict[str, Any], **web: Any) -> notification_pb2.Notification:
    web.setdefault("title", "Hello")
    web.setdefault("body", "Hallo")
    return notification_pb2.Notification(
        notification_id=str(uuid.uuid4()),
        app_id=APP,
        token=push_token_pb2.PushToken(
            web_push=push_token_pb2.WebPushSubscription(
                endpoint=subscription["endpoint"],
                p256dh=subscription["keys"]["p256dh"],
                auth=subscription["keys"]["auth"],
            )
        ),
        web_push=notification_pb2.WebPushPayload(**web),
    )


def seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(value * 1e9))
    return out


# -- the gRPC service -------------------------------------------------------------------
@pytest.fixture
async def delivery(
    start_service, delivery_settings: Settings, redis: Redis
) -> AsyncIterator[tuple[delivery_service_pb2_grpc.DeliveryServiceAsyncStub, RunningServer]]:
    server = await start_service(DELIVERY_SPEC, delivery_settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub: delivery_service_pb2_grpc.DeliveryServiceAsyncStub = (
        delivery_service_pb2_grpc.DeliveryServiceStub(channel)
    )
    yield stub, server
    await channel.close(None)


# -- the queue ----------------------------------------------------------------------------
@pytest.fixture
async def start_node(
    start_service, delivery_settings: Settings, redis: Redis
) -> AsyncIterator[Any]:
    """Starts Delivery servers (with their queue workers) on the test's Redis; several
    may run at once, like several processes of one deployment."""
    from .queue_helpers import node_starter

    opened: list[Any] = []
    yield node_starter(start_service, delivery_settings, opened)
    for node in opened:
        await node.close()
