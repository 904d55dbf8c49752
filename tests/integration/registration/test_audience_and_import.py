"""StreamAudience (batches, cursor resume, partitions), CountAudience, ImportDevices."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from herald.registration.v1 import registration_service_pb2 as pb
from herald.type.v1 import filter_pb2, platform_pb2, push_token_pb2
from services.core.status import parse_error
from services.registration.store import device_shard
from tests.integration.registration.conftest import (
    ANDROID,
    IOS,
    PRODUCTION,
    Stack,
    apns_token,
    fcm_token,
    redis_snapshot,
)

AUTHORIZED = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED


def imported(i: int, **fields) -> pb.ImportedDevice:
    if i % 2:
        return pb.ImportedDevice(
            device_id=f"dev-{i:04d}",
            platform=IOS,
            os_version="17",
            token=apns_token(),
            apns_environment=PRODUCTION,
            authorization_status=AUTHORIZED,
            app_version=f"4.{i % 5}",
            **fields,
        )
    return pb.ImportedDevice(
        device_id=f"dev-{i:04d}", platform=ANDROID, os_version="12", token=fcm_token(), **fields
    )


async def import_all(stack: Stack, batches: list[list[pb.ImportedDevice]], **first):
    async def requests() -> AsyncIterator[pb.ImportDevicesRequest]:
        for number, devices in enumerate(batches):
            extra = first if number == 0 else {}
            yield pb.ImportDevicesRequest(
                app_id="shop" if number == 0 else "", devices=devices, **extra
            )

    return await stack.registration.ImportDevices(requests())


async def stream(stack: Stack, **request) -> list[pb.StreamAudienceResponse]:
    return [r async for r in stack.registration.StreamAudience(pb.StreamAudienceRequest(**request))]


async def test_import_counts_and_reports_each_bad_device(stack: Stack):
    bad_token = imported(1)
    bad_token.token.apns.device_token = "zz" * 32
    no_platform = pb.ImportedDevice(device_id="dev-nop", os_version="1")
    answer = await import_all(
        stack, [[imported(i) for i in range(0, 60)], [bad_token, no_platform, imported(3)]]
    )
    assert answer.received_count == 63
    assert answer.created_count == 60
    assert answer.updated_count == 1  # dev-0003 again, with a new token
    assert answer.failed_count == 2
    assert [(e.index, e.device_id) for e in answer.errors] == [(60, "dev-0001"), (61, "dev-nop")]
    assert answer.errors[0].error.reason == "TOKEN_MALFORMED"
    assert [v.field for v in answer.errors[0].error.field_violations] == ["token.apns.device_token"]
    assert [v.field for v in answer.errors[1].error.field_violations] == ["platform"]

    skipped = await import_all(stack, [[imported(5)]], mode=pb.IMPORT_MODE_SKIP_EXISTING)
    assert (skipped.skipped_count, skipped.updated_count) == (1, 0)
    count = await stack.registration.CountAudience(
        pb.CountAudienceRequest(query=pb.AudienceQuery(app_ids=["shop"]), exact=True)
    )
    assert count.device_count == 60
    assert {c.platform: c.count for c in count.platform_counts} == {IOS: 30, ANDROID: 30}


async def test_import_rejects_oversized_messages_and_unknown_apps(stack: Stack):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await import_all(stack, [[imported(0)] * 5001])
    assert parse_error(caught.value).reason == "BATCH_TOO_LARGE"

    async def unknown() -> AsyncIterator[pb.ImportDevicesRequest]:
        yield pb.ImportDevicesRequest(app_id="nope", devices=[imported(0)])

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stack.registration.ImportDevices(unknown())
    assert parse_error(missing.value).reason == "APP_NOT_FOUND"


async def test_audience_streams_in_batches_and_resumes_after_the_cursor(stack: Stack):
    await import_all(stack, [[imported(i, user_id=f"u{i % 7}") for i in range(50)]])
    query = pb.AudienceQuery(app_ids=["shop"])
    whole = await stream(stack, query=query, batch_size=8)
    assert [len(r.devices) for r in whole] == [8, 8, 8, 8, 8, 8, 2]
    assert [r.streamed_count for r in whole] == [8, 16, 24, 32, 40, 48, 50]
    order = [d.device_id for r in whole for d in r.devices]
    assert sorted(order) == [f"dev-{i:04d}" for i in range(50)]
    assert all(d.token.WhichOneof("kind") for r in whole for d in r.devices)  # full tokens

    resumed = await stream(stack, query=query, batch_size=8, cursor=whole[2].cursor)
    assert [d.device_id for r in resumed for d in r.devices] == order[24:]
    assert resumed[0].streamed_count == 8

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream(
            stack,
            query=pb.AudienceQuery(app_ids=["shop"], platforms=[IOS]),
            cursor=whole[2].cursor,
        )
    assert parse_error(caught.value).reason == "INVALID_CURSOR"


async def test_partitions_split_the_audience_without_overlap(stack: Stack):
    await import_all(stack, [[imported(i) for i in range(40)]])
    query = pb.AudienceQuery(app_ids=["shop"])
    parts = []
    for index in range(3):
        responses = await stream(
            stack, query=query, partition=pb.AudiencePartition(index=index, count=3)
        )
        parts.append({d.device_id for r in responses for d in r.devices})
    assert sum(len(p) for p in parts) == 40
    assert set.union(*parts) == {f"dev-{i:04d}" for i in range(40)}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream(stack, query=query, partition=pb.AudiencePartition(index=3, count=3))
    assert [f for f, _ in parse_error(caught.value).violations] == ["partition.index"]


async def test_audience_filters_by_version_platform_and_user(stack: Stack):
    await import_all(stack, [[imported(i, user_id="vip" if i < 10 else "") for i in range(20)]])
    newer = filter_pb2.VersionComparison(
        operator=filter_pb2.COMPARISON_OPERATOR_GREATER_OR_EQUAL, version="4.3"
    )
    responses = await stream(
        stack, query=pb.AudienceQuery(app_ids=["shop"], platforms=[IOS], app_versions=[newer])
    )
    versions = {d.app_version for r in responses for d in r.devices}
    assert versions == {"4.3", "4.4"}
    count = await stack.registration.CountAudience(
        pb.CountAudienceRequest(query=pb.AudienceQuery(app_ids=["shop"], user_bound_only=True))
    )
    assert (count.device_count, count.user_count, count.exact) == (10, 1, True)


BAD_REQUESTS = [
    (
        pb.RegisterDeviceRequest(
            app_id="shop",
            device_id="x",
            platform=7,  # type: ignore[arg-type]
            os_version="1",
        ),
        "INVALID_ARGUMENT",
        ["platform"],
    ),
    (
        pb.RegisterDeviceRequest(
            app_id="shop",
            device_id="x",
            platform=IOS,
            os_version="17",
            apns_environment=PRODUCTION,
            token=push_token_pb2.PushToken(
                apns=push_token_pb2.ApnsToken(device_token="a1b2c3" * 4)
            ),
        ),
        "TOKEN_MALFORMED",
        ["token.apns.device_token"],
    ),
    (
        pb.RegisterDeviceRequest(
            app_id="shop",
            device_id="x",
            platform=ANDROID,
            os_version="14",
            token=push_token_pb2.PushToken(
                fcm=push_token_pb2.FcmToken(registration_token="abc def")
            ),
        ),
        "TOKEN_MALFORMED",
        ["token.fcm.registration_token"],
    ),
    (
        pb.RegisterDeviceRequest(
            app_id="shop",
            device_id="x",
            platform=platform_pb2.PLATFORM_WEB,
            os_version="124",
            token=push_token_pb2.PushToken(
                web_push=push_token_pb2.WebPushSubscription(
                    endpoint="http://push.example.net/x", p256dh="AAAA", auth="c2hvcnQ"
                )
            ),
        ),
        "TOKEN_MALFORMED",
        ["token.web_push.endpoint", "token.web_push.p256dh", "token.web_push.auth"],
    ),
    (
        pb.RegisterDeviceRequest(
            app_id="shop", device_id="x", platform=IOS, os_version="17", token=fcm_token()
        ),
        "TOKEN_PLATFORM_MISMATCH",
        ["token"],
    ),
    (
        pb.RegisterDeviceRequest(
            app_id="shop", device_id="x", platform=IOS, os_version="17", token=apns_token()
        ),
        "TOKEN_PLATFORM_MISMATCH",
        ["apns_environment"],
    ),
    (
        pb.RegisterDeviceRequest(
            app_id="",
            device_id="d" * 129,
            platform=ANDROID,
            os_version="x" * 40,
            locale="not a locale",
            time_zone="Mars/Olympus",
            app_version="v" * 65,
        ),
        "INVALID_ARGUMENT",
        ["app_id", "device_id", "os_version", "os_version", "app_version", "locale", "time_zone"],
    ),
]


@pytest.mark.parametrize(("request_message", "reason", "fields"), BAD_REQUESTS)
async def test_bad_input_lists_every_violation_and_writes_nothing(
    stack: Stack, request_message, reason, fields
):
    before = await redis_snapshot(stack.redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.registration.RegisterDevice(request_message)
    details = parse_error(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == reason
    assert [field for field, _ in details.violations] == fields
    assert await redis_snapshot(stack.redis) == before
    token = request_message.token
    for value in (token.apns.device_token, token.fcm.registration_token):
        if value:
            assert value not in (caught.value.details() or "")
            assert value not in str(details.violations)


async def test_list_devices_pages_in_shard_order_without_repeats(stack: Stack):
    # Shard order (shard, device id), not device-id order: every device exactly once
    # over the pages, and the page token is bound to its filters.
    await import_all(stack, [[imported(i) for i in range(25)]])
    seen: list[str] = []
    token = ""
    first_token = ""
    while True:
        page = await stack.registration.ListDevices(
            pb.ListDevicesRequest(app_id="shop", page_size=4, page_token=token)
        )
        seen += [d.device_id for d in page.devices]
        token = page.next_page_token
        first_token = first_token or token
        if not token:
            break
    assert sorted(seen) == [f"dev-{i:04d}" for i in range(25)]
    assert len(seen) == len(set(seen))
    expected = sorted(seen, key=lambda d: (device_shard(d), d))
    assert seen == expected
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.registration.ListDevices(
            pb.ListDevicesRequest(
                app_id="shop", page_size=2, platforms=[IOS], page_token=first_token
            )
        )
    assert parse_error(caught.value).reason == "INVALID_PAGE_TOKEN"
