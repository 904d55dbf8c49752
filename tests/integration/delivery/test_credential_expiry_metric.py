"""herald_delivery_credentials_expiry_seconds covers every stored credential that
expires (APNs certificates), of every app, in every Delivery process: without a send,
after a restart, gone when the credential or its app is deleted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from herald.delivery.v1 import credentials_pb2
from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc
from herald.type.v1 import platform_pb2
from services.core.config import Settings
from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox import SandboxStack

from .conftest import DEV, PROD, apns_credentials
from .queue_helpers import DS, Node, node_starter, wait_for
from .test_metrics import samples, scrape

EXPIRY = "herald_delivery_credentials_expiry_seconds"
REFRESH = 0.1  # the tests' refresh interval (HERALD_DELIVERY_CREDENTIAL_EXPIRY_REFRESH_SECONDS)


@pytest.fixture
async def identity(start_services) -> AsyncIterator[Any]:
    """Identity (with the Registration and the Delivery it calls on DeleteApp, which
    removes the app's devices and credentials): Delivery asks it which apps still exist."""
    servers = await start_services(REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{servers['identity'].port}") as channel:
        stub: Any = identity_service_pb2_grpc.IdentityServiceStub(channel)
        stub.address = f"127.0.0.1:{servers['identity'].port}"
        yield stub


@pytest.fixture
async def start_node(start_service, delivery_settings: Settings, identity) -> AsyncIterator[Any]:
    """Delivery servers wired to the test's Identity, refreshing the gauge quickly."""
    wired = delivery_settings.model_copy(update={"identity_address": identity.address})
    opened: list[Node] = []
    starter = node_starter(start_service, wired, opened)
    yield lambda: starter(credential_expiry_refresh_seconds=REFRESH)
    for node in opened:
        await node.close()


async def create_app(identity: Any, app_id: str) -> None:
    await identity.CreateApp(
        identity_service_pb2.CreateAppRequest(
            app=app_pb2.App(display_name=app_id), app_id=app_id, request_id=str(uuid.uuid4())
        )
    )


def certificate(sandbox: SandboxStack, app_id: str) -> credentials_pb2.Credentials:
    """The sandbox's provider certificate (key and certificate PEM, like a .pem export)."""
    bundle = sandbox.credentials.apns_bundle_id
    combined = sandbox.apns_client_certificate(bundle).decode()
    start = combined.index("-----BEGIN CERTIFICATE-----")
    end = combined.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return credentials_pb2.Credentials(
        app_id=app_id,
        apns_certificate=credentials_pb2.ApnsCertificateAuth(
            pem=credentials_pb2.PemCertificate(
                certificate_pem=combined[start:end],
                private_key_pem=combined[:start] + combined[end:],
            ),
            bundle_id=bundle,
            environment=DEV,
        ),
    )


async def expiries(node: Node, **labels: str) -> list[float]:
    text = await asyncio.to_thread(scrape, node.server.runtime.metrics.port)
    return samples(text, EXPIRY, **labels)


async def wait_expiries(node: Node, count: int, **labels: str) -> list[float]:
    async def settled() -> bool:
        return len(await expiries(node, **labels)) == count

    await wait_for(settled, within=10)
    return await expiries(node, **labels)


CERT = {"app": "shop", "provider": "apns", "environment": "development"}


async def test_a_certificate_shows_without_a_send_after_a_restart_and_goes_when_deleted(
    start_node, identity, sandbox, redis
):
    await create_app(identity, "shop")
    first = await start_node()
    put = await first.stub.PutCredentials(
        DS.PutCredentialsRequest(credentials=certificate(sandbox, "shop"))
    )
    await first.stub.PutCredentials(
        DS.PutCredentialsRequest(credentials=apns_credentials(sandbox, PROD))  # a token key
    )
    expire = put.credentials.expire_time.seconds
    assert expire > time.time() + 86_400  # a freshly issued certificate

    # This process's own put shows at once, and only the certificate: a token key and
    # the sandbox's certificates never sent with are in nobody's cache.
    assert len(await expiries(first, app="shop")) == 1
    (shown,) = await expiries(first, **CERT)
    assert shown == pytest.approx(expire - time.time(), abs=5)
    assert first.servicer.dispatcher.credentials._entries == {}  # nothing was sent
    index = await redis.zrange("dlv:credexp", 0, -1, withscores=True)
    assert index == [(b"shop|apns:development", float(expire))]  # public metadata only

    # A process started afterwards (a restart) reads it from the index.
    second = await start_node()
    (restarted,) = await wait_expiries(second, 1, **CERT)
    assert restarted == pytest.approx(expire - time.time(), abs=5)

    await first.stub.DeleteCredentials(
        DS.DeleteCredentialsRequest(
            app_id="shop", provider=platform_pb2.PROVIDER_APNS, apns_environment=DEV
        )
    )
    assert await expiries(first, app="shop") == []  # at once where it was deleted
    assert await wait_expiries(second, 0, app="shop") == []  # at the next refresh elsewhere
    assert await redis.zrange("dlv:credexp", 0, -1) == []


async def test_a_certificate_replaced_by_a_token_key_or_of_a_deleted_app_leaves_the_gauge(
    start_node, identity, sandbox, redis
):
    await create_app(identity, "shop")
    await create_app(identity, "gone")
    node = await start_node()
    for app_id in ("shop", "gone"):
        await node.stub.PutCredentials(
            DS.PutCredentialsRequest(credentials=certificate(sandbox, app_id))
        )
    watcher = await start_node()
    assert len(await wait_expiries(watcher, 2, provider="apns")) == 2

    await node.stub.PutCredentials(  # the certificate's slot now holds a token key
        DS.PutCredentialsRequest(credentials=apns_credentials(sandbox, DEV))
    )
    await identity.DeleteApp(identity_service_pb2.DeleteAppRequest(app_id="gone", force=True))

    assert await wait_expiries(watcher, 0, provider="apns") == []
    assert await wait_expiries(node, 0, provider="apns") == []
    # DeleteApp removed the deleted app's credentials from Delivery, index entry too.
    assert await redis.zrange("dlv:credexp", 0, -1) == []
    # A certificate put afterwards for the app Identity no longer has is not reported.
    await node.stub.PutCredentials(
        DS.PutCredentialsRequest(credentials=certificate(sandbox, "gone"))
    )
    assert await redis.zrange("dlv:credexp", 0, -1) == [b"gone|apns:development"]
    await asyncio.sleep(REFRESH * 10)  # several refreshes: listed, but not reported
    assert await expiries(watcher, provider="apns") == []
    assert await expiries(node, provider="apns") == []


async def test_an_index_member_without_its_credential_is_pruned(start_node, sandbox, redis):
    """A crash between a delete's script and its index update leaves a stale member."""
    await redis.zadd("dlv:credexp", {"ghost|apns:production": time.time() + 3600})
    node = await start_node()

    async def pruned() -> bool:
        return await redis.zrange("dlv:credexp", 0, -1) == []

    await wait_for(pruned, within=10)
    assert await expiries(node, provider="apns") == []
