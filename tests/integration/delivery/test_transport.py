"""The pooled HTTP/2 transport against the APNs sandbox's fault injection."""

from __future__ import annotations

import asyncio
from collections import Counter

from services.delivery.actions import Action
from services.sandbox.apns import new_device_token

from .conftest import APP, apns_credentials, apns_notification, put


async def test_stream_limit_starts_at_one_and_rises_after_the_first_good_request(
    dispatcher, sandbox
):
    await put(dispatcher, apns_credentials(sandbox))
    first = await dispatcher.deliver(apns_notification(new_device_token()), 1)
    pool = dispatcher.apns.pool_for(APP, "development")
    assert first.action is Action.DELIVERED
    assert pool is not None
    conn = next(c for c in pool.connections if c.connection_id == first.connection_id)
    await asyncio.sleep(0.05)  # the raised SETTINGS follows the first answer
    assert conn.max_streams == 1000

    results = await asyncio.gather(
        *(dispatcher.deliver(apns_notification(new_device_token()), 1) for _ in range(60))
    )
    assert {r.action for r in results} == {Action.DELIVERED}
    assert len(pool.connections) <= 2


async def test_goaway_mid_burst_loses_nothing_and_duplicates_nothing(dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    await dispatcher.deliver(apns_notification(new_device_token()), 1)  # warm up: streams raised
    await asyncio.sleep(0.05)
    # The GOAWAY goes out 20 ms after the 40th request arrives, from a timer: a GOAWAY
    # sent from inside the sandbox's read handler makes it process (and then crash on)
    # requests that arrived in the same read — a sandbox defect, reported.
    sandbox.faults.add(service="apns", action="goaway", nth=40, reason="Shutdown", delay=0.02)
    tokens = [new_device_token() for _ in range(150)]

    results = await asyncio.gather(*(dispatcher.deliver(apns_notification(t), 1) for t in tokens))

    # The client's view: every notification got exactly one answer, all accepted.
    assert Counter(r.action for r in results) == {Action.DELIVERED: 150}, Counter(
        (r.reason, r.error[:120]) for r in results
    )
    assert len({r.provider_id for r in results}) == 150
    # The provider's view: each token reached it exactly once.
    accepted = Counter(entry["token"] for entry in sandbox.received("apns", status=200))
    assert [t for t in tokens if accepted[t] != 1] == []
    assert sandbox.counters("apns").get("injected goaway") == 1


async def test_rst_stream_is_a_retry_and_the_next_attempt_delivers(dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    token = new_device_token()
    sandbox.faults.add(service="apns", token=token, action="rst_stream", times=1, error_code=2)

    first = await dispatcher.deliver(apns_notification(token), 1)
    second = await dispatcher.deliver(apns_notification(token), 2)

    assert (first.action, first.reason, first.status) == (Action.RETRY, "RST_STREAM", 0)
    assert first.next_retry_delay_seconds is not None
    assert second.action is Action.DELIVERED


async def test_refused_stream_is_resent_at_once_on_the_same_attempt(dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    token = new_device_token()
    sandbox.faults.add(service="apns", token=token, action="rst_stream", times=1, error_code=7)

    result = await dispatcher.deliver(apns_notification(token), 1)

    assert result.action is Action.DELIVERED
    assert len(sandbox.received("apns", token=token, status=200)) == 1


async def test_dropped_connection_is_a_retry_then_a_new_connection_delivers(dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    token = new_device_token()
    sandbox.faults.add(service="apns", token=token, action="drop", times=1)

    first = await dispatcher.deliver(apns_notification(token), 1)
    second = await dispatcher.deliver(apns_notification(token), 2)

    assert (first.action, first.reason) == (Action.RETRY, "CONNECTION_LOST")
    assert second.action is Action.DELIVERED
    assert second.connection_id != ""


async def test_slow_answer_times_out_as_a_retry(dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    token = new_device_token()
    sandbox.faults.add(service="apns", token=token, action="pass", delay=2.0, times=1)

    result = await dispatcher.deliver(apns_notification(token), 1, time_limit=0.3)

    assert (result.action, result.reason, result.status) == (Action.RETRY, "TIMEOUT", 0)
    assert result.latency_ms < 1500
    assert result.next_retry_delay_seconds is not None


async def test_unreachable_provider_is_connect_failed_and_retried(
    dispatcher, sandbox, delivery_settings, redis, registration_channel
):
    from .conftest import make_dispatcher

    closed = delivery_settings.model_copy(update={"apns_development_origin": "https://127.0.0.1:9"})
    d = make_dispatcher(closed, redis, registration_channel)
    try:
        await put(d, apns_credentials(sandbox))
        result = await d.deliver(apns_notification(new_device_token()), 1, time_limit=1.0)
    finally:
        await d.close()
    assert (result.action, result.reason) == (Action.RETRY, "CONNECT_FAILED")
