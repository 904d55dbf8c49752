"""What COMPLETED means and what happens around it: the campaign stays SENDING until
Delivery's last outcome (or a bounded wait), a batch enqueued while CancelCampaign runs
is still counted, and the per-notification dedupe sets expire once the campaign is
final. These run on a single redis-server and on Redis Cluster (--redis-cluster)."""

from __future__ import annotations

import asyncio

from google.protobuf import duration_pb2, timestamp_pb2

from herald.campaign.v1 import campaign_pb2, report_pb2
from herald.type.v1 import push_options_pb2
from services.campaign import keys
from tests.integration.campaign.conftest import (
    ANDROID,
    CS,
    IOS,
    C,
    Stack,
    create,
    device,
    import_devices,
    launch,
    message,
    report,
    wait_for,
    wait_state,
)

PO = push_options_pb2


async def many(stack: Stack, count: int) -> None:
    await import_devices(
        stack, [device(f"d{i:04d}", ANDROID if i % 2 else IOS) for i in range(count)]
    )


async def state_of(stack: Stack, campaign_id: str) -> int:
    got = await stack.campaign.GetCampaign(CS.GetCampaignRequest(campaign_id=campaign_id))
    return int(got.campaign.state)


async def test_completed_only_after_the_last_outcome_and_watch_streams_until_then(
    stack: Stack,
):
    stack.delivery.auto_deliver = False  # outcomes come when the test says so
    await many(stack, 6)
    created = await create(stack)
    cid = created.campaign_id
    await launch(stack, cid)
    watched: list[campaign_pb2.CampaignState] = []

    async def watch() -> None:
        request = CS.WatchCampaignRequest(campaign_id=cid, min_interval={"nanos": 100_000_000})  # type: ignore[arg-type]
        async for answer in stack.campaign.WatchCampaign(request):
            watched.append(answer.progress.state)

    watcher = asyncio.create_task(watch())

    async def all_sent() -> bool:
        return bool((await report(stack, cid)).sent == 6)

    await wait_for(all_sent, what="6 sent")
    await asyncio.sleep(0.5)
    r = await report(stack, cid)
    assert (r.state, r.in_flight) == (C.CAMPAIGN_STATE_SENDING, 6)
    assert not watcher.done()  # the progress stream goes on while outcomes are missing
    notifications = list(stack.delivery.unique(cid).values())
    for notification in notifications[:5]:
        await stack.delivery.emit(notification, PO.DELIVERY_OUTCOME_DELIVERED)
    await asyncio.sleep(0.5)
    assert await state_of(stack, cid) == C.CAMPAIGN_STATE_SENDING  # one still in flight
    await stack.delivery.emit(notifications[5], PO.DELIVERY_OUTCOME_FAILED, "InternalError")
    done = await wait_state(stack, cid, C.CAMPAIGN_STATE_COMPLETED)
    assert (done.sent, done.delivered, done.failed, done.in_flight) == (6, 5, 1, 0)
    await asyncio.wait_for(watcher, 5)
    assert watched[-1] == C.CAMPAIGN_STATE_COMPLETED
    assert C.CAMPAIGN_STATE_SENDING in watched


async def test_completes_with_what_is_known_after_the_bounded_wait(stack: Stack):
    stack.delivery.auto_deliver = False  # no outcome ever arrives
    await many(stack, 4)
    # TTL 60 s: the wait for outcomes ends 60 s + 30 s (Delivery's last attempt) after
    # the fan-out finished, on the campaign's clock.
    created = await create(stack, message=message(ttl=duration_pb2.Duration(seconds=60)))
    cid = created.campaign_id
    await launch(stack, cid)

    async def all_sent() -> bool:
        return bool((await report(stack, cid)).sent == 4)

    await wait_for(all_sent, what="4 sent")

    async def settling() -> bool:
        # The wait is measured from the moment the fan-out finished, stamped just after
        # the last batch: advancing the clock before the stamp would move it too.
        return bool(await stack.redis.hexists(keys.campaign(cid), "settle"))

    await wait_for(settling, what="the fan-out's end stamped")
    stack.clock.advance(80)
    await asyncio.sleep(0.5)
    assert await state_of(stack, cid) == C.CAMPAIGN_STATE_SENDING
    stack.clock.advance(11)
    done = await wait_state(stack, cid, C.CAMPAIGN_STATE_COMPLETED)
    assert (done.sent, done.delivered, done.in_flight) == (4, 0, 4)


async def test_a_batch_enqueued_during_cancel_is_counted(stack: Stack):
    # batch_size is 20: the first batch's Enqueue is slow, and the campaign is
    # cancelled while Delivery holds it. The batch was handed over, so it is counted
    # (then moved to suppressed CANCELLED by Delivery's CANCELLED outcomes).
    stack.delivery.delay = 1.0
    stack.delivery.auto_deliver = False  # still queued when cancelled: Delivery drops them
    await many(stack, 50)
    created = await create(stack)
    cid = created.campaign_id
    await launch(stack, cid)

    async def enqueuing() -> bool:
        return stack.delivery.enqueue_calls >= 1

    await wait_for(enqueuing, what="the first Enqueue")
    await stack.campaign.CancelCampaign(CS.CancelCampaignRequest(campaign_id=cid))

    async def settled() -> bool:
        r = await report(stack, cid)
        return bool(r.targeted == 20 and r.in_flight == 0 and r.sent + r.suppressed == 20)

    await wait_for(settled, what="the cancelled batch counted")
    await asyncio.sleep(0.5)
    r = await report(stack, cid)
    assert len(stack.delivery.unique(cid)) == 20
    assert (r.targeted, r.sent, r.suppressed, r.pending) == (20, 0, 20, 0)
    assert {s.reason: s.count for s in r.suppressed_by_reason} == {"CANCELLED": 20}
    assert r.state == C.CAMPAIGN_STATE_CANCELLED


async def test_dedupe_sets_expire_once_the_campaign_is_final(stack: Stack):
    await many(stack, 4)
    created = await create(stack)
    cid = created.campaign_id
    await launch(stack, cid)
    await wait_state(stack, cid, C.CAMPAIGN_STATE_COMPLETED)
    some = list(stack.delivery.unique(cid).values())
    at = timestamp_pb2.Timestamp(seconds=1_900_000_000)
    events = [
        report_pb2.EngagementEvent(
            event_id=f"e{kind}",
            kind=kind,
            notification_id=some[kind].notification_id,
            app_id="shop",
            event_time=at,
        )
        for kind in (report_pb2.ENGAGEMENT_KIND_OPENED, report_pb2.ENGAGEMENT_KIND_DISMISSED)
    ]
    await stack.campaign.RecordEngagement(CS.RecordEngagementRequest(events=events))
    week = 7 * 86400 * 1000
    for key in (keys.finals(cid), keys.opened(cid), keys.dismissed(cid), keys.events(cid)):
        ttl = await stack.redis.pttl(key)
        assert week - 60_000 < ttl <= week + 86400 * 1000 * 4, (key, ttl)
    # A late outcome after the set expired recreates it with an expiry again.
    await stack.redis.delete(keys.finals(cid))
    await stack.delivery.emit(some[0], PO.DELIVERY_OUTCOME_DELIVERED)

    async def recreated() -> bool:
        return bool(await stack.redis.pttl(keys.finals(cid)) > 0)

    await wait_for(recreated, what="finals recreated with an expiry")
