"""One sandbox stack per test session on ephemeral loopback ports, reset between tests.

The clients are the real libraries, configured only with the address and the trust anchor.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import google.auth.transport.requests
import httpx
import jwt
import pytest
import requests
from aioapns import APNs
from aioapns.connection import (
    APNsDevelopmentClientProtocol,
    APNsKeyConnectionPool,
    AuthorizationHeaderProvider,
    JWTAuthorizationHeaderProvider,
)
from google.oauth2 import service_account

from services.sandbox import SandboxStack
from services.sandbox.pki import DEMO_BUNDLE_ID

TOPIC = DEMO_BUNDLE_ID


@pytest.fixture(scope="session")
async def sandbox(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SandboxStack]:
    async with SandboxStack.start(tmp_path_factory.mktemp("sandbox"), ports=0) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _fresh_sandbox(sandbox: SandboxStack) -> Iterator[None]:
    yield
    sandbox.reset()


@pytest.fixture(scope="session")
def ca_context(sandbox: SandboxStack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sandbox.ca_file))


@pytest.fixture(scope="session")
def apns_key(sandbox: SandboxStack) -> dict[str, str]:
    creds = sandbox.credentials
    return {
        "key": creds.apns_key_file.read_text(),
        "key_id": creds.apns_key_id,
        "team_id": creds.apns_team_id,
    }


class OldTokenProvider(AuthorizationHeaderProvider):
    """Signs a provider token issued two hours ago (APNs accepts one hour at most)."""

    def __init__(self, key: str, key_id: str, team_id: str) -> None:
        self.header = "bearer " + jwt.encode(
            {"iss": team_id, "iat": int(time.time()) - 7200},
            key,
            algorithm="ES256",
            headers={"kid": key_id},
        )

    def get_header(self) -> str:
        return self.header


class EagerTokenProvider(JWTAuthorizationHeaderProvider):
    """Mints a new provider token for every request (APNs allows one per 20 minutes)."""

    TOKEN_TTL = -1


class _SandboxKeyPool(APNsKeyConnectionPool):
    """aioapns' own pool, with a chosen provider-token signer. aioapns builds its signer
    inside create_connection, so choosing another one means overriding that method."""

    def __init__(self, provider: Callable[[], AuthorizationHeaderProvider], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._provider = provider

    async def create_connection(self) -> Any:
        protocol_class: Any = self.protocol_class  # aioapns' annotations are loose
        factory = partial(
            protocol_class,
            self.apns_topic,
            self.loop,
            self.discard_connection,
            self._provider(),
        )
        return await self._create_connection(factory)


@pytest.fixture
async def apns_client(
    sandbox: SandboxStack, ca_context: ssl.SSLContext, apns_key: dict[str, str]
) -> AsyncIterator[Callable[..., APNs]]:
    """Build aioapns clients aimed at the sandbox: its host/port are class attributes,
    so a subclass of its protocol carries the sandbox's address."""
    protocol = type(
        "SandboxAPNsProtocol",
        (APNsDevelopmentClientProtocol,),
        {"APNS_SERVER": "127.0.0.1", "APNS_PORT": sandbox.apns_port},
    )
    clients: list[APNs] = []

    def build(
        provider: Callable[..., AuthorizationHeaderProvider] | None = None,
        max_connections: int = 1,
        **overrides: str,
    ) -> APNs:
        creds = {**apns_key, **overrides}
        client = APNs(
            key=creds["key"],
            key_id=creds["key_id"],
            team_id=creds["team_id"],
            topic=TOPIC,
            use_sandbox=True,
            ssl_context=ca_context,
            max_connections=max_connections,
            max_connection_attempts=2,
        )
        if provider is not None:
            client.pool = _SandboxKeyPool(
                partial(provider, creds["key"], creds["key_id"], creds["team_id"]),
                key=creds["key"],
                key_id=creds["key_id"],
                team_id=creds["team_id"],
                topic=TOPIC,
                max_connections=max_connections,
                max_connection_attempts=2,
                use_sandbox=True,
                ssl_context=ca_context,
            )
        client.pool.protocol_class = protocol
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.pool.close()
    # Let the TLS connections finish closing before the next test (or the loop) ends.
    for _ in range(100):
        if not any(client.pool.connections for client in clients):
            break
        await asyncio.sleep(0.01)


SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def fcm_token() -> str:
    """A registration token shaped like a real one."""
    return f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(100)}"


def send_path(sandbox: SandboxStack) -> str:
    return f"/v1/projects/{sandbox.credentials.fcm_project_id}/messages:send"


async def fetch_access_token(credentials: service_account.Credentials, ca_file: str) -> str:
    """google-auth's own refresh, over requests (HTTP/1.1). It is synchronous, so it runs in
    a thread: the sandbox answering it lives on this test's event loop."""
    session = requests.Session()
    session.verify = ca_file
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment override
    # session.verify; the sandbox CA must win.
    session.trust_env = False
    try:
        await asyncio.to_thread(
            credentials.refresh, google.auth.transport.requests.Request(session)
        )
    finally:
        session.close()
    assert credentials.token is not None
    return str(credentials.token)


@pytest.fixture
async def access_token(sandbox: SandboxStack) -> str:
    credentials = service_account.Credentials.from_service_account_file(
        str(sandbox.credentials.fcm_service_account_file), scopes=[SCOPE]
    )
    return await fetch_access_token(credentials, str(sandbox.ca_file))


@pytest.fixture
async def fcm(sandbox: SandboxStack, ca_context: ssl.SSLContext, access_token: str):
    async with httpx.AsyncClient(
        http2=True,
        verify=ca_context,
        base_url=f"https://127.0.0.1:{sandbox.fcm_port}",
        headers={"authorization": f"Bearer {access_token}"},
        timeout=5,
    ) as client:
        yield client
