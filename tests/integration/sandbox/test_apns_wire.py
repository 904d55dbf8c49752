"""The APNs sandbox on the wire: frames, SETTINGS and the checks aioapns cannot reach."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid

import h2.config
import h2.connection
import h2.events
import httpx
import jwt
import pytest

from services.sandbox import SandboxStack
from services.sandbox.apns import new_device_token
from services.sandbox.pki import new_apns_key

from .conftest import TOPIC


def provider_token(key: str, key_id: str, team_id: str, iat: int | None = None) -> str:
    claims = {"iss": team_id, "iat": int(time.time()) if iat is None else iat}
    return "bearer " + jwt.encode(claims, key, algorithm="ES256", headers={"kid": key_id})


class RawH2:
    """A bare h2 client over TLS without ALPN (as aioapns), recording every event."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.events: list[h2.events.Event] = []

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext) -> RawH2:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        client = cls(reader, writer)
        client.conn.initiate_connection()
        writer.write(client.conn.data_to_send())
        await client.read_until(lambda: client.remote_settings_seen)
        return client

    @property
    def remote_settings_seen(self) -> bool:
        return any(isinstance(e, h2.events.RemoteSettingsChanged) for e in self.events)

    async def read_until(self, condition) -> None:
        async with asyncio.timeout(5):
            while not condition():
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                self.events.extend(self.conn.receive_data(data))
                self.writer.write(self.conn.data_to_send())

    async def request(self, headers: list[tuple[str, str]], body: bytes) -> list[h2.events.Event]:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, body, end_stream=True)
        self.writer.write(self.conn.data_to_send())

        def ended() -> bool:
            return any(
                isinstance(e, h2.events.StreamEnded) and e.stream_id == stream_id
                for e in self.events
            )

        await self.read_until(ended)
        return [e for e in self.events if getattr(e, "stream_id", None) == stream_id]

    def close(self) -> None:
        self.writer.close()


def apns_headers(sandbox: SandboxStack, authorization: str, token: str, **extra: str):
    return [
        (":method", extra.pop("method", "POST")),
        (":scheme", "https"),
        (":path", extra.pop("path", f"/3/device/{token}")),
        (":authority", extra.pop("authority", "api.development.push.apple.com")),
        ("authorization", authorization),
        ("apns-topic", extra.pop("topic", TOPIC)),
        *extra.items(),
    ]


async def test_frames_and_stream_limit(sandbox, ca_context, apns_key):
    client = await RawH2.open(sandbox.apns_port, ca_context)
    try:
        assert client.conn.remote_settings.max_concurrent_streams == 1
        auth = provider_token(**apns_key)
        apns_id = str(uuid.uuid4())

        ok = await client.request(
            apns_headers(sandbox, auth, new_device_token(), **{"apns-id": apns_id}), b'{"aps":{}}'
        )
        gone_token = new_device_token()
        sandbox.apns.set_token(gone_token, "unregistered", unregistered_at_ms=1234)
        gone = await client.request(apns_headers(sandbox, auth, gone_token), b'{"aps":{}}')
        await client.read_until(lambda: client.conn.remote_settings.max_concurrent_streams > 1)
    finally:
        client.close()

    # 200: HEADERS only, apns-id echoed; no DATA frame.
    [response] = [e for e in ok if isinstance(e, h2.events.ResponseReceived)]
    assert (b":status", b"200") in response.headers
    assert (b"apns-id", apns_id.encode()) in response.headers
    assert not [e for e in ok if isinstance(e, h2.events.DataReceived)]
    # An error: HEADERS, then the whole JSON body in one DATA frame.
    [data] = [e for e in gone if isinstance(e, h2.events.DataReceived)]
    assert data.data == b'{"reason":"Unregistered","timestamp":1234}'
    assert client.conn.remote_settings.max_concurrent_streams == 1000


@pytest.fixture
async def apns_http(sandbox: SandboxStack, ca_context: ssl.SSLContext):
    async with httpx.AsyncClient(
        http2=True, verify=ca_context, base_url=f"https://127.0.0.1:{sandbox.apns_port}"
    ) as client:
        yield client


async def test_request_checks(sandbox, apns_http, apns_key):
    auth = provider_token(**apns_key)
    token = new_device_token()
    path = f"/3/device/{token}"
    base = {"authorization": auth, "apns-topic": TOPIC}
    cases = [
        ("GET", path, base, b"", 405, "MethodNotAllowed"),
        ("POST", "/3/devices/x", base, b"{}", 404, "BadPath"),
        ("POST", "/3/device/", base, b"{}", 400, "MissingDeviceToken"),
        ("POST", path, {"apns-topic": TOPIC}, b"{}", 403, "MissingProviderToken"),
        (
            "POST",
            path,
            {**base, "authorization": "bearer x.y.z"},
            b"{}",
            403,
            "InvalidProviderToken",
        ),
        ("POST", path, {"authorization": auth}, b"{}", 400, "MissingTopic"),
        ("POST", path, {**base, "apns-push-type": "fax"}, b"{}", 400, "InvalidPushType"),
        ("POST", path, {**base, "apns-topic": f"{TOPIC}.voip"}, b"{}", 400, "BadTopic"),
        ("POST", path, {**base, "apns-priority": "7"}, b"{}", 400, "BadPriority"),
        ("POST", path, {**base, "apns-expiration": "soon"}, b"{}", 400, "BadExpirationDate"),
        ("POST", path, base, b"", 400, "PayloadEmpty"),
    ]
    for method, url, headers, body, status, reason in cases:
        response = await apns_http.request(method, url, headers=headers, content=body)
        assert (response.status_code, response.json()["reason"]) == (status, reason), url
        assert uuid.UUID(response.headers["apns-id"])


async def test_provider_token_rules(sandbox, ca_context, apns_key):
    other_id, other_p8 = new_apns_key()
    sandbox.apns.register_key(other_id, "OTHERTEAM2", other_p8)
    client = await RawH2.open(sandbox.apns_port, ca_context)
    try:
        first = await client.request(
            apns_headers(sandbox, provider_token(**apns_key), new_device_token()), b"{}"
        )
        other_team = await client.request(
            apns_headers(
                sandbox,
                provider_token(other_p8.decode(), other_id, "OTHERTEAM2"),
                new_device_token(),
            ),
            b"{}",
        )
    finally:
        client.close()
    assert (b":status", b"200") in first[0].headers
    [data] = [e for e in other_team if isinstance(e, h2.events.DataReceived)]
    assert data.data == b'{"reason":"UnrelatedKeyIdInToken"}'


async def test_production_key_on_the_production_host(sandbox, apns_http):
    key_id, p8 = new_apns_key()
    sandbox.apns.register_key(key_id, "PRODTEAM01", p8, environment="production")
    token = new_device_token()
    sandbox.apns.set_token(token, environment="development")
    auth = provider_token(p8.decode(), key_id, "PRODTEAM01")
    headers = {"authorization": auth, "apns-topic": TOPIC, "host": "api.push.apple.com"}

    accepted = await apns_http.post(
        f"/3/device/{new_device_token()}", headers=headers, content=b"{}"
    )
    sandbox_token = await apns_http.post(f"/3/device/{token}", headers=headers, content=b"{}")
    development = await apns_http.post(
        f"/3/device/{new_device_token()}",
        headers={**headers, "host": "api.sandbox.push.apple.com"},
        content=b"{}",
    )

    assert accepted.status_code == 200
    assert "apns-unique-id" not in accepted.headers  # development only
    assert sandbox_token.json() == {"reason": "BadDeviceToken"}
    assert development.json() == {"reason": "BadEnvironmentKeyIdInToken"}


async def test_http11_is_refused(sandbox, ca_context):
    async with httpx.AsyncClient(verify=ca_context) as http11:
        with pytest.raises(httpx.HTTPError):
            await http11.post(f"https://127.0.0.1:{sandbox.apns_port}/3/device/00", content=b"{}")


async def test_certificate_environment_and_default_topic(sandbox, tmp_path):
    cert_file = tmp_path / "dev-push.pem"
    cert_file.write_bytes(sandbox.apns_client_certificate(TOPIC, environment="development"))
    context = ssl.create_default_context(cafile=str(sandbox.ca_file))
    context.load_cert_chain(str(cert_file))
    async with httpx.AsyncClient(
        http2=True, verify=context, base_url=f"https://127.0.0.1:{sandbox.apns_port}"
    ) as client:
        no_topic = await client.post(f"/3/device/{new_device_token()}", content=b"{}")
        production = await client.post(
            f"/3/device/{new_device_token()}",
            content=b"{}",
            headers={"host": "api.push.apple.com"},
        )
    assert no_topic.status_code == 200  # the certificate's bundle id is the default topic
    assert production.json() == {"reason": "BadCertificateEnvironment"}


async def test_duplicate_headers_and_topics_the_key_may_not_use(sandbox, ca_context):
    key_id, p8 = new_apns_key()
    sandbox.apns.register_key(key_id, "TOPICTEAM1", p8, topics=[TOPIC])
    auth = provider_token(p8.decode(), key_id, "TOPICTEAM1")
    client = await RawH2.open(sandbox.apns_port, ca_context)
    try:
        duplicated = await client.request(
            [*apns_headers(sandbox, auth, new_device_token()), ("apns-topic", TOPIC)], b"{}"
        )
        disallowed = await client.request(
            apns_headers(sandbox, auth, new_device_token(), topic="com.example.other"), b"{}"
        )
    finally:
        client.close()
    for events, reason in ((duplicated, b"DuplicateHeaders"), (disallowed, b"TopicDisallowed")):
        [data] = [e for e in events if isinstance(e, h2.events.DataReceived)]
        assert data.data == b'{"reason":"' + reason + b'"}'
