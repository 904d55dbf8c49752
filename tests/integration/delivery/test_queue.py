"""The durable queue end to end: Enqueue over gRPC, workers sending to the sandboxes."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter

import grpc
import pytest

from services.core.status import parse_error
from services.sandbox.apns import new_device_token

from .conftest import (
    apns_credentials,
    apns_notification,
    fcm_credentials,
    fcm_notification,
    new_fcm_token,
    vapid_credentials,
    webpush_notification,
)
from .queue_helpers import DS, OUT, enqueue_request, wait_final


async def put_all(stub, sandbox) -> None:
    for upload in (apns_credentials(sandbox), fcm_credentials(sandbox), vapid_credentials(sandbox)):
        await stub.PutCredentials(DS.PutCredentialsRequest(credentials=upload))


async def test_enqueued_notifications_are_delivered_once_per_provider(start_node, sandbox):
    node = await start_node()
    await put_all(node.stub, sandbox)
    apns_tokens = [new_device_token() for _ in range(20)]
    fcm_tokens = [new_fcm_token() for _ in range(20)]
    subs = [sandbox.webpush.create_subscription() for _ in range(5)]
    batch = (
        [apns_notification(t) for t in apns_tokens]
        + [fcm_notification(t) for t in fcm_tokens]
        + [webpush_notification(s) for s in subs]
    )

    answer = await node.stub.Enqueue(enqueue_request(batch))

    assert answer.queued_count == 45
    ids = [r.notification_id for r in answer.results]
    assert all(ids)
    assert len(set(ids)) == 45
    done = await wait_final(node.stub, ids)
    assert Counter(n.outcome for n in done) == {OUT.DELIVERY_OUTCOME_DELIVERED: 45}
    apns = Counter(e["token"] for e in sandbox.received("apns", status=200))
    fcm = Counter(e["token"] for e in sandbox.received("fcm", status=200))
    assert [t for t in apns_tokens if apns[t] != 1] == []
    assert [t for t in fcm_tokens if fcm[t] != 1] == []
    assert len(sandbox.received("webpush", status=201)) == 5


async def test_enqueue_is_idempotent_by_request_id(start_node, sandbox):
    node = await start_node()
    await put_all(node.stub, sandbox)
    tokens = [new_device_token() for _ in range(5)]
    request = enqueue_request([apns_notification(t) for t in tokens])

    first = await node.stub.Enqueue(request)
    again = await node.stub.Enqueue(request)
    await wait_final(node.stub, [r.notification_id for r in first.results])
    other = enqueue_request([apns_notification(new_device_token())], request.request_id)
    with pytest.raises(grpc.aio.AioRpcError) as mismatch:
        await node.stub.Enqueue(other)

    assert [r.notification_id for r in again.results] == [r.notification_id for r in first.results]
    assert again.queued_count == first.queued_count == 5
    received = Counter(e["token"] for e in sandbox.received("apns"))
    assert [received[t] for t in tokens] == [1] * 5
    assert parse_error(mismatch.value).reason == "REQUEST_ID_MISMATCH"


async def test_an_idempotency_key_is_sent_once_per_token_across_requests(start_node, sandbox):
    node = await start_node()
    await put_all(node.stub, sandbox)
    token = new_device_token()

    def keyed():
        n = apns_notification(token)
        n.idempotency_key = "spring-sale:device-7"
        return n

    first = await node.stub.Enqueue(enqueue_request([keyed()]))
    second = await node.stub.Enqueue(enqueue_request([keyed()]))  # a resumed fan-out
    await wait_final(node.stub, [first.results[0].notification_id])
    await asyncio.sleep(0.3)

    assert second.results[0].notification_id == first.results[0].notification_id
    assert (first.queued_count, second.queued_count) == (1, 0)
    assert len(sandbox.received("apns", token=token)) == 1


async def test_idempotency_keys_of_one_request_are_claimed_together_in_order(start_node, sandbox):
    """A campaign's Enqueue: a key per notification. A key claimed by an earlier request
    and a key repeated within the request answer the owner's id and queue nothing."""
    node = await start_node()
    await put_all(node.stub, sandbox)
    tokens = [new_device_token() for _ in range(6)]

    def keyed(token: str, key: str):
        n = apns_notification(token)
        n.idempotency_key = key
        return n

    earlier = await node.stub.Enqueue(enqueue_request([keyed(tokens[0], "sale:d0")]))
    batch = [keyed(token, f"sale:d{i}") for i, token in enumerate(tokens)]
    batch.append(keyed(tokens[3], "sale:d3"))  # the same key and token twice in one request
    answer = await node.stub.Enqueue(enqueue_request(batch))
    ids = [r.notification_id for r in answer.results]
    await wait_final(node.stub, [earlier.results[0].notification_id, *ids[1:6]])
    await asyncio.sleep(0.3)

    assert answer.queued_count == 5  # d1..d5; d0 was queued before, d3's repeat is d3
    assert ids[0] == earlier.results[0].notification_id
    assert ids[6] == ids[3]
    assert len(set(ids)) == 6
    received = Counter(e["token"] for e in sandbox.received("apns"))
    assert [received[t] for t in tokens] == [1] * 6


async def test_invalid_items_get_errors_and_the_others_are_queued(start_node, sandbox):
    node = await start_node()
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    good = apns_notification(new_device_token())
    bad_token = apns_notification("not-hex")
    no_payload = apns_notification(new_device_token())
    no_payload.ClearField("apns")
    no_credentials = fcm_notification(new_fcm_token())  # no FCM credentials uploaded

    answer = await node.stub.Enqueue(enqueue_request([bad_token, good, no_payload, no_credentials]))

    results = answer.results
    assert answer.queued_count == 1
    assert [bool(r.notification_id) for r in results] == [False, True, False, False]
    assert (results[0].error.code, results[0].error.reason) == (3, "TOKEN_MALFORMED")
    assert [v.field for v in results[0].error.field_violations] == ["token.apns.device_token"]
    assert [v.field for v in results[2].error.field_violations] == ["apns"]
    assert (results[3].error.code, results[3].error.reason) == (9, "CREDENTIALS_MISSING")
    done = await wait_final(node.stub, [results[1].notification_id])
    assert done[0].outcome == OUT.DELIVERY_OUTCOME_DELIVERED


async def test_a_web_push_key_off_the_curve_is_a_malformed_token_not_a_crash(start_node, sandbox):
    """p256dh of the right length that is no P-256 point could only fail at encryption,
    after queueing: Enqueue names it, and queues the item beside it."""
    node = await start_node()
    await put_all(node.stub, sandbox)
    good = webpush_notification(sandbox.webpush.create_subscription())
    off_curve = webpush_notification(sandbox.webpush.create_subscription())
    off_curve.token.web_push.p256dh = (
        base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).rstrip(b"=").decode()
    )

    answer = await node.stub.Enqueue(enqueue_request([off_curve, good]))

    bad, queued = answer.results
    assert answer.queued_count == 1
    assert (bad.error.code, bad.error.reason) == (3, "TOKEN_MALFORMED")
    assert [v.field for v in bad.error.field_violations] == ["token.web_push.p256dh"]
    assert off_curve.token.web_push.p256dh not in bad.error.message
    done = await wait_final(node.stub, [queued.notification_id])
    assert done[0].outcome == OUT.DELIVERY_OUTCOME_DELIVERED


@pytest.mark.parametrize(
    "endpoint",
    ["https://[::1/push/abc", "https://push.example:99999/x", "https://user:pw@push.example/x"],
)
async def test_a_web_push_endpoint_that_cannot_be_sent_to_is_a_malformed_token(
    start_node, sandbox, endpoint
):
    """An endpoint that does not parse as a push service URL could only fail at each
    send (and be retried until its record expired): Enqueue names it instead."""
    node = await start_node()
    await put_all(node.stub, sandbox)
    good = webpush_notification(sandbox.webpush.create_subscription())
    bad = webpush_notification(sandbox.webpush.create_subscription())
    bad.token.web_push.endpoint = endpoint

    answer = await node.stub.Enqueue(enqueue_request([bad, good]))

    refused, queued = answer.results
    assert answer.queued_count == 1
    assert (refused.error.code, refused.error.reason) == (3, "TOKEN_MALFORMED")
    assert [v.field for v in refused.error.field_violations] == ["token.web_push.endpoint"]
    done = await wait_final(node.stub, [queued.notification_id])
    assert done[0].outcome == OUT.DELIVERY_OUTCOME_DELIVERED


async def test_a_whole_bad_batch_is_rejected(start_node):
    node = await start_node()
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await node.stub.Enqueue(DS.EnqueueRequest(request_id="r1"))
    with pytest.raises(grpc.aio.AioRpcError) as unnamed:
        await node.stub.Enqueue(DS.EnqueueRequest(notifications=[apns_notification("ab" * 32)]))
    assert parse_error(empty.value).reason == "BATCH_TOO_LARGE"
    assert parse_error(unnamed.value).violations[0][0] == "request_id"


async def test_a_full_queue_answers_queue_full_with_a_hint_and_queues_nothing(
    start_node, sandbox, redis
):
    # No workers: the queue only fills. One shard, three items at most.
    node = await start_node(queue_shards=1, queue_max_depth=3, workers_enabled=False)
    await put_all(node.stub, sandbox)
    await node.stub.Enqueue(enqueue_request([apns_notification(new_device_token())] * 2))

    with pytest.raises(grpc.aio.AioRpcError) as full:
        await node.stub.Enqueue(
            enqueue_request([apns_notification(new_device_token()) for _ in range(2)])
        )
    fits = await node.stub.Enqueue(enqueue_request([apns_notification(new_device_token())]))

    error = parse_error(full.value)
    assert (full.value.code(), error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUEUE_FULL")
    assert error.retry_after_seconds is not None
    assert error.retry_after_seconds > 0
    assert fits.queued_count == 1
    assert await redis.xlen("dlv:q:{dlvq0}") == 3
    listed = await node.stub.ListNotifications(DS.ListNotificationsRequest(app_id="shop"))
    assert len(listed.notifications) == 3
    assert sandbox.received("apns") == []


async def test_an_apns_header_value_with_a_control_character_is_refused_at_enqueue(
    start_node, sandbox
):
    node = await start_node()
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    bad_topic = apns_notification(new_device_token(), topic="dev.app\r\nx-injected: 1")
    bad_collapse = apns_notification(new_device_token(), collapse_id=" spaced ")
    good = apns_notification(new_device_token(), collapse_id="score-update")

    answer = await node.stub.Enqueue(enqueue_request([bad_topic, bad_collapse, good]))

    first, second, third = answer.results
    assert answer.queued_count == 1
    assert (first.error.code, first.error.reason) == (3, "INVALID_ARGUMENT")
    assert [v.field for v in first.error.field_violations] == ["apns.topic"]
    assert [v.field for v in second.error.field_violations] == ["apns.collapse_id"]
    assert [first.notification_id, second.notification_id] == ["", ""]
    [done] = await wait_final(node.stub, [third.notification_id])
    assert done.outcome == OUT.DELIVERY_OUTCOME_DELIVERED
    assert sandbox.received("apns", token=bad_topic.token.apns.device_token) == []
