"""Retries through the queue: Retry-After honoured, schedules surviving a restart, every
attempt recorded with its trace."""

from __future__ import annotations

import time

from services.sandbox.apns import new_device_token

from .conftest import apns_credentials, fcm_credentials, fcm_notification, new_fcm_token
from .queue_helpers import DS, OUT, enqueue_request, outcome_of, wait_final, wait_for


async def test_retry_after_is_honoured_and_every_attempt_is_recorded(start_node, sandbox):
    node = await start_node()
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=fcm_credentials(sandbox)))
    token = new_fcm_token()
    sandbox.faults.add(
        service="fcm", token=token, status=429, reason="QUOTA_EXCEEDED", retry_after=1, times=1
    )

    answer = await node.stub.Enqueue(enqueue_request([fcm_notification(token)]))
    nid = answer.results[0].notification_id
    [done] = await wait_final(node.stub, [nid])

    got = sandbox.received("fcm", token=token)
    assert [e["status"] for e in got] == [429, 200]
    assert got[1]["time"] - got[0]["time"] >= 1.0  # Retry-After: 1
    assert done.outcome == OUT.DELIVERY_OUTCOME_DELIVERED
    first, second = done.attempts
    assert (first.attempt_number, first.provider_status, first.provider_reason) == (
        1,
        429,
        "QUOTA_EXCEEDED",
    )
    assert first.outcome == OUT.DELIVERY_OUTCOME_RETRYING
    assert first.retry_after.seconds == 1
    assert first.HasField("next_attempt_time")
    assert (second.attempt_number, second.provider_status) == (2, 200)
    assert second.fcm_message_name.startswith("projects/")
    # One trace from the Enqueue call to each attempt; the token never appears in full.
    assert done.trace_id
    assert {first.trace_id, second.trace_id} == {done.trace_id}
    assert first.span_id != second.span_id
    assert first.worker_id
    assert first.connection_id
    assert first.latency.ToNanoseconds() > 0
    assert not done.HasField("token")
    assert done.redacted_token
    assert token not in str(done)


async def test_a_scheduled_retry_survives_a_restart_and_is_sent_once(start_node, sandbox):
    first = await start_node()
    await first.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    token = new_device_token()
    sandbox.faults.add(
        service="apns", token=token, status=429, reason="TooManyRequests", retry_after=2, times=1
    )
    from .conftest import apns_notification

    answer = await first.stub.Enqueue(enqueue_request([apns_notification(token)]))
    nid = answer.results[0].notification_id

    async def retrying() -> bool:
        return (await outcome_of(first.stub, nid)).outcome == OUT.DELIVERY_OUTCOME_RETRYING

    await wait_for(retrying)
    await first.server.stop(grace=0)  # the retry is only in Redis now
    stopped_at = time.time()
    second = await start_node()
    [done] = await wait_final(second.stub, [nid])

    got = sandbox.received("apns", token=token)
    assert [e["status"] for e in got] == [429, 200]
    assert got[1]["time"] >= stopped_at
    assert done.outcome == OUT.DELIVERY_OUTCOME_DELIVERED
    assert [a.attempt_number for a in done.attempts] == [1, 2]
    assert done.attempts[0].worker_id != done.attempts[1].worker_id
