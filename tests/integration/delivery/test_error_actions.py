"""Every row of the error → action table, driven by the sandboxes' fault injection and
token states, through the Dispatcher (what the queue workers will call)."""

from __future__ import annotations

import pytest

from services.delivery import actions
from services.delivery.actions import Action
from services.sandbox.apns import REASON_STATUS, new_device_token
from services.sandbox.fcm import ERROR_CODE_STATUS

from .conftest import (
    apns_credentials,
    apns_notification,
    fcm_credentials,
    fcm_notification,
    new_fcm_token,
    put,
    vapid_credentials,
    webpush_notification,
)


@pytest.mark.parametrize("reason", sorted(actions.APNS))
async def test_apns_reason(reason, dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    token = new_device_token()
    sandbox.faults.add(service="apns", token=token, status=REASON_STATUS[reason], reason=reason)

    result = await dispatcher.deliver(apns_notification(token), 1)

    expected = actions.APNS[reason]
    assert (result.status, result.reason, result.action) == (
        REASON_STATUS[reason],
        reason,
        expected.action,
    )
    if expected.action is Action.RETRY:
        assert result.next_retry_delay_seconds is not None
    if expected.action is Action.DELETE_TOKEN:
        assert result.provider_time is not None
        assert result.invalidation  # Registration was asked (here: nobody listens)
    if expected.action is Action.QUARANTINE and expected.credential_wide:
        assert result.next_retry_delay_seconds is not None  # held until the circuit half-opens
    if expected.action in (Action.FAIL,) or (
        expected.action is Action.QUARANTINE and not expected.credential_wide
    ):
        assert result.final


async def test_apns_410_carries_the_provider_timestamp(dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    token = new_device_token()
    sandbox.apns.set_token(token, "unregistered", unregistered_at_ms=1_700_000_000_123)

    result = await dispatcher.deliver(apns_notification(token), 1)

    assert (result.action, result.reason, result.provider_time) == (
        Action.DELETE_TOKEN,
        "Unregistered",
        1_700_000_000.123,
    )


async def test_apns_token_states_expired_and_wrong_topic(dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    expired, stray = new_device_token(), new_device_token()
    sandbox.apns.set_token(expired, "expired")
    sandbox.apns.set_token(stray, topic="com.example.other")

    gone = await dispatcher.deliver(apns_notification(expired), 1)
    wrong = await dispatcher.deliver(apns_notification(stray), 1)

    assert (gone.action, gone.reason) == (Action.DELETE_TOKEN, "ExpiredToken")
    assert (wrong.action, wrong.reason, wrong.final) == (
        Action.QUARANTINE,
        "DeviceTokenNotForTopic",
        True,
    )


def test_bad_device_token_is_never_deleted_across_environments():
    assert actions.decide("apns", 400, "BadDeviceToken").action is Action.DELETE_TOKEN
    assert (
        actions.decide("apns", 400, "BadDeviceToken", environment_matches=False).action
        is Action.FAIL
    )


@pytest.mark.parametrize("code", sorted(ERROR_CODE_STATUS))
async def test_fcm_error_code(code, dispatcher, sandbox):
    await put(dispatcher, fcm_credentials(sandbox))
    token = new_fcm_token()
    sandbox.faults.add(
        service="fcm",
        token=token,
        status=ERROR_CODE_STATUS[code],
        reason=code,
        retry_after=7 if code == "QUOTA_EXCEEDED" else None,
    )

    result = await dispatcher.deliver(fcm_notification(token), 1)

    assert (result.status, result.reason, result.action) == (
        ERROR_CODE_STATUS[code],
        code,
        actions.FCM[code].action,
    )
    if code == "QUOTA_EXCEEDED":
        assert result.retry_after_seconds == 7
        assert result.next_retry_delay_seconds == 7
    if code == "INTERNAL":
        assert result.next_retry_delay_seconds is not None
        assert result.next_retry_delay_seconds >= 10


async def test_fcm_token_states(dispatcher, sandbox):
    await put(dispatcher, fcm_credentials(sandbox))
    states = {
        "unregistered": Action.DELETE_TOKEN,
        "sender_id_mismatch": Action.QUARANTINE,
        "invalid": Action.DELETE_TOKEN,
    }
    for state, expected in states.items():
        token = new_fcm_token()
        sandbox.fcm.set_token(token, state)
        result = await dispatcher.deliver(fcm_notification(token), 1)
        assert result.action is expected, (state, result)


async def test_fcm_expired_access_token_is_refreshed_on_the_next_attempt(dispatcher, sandbox):
    await put(dispatcher, fcm_credentials(sandbox))
    for _ in range(3):
        assert (
            await dispatcher.deliver(fcm_notification(new_fcm_token()), 1)
        ).action is Action.DELIVERED
    assert sandbox.counters("fcm")["access tokens issued"] == 1  # cached across sends
    sandbox.fcm.expire_access_tokens()

    first = await dispatcher.deliver(fcm_notification(new_fcm_token()), 1)
    second = await dispatcher.deliver(fcm_notification(new_fcm_token()), 2)

    assert (first.status, first.action) == (401, Action.RETRY)
    assert second.action is Action.DELIVERED
    assert sandbox.counters("fcm")["access tokens issued"] == 2


@pytest.mark.parametrize("status", sorted(actions.WEB_PUSH))
async def test_webpush_status(status, dispatcher, sandbox):
    await put(dispatcher, vapid_credentials(sandbox))
    sub = sandbox.webpush.create_subscription()
    if status >= 400:
        sandbox.faults.add(
            service="webpush",
            token=sub["id"],
            status=status,
            retry_after=3 if status == 429 else None,
        )

    result = await dispatcher.deliver(webpush_notification(sub), 1)

    expected = 201 if status < 300 else status  # the sandbox accepts with 201
    assert (result.status, result.action) == (expected, actions.WEB_PUSH[expected].action)
    if status == 429:
        assert result.next_retry_delay_seconds == 3


async def test_webpush_subscription_states(dispatcher, sandbox):
    await put(dispatcher, vapid_credentials(sandbox))
    expired, gone = sandbox.webpush.create_subscription(), sandbox.webpush.create_subscription()
    sandbox.webpush.set_state(expired["id"], "expired")
    sandbox.webpush.set_state(gone["id"], "unsubscribed")

    results = [await dispatcher.deliver(webpush_notification(s), 1) for s in (expired, gone)]

    assert [(r.status, r.action) for r in results] == [
        (404, Action.DELETE_TOKEN),
        (410, Action.DELETE_TOKEN),
    ]


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_retry_with_backoff(status, dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    await put(dispatcher, fcm_credentials(sandbox))
    apns_token, fcm_token = new_device_token(), new_fcm_token()
    sandbox.faults.add(service="apns", token=apns_token, status=status)
    sandbox.faults.add(service="fcm", token=fcm_token, status=status)

    for result in (
        await dispatcher.deliver(apns_notification(apns_token), 3),
        await dispatcher.deliver(fcm_notification(fcm_token), 3),
    ):
        assert (result.status, result.action) == (status, Action.RETRY)
        assert result.next_retry_delay_seconds is not None
        assert 0 <= result.next_retry_delay_seconds <= 4 or result.reason == "INTERNAL"


async def test_retry_past_the_ttl_is_failed_expired(dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    token = new_device_token()
    sandbox.faults.add(
        service="apns", token=token, status=429, reason="TooManyRequests", retry_after=120
    )
    n = apns_notification(token)
    n.ttl.FromSeconds(60)

    result = await dispatcher.deliver(n, 1)

    assert (result.action, result.outcome_reason, result.next_retry_delay_seconds) == (
        Action.RETRY,
        "EXPIRED",
        None,
    )
