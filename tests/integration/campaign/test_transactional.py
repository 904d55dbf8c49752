"""SendToUsers (queued and with provider answers) and SendTest."""

from __future__ import annotations

import grpc
import pytest

from herald.campaign.v1 import push_message_pb2
from services.core.status import parse_error
from tests.integration.campaign.conftest import (
    ANDROID,
    APP,
    CS,
    IOS,
    Stack,
    device,
    import_devices,
    upsert_user,
)

ORDER = push_message_pb2.PushMessage(
    content=push_message_pb2.Content(
        body="{{ first_name | default: 'Hi' }}, order {{ event.order_id }} shipped"
    )
)


async def test_send_to_users_reaches_every_device_and_replays(stack: Stack):
    await upsert_user(stack, "ann", first_name="Ann")
    await upsert_user(stack, "lonely")
    await import_devices(stack, [device("ann-1", IOS, "ann"), device("ann-2", ANDROID, "ann")])
    request = CS.SendToUsersRequest(
        app_id=APP,
        user_ids=["ann", "ghost", "lonely"],
        message=ORDER,
        event_properties={"order_id": "A-7"},  # type: ignore[arg-type]
        request_id="tx-1",
    )
    answer = await stack.campaign.SendToUsers(request)
    ann, ghost, lonely = answer.results
    assert sorted(d.device_id for d in ann.devices) == ["ann-1", "ann-2"]
    assert all(d.notification_id and d.outcome == 1 for d in ann.devices)  # QUEUED
    bodies = {n.apns.body or n.fcm.body for n in stack.delivery.by_key.values()}
    assert bodies == {"Ann, order A-7 shipped"}
    assert ghost.error.reason == "USER_NOT_FOUND"
    assert lonely.error.reason == "USER_NOT_REACHABLE"
    replay = await stack.campaign.SendToUsers(request)
    assert replay == answer
    assert len(stack.delivery.by_key) == 2
    request.user_ids.append("bob")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.campaign.SendToUsers(request)
    assert parse_error(caught.value).reason == "REQUEST_ID_MISMATCH"


async def test_send_to_users_waits_for_provider_answers(stack: Stack):
    await upsert_user(stack, "ann")
    await import_devices(stack, [device("ann-1", IOS, "ann")])
    answer = await stack.campaign.SendToUsers(
        CS.SendToUsersRequest(
            app_id=APP, user_ids=["ann"], message=ORDER, request_id="tx-2", wait_for_results=True
        )
    )
    (result,) = answer.results[0].devices
    assert (result.outcome, result.provider_status) == (2, 200)  # DELIVERED


async def test_send_test_to_a_device_and_errors(stack: Stack):
    await import_devices(stack, [device("dev-1", ANDROID)])
    answer = await stack.campaign.SendTest(
        CS.SendTestRequest(app_id=APP, message=ORDER, device_id="dev-1")
    )
    assert [d.device_id for d in answer.devices] == ["dev-1"]
    assert answer.devices[0].outcome == 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.campaign.SendTest(
            CS.SendTestRequest(app_id=APP, message=ORDER, user_id="nobody")
        )
    assert parse_error(caught.value).reason == "USER_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.campaign.SendTest(
            CS.SendTestRequest(
                app_id=APP,
                message=push_message_pb2.PushMessage(content={"body": "{{ x"}),  # type: ignore[arg-type]
                device_id="dev-1",
            )
        )
    assert parse_error(caught.value).reason == "TEMPLATE_SYNTAX_ERROR"
