"""Rate limits the providers enforce, as the real clients see them: Web Push per
subscription and per VAPID key, APNs and FCM per device, and the APNs connection that stays
unusable after TooManyProviderTokenUpdates."""

from __future__ import annotations

import asyncio
import json
import time

import h2.events
import pytest
from aioapns import NotificationRequest
from pywebpush import WebPushException

from services.sandbox import SandboxStack
from services.sandbox.apns import new_device_token

from .conftest import fcm_token, send_path
from .test_apns import send
from .test_apns_wire import RawH2, apns_headers, provider_token
from .test_faults import cli
from .test_webpush import push


async def push_status(sandbox: SandboxStack, subscription: dict) -> tuple[int, str | None]:
    """(status, Retry-After) of one pywebpush send (it raises above 202)."""
    try:
        response = await push(sandbox, subscription, "hi")
    except WebPushException as error:
        response = error.response
    return response.status_code, response.headers.get("retry-after")


async def test_web_push_subscription_bucket_answers_429_with_retry_after(sandbox):
    sandbox.webpush.set_limits(subscription_per_minute=2)
    busy, quiet = sandbox.webpush.create_subscription(), sandbox.webpush.create_subscription()

    answers = [await push_status(sandbox, busy) for _ in range(3)]

    assert [status for status, _ in answers] == [201, 201, 429]
    retry_after = answers[2][1]
    assert retry_after is not None
    assert 1 <= int(retry_after) <= 60
    assert (await push_status(sandbox, quiet))[0] == 201  # one subscription's bucket only
    [refused] = sandbox.received("webpush", token=busy["id"], status=429)
    assert refused["reason"] == "TooManyRequests"


async def test_web_push_vapid_key_bucket_set_through_the_cli(sandbox):
    code, out = await cli(sandbox, "limits", "webpush", "--vapid-key-per-minute", "2")
    assert code == 0
    assert json.loads(out)["vapid_key_per_minute"] == 2
    subscriptions = [sandbox.webpush.create_subscription() for _ in range(3)]

    # Three subscriptions, one application server key (the demo VAPID key).
    statuses = [(await push_status(sandbox, s))[0] for s in subscriptions]

    assert statuses == [201, 201, 429]
    code, out = await cli(sandbox, "limits")
    assert json.loads(out)["webpush"] == {
        "subscription_per_minute": None,
        "vapid_key_per_minute": 2,
    }


async def test_apns_per_device_limit_answers_too_many_requests(apns_client, sandbox):
    sandbox.apns.set_limits(device_per_minute=2)
    client = apns_client()
    busy = new_device_token()

    results = [await send(client, NotificationRequest(busy, {"aps": {}})) for _ in range(3)]
    other = await send(client, NotificationRequest(new_device_token(), {"aps": {}}))

    assert [(r.status, r.description) for r in results][2] == ("429", "TooManyRequests")
    assert [r.status for r in results[:2]] == ["200", "200"]
    assert other.status == "200"
    assert sandbox.counters("apns")["429 TooManyRequests"] == 1


async def test_apns_connection_stays_unusable_after_too_many_token_updates(
    sandbox, ca_context, apns_key
):
    sandbox.apns.set_limits(token_update_penalty=0.5)
    first_jwt = provider_token(**apns_key)
    second_jwt = provider_token(**apns_key, iat=int(time.time()) - 5)
    client = await RawH2.open(sandbox.apns_port, ca_context)
    fresh = None
    try:

        async def status(authorization: str, conn: RawH2 = client) -> str:
            events = await conn.request(
                apns_headers(sandbox, authorization, new_device_token()), b'{"aps":{}}'
            )
            [response] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
            headers = dict(response.headers or [])
            data = b"".join(getattr(e, "data", b"") or b"" for e in events)
            reason = json.loads(data)["reason"] if data else ""
            return f"{headers[b':status'].decode()} {reason}".strip()

        assert await status(first_jwt) == "200"
        assert await status(second_jwt) == "429 TooManyProviderTokenUpdates"
        # The token the connection already uses is refused too, for a while...
        assert await status(first_jwt) == "429 TooManyProviderTokenUpdates"
        # ...but a new connection is not affected,
        fresh = await RawH2.open(sandbox.apns_port, ca_context)
        assert await status(second_jwt, fresh) == "200"
        # and the old one recovers after the penalty.
        await asyncio.sleep(0.6)
        assert await status(first_jwt) == "200"
    finally:
        client.close()
        if fresh is not None:
            fresh.close()


async def test_fcm_per_device_limit_is_off_by_default_then_answers_quota_exceeded(sandbox, fcm):
    token, topic_message = fcm_token(), {"topic": "news", "data": {"a": "b"}}
    for _ in range(3):
        assert (await fcm.post(send_path(sandbox), json={"message": {"token": token}})).is_success
    code, out = await cli(sandbox, "limits", "fcm", "--device-per-minute", "2")
    assert (code, json.loads(out)["device_per_minute"]) == (0, 2)

    statuses = []
    for _ in range(3):
        response = await fcm.post(send_path(sandbox), json={"message": {"token": token}})
        statuses.append(response.status_code)
    topic = [
        (await fcm.post(send_path(sandbox), json={"message": topic_message})).status_code
        for _ in range(3)
    ]

    assert statuses == [200, 200, 429]
    error = response.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["errorCode"] == "QUOTA_EXCEEDED"
    assert token not in response.text  # the token is not echoed
    assert int(response.headers["retry-after"]) >= 1
    assert topic == [200, 200, 200]  # a device limit: topics are not throttled by it


async def test_reset_turns_the_limits_off(sandbox):
    sandbox.apns.set_limits(device_per_minute=1, token_update_penalty=1)
    sandbox.fcm.set_limits(device_per_hour=5)
    sandbox.webpush.set_limits(subscription_per_minute=1)

    sandbox.reset()

    limits = sandbox.limits()
    assert limits["apns"] == {
        "device_per_minute": None,
        "device_per_hour": None,
        "token_update_penalty": 60.0,
    }
    assert (limits["fcm"]["device_per_minute"], limits["fcm"]["device_per_hour"]) == (None, None)
    assert limits["webpush"]["subscription_per_minute"] is None
    with pytest.raises(ValueError, match="not negative"):
        sandbox.apns.set_limits(device_per_minute=-1)
