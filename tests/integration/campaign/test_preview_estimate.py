"""PreviewAudience and LaunchCampaign's estimate on an audience larger than
Registration's sample: an estimate (exact = false) near the truth, users not
multiplied by their devices, and a launch that records it for the progress bar."""

from __future__ import annotations

import asyncio

from google.protobuf import struct_pb2, timestamp_pb2

from herald.campaign.v1 import audience_pb2 as A
from herald.registration.v1 import device_pb2
from herald.registration.v1 import registration_service_pb2 as rpb
from herald.type.v1 import filter_pb2 as F
from tests.integration.campaign.conftest import (
    ANDROID,
    APP,
    CS,
    IOS,
    START,
    C,
    Stack,
    create,
    device,
    import_devices,
    launch,
    upsert_user,
)

USERS = 1500  # four devices each: i, i + 1500, ... (one platform per user)
BOUND = 4 * USERS
UNBOUND = 400
GOLD_USERS = {f"u{i}" for i in range(USERS) if i % 3 == 0}  # 500 users, 2,000 devices
# Above Registration's default sample (5,000), so its count is an estimate; the device
# ids are fixed, so the sampled shards (and the answers) are the same every run. The
# tolerance is ~5 standard errors of the preview's 2,000-device sample.
TOLERANCE = 0.15


def near(estimate: int, truth: int) -> bool:
    return abs(estimate - truth) <= TOLERANCE * truth


async def seed(stack: Stack) -> None:
    ids = iter(range(USERS))

    async def upsert() -> None:
        for i in ids:
            await upsert_user(stack, f"u{i}", plan="gold" if f"u{i}" in GOLD_USERS else "free")

    await asyncio.gather(*(upsert() for _ in range(16)))
    await import_devices(
        stack,
        [
            device(f"dev-{i:05d}", IOS if i % 2 else ANDROID, f"u{i % USERS}" if i < BOUND else "")
            for i in range(BOUND + UNBOUND)
        ],
    )
    everyone = await stack.registration.CountAudience(
        rpb.CountAudienceRequest(
            query=rpb.AudienceQuery(app_ids=[APP], reachability=device_pb2.REACHABILITY_VISIBLE),
            exact=True,
        )
    )
    assert (everyone.device_count, everyone.user_count) == (BOUND + UNBOUND, USERS)


def gold() -> A.Audience:
    return A.Audience(
        filter=A.AudienceFilter(
            user_attribute=F.AttributeFilter(
                attribute="plan", equals=struct_pb2.Value(string_value="gold")
            )
        )
    )


async def preview(stack: Stack, audience: A.Audience) -> CS.PreviewAudienceResponse:
    return await stack.campaign.PreviewAudience(
        CS.PreviewAudienceRequest(app_id=APP, audience=audience)
    )


async def test_a_large_audience_preview_is_an_estimate_near_the_truth(stack: Stack):
    await seed(stack)
    everyone = await preview(stack, A.Audience())
    assert not everyone.exact
    assert near(everyone.estimated_devices, BOUND + UNBOUND)
    assert near(everyone.estimated_users, USERS)
    estimates = {p.platform: p.estimated_devices for p in everyone.platform_estimates}
    assert near(estimates[IOS], (BOUND + UNBOUND) // 2)
    assert near(estimates[ANDROID], (BOUND + UNBOUND) // 2)
    assert everyone.sample_user_ids

    ios = await preview(
        stack, A.Audience(filter=A.AudienceFilter(platforms=A.PlatformList(platforms=[IOS])))
    )
    assert not ios.exact
    assert near(ios.estimated_devices, (BOUND + UNBOUND) // 2)
    assert near(ios.estimated_users, USERS // 2)  # a user's four devices are one user
    assert [p.platform for p in ios.platform_estimates] == [IOS]

    golden = await preview(stack, gold())
    assert not golden.exact
    assert near(golden.estimated_devices, 4 * len(GOLD_USERS))
    assert near(golden.estimated_users, len(GOLD_USERS))
    assert golden.sample_user_ids
    assert set(golden.sample_user_ids) <= GOLD_USERS


async def test_a_small_audience_preview_stays_exact(stack: Stack):
    await upsert_user(stack, "ann", plan="gold")
    await upsert_user(stack, "bob", plan="free")
    await import_devices(
        stack,
        [
            device("ann-phone", IOS, "ann"),
            device("ann-tablet", ANDROID, "ann"),
            device("bob-phone", IOS, "bob"),
            device("anon", ANDROID),
        ],
    )
    golden = await preview(stack, gold())
    assert golden.exact
    assert (golden.estimated_devices, golden.estimated_users) == (2, 1)
    assert list(golden.sample_user_ids) == ["ann"]
    everyone = await preview(stack, A.Audience())
    assert everyone.exact
    assert (everyone.estimated_devices, everyone.estimated_users) == (4, 2)


async def test_a_launch_records_the_estimate_of_a_large_audience(stack: Stack):
    await seed(stack)
    later = timestamp_pb2.Timestamp(seconds=int(START) + 3600)
    created = await create(stack, audience=gold(), schedule=C.Schedule(send_time=later))
    launched = await launch(stack, created.campaign_id)
    assert launched.campaign.state == C.CAMPAIGN_STATE_SCHEDULED
    assert near(launched.estimated_devices, 4 * len(GOLD_USERS))
    # The progress bar's denominator until the fan-out resolves the audience.
    async for answer in stack.campaign.WatchCampaign(
        CS.WatchCampaignRequest(campaign_id=created.campaign_id)
    ):
        progress = answer.progress
        break
    assert progress.estimated_targeted == launched.estimated_devices
    assert not progress.audience_resolved
    assert progress.fraction_complete == 0.0
    await stack.campaign.CancelCampaign(CS.CancelCampaignRequest(campaign_id=created.campaign_id))

    everyone = await create(stack, schedule=C.Schedule(send_time=later))
    launched = await launch(stack, everyone.campaign_id)
    assert near(launched.estimated_devices, BOUND + UNBOUND)
