"""The synchronous Send RPC end to end: gRPC in, provider sandbox out."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from herald.delivery.v1 import delivery_service_pb2, notification_pb2
from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc
from herald.registration.v1 import registration_service_pb2, registration_service_pb2_grpc
from herald.type.v1 import platform_pb2, push_options_pb2
from services.core.status import parse_error
from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox.apns import new_device_token
from services.sandbox.pki import new_apns_key

from .conftest import (
    APP,
    DEV,
    apns_credentials,
    apns_notification,
    fcm_credentials,
    fcm_notification,
    new_fcm_token,
    seconds,
    vapid_credentials,
    webpush_notification,
)
from .queue_helpers import wait_final

DS = delivery_service_pb2
OUT = push_options_pb2


def send(
    notification: notification_pb2.Notification, timeout: float = 5.0, request_id: str = ""
) -> DS.SendRequest:
    notification.ClearField("notification_id")
    return DS.SendRequest(
        notification=notification,
        request_id=request_id or str(uuid.uuid4()),
        timeout=seconds(timeout),
    )


async def test_send_to_each_provider(delivery, sandbox):
    stub, _ = delivery
    for upload in (apns_credentials(sandbox), fcm_credentials(sandbox), vapid_credentials(sandbox)):
        await stub.PutCredentials(DS.PutCredentialsRequest(credentials=upload))
    sub = sandbox.webpush.create_subscription(sandbox.credentials.vapid_public_key)
    apns = apns_notification(new_device_token(), badge=3, sound="ping.caf", thread_id="t1")
    apns.collapse_id = "news"
    fcm = fcm_notification(new_fcm_token(), channel_id="promo", data={"k": "v"})
    fcm.ttl.FromSeconds(90)
    web = webpush_notification(sub, url="https://shop.example/x", topic="deals")

    answers = [await stub.Send(send(n)) for n in (apns, fcm, web)]

    results = [a.results[0] for a in answers]
    assert [r.outcome for r in results] == [OUT.DELIVERY_OUTCOME_DELIVERED] * 3
    assert [r.provider_status for r in results] == [200, 200, 201]
    assert [r.platform for r in results] == [
        platform_pb2.PLATFORM_IOS,
        platform_pb2.PLATFORM_ANDROID,
        platform_pb2.PLATFORM_WEB,
    ]
    got_apns = sandbox.received("apns")[0]
    assert got_apns["apns_id"] == results[0].apns_id
    assert got_apns["payload"] == {
        "aps": {
            "alert": {"title": "Hello", "body": "Bonjour"},
            "badge": 3,
            "sound": "ping.caf",
            "thread-id": "t1",
        }
    }
    assert (got_apns["collapse_id"], got_apns["priority"], got_apns["push_type"]) == (
        "news",
        10,
        "alert",
    )
    got_fcm = sandbox.received("fcm")[0]
    assert got_fcm["name"] == results[1].fcm_message_name
    assert got_fcm["message"]["android"] == {
        "priority": "HIGH",
        "ttl": "90s",
        "notification": {"channel_id": "promo"},
    }
    assert got_fcm["message"]["data"] == {"k": "v"}
    got_web = sandbox.received("webpush")[0]
    assert got_web["payload"] == {
        "title": "Hello",
        "body": "Hallo",
        "url": "https://shop.example/x",
    }
    assert (got_web["topic"], got_web["urgency"], got_web["ttl"]) == (
        "deals",
        "high",
        28 * 24 * 3600,
    )
    assert got_web["vapid_subject"] == sandbox.credentials.vapid_subject


async def test_send_is_idempotent_by_request_id(delivery, sandbox):
    stub, _ = delivery
    await stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    request = send(apns_notification(new_device_token()))

    first = await stub.Send(request)
    again = await stub.Send(request)
    request.notification.apns.body = "changed"
    with pytest.raises(grpc.aio.AioRpcError) as mismatch:
        await stub.Send(request)

    assert first == again
    assert len(sandbox.received("apns")) == 1
    assert parse_error(mismatch.value).reason == "REQUEST_ID_MISMATCH"


async def test_send_rejects_bad_input_and_missing_credentials_plainly(delivery, sandbox):
    stub, _ = delivery
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.Send(send(apns_notification(new_device_token())))
    error = parse_error(missing.value)
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CREDENTIALS_MISSING",
    )
    await stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    cases = []
    cases.append(
        (
            apns_notification(new_device_token(), body="x" * 5000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "PAYLOAD_TOO_LARGE",
            "notification.apns.body",
        )
    )
    cases.append(
        (
            apns_notification("zz-not-hex"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "TOKEN_MALFORMED",
            "notification.token.apns.device_token",
        )
    )
    background = apns_notification(
        new_device_token(), title="", body="", content_available=True, priority=10
    )
    cases.append(
        (
            background,
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "notification.apns.priority",
        )
    )
    for notification, code, reason, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Send(send(notification))
        error = parse_error(failed.value)
        assert (error.code, error.reason) == (code, reason)
        if field:
            assert field in [f for f, _ in error.violations]
    assert sandbox.received("apns") == []  # never a provider 413


async def test_send_answers_failed_precondition_while_the_circuit_is_open(delivery, sandbox):
    stub, _ = delivery
    unknown_id, unknown_p8 = new_apns_key()
    await stub.PutCredentials(
        DS.PutCredentialsRequest(
            credentials=apns_credentials(
                sandbox, private_key_pem=unknown_p8.decode(), key_id=unknown_id
            )
        )
    )

    refused = await stub.Send(send(apns_notification(new_device_token()), timeout=1.0))
    with pytest.raises(grpc.aio.AioRpcError) as held:
        await stub.Send(send(apns_notification(new_device_token())))

    assert refused.results[0].provider_reason == "InvalidProviderToken"
    # Held until the circuit reopens, which does not fit in Send's 1 s: still RETRYING
    # (within the TTL), as the contract says for unfinished sends.
    assert refused.results[0].outcome == OUT.DELIVERY_OUTCOME_RETRYING
    error = parse_error(held.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CIRCUIT_OPEN")
    assert "InvalidProviderToken" in error.message


async def test_send_retries_transient_failures_within_its_timeout(delivery, sandbox):
    stub, _ = delivery
    await stub.PutCredentials(DS.PutCredentialsRequest(credentials=fcm_credentials(sandbox)))
    token = new_fcm_token()
    sandbox.faults.add(
        service="fcm", token=token, status=503, reason="UNAVAILABLE", retry_after=1, times=1
    )

    started = time.monotonic()
    answer = await stub.Send(send(fcm_notification(token), timeout=5.0))

    assert answer.results[0].outcome == OUT.DELIVERY_OUTCOME_DELIVERED
    assert 1.0 <= time.monotonic() - started < 4.0  # Retry-After honoured
    assert [e["status"] for e in sandbox.received("fcm", token=token)] == [503, 200]


async def test_send_to_a_device_and_invalidation_in_registration(
    start_services, start_service, delivery_settings, sandbox
):
    servers = await start_services(REGISTRATION_SPEC, IDENTITY_SPEC)
    wired = delivery_settings.model_copy(
        update={"registration_address": f"127.0.0.1:{servers['registration'].port}"}
    )
    delivery_server = await start_service(DELIVERY_SPEC, wired)
    identity_channel = grpc.aio.insecure_channel(f"127.0.0.1:{servers['identity'].port}")
    registration_channel = grpc.aio.insecure_channel(f"127.0.0.1:{servers['registration'].port}")
    delivery_channel = grpc.aio.insecure_channel(f"127.0.0.1:{delivery_server.port}")
    try:
        identity = identity_service_pb2_grpc.IdentityServiceStub(identity_channel)
        registration = registration_service_pb2_grpc.RegistrationServiceStub(registration_channel)
        stub = __import__(
            "herald.delivery.v1.delivery_service_pb2_grpc", fromlist=["x"]
        ).DeliveryServiceStub(delivery_channel)
        await identity.CreateApp(
            identity_service_pb2.CreateAppRequest(
                app=app_pb2.App(display_name="Shop"), app_id=APP, request_id=str(uuid.uuid4())
            )
        )
        await stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
        fresh, stale = new_device_token(), new_device_token()
        for device_id, token in (("fresh", fresh), ("stale", stale)):
            await registration.RegisterDevice(
                registration_service_pb2.RegisterDeviceRequest(
                    app_id=APP,
                    device_id=device_id,
                    platform=platform_pb2.PLATFORM_IOS,
                    os_version="17.4",
                    token=apns_notification(token).token,
                    apns_environment=DEV,
                    authorization_status=platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED,
                )
            )
        now_ms = int(time.time() * 1000)
        sandbox.apns.set_token(
            fresh, "unregistered", unregistered_at_ms=now_ms + 60_000
        )  # after registration
        sandbox.apns.set_token(
            stale, "unregistered", unregistered_at_ms=now_ms - 3_600_000
        )  # before it

        answers = []
        for device_id in ("fresh", "stale"):
            n = notification_pb2.Notification(
                app_id=APP, device_id=device_id, apns=notification_pb2.ApnsPayload(title="Hi")
            )
            answers.append(await stub.Send(send(n)))
        removed = await registration.GetDevice(
            registration_service_pb2.GetDeviceRequest(app_id=APP, device_id="fresh")
        )
        kept = await registration.GetDevice(
            registration_service_pb2.GetDeviceRequest(app_id=APP, device_id="stale")
        )
    finally:
        for channel in (identity_channel, registration_channel, delivery_channel):
            await channel.close(None)

    assert [a.results[0].outcome for a in answers] == [OUT.DELIVERY_OUTCOME_TOKEN_INVALID] * 2
    assert [a.results[0].device_id for a in answers] == ["fresh", "stale"]
    assert not removed.device.HasField("token")
    assert removed.device.redacted_token == ""
    assert kept.device.redacted_token != ""


async def test_send_records_its_attempts_for_get_and_list_notifications(start_node, sandbox):
    node = await start_node()
    stub = node.stub
    await stub.PutCredentials(DS.PutCredentialsRequest(credentials=fcm_credentials(sandbox)))
    token = new_fcm_token()
    sandbox.faults.add(service="fcm", token=token, status=503, reason="UNAVAILABLE", times=1)
    n = fcm_notification(token)
    n.device_id = "phone-1"

    answer = await stub.Send(send(n, timeout=5.0))
    nid = answer.results[0].notification_id
    found = await stub.GetNotification(DS.GetNotificationRequest(notification_id=nid))
    listed = await stub.ListNotifications(
        DS.ListNotificationsRequest(app_id=APP, device_id="phone-1")
    )

    assert answer.results[0].outcome == OUT.DELIVERY_OUTCOME_DELIVERED
    record = found.notification
    assert record.outcome == OUT.DELIVERY_OUTCOME_DELIVERED
    assert [(a.attempt_number, a.provider_status) for a in record.attempts] == [(1, 503), (2, 200)]
    assert all(a.trace_id and a.connection_id for a in record.attempts)
    assert record.attempts[1].fcm_message_name == answer.results[0].fcm_message_name
    assert [x.notification_id for x in listed.notifications] == [nid]


async def test_send_still_retrying_at_its_deadline_is_handed_to_the_queue(start_node, sandbox):
    node = await start_node()
    stub = node.stub
    await stub.PutCredentials(DS.PutCredentialsRequest(credentials=fcm_credentials(sandbox)))
    token = new_fcm_token()
    # Retry-After 2 s does not fit in a 1 s Send: the queue makes the second attempt.
    sandbox.faults.add(
        service="fcm", token=token, status=503, reason="UNAVAILABLE", retry_after=2, times=1
    )

    started = time.monotonic()
    answer = await stub.Send(send(fcm_notification(token), timeout=1.0))
    answered_in = time.monotonic() - started
    nid = answer.results[0].notification_id
    (done,) = await wait_final(stub, [nid])

    assert answer.results[0].outcome == OUT.DELIVERY_OUTCOME_RETRYING
    assert answered_in < 2.0
    assert nid
    assert done.outcome == OUT.DELIVERY_OUTCOME_DELIVERED
    assert [a.attempt_number for a in done.attempts] == [1, 2]
    assert [e["status"] for e in sandbox.received("fcm", token=token)] == [503, 200]
