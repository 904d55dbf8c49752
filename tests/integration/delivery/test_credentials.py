"""PutCredentials / GetCredentials / ListCredentials / DeleteCredentials over gRPC."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from herald.delivery.v1 import credentials_pb2, delivery_service_pb2
from herald.type.v1 import platform_pb2
from services.core.status import parse_error
from services.delivery.actions import Action
from services.sandbox.apns import new_device_token
from services.sandbox.pki import new_apns_key

from .conftest import (
    APP,
    DEV,
    apns_credentials,
    apns_notification,
    fcm_credentials,
    make_dispatcher,
    put,
    vapid_credentials,
)

DS = delivery_service_pb2


async def test_put_get_list_delete_never_return_secrets(delivery, sandbox, redis):
    stub, _ = delivery
    uploads = [apns_credentials(sandbox), fcm_credentials(sandbox), vapid_credentials(sandbox)]
    for upload in uploads:
        put = await stub.PutCredentials(DS.PutCredentialsRequest(credentials=upload))
        assert not put.replaced
        assert len(put.credentials.fingerprint) == 64

    got = await stub.GetCredentials(
        DS.GetCredentialsRequest(
            app_id=APP, provider=platform_pb2.PROVIDER_APNS, apns_environment=DEV
        )
    )
    listed = await stub.ListCredentials(DS.ListCredentialsRequest(app_id=APP))

    demo = sandbox.credentials
    assert got.credentials.apns_token.key_id == demo.apns_key_id
    assert got.credentials.apns_token.private_key_pem == ""
    assert got.credentials.health == credentials_pb2.CREDENTIALS_HEALTH_OK
    assert [c.provider for c in listed.credentials] == [
        platform_pb2.PROVIDER_APNS,
        platform_pb2.PROVIDER_FCM,
        platform_pb2.PROVIDER_WEB_PUSH,
    ]
    fcm = listed.credentials[1].fcm
    assert (fcm.project_id, fcm.service_account_json) == (demo.fcm_project_id, "")
    assert listed.credentials[2].web_push.public_key == demo.vapid_public_key
    assert listed.credentials[2].web_push.private_key == ""

    # Encrypted at rest: no secret string appears in any Redis value.
    secrets = [
        demo.apns_key_file.read_text().strip().splitlines()[1],
        json.loads(demo.fcm_service_account_file.read_text())["private_key"]
        .strip()
        .splitlines()[1],
        demo.vapid_private_key_file.read_text().strip().splitlines()[1],
        "BEGIN PRIVATE KEY",
    ]
    async for key in redis.scan_iter():
        kind = await redis.type(key)
        values = (
            [await redis.get(key)]
            if kind == b"string"
            else list((await redis.hgetall(key)).values())
            if kind == b"hash"
            else list(await redis.smembers(key))
            if kind == b"set"
            else []
        )
        for value in values:
            for secret in secrets:
                assert secret.encode() not in (value or b""), key

    await stub.DeleteCredentials(
        DS.DeleteCredentialsRequest(app_id=APP, provider=platform_pb2.PROVIDER_FCM)
    )
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetCredentials(
            DS.GetCredentialsRequest(app_id=APP, provider=platform_pb2.PROVIDER_FCM)
        )
    assert parse_error(missing.value).reason == "CREDENTIALS_NOT_FOUND"


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (
            lambda sb: apns_credentials(sb, private_key_pem=_rsa_pem()),
            "credentials.apns_token.private_key_pem",
        ),
        (
            lambda sb: apns_credentials(sb, private_key_pem="not a key"),
            "credentials.apns_token.private_key_pem",
        ),
        (lambda sb: apns_credentials(sb, key_id="SHORT"), "credentials.apns_token.key_id"),
        (
            lambda sb: fcm_credentials(sb, private_key=""),
            "credentials.fcm.service_account_json.private_key",
        ),
        (
            lambda sb: credentials_pb2.Credentials(
                app_id=APP, fcm=credentials_pb2.FcmServiceAccount(service_account_json="{nope")
            ),
            "credentials.fcm.service_account_json",
        ),
        (
            lambda sb: credentials_pb2.Credentials(
                app_id=APP,
                web_push=credentials_pb2.WebPushVapid(
                    private_key=_rsa_pem(), subject="mailto:a@b.c"
                ),
            ),
            "credentials.web_push.private_key",
        ),
    ],
)
async def test_malformed_material_is_rejected_naming_the_field(
    build, field, delivery, sandbox, redis
):
    stub, _ = delivery
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.PutCredentials(DS.PutCredentialsRequest(credentials=build(sandbox)))
    error = parse_error(failed.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CREDENTIALS_MALFORMED")
    assert field in [f for f, _ in error.violations]
    # A rejected request changes nothing of Delivery's (its queue streams exist from
    # start-up; other services' background keys are not this test's business).
    keys = await redis.keys("dlv:*")
    assert [k for k in keys if not k.startswith(b"dlv:q:")] == []


async def test_certificate_auth_pem_and_pkcs12(delivery, sandbox):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    stub, _ = delivery
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Apple Push Services: dev.herald.demo")]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=10))
        .sign(key, hashes.SHA256())
    )
    p12 = pkcs12.serialize_key_and_certificates(
        b"push", key, cert, None, serialization.BestAvailableEncryption(b"s3cret")
    )
    auth = credentials_pb2.ApnsCertificateAuth(
        pkcs12=credentials_pb2.Pkcs12Certificate(data=p12, password="s3cret"),
        bundle_id="dev.herald.demo",
        environment=DEV,
    )
    put = await stub.PutCredentials(
        DS.PutCredentialsRequest(
            credentials=credentials_pb2.Credentials(app_id=APP, apns_certificate=auth)
        )
    )
    assert put.credentials.apns_certificate.subject.startswith("CN=Apple Push Services")
    assert put.credentials.health == credentials_pb2.CREDENTIALS_HEALTH_EXPIRING  # 10 days left
    assert put.credentials.expire_time.seconds > now.timestamp()

    auth.pkcs12.password = "wrong"
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.PutCredentials(
            DS.PutCredentialsRequest(
                credentials=credentials_pb2.Credentials(app_id=APP, apns_certificate=auth)
            )
        )
    assert ("credentials.apns_certificate.pkcs12.data") in [
        f for f, _ in parse_error(failed.value).violations
    ]


async def test_replacing_credentials_while_sending_switches_new_sends_and_loses_none(
    dispatcher, sandbox
):
    await put(dispatcher, apns_credentials(sandbox))
    key_id, p8 = new_apns_key()
    sandbox.apns.register_key(key_id, sandbox.credentials.apns_team_id, p8)
    tokens = [new_device_token() for _ in range(120)]

    async def burst() -> list:
        return await asyncio.gather(*(dispatcher.deliver(apns_notification(t), 1) for t in tokens))

    sending = asyncio.ensure_future(burst())
    await asyncio.sleep(0.01)
    replaced = await put(
        dispatcher, apns_credentials(sandbox, private_key_pem=p8.decode(), key_id=key_id)
    )
    results = await sending
    after = await dispatcher.deliver(apns_notification(new_device_token()), 1)

    assert {r.action for r in results} == {Action.DELIVERED}
    assert after.action is Action.DELIVERED
    assert sandbox.received("apns", status=200)[-1]["key_id"] == key_id  # new sends use the new key
    assert replaced.version > 1
    counters = sandbox.counters("apns")
    assert "429 TooManyProviderTokenUpdates" not in counters  # new key → new connections


async def test_provider_token_is_minted_once_and_shared_by_the_pool(dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    results = await asyncio.gather(
        *(dispatcher.deliver(apns_notification(new_device_token()), 1) for _ in range(80))
    )

    signer = dispatcher.apns.signer_for(APP, "development")
    connections = {e["connection"] for e in sandbox.received("apns", status=200)}
    assert {r.action for r in results} == {Action.DELIVERED}
    assert signer is not None
    assert signer.mints == 1
    assert (
        len(connections) == 2
    )  # the pool opened both connections while the first was limited to 1 stream
    assert "429 TooManyProviderTokenUpdates" not in sandbox.counters("apns")


async def test_bad_credentials_open_the_circuit_and_a_replacement_closes_it(
    dispatcher, sandbox, delivery
):
    stub, server = delivery
    unknown_id, unknown_p8 = new_apns_key()
    await stub.PutCredentials(
        DS.PutCredentialsRequest(
            credentials=apns_credentials(
                sandbox, private_key_pem=unknown_p8.decode(), key_id=unknown_id
            )
        )
    )
    d = server.servicer.dispatcher

    first = await d.deliver(apns_notification(new_device_token()), 1)
    held = await d.deliver(apns_notification(new_device_token()), 1)
    seen = sandbox.counters("apns").get("403 InvalidProviderToken")
    got = await stub.GetCredentials(
        DS.GetCredentialsRequest(
            app_id=APP, provider=platform_pb2.PROVIDER_APNS, apns_environment=DEV
        )
    )

    assert (first.action, first.reason) == (Action.QUARANTINE, "InvalidProviderToken")
    assert (held.action, held.reason, held.status) == (Action.RETRY, "CIRCUIT_OPEN", 0)
    assert seen == 1  # the second send never reached APNs
    assert got.credentials.health == credentials_pb2.CREDENTIALS_HEALTH_CIRCUIT_OPEN
    assert got.credentials.last_error == "InvalidProviderToken"

    await stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    fixed = await d.deliver(apns_notification(new_device_token()), 1)
    assert fixed.action is Action.DELIVERED


async def test_circuit_half_opens_with_one_probe(
    delivery_settings, redis, registration_channel, sandbox
):
    from services.delivery.circuit import CircuitBreakers

    d = make_dispatcher(
        delivery_settings, redis, registration_channel, circuit=CircuitBreakers(open_seconds=0.2)
    )
    try:
        await put(d, apns_credentials(sandbox))
        token = new_device_token()
        sandbox.faults.add(service="apns", status=400, reason="TopicDisallowed", times=2)
        assert (await d.deliver(apns_notification(token), 1)).action is Action.QUARANTINE
        assert (await d.deliver(apns_notification(token), 1)).reason == "CIRCUIT_OPEN"
        await asyncio.sleep(0.25)
        probe = await d.deliver(apns_notification(token), 1)  # half-open: one probe, fails again
        assert probe.reason == "TopicDisallowed"
        reopened = await d.deliver(apns_notification(token), 1)
        assert reopened.reason == "CIRCUIT_OPEN"
        assert reopened.next_retry_delay_seconds is not None
        assert reopened.next_retry_delay_seconds > 0.25
        await asyncio.sleep(0.45)
        assert (
            await d.deliver(apns_notification(token), 1)
        ).action is Action.DELIVERED  # probe succeeds: closed
        assert (await d.deliver(apns_notification(token), 1)).action is Action.DELIVERED
    finally:
        await d.close()
