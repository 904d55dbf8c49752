"""aioapns 4.0, unmodified, against the APNs sandbox over TLS."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid

from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import APNsDevelopmentClientProtocol

from services.sandbox import SandboxStack
from services.sandbox.apns import new_device_token
from services.sandbox.pki import new_apns_key

from .conftest import TOPIC, EagerTokenProvider, OldTokenProvider

SEND_TIMEOUT = 5  # aioapns has no request timeout and hangs on some failures


async def send(client, request: NotificationRequest) -> NotificationResult:
    return await asyncio.wait_for(client.send_notification(request), SEND_TIMEOUT)


async def test_alert_background_and_voip_pushes_are_accepted(apns_client, sandbox: SandboxStack):
    client = apns_client()
    token = new_device_token()
    alert = NotificationRequest(
        device_token=token,
        message={"aps": {"alert": {"title": "Hi", "body": "Bonjour"}, "badge": 1}},
        push_type=PushType.ALERT,
        collapse_key="greeting",
        time_to_live=3600,
    )
    background = NotificationRequest(
        device_token=token,
        message={"aps": {"content-available": 1}, "sync": "inbox"},
        push_type=PushType.BACKGROUND,
        priority=5,
    )
    voip = NotificationRequest(
        device_token=token,
        message={"call": "x" * 4500},  # above 4096: only voip may be this big
        push_type=PushType.VOIP,
        apns_topic=f"{TOPIC}.voip",
    )
    results = [await send(client, r) for r in (alert, background, voip)]

    assert [r.status for r in results] == ["200", "200", "200"]
    assert [r.notification_id for r in results] == [
        alert.notification_id,
        background.notification_id,
        voip.notification_id,
    ]
    received = sandbox.received("apns", token=token)
    assert [r["push_type"] for r in received] == ["alert", "background", "voip"]
    assert received[0]["payload"]["aps"]["alert"]["body"] == "Bonjour"
    assert received[0]["collapse_id"] == "greeting"
    assert received[0]["expiration"] > time.time()
    assert received[1]["priority"] == 5
    assert received[2]["topic"] == f"{TOPIC}.voip"
    assert {r["team_id"] for r in received} == {sandbox.credentials.apns_team_id}
    assert sandbox.counters("apns")["200"] == 3


async def test_unregistered_token_answers_410_with_timestamp(apns_client, sandbox):
    token = new_device_token()
    sandbox.apns.set_token(token, "unregistered", unregistered_at_ms=1_700_000_000_123)

    result = await send(apns_client(), NotificationRequest(token, {"aps": {"alert": "x"}}))

    assert (result.status, result.description) == ("410", "Unregistered")
    assert result.timestamp == 1_700_000_000_123
    assert sandbox.counters("apns")["410 Unregistered"] == 1


async def test_expired_and_wrong_topic_tokens(apns_client, sandbox):
    expired, other_app = new_device_token(), new_device_token()
    sandbox.apns.set_token(expired, "expired")
    sandbox.apns.set_token(other_app, topic="com.example.other")
    client = apns_client()

    gone = await send(client, NotificationRequest(expired, {"aps": {"alert": "x"}}))
    wrong = await send(client, NotificationRequest(other_app, {"aps": {"alert": "x"}}))

    assert (gone.status, gone.description) == ("410", "ExpiredToken")
    assert (wrong.status, wrong.description) == ("400", "DeviceTokenNotForTopic")


async def test_bad_device_token_and_payload_too_large(apns_client):
    client = apns_client()

    bad = await send(client, NotificationRequest("not-a-hex-token", {"aps": {"alert": "x"}}))
    big = await send(
        client, NotificationRequest(new_device_token(), {"aps": {"alert": "x" * 4100}})
    )

    assert (bad.status, bad.description) == ("400", "BadDeviceToken")
    assert (big.status, big.description) == ("413", "PayloadTooLarge")


async def test_header_validation(apns_client):
    client = apns_client()
    token = new_device_token()
    cases = {
        "BadTopic": NotificationRequest(token, {"aps": {}}, push_type=PushType.VOIP),
        "BadPriority": NotificationRequest(
            token, {"aps": {}}, push_type=PushType.BACKGROUND, priority=10
        ),
        "BadCollapseId": NotificationRequest(token, {"aps": {}}, collapse_key="c" * 65),
        "BadMessageId": NotificationRequest(
            token, {"aps": {}}, notification_id=str(uuid.uuid4()).upper()
        ),
    }
    for reason, request in cases.items():
        result = await send(client, request)
        assert (result.status, result.description) == ("400", reason)


async def test_old_provider_token_is_refused(apns_client):
    client = apns_client(provider=OldTokenProvider)

    result = await send(client, NotificationRequest(new_device_token(), {"aps": {"alert": "x"}}))

    assert (result.status, result.description) == ("403", "ExpiredProviderToken")


async def test_reminting_too_often_is_refused(apns_client):
    client = apns_client(provider=EagerTokenProvider)
    token = new_device_token()

    first = await send(client, NotificationRequest(token, {"aps": {"alert": "1"}}))
    second = await send(client, NotificationRequest(token, {"aps": {"alert": "2"}}))

    assert first.status == "200"
    assert (second.status, second.description) == ("429", "TooManyProviderTokenUpdates")


async def test_unknown_key_and_key_of_another_team(apns_client, sandbox):
    key_id, p8 = new_apns_key()
    unknown = apns_client(key=p8.decode(), key_id=key_id)
    refused = await send(unknown, NotificationRequest(new_device_token(), {"aps": {}}))
    assert (refused.status, refused.description) == ("403", "InvalidProviderToken")

    sandbox.apns.register_key(key_id, "OTHERTEAM1", p8, environment="production")
    wrong_env = await send(
        apns_client(key=p8.decode(), key_id=key_id, team_id="OTHERTEAM1"),
        NotificationRequest(new_device_token(), {"aps": {}}),
    )
    assert (wrong_env.status, wrong_env.description) == ("403", "BadEnvironmentKeyIdInToken")


async def test_stream_limit_starts_at_one_and_rises(apns_client):
    client = apns_client()
    token = new_device_token()
    await send(client, NotificationRequest(token, {"aps": {"alert": "warm-up"}}))
    connection = client.pool.connections[0]
    await asyncio.sleep(0.05)  # the raised SETTINGS follows the first answer

    assert connection.conn.remote_settings.max_concurrent_streams == 1000
    results = await asyncio.gather(
        *(send(client, NotificationRequest(token, {"aps": {"alert": i}})) for i in range(50))
    )
    assert {r.status for r in results} == {"200"}


async def test_certificate_authentication(sandbox, tmp_path):
    """aioapns with a provider certificate (certificate-based auth) instead of a key."""
    protocol = type(
        "SandboxAPNsProtocol",
        (APNsDevelopmentClientProtocol,),
        {"APNS_SERVER": "127.0.0.1", "APNS_PORT": sandbox.apns_port},
    )
    cert_file = tmp_path / "push.pem"
    cert_file.write_bytes(sandbox.apns_client_certificate(TOPIC))
    # aioapns loads the client certificate into the context it is given: one per client.
    client = APNs(
        client_cert=str(cert_file),
        # Given explicitly: without it aioapns reads the certificate's UID through a
        # deprecated pyOpenSSL API, which warns (and warnings are errors here).
        topic=TOPIC,
        use_sandbox=True,
        ssl_context=ssl.create_default_context(cafile=str(sandbox.ca_file)),
        max_connections=1,
        max_connection_attempts=1,
    )
    client.pool.protocol_class = protocol
    token = new_device_token()
    try:
        sent = await send(client, NotificationRequest(token, {"aps": {"alert": "cert"}}))
        other_app = await send(
            client, NotificationRequest(token, {"aps": {}}, apns_topic="com.example.other")
        )
    finally:
        client.pool.close()

    assert sent.status == "200"
    assert (other_app.status, other_app.description) == ("400", "TopicDisallowed")
    [entry] = sandbox.received("apns", token=token, status=200)
    assert entry["certificate_bundle_id"] == TOPIC
    assert entry["team_id"] is None
