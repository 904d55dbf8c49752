"""The durable queue end to end: Enqueue over gRPC, workers sending to the sandboxes."""

from __future__ import annotations

from collections import Counter

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
