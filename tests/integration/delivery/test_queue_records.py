"""Records and outcomes of queued notifications: StreamOutcomes with cursors,
CancelNotifications, ListNotifications, token invalidation through Registration."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import grpc
import pytest

from herald.delivery.v1 import notification_pb2
from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc
from herald.registration.v1 import registration_service_pb2, registration_service_pb2_grpc
from herald.type.v1 import platform_pb2
from services.core.status import parse_error
from services.delivery.queue_keys import shard_for
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox.apns import new_device_token

from .conftest import APP, DEV, apns_credentials, apns_notification
from .queue_helpers import DS, OUT, enqueue_request, wait_final


async def _collect(stub: Any, request: DS.StreamOutcomesRequest, count: int) -> tuple[list, str]:
    """Read batches until `count` outcomes arrived; returns them and the last cursor."""
    events: list[notification_pb2.OutcomeEvent] = []
    cursor = ""
    call = stub.StreamOutcomes(request)
    try:
        async with asyncio.timeout(15):
            async for batch in call:
                events.extend(batch.outcomes)
                cursor = batch.cursor
                if len(events) >= count:
                    break
    finally:
        call.cancel()
    return events, cursor


def _campaign_batch(campaign: str, tokens: list[str]) -> list[notification_pb2.Notification]:
    out = []
    for token in tokens:
        n = apns_notification(token)
        n.campaign_id = campaign
        n.labels["send_id"] = "s1"
        out.append(n)
    return out


async def test_stream_outcomes_filters_and_resumes_by_cursor(start_node, sandbox):
    node = await start_node()
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    dead = new_device_token()
    sandbox.apns.set_token(dead, "unregistered", unregistered_at_ms=int(time.time() * 1000))
    first_tokens = [new_device_token() for _ in range(5)] + [dead]
    first = await node.stub.Enqueue(enqueue_request(_campaign_batch("c1", first_tokens)))
    await node.stub.Enqueue(enqueue_request(_campaign_batch("other", [new_device_token()])))
    await wait_final(node.stub, [r.notification_id for r in first.results])

    only_c1 = DS.StreamOutcomesRequest(campaign_id="c1", from_earliest=True, batch_size=4)
    seen, cursor = await _collect(node.stub, only_c1, 6)
    later = await node.stub.Enqueue(
        enqueue_request(_campaign_batch("c1", [new_device_token() for _ in range(3)]))
    )
    await wait_final(node.stub, [r.notification_id for r in later.results])
    resumed = DS.StreamOutcomesRequest(campaign_id="c1", cursor=cursor, batch_size=4)
    after, _ = await _collect(node.stub, resumed, 3)

    assert sorted(e.notification_id for e in seen) == sorted(
        r.notification_id for r in first.results
    )
    assert {e.campaign_id for e in seen + after} == {"c1"}
    by_id = {e.notification_id: e for e in seen}
    dead_event = by_id[first.results[5].notification_id]
    assert (dead_event.outcome, dead_event.reason, dead_event.provider_status) == (
        OUT.DELIVERY_OUTCOME_TOKEN_INVALID,
        "Unregistered",
        410,
    )
    ok = by_id[first.results[0].notification_id]
    assert ok.outcome == OUT.DELIVERY_OUTCOME_DELIVERED
    assert ok.apns_id
    assert ok.labels["send_id"] == "s1"
    assert ok.redacted_token
    assert ok.trace_id
    assert ok.platform == platform_pb2.PLATFORM_IOS
    assert sorted(e.notification_id for e in after) == sorted(
        r.notification_id for r in later.results
    )


async def test_stream_outcomes_rejects_bad_and_expired_cursors(start_node, sandbox):
    # One shard, so which outcomes a later trim deletes does not depend on hashing.
    node = await start_node(outcomes_retention_seconds=1, queue_shards=1)
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    first = await node.stub.Enqueue(enqueue_request([apns_notification(new_device_token())]))
    await wait_final(node.stub, [first.results[0].notification_id])
    _, behind = await _collect(node.stub, DS.StreamOutcomesRequest(from_earliest=True), 1)
    await asyncio.sleep(1.2)
    # These trim the first outcome, which the cursor had read: it is still good.
    later = await node.stub.Enqueue(
        enqueue_request([apns_notification(new_device_token()) for _ in range(3)])
    )
    await wait_final(node.stub, [r.notification_id for r in later.results])
    still_good, _ = await _collect(node.stub, DS.StreamOutcomesRequest(cursor=behind), 3)
    _, caught_up = await _collect(node.stub, DS.StreamOutcomesRequest(from_earliest=True), 3)
    await asyncio.sleep(1.2)
    # This one trims the three the first cursor had not read; the second had read them.
    again = await node.stub.Enqueue(enqueue_request([apns_notification(new_device_token())]))
    await wait_final(node.stub, [again.results[0].notification_id])
    resumed, _ = await _collect(node.stub, DS.StreamOutcomesRequest(cursor=caught_up), 1)

    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await _collect(node.stub, DS.StreamOutcomesRequest(cursor=behind), 1)
    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await _collect(node.stub, DS.StreamOutcomesRequest(cursor="bm90LWEtY3Vyc29y"), 1)
    with pytest.raises(grpc.aio.AioRpcError) as other_query:
        await _collect(node.stub, DS.StreamOutcomesRequest(cursor=behind, app_id="x"), 1)

    assert sorted(e.notification_id for e in still_good) == sorted(
        r.notification_id for r in later.results
    )
    assert [e.notification_id for e in resumed] == [again.results[0].notification_id]
    assert expired.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert parse_error(expired.value).reason == "CURSOR_EXPIRED"
    assert parse_error(malformed.value).reason == "INVALID_CURSOR"
    assert parse_error(other_query.value).reason == "INVALID_CURSOR"


async def _outcomes_in_both_shards(node: Any) -> list[str]:
    """Enqueue one at a time until both of two shards hold an outcome."""
    ids: list[str] = []
    while {shard_for(nid, 2) for nid in ids} != {0, 1}:
        answer = await node.stub.Enqueue(enqueue_request([apns_notification(new_device_token())]))
        ids.append(answer.results[0].notification_id)
    await wait_final(node.stub, ids)
    return ids


async def test_a_new_cursor_does_not_expire_for_outcomes_trimmed_before_it(start_node, sandbox):
    """A fresh cursor's shards start at their watermark (never "0-0"): outcomes trimmed
    before the cursor existed cannot expire it, even on a shard it has not read yet."""
    node = await start_node(outcomes_retention_seconds=1, queue_shards=2)
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    await _outcomes_in_both_shards(node)
    await asyncio.sleep(1.2)
    newer = await _outcomes_in_both_shards(node)  # trims the older ones on both shards
    # One outcome per batch: the cursor has read one shard only.
    first, cursor = await _collect(
        node.stub, DS.StreamOutcomesRequest(from_earliest=True, batch_size=1), 1
    )
    rest, _ = await _collect(node.stub, DS.StreamOutcomesRequest(cursor=cursor), len(newer) - 1)

    assert sorted(e.notification_id for e in first + rest) == sorted(newer)


async def test_cancel_notifications_skips_queued_items_and_records_cancelled(start_node, sandbox):
    # No workers yet: everything waits in the queue.
    idle = await start_node(workers_enabled=False)
    await idle.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    doomed = [new_device_token() for _ in range(10)]
    kept = new_device_token()
    one_off = new_device_token()
    campaign = await idle.stub.Enqueue(enqueue_request(_campaign_batch("spring", doomed)))
    others = await idle.stub.Enqueue(
        enqueue_request([apns_notification(kept), apns_notification(one_off)])
    )

    by_campaign = await idle.stub.CancelNotifications(
        DS.CancelNotificationsRequest(app_id=APP, campaign_id="spring")
    )
    by_id = await idle.stub.CancelNotifications(
        DS.CancelNotificationsRequest(
            app_id=APP, notification_ids=[others.results[1].notification_id]
        )
    )
    repeated = await idle.stub.CancelNotifications(
        DS.CancelNotificationsRequest(app_id=APP, campaign_id="spring")
    )
    worker = await start_node()
    done = await wait_final(
        worker.stub, [r.notification_id for r in [*campaign.results, *others.results]]
    )
    await asyncio.sleep(0.3)  # a cancelled item would have been sent by now

    assert (by_campaign.cancelled_count, by_id.cancelled_count, repeated.cancelled_count) == (
        10,
        1,
        0,
    )
    assert [n.outcome for n in done] == [OUT.DELIVERY_OUTCOME_CANCELLED] * 10 + [
        OUT.DELIVERY_OUTCOME_DELIVERED,
        OUT.DELIVERY_OUTCOME_CANCELLED,
    ]
    assert done[0].outcome_reason == "CANCELLED"
    assert done[0].attempts == []
    assert {e["token"] for e in sandbox.received("apns")} == {kept}
    events, _ = await _collect(
        worker.stub,
        DS.StreamOutcomesRequest(
            campaign_id="spring", from_earliest=True, outcomes=[OUT.DELIVERY_OUTCOME_CANCELLED]
        ),
        10,
    )
    assert len(events) == 10
    with pytest.raises(grpc.aio.AioRpcError) as neither:
        await worker.stub.CancelNotifications(DS.CancelNotificationsRequest(app_id=APP))
    assert parse_error(neither.value).reason == "INVALID_ARGUMENT"


async def test_list_notifications_by_app_device_and_campaign_with_pages(start_node, sandbox):
    node = await start_node(workers_enabled=False)
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    batch = _campaign_batch("summer", [new_device_token() for _ in range(7)])
    for i, n in enumerate(batch):
        n.device_id = f"d{i % 2}"
    campaign = await node.stub.Enqueue(enqueue_request(batch))
    await asyncio.sleep(0.01)
    newest = await node.stub.Enqueue(enqueue_request([apns_notification(new_device_token())]))

    pages: list[list[str]] = []
    token = ""
    while True:
        page = await node.stub.ListNotifications(
            DS.ListNotificationsRequest(app_id=APP, page_size=3, page_token=token)
        )
        pages.append([n.notification_id for n in page.notifications])
        token = page.next_page_token
        if not token:
            break
    device = await node.stub.ListNotifications(
        DS.ListNotificationsRequest(app_id=APP, device_id="d1", campaign_id="summer")
    )
    full = await node.stub.ListNotifications(
        DS.ListNotificationsRequest(
            app_id=APP, campaign_id="summer", view=notification_pb2.NOTIFICATION_VIEW_FULL
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await node.stub.ListNotifications(
            DS.ListNotificationsRequest(app_id=APP, device_id="d1", page_token=token or "eyJ9")
        )

    listed = [nid for page in pages for nid in page]
    assert [len(p) for p in pages] == [3, 3, 2]
    assert listed[0] == newest.results[0].notification_id  # newest first
    assert sorted(listed) == sorted(
        [r.notification_id for r in campaign.results] + [newest.results[0].notification_id]
    )
    assert sorted(n.notification_id for n in device.notifications) == sorted(
        campaign.results[i].notification_id for i in (1, 3, 5)
    )
    assert {n.outcome for n in device.notifications} == {OUT.DELIVERY_OUTCOME_QUEUED}
    assert not device.notifications[0].HasField("apns")  # BASIC: no content
    assert all(n.HasField("apns") for n in full.notifications)
    assert all(not n.HasField("token") and n.redacted_token for n in full.notifications)
    assert parse_error(bad_token.value).reason == "INVALID_PAGE_TOKEN"


async def test_get_notification_unknown_is_not_found(start_node):
    node = await start_node()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await node.stub.GetNotification(DS.GetNotificationRequest(notification_id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert parse_error(missing.value).reason == "NOTIFICATION_NOT_FOUND"


async def test_queued_410_invalidates_in_registration_unless_reregistered_since(
    start_services, start_node, delivery_settings, sandbox
):
    servers = await start_services(REGISTRATION_SPEC, IDENTITY_SPEC)
    wired = delivery_settings.model_copy(
        update={"registration_address": f"127.0.0.1:{servers['registration'].port}"}
    )
    from services.delivery.spec import spec_with

    from .queue_helpers import Node, quick_options

    identity_channel = grpc.aio.insecure_channel(f"127.0.0.1:{servers['identity'].port}")
    registration_channel = grpc.aio.insecure_channel(f"127.0.0.1:{servers['registration'].port}")
    node = None
    try:
        from services.core.server import start_server

        delivery = await start_server(spec_with(quick_options()), wired, port=0)
        node = Node(delivery)
        identity = identity_service_pb2_grpc.IdentityServiceStub(identity_channel)
        registration = registration_service_pb2_grpc.RegistrationServiceStub(registration_channel)
        await identity.CreateApp(
            identity_service_pb2.CreateAppRequest(
                app=app_pb2.App(display_name="Shop"), app_id=APP, request_id=str(uuid.uuid4())
            )
        )
        await node.stub.PutCredentials(
            DS.PutCredentialsRequest(credentials=apns_credentials(sandbox))
        )
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
        # "fresh" went dead after its registration; "stale" was re-registered after its 410.
        sandbox.apns.set_token(fresh, "unregistered", unregistered_at_ms=now_ms + 60_000)
        sandbox.apns.set_token(stale, "unregistered", unregistered_at_ms=now_ms - 3_600_000)
        batch = []
        for device_id, token in (("fresh", fresh), ("stale", stale)):
            n = apns_notification(token)
            n.device_id = device_id
            batch.append(n)

        answer = await node.stub.Enqueue(enqueue_request(batch))
        done = await wait_final(node.stub, [r.notification_id for r in answer.results])
        removed = await registration.GetDevice(
            registration_service_pb2.GetDeviceRequest(app_id=APP, device_id="fresh")
        )
        kept = await registration.GetDevice(
            registration_service_pb2.GetDeviceRequest(app_id=APP, device_id="stale")
        )
    finally:
        if node is not None:
            await node.close()
            await node.server.stop(grace=0)
        for channel in (identity_channel, registration_channel):
            await channel.close(None)

    assert [n.outcome for n in done] == [OUT.DELIVERY_OUTCOME_TOKEN_INVALID] * 2
    assert [n.attempts[0].action for n in done] == [
        notification_pb2.PROVIDER_ACTION_DELETE_TOKEN
    ] * 2
    assert not removed.device.HasField("token")
    assert removed.device.redacted_token == ""
    assert kept.device.redacted_token != ""


async def test_a_burst_answered_together_records_each_attempt_and_one_outcome_each(
    start_node, sandbox
):
    """Workers claim a read batch with one script call and record the attempts answered
    meanwhile with one call per shard: every notification must still get its own
    attempt (the provider's apns-id), its own outcome, and its retry scheduled."""
    node = await start_node()
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    good = [new_device_token() for _ in range(120)]
    dead = [new_device_token() for _ in range(4)]
    for token in dead:
        sandbox.apns.set_token(token, "unregistered", unregistered_at_ms=int(time.time() * 1000))
    busy = new_device_token()
    sandbox.faults.add(
        service="apns", token=busy, status=429, reason="TooManyRequests", retry_after=1, times=1
    )
    tokens = good + dead + [busy]

    answer = await node.stub.Enqueue(enqueue_request([apns_notification(t) for t in tokens]))
    ids = [r.notification_id for r in answer.results]
    done = await wait_final(node.stub, ids)
    events, _ = await _collect(
        node.stub, DS.StreamOutcomesRequest(from_earliest=True, batch_size=500), len(ids) + 1
    )

    by_token = dict(zip(tokens, done, strict=True))
    accepted = {e["token"]: e["apns_id"] for e in sandbox.received("apns", status=200)}
    for token in good:
        record = by_token[token]
        assert record.outcome == OUT.DELIVERY_OUTCOME_DELIVERED
        assert [(a.attempt_number, a.provider_status) for a in record.attempts] == [(1, 200)]
        assert record.attempts[0].apns_id == accepted[token]
    for token in dead:
        assert by_token[token].outcome == OUT.DELIVERY_OUTCOME_TOKEN_INVALID
    retried = by_token[busy]
    assert retried.outcome == OUT.DELIVERY_OUTCOME_DELIVERED
    assert [(a.attempt_number, a.provider_status) for a in retried.attempts] == [(1, 429), (2, 200)]
    finals = Counter(
        e.notification_id for e in events if e.outcome != OUT.DELIVERY_OUTCOME_RETRYING
    )
    assert sorted(finals.values()) == [1] * len(ids)
    assert [e.outcome for e in events if e.notification_id == retried.notification_id] == [
        OUT.DELIVERY_OUTCOME_RETRYING,
        OUT.DELIVERY_OUTCOME_DELIVERED,
    ]
