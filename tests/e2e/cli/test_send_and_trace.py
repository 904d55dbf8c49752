"""Credentials from files, `herald send` through Delivery to the sandboxes, and
`herald trace` of what was sent."""

from __future__ import annotations

import asyncio
import json
import time

from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox.apns import new_device_token

from .conftest import create_app, run_cli


async def _put_credentials(addresses, sandbox):
    demo = sandbox.credentials
    return await asyncio.gather(
        run_cli(
            "credentials",
            "put-apns",
            "shop",
            "--key",
            str(demo.apns_key_file),
            "--key-id",
            demo.apns_key_id,
            "--team-id",
            demo.apns_team_id,
            "--bundle-id",
            demo.apns_bundle_id,
            "--environment",
            "development",
            addresses=addresses,
        ),
        run_cli(
            "credentials",
            "put-fcm",
            "shop",
            "--service-account",
            str(demo.fcm_service_account_file),
            addresses=addresses,
        ),
        run_cli(
            "credentials",
            "put-webpush",
            "shop",
            "--vapid-key",
            str(demo.vapid_private_key_file),
            "--subject",
            demo.vapid_subject,
            addresses=addresses,
        ),
    )


async def test_send_to_devices_through_the_sandboxes_and_trace(stack, sandbox):
    addresses = await stack(REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC)
    await create_app(addresses)
    puts = await _put_credentials(addresses, sandbox)
    bad_key = await run_cli(
        "credentials",
        "put-apns",
        "shop",
        "--key",
        "-",
        "--key-id",
        "ABCDEFGHIJ",
        "--team-id",
        "ABCDEFGHIJ",
        "--bundle-id",
        "com.example",
        "--environment",
        "production",
        addresses=addresses,
        stdin="not a key",
    )
    listed, got = await asyncio.gather(
        run_cli("credentials", "list", "shop", addresses=addresses),
        run_cli("credentials", "get", "shop", "--provider", "fcm", "--json", addresses=addresses),
    )
    token = new_device_token()
    subscription = sandbox.webpush.create_subscription(sandbox.credentials.vapid_public_key)
    ios = ["--platform", "ios", "--os-version", "17.4", "--environment", "development"]
    await asyncio.gather(
        run_cli(
            "devices",
            "register",
            "shop",
            "phone",
            *ios,
            "--apns-token",
            token,
            "--authorization",
            "authorized",
            addresses=addresses,
        ),
        run_cli(
            "devices",
            "register",
            "shop",
            "browser",
            "--platform",
            "web",
            "--os-version",
            "1",
            "--web-subscription",
            json.dumps(subscription),
            addresses=addresses,
        ),
    )

    to_phone, to_browser = await asyncio.gather(
        run_cli(
            "send",
            "shop",
            "--device",
            "phone",
            "--title",
            "Hi",
            "--body",
            "Shipped",
            "--badge",
            "2",
            addresses=addresses,
        ),
        run_cli(
            "send",
            "shop",
            "--device",
            "browser",
            "--title",
            "Hi",
            "--body",
            "Shipped",
            "--url",
            "https://shop.example/o/1",
            "--json",
            addresses=addresses,
        ),
    )

    assert [p.code for p in puts] == [0, 0, 0], [p.stderr for p in puts]
    assert "Credentials stored" in puts[0].stdout
    assert "BEGIN PRIVATE KEY" not in "".join(p.stdout for p in puts)
    assert bad_key.code == 1
    assert bad_key.stderr.startswith("error: INVALID_ARGUMENT (CREDENTIALS_MALFORMED): ")
    assert "  credentials.apns_token.private_key_pem: " in bad_key.stderr
    assert listed.stdout.count("OK") == 3
    assert got.json()["fcm"]["project_id"] == sandbox.credentials.fcm_project_id
    assert "private_key" not in got.json()["fcm"]

    assert to_phone.code == 0, to_phone.stderr
    row = next(line for line in to_phone.stdout.splitlines() if "phone" in line)
    assert "IOS" in row
    assert "DELIVERED" in row
    assert "200" in row
    received = sandbox.received("apns")[0]
    assert received["payload"]["aps"]["alert"] == {"title": "Hi", "body": "Shipped"}
    assert received["apns_id"] in to_phone.stdout  # the provider's answer, shown
    answer = to_browser.json()
    assert answer["results"][0]["outcome"] == "DELIVERY_OUTCOME_DELIVERED"
    assert answer["results"][0]["provider_status"] == 201
    assert sandbox.received("webpush")[0]["payload"]["url"] == "https://shop.example/o/1"

    assert "herald trace " in to_phone.stderr  # the hint to follow one


async def test_trace_a_queued_notification_attempt_by_attempt(stack, sandbox):
    # Delivery records attempts for queued notifications (Enqueue); Send answers
    # synchronously and keeps no record yet, so the trace starts from the queue.
    addresses = await stack(REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC)
    await create_app(addresses)
    await _put_credentials(addresses, sandbox)
    token = new_device_token()
    sandbox.faults.add(
        service="apns", token=token, status=503, reason="ServiceUnavailable", times=1, retry_after=1
    )
    notification_id = await _enqueue_and_wait(addresses["delivery"], token)

    traced, traced_json, unknown = await asyncio.gather(
        run_cli("trace", notification_id, addresses=addresses),
        run_cli("trace", notification_id, "--json", addresses=addresses),
        run_cli("trace", "no-such-notification", addresses=addresses),
    )

    assert traced.code == 0, traced.stderr
    record = traced_json.json()
    assert record["outcome"] == "DELIVERY_OUTCOME_DELIVERED"
    assert [a["provider_status"] for a in record["attempts"]] == [503, 200]
    assert f"Attempts ({len(record['attempts'])})" in traced.stdout
    assert "ServiceUnavailable" in traced.stdout
    assert "RETRY" in traced.stdout
    assert record["attempts"][1]["apns_id"] in traced.stdout
    assert "ms" in traced.stdout  # latencies
    if record["trace_id"]:
        assert record["trace_id"] in traced.stdout
    assert token not in traced.stdout + traced_json.stdout
    assert unknown.code == 1
    assert unknown.stderr.startswith("error: NOT_FOUND (NOTIFICATION_NOT_FOUND): ")


async def _enqueue_and_wait(address: str, token: str) -> str:
    import uuid

    import grpc

    from herald.delivery.v1 import delivery_service_pb2 as DS
    from herald.delivery.v1 import delivery_service_pb2_grpc, notification_pb2
    from herald.type.v1 import platform_pb2, push_options_pb2, push_token_pb2

    notification = notification_pb2.Notification(
        app_id="shop",
        device_id="phone",
        token=push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token=token)),
        apns_environment=platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT,
        apns=notification_pb2.ApnsPayload(title="Hi", body="Queued"),
    )
    async with grpc.aio.insecure_channel(address) as channel:
        stub = delivery_service_pb2_grpc.DeliveryServiceStub(channel)
        queued = await stub.Enqueue(
            DS.EnqueueRequest(notifications=[notification], request_id=str(uuid.uuid4()))
        )
        notification_id = queued.results[0].notification_id
        assert notification_id, queued
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = await stub.GetNotification(
                DS.GetNotificationRequest(notification_id=notification_id)
            )
            if found.notification.outcome == push_options_pb2.DELIVERY_OUTCOME_DELIVERED:
                return str(notification_id)
            await asyncio.sleep(0.2)
    raise AssertionError(f"never delivered: {found.notification}")


async def test_send_refused_by_the_provider_exits_1_and_shows_why(stack, sandbox):
    addresses = await stack(REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC)
    await create_app(addresses)
    await _put_credentials(addresses, sandbox)
    token = new_device_token()
    sandbox.apns.set_token(token, "unregistered", unregistered_at_ms=int(time.time() * 1000) - 1)

    refused = await run_cli(
        "send",
        "shop",
        "--apns-token",
        token,
        "--environment",
        "development",
        "--title",
        "Hi",
        addresses=addresses,
    )
    no_device = await run_cli(
        "send", "shop", "--device", "ghost", "--title", "Hi", "--json", addresses=addresses
    )

    assert refused.code == 1
    assert "TOKEN_INVALID" in refused.stdout
    assert "410 Unregistered" in refused.stdout
    assert "error: 1 of 1 pushes were not delivered" in refused.stderr
    assert no_device.code == 1
    assert no_device.error()["reason"] == "DEVICE_NOT_FOUND"
