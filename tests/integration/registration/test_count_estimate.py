"""CountAudience: exact for small audiences, a sampled estimate (exact = false) for
large ones, sample_size validated; audiences of named users (counted and streamed from
the user index)."""

from __future__ import annotations

import grpc
import pytest

from herald.registration.v1 import registration_service_pb2 as pb
from services.core.status import parse_error
from services.registration.store import device_shard
from tests.integration.registration.conftest import ANDROID, IOS, Stack, redis_snapshot
from tests.integration.registration.test_audience_and_import import import_all, imported, stream

USERS = 1000
BOUND = 4000  # four devices per user: i, i + 1000, i + 2000, i + 3000 (same platform)
UNBOUND = 400
# The estimate reads whole shards until it holds sample_size devices; with these fixed
# device ids the sampled shards are always the same, and the tolerance is ~5 standard
# errors of a 1,000-device sample (docs/registration.md).
SAMPLE = 1000
TOLERANCE = 0.15


async def seed(stack: Stack) -> None:
    devices = [imported(i, user_id=f"user-{i % USERS}") for i in range(BOUND)]
    devices += [imported(i) for i in range(BOUND, BOUND + UNBOUND)]
    await import_all(
        stack, [devices[start : start + 1000] for start in range(0, len(devices), 1000)]
    )


async def count(stack: Stack, **request) -> pb.CountAudienceResponse:
    query = request.pop("query", pb.AudienceQuery(app_ids=["shop"]))
    return await stack.registration.CountAudience(pb.CountAudienceRequest(query=query, **request))


def near(estimate: int, truth: int) -> bool:
    return abs(estimate - truth) <= TOLERANCE * truth


def per_platform(answer: pb.CountAudienceResponse) -> dict[int, int]:
    return {c.platform: c.count for c in answer.platform_counts}


async def test_an_audience_within_the_sample_size_is_counted_exactly(stack: Stack):
    await seed(stack)
    default = await count(stack)  # exact unset: the default sample (10,000) holds it all
    assert default.exact
    assert (default.device_count, default.user_count) == (BOUND + UNBOUND, USERS)
    assert per_platform(default) == {IOS: 2200, ANDROID: 2200}
    assert default.examined_count == BOUND + UNBOUND
    asked_exact = await count(stack, exact=True, sample_size=SAMPLE)
    assert asked_exact.exact
    assert (asked_exact.device_count, asked_exact.user_count) == (BOUND + UNBOUND, USERS)


async def test_a_larger_audience_is_estimated_from_a_sample_of_shards(stack: Stack):
    await seed(stack)
    everyone = await count(stack, sample_size=SAMPLE)
    assert not everyone.exact
    assert SAMPLE <= everyone.examined_count < BOUND + UNBOUND
    assert near(everyone.device_count, BOUND + UNBOUND)
    assert near(everyone.user_count, USERS)  # not 4x: each user's devices counted once
    assert near(per_platform(everyone)[IOS], 2200)
    assert near(per_platform(everyone)[ANDROID], 2200)

    ios_users = pb.AudienceQuery(app_ids=["shop"], platforms=[IOS], user_bound_only=True)
    exact = await count(stack, query=ios_users, exact=True)
    assert (exact.device_count, exact.user_count) == (2000, 500)
    estimate = await count(stack, query=ios_users, sample_size=SAMPLE)
    assert not estimate.exact
    assert near(estimate.device_count, 2000)
    assert near(estimate.user_count, 500)
    assert per_platform(estimate).keys() == {IOS}
    # The same shards each time: an unchanged audience gets the same estimate.
    assert await count(stack, query=ios_users, sample_size=SAMPLE) == estimate


async def test_an_audience_of_named_users_is_counted_exactly_from_the_user_index(
    stack: Stack,
):
    await seed(stack)
    named = pb.AudienceQuery(app_ids=["shop"], user_ids=["user-1", "user-2", "user-3", "nobody"])
    answer = await count(stack, query=named, sample_size=SAMPLE)
    assert answer.exact  # a sample of shards would rarely hold three users' devices
    assert (answer.device_count, answer.user_count) == (12, 3)
    # user-1 and user-3 have iOS devices (odd ids), user-2 Android ones.
    assert per_platform(answer) == {IOS: 8, ANDROID: 4}
    assert answer.examined_count == 12
    ios_only = pb.AudienceQuery(app_ids=["shop"], user_ids=["user-1", "user-2"], platforms=[IOS])
    answer = await count(stack, query=ios_only, sample_size=SAMPLE)
    assert (answer.device_count, answer.user_count, answer.exact) == (4, 1, True)


async def test_an_audience_of_named_users_streams_in_the_order_of_a_full_walk(stack: Stack):
    await seed(stack)
    named = {f"user-{n}" for n in range(1, 6)}
    every = [
        d.device_id
        for r in await stream(stack, query=pb.AudienceQuery(app_ids=["shop"]), batch_size=5000)
        for d in r.devices
        if d.user_id in named
    ]
    assert len(every) == 20
    query = pb.AudienceQuery(app_ids=["shop"], user_ids=sorted(named))
    batches = await stream(stack, query=query, batch_size=3)
    assert [d.device_id for r in batches for d in r.devices] == every
    resumed = await stream(stack, query=query, batch_size=3, cursor=batches[1].cursor)
    assert [d.device_id for r in resumed for d in r.devices] == every[6:]
    halves = [
        [
            d.device_id
            for r in await stream(
                stack, query=query, partition=pb.AudiencePartition(index=i, count=2)
            )
            for d in r.devices
        ]
        for i in (0, 1)
    ]
    assert sorted(halves[0] + halves[1]) == sorted(every)
    assert all(halves)  # both partitions hold some of the 20


async def test_a_partition_takes_devices_from_within_each_shard(stack: Stack):
    """A partition must thin every shard (a sample of one spans whole shards), not be a
    set of whole shards, which CRC-32 made it for ids of one length like these."""
    await seed(stack)
    partition_of_device: dict[str, int] = {}
    for index in range(4):
        responses = await stream(
            stack,
            query=pb.AudienceQuery(app_ids=["shop"]),
            partition=pb.AudiencePartition(index=index, count=4),
            batch_size=5000,
        )
        partition_of_device.update({d.device_id: index for r in responses for d in r.devices})
    assert len(partition_of_device) == BOUND + UNBOUND
    partitions_of_shard: dict[int, set[int]] = {}
    for device_id, index in partition_of_device.items():
        partitions_of_shard.setdefault(device_shard(device_id), set()).add(index)
    split = [shard for shard, indexes in partitions_of_shard.items() if len(indexes) > 1]
    assert len(split) > 0.9 * len(partitions_of_shard)


@pytest.mark.parametrize("sample_size", [-1, 1_000_001])
async def test_a_bad_sample_size_is_invalid_argument_and_changes_nothing(
    stack: Stack, sample_size: int
):
    # A few devices are enough to see that nothing changes (the whole seed made the
    # two snapshots take seconds).
    await import_all(stack, [[imported(i, user_id=f"user-{i}") for i in range(20)]])
    before = await redis_snapshot(stack.redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await count(stack, sample_size=sample_size)
    error = parse_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert [field for field, _ in error.violations] == ["sample_size"]
    assert "1,000,000" in error.violations[0][1]
    assert await redis_snapshot(stack.redis) == before
