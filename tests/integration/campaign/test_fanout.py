"""Fan-out behaviour: schedules on a manual clock, quiet hours, throttle, frequency
caps, cancel mid-send, a crash mid-fan-out resumed by another process, several
processes launching once, and reports that add up (outcomes via StreamOutcomes)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from google.protobuf import duration_pb2

from herald.campaign.v1 import campaign_pb2
from herald.type.v1 import filter_pb2
from tests.integration.campaign.conftest import (
    ANDROID,
    CS,
    IOS,
    START,
    C,
    Stack,
    create,
    device,
    import_devices,
    launch,
    message,
    report,
    upsert_user,
    wait_for,
    wait_state,
)


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


async def many(stack: Stack, count: int, prefix: str = "d") -> None:
    await import_devices(
        stack, [device(f"{prefix}{i:04d}", ANDROID if i % 2 else IOS) for i in range(count)]
    )


async def sent_count(stack: Stack, campaign_id: str) -> int:
    return len(stack.delivery.unique(campaign_id))


async def test_send_at_a_time_waits_for_the_clock(stack: Stack):
    await many(stack, 3)
    created = await create(stack, schedule=C.Schedule(send_time={"seconds": int(START) + 3600}))  # type: ignore[arg-type]
    launched = await launch(stack, created.campaign_id)
    assert launched.campaign.state == C.CAMPAIGN_STATE_SCHEDULED
    await asyncio.sleep(0.3)
    assert await sent_count(stack, created.campaign_id) == 0
    stack.clock.advance(3601)
    done = await wait_state(stack, created.campaign_id, C.CAMPAIGN_STATE_COMPLETED)
    assert done.sent == 3


async def test_local_time_per_recipient_zone(stack: Stack):
    # Now is 2030-03-17 17:46Z. 20:00 local: Tokyo has passed (11:00Z), Paris is at
    # 19:00Z, New York (EDT) at 00:00Z the next day.
    await import_devices(
        stack,
        [
            device("tokyo", IOS, time_zone="Asia/Tokyo"),
            device("paris", IOS, time_zone="Europe/Paris"),
            device("ny", ANDROID, time_zone="America/New_York"),
        ],
    )
    local = C.LocalSchedule(date="2030-03-17", time=filter_pb2.TimeOfDay(hours=20))
    created = await create(stack, schedule=C.Schedule(local=local))
    cid = created.campaign_id
    await launch(stack, cid)
    await wait_for(lambda: _targeted(stack, cid, 3), what="audience resolved")
    assert await sent_count(stack, cid) == 0
    stack.clock.set(at("2030-03-17T19:00:01"))
    await wait_for(lambda: _sent(stack, cid, 1), what="paris")
    assert {n.device_id for n in stack.delivery.unique(cid).values()} == {"paris"}
    stack.clock.set(at("2030-03-18T00:00:01"))
    done = await wait_state(stack, cid, C.CAMPAIGN_STATE_COMPLETED)
    assert {n.device_id for n in stack.delivery.unique(cid).values()} == {"paris", "ny"}
    assert (done.targeted, done.sent, done.suppressed) == (3, 2, 1)
    assert [(r.reason, r.count) for r in done.suppressed_by_reason] == [("LOCAL_TIME_PASSED", 1)]


async def test_quiet_hours_hold_until_the_window_ends(stack: Stack):
    # 17:46Z is 02:46 in Tokyo (inside 22:00-08:00) and 18:46 in Paris (outside).
    await import_devices(
        stack,
        [
            device("tokyo", IOS, time_zone="Asia/Tokyo"),
            device("paris", IOS, time_zone="Europe/Paris"),
        ],
    )
    quiet = C.QuietHours(start=filter_pb2.TimeOfDay(hours=22), end=filter_pb2.TimeOfDay(hours=8))
    created = await create(stack, schedule=C.Schedule(quiet_hours=quiet))
    cid = created.campaign_id
    await launch(stack, cid)
    await wait_for(lambda: _sent(stack, cid, 1), what="paris now")
    assert await stack.campaign.GetCampaign(CS.GetCampaignRequest(campaign_id=cid))
    stack.clock.set(at("2030-03-17T23:00:01"))  # 08:00 in Tokyo
    done = await wait_state(stack, cid, C.CAMPAIGN_STATE_COMPLETED)
    assert done.sent == 2
    # With a TTL shorter than the hold, the held recipient is dropped instead.
    short = message(ttl=duration_pb2.Duration(seconds=600))
    expiring = await create(stack, schedule=C.Schedule(quiet_hours=quiet), message=short)
    stack.clock.set(START + 86400)  # 02:46 in Tokyo again
    await launch(stack, expiring.campaign_id)
    done = await wait_state(stack, expiring.campaign_id, C.CAMPAIGN_STATE_COMPLETED)
    assert [(r.reason, r.count) for r in done.suppressed_by_reason] == [("QUIET_HOURS_EXPIRED", 1)]


async def test_throttle_paces_messages_per_minute(stack: Stack):
    await many(stack, 12)
    created = await create(stack, throttle=C.Throttle(messages_per_minute=5))
    cid = created.campaign_id
    await launch(stack, cid)
    await wait_for(lambda: _sent(stack, cid, 5), what="first minute")
    await asyncio.sleep(0.5)
    assert await sent_count(stack, cid) == 5  # the clock has not moved: no more
    stack.clock.advance(60)
    await wait_for(lambda: _sent(stack, cid, 10), what="second minute")
    await asyncio.sleep(0.3)
    assert await sent_count(stack, cid) == 10
    stack.clock.advance(60)
    done = await wait_state(stack, cid, C.CAMPAIGN_STATE_COMPLETED)
    assert done.sent == 12


async def test_frequency_cap_across_campaigns(stack: Stack):
    await upsert_user(stack, "ann")
    await import_devices(
        stack, [device("ann-1", IOS, "ann"), device("ann-2", ANDROID, "ann"), device("anon", IOS)]
    )
    cap = C.FrequencyCap(max_messages=1, period=duration_pb2.Duration(seconds=86400))
    first = await create(stack, frequency_cap=cap)
    await launch(stack, first.campaign_id)
    done = await wait_state(stack, first.campaign_id, C.CAMPAIGN_STATE_COMPLETED)
    assert done.sent == 3  # both of ann's devices: one campaign counts once
    second = await create(stack, frequency_cap=cap)
    await launch(stack, second.campaign_id)
    done = await wait_state(stack, second.campaign_id, C.CAMPAIGN_STATE_COMPLETED)
    assert done.sent == 1
    assert {n.device_id for n in stack.delivery.unique(second.campaign_id).values()} == {"anon"}
    assert [(r.reason, r.count) for r in done.suppressed_by_reason] == [("FREQUENCY_CAPPED", 2)]
    stack.clock.advance(86401)
    third = await create(stack, frequency_cap=cap)
    await launch(stack, third.campaign_id)
    done = await wait_state(stack, third.campaign_id, C.CAMPAIGN_STATE_COMPLETED)
    assert done.sent == 3


async def test_cancel_stops_the_remaining_sends(stack: Stack):
    await many(stack, 200)
    stack.delivery.delay = 0.2
    created = await create(stack)
    cid = created.campaign_id
    await launch(stack, cid)
    await wait_for(lambda: _sent(stack, cid, 20), what="first batch")
    cancelled = await stack.campaign.CancelCampaign(CS.CancelCampaignRequest(campaign_id=cid))
    assert cancelled.campaign.state == C.CAMPAIGN_STATE_CANCELLED
    await asyncio.sleep(0.6)
    calls = stack.delivery.enqueue_calls
    await asyncio.sleep(0.6)
    assert stack.delivery.enqueue_calls == calls  # stopped within the batch in flight
    assert await sent_count(stack, cid) < 200
    assert cid in stack.delivery.cancelled
    again = await stack.campaign.CancelCampaign(CS.CancelCampaignRequest(campaign_id=cid))
    assert again.campaign.state == C.CAMPAIGN_STATE_CANCELLED


async def test_a_crash_mid_fan_out_resumes_without_sending_twice(stack: Stack):
    await many(stack, 120)
    stack.delivery.delay = 0.15
    created = await create(stack)
    cid = created.campaign_id
    await launch(stack, cid)
    await wait_for(lambda: _sent(stack, cid, 40), what="a few batches")
    await stack.servers["campaign"].stop(grace=0)  # the process dies mid fan-out
    resumed_at = await sent_count(stack, cid)
    assert resumed_at < 120
    _, other = await stack.start_campaign()
    stack.delivery.delay = 0.0

    async def completed() -> bool:
        got = await other.GetCampaign(CS.GetCampaignRequest(campaign_id=cid))
        return bool(got.campaign.state == C.CAMPAIGN_STATE_COMPLETED)

    await wait_for(completed, within=15, what="completion by the second process")
    keys = stack.delivery.keys_of(cid)
    assert len(set(keys)) == 120  # every device, each with its idempotency key
    assert len(keys) - 120 <= 20  # at most the one batch in flight was offered again
    done = (await other.GetCampaignReport(CS.GetCampaignReportRequest(campaign_id=cid))).report
    assert (done.targeted, done.sent) == (120, 120)  # counted once


async def test_several_processes_launch_a_scheduled_campaign_once(stack: Stack):
    await many(stack, 60)
    await stack.start_campaign()
    await stack.start_campaign()
    created = await create(stack, schedule=C.Schedule(send_time={"seconds": int(START) + 60}))  # type: ignore[arg-type]
    await launch(stack, created.campaign_id)
    stack.clock.advance(61)
    done = await wait_state(stack, created.campaign_id, C.CAMPAIGN_STATE_COMPLETED)
    keys = stack.delivery.keys_of(created.campaign_id)
    assert len(keys) == len(set(keys)) == 60
    assert done.sent == 60


async def test_reports_add_up_with_outcomes_and_engagement(stack: Stack):
    await many(stack, 30)
    dead = list(await _tokens(stack))[:4]
    stack.delivery.dead_tokens.update(dead)
    tracked = C.ConversionTracking(event_names=["purchase"])
    await upsert_user(stack, "verbose", note="x" * 4100)
    await import_devices(stack, [device("verbose-phone", IOS, "verbose")])
    created = await create(stack, conversion_tracking=tracked, message=message("Hi {{ note }}"))
    cid = created.campaign_id
    await launch(stack, cid)
    await wait_state(stack, cid, C.CAMPAIGN_STATE_COMPLETED)

    async def settled() -> bool:
        return bool((await report(stack, cid)).in_flight == 0)

    await wait_for(settled, what="outcomes")
    r = await report(stack, cid)
    assert r.targeted == r.sent + r.suppressed
    assert r.sent == r.delivered + r.bounced + r.failed
    assert r.bounced == 4
    assert [(b.reason, b.count) for b in r.bounced_by_reason] == [("Unregistered", 4)]
    # One user's attribute makes the payload too large: suppressed, never sent.
    assert {s.reason: s.count for s in r.suppressed_by_reason} == {"PAYLOAD_TOO_LARGE": 1}
    assert r.targeted == 31
    assert sum(p.targeted for p in r.platform_reports) == r.targeted
    some = list(stack.delivery.unique(cid).values())[:2]
    events = [
        {"event_id": "e1", "kind": 1, "notification_id": some[0].notification_id},
        {"event_id": "e1", "kind": 1, "notification_id": some[0].notification_id},  # replay
        {
            "event_id": "e2",
            "kind": 1,
            "notification_id": some[0].notification_id,
        },  # same notification
        {"event_id": "e3", "kind": 2, "campaign_id": cid},
        {"event_id": "e4", "kind": 3, "campaign_id": cid, "conversion_event": "purchase"},
        {"event_id": "e5", "kind": 3, "campaign_id": cid, "conversion_event": "other"},
        {"event_id": "", "kind": 1, "campaign_id": cid},
    ]
    recorded = await stack.campaign.RecordEngagement(
        CS.RecordEngagementRequest(
            events=[{"app_id": "shop", "event_time": {"seconds": int(START)}, **e} for e in events]  # type: ignore[misc]
        )
    )
    assert [r.status for r in recorded.results] == [1, 2, 1, 1, 1, 1, 3]
    assert (recorded.recorded_count, recorded.duplicate_count) == (5, 1)
    r = await report(stack, cid)
    assert (r.opened, r.dismissed, r.conversions) == (1, 1, 1)
    snapshots = []
    async for answer in stack.campaign.WatchCampaign(CS.WatchCampaignRequest(campaign_id=cid)):
        snapshots.append(answer.progress)
    assert snapshots[-1].state == C.CAMPAIGN_STATE_COMPLETED
    assert snapshots[-1].fraction_complete == 1.0


async def _tokens(stack: Stack) -> list[str]:
    from herald.registration.v1 import registration_service_pb2 as rpb

    tokens = []
    async for page in stack.registration.StreamAudience(
        rpb.StreamAudienceRequest(query=rpb.AudienceQuery(app_ids=["shop"], platforms=[IOS]))
    ):
        tokens += [d.token.apns.device_token for d in page.devices]
    return tokens


async def _targeted(stack: Stack, campaign_id: str, count: int) -> bool:
    return bool((await report(stack, campaign_id)).targeted == count)


async def _sent(stack: Stack, campaign_id: str, count: int) -> bool:
    return await sent_count(stack, campaign_id) >= count


__all__ = ["campaign_pb2"]
