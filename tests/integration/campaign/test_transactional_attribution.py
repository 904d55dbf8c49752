"""SendToUsers attributed to a campaign: the sends count in that campaign's report; an
unknown campaign, or one of another app, is refused before anything is sent."""

from __future__ import annotations

import uuid

import grpc
import pytest

from herald.identity.v1 import app_pb2, identity_service_pb2
from services.core.status import parse_error
from tests.integration.campaign.conftest import (
    ANDROID,
    APP,
    CS,
    IOS,
    Stack,
    create,
    device,
    import_devices,
    message,
    report,
    upsert_user,
)


def _send(campaign_id: str, request_id: str, users: list[str]) -> CS.SendToUsersRequest:
    return CS.SendToUsersRequest(
        app_id=APP,
        user_ids=users,
        message=message("Order shipped"),
        request_id=request_id,
        campaign_id=campaign_id,
    )


async def test_attributed_sends_add_up_in_the_campaigns_report(stack: Stack):
    await upsert_user(stack, "ann")
    await upsert_user(stack, "bob")
    await import_devices(
        stack,
        [device("ann-1", IOS, "ann"), device("ann-2", ANDROID, "ann"), device("bob-1", IOS, "bob")],
    )
    campaign = await create(stack, display_name="Order updates")

    await stack.campaign.SendToUsers(_send(campaign.campaign_id, "tx-a", ["ann"]))
    await stack.campaign.SendToUsers(_send(campaign.campaign_id, "tx-b", ["bob"]))
    await stack.campaign.SendToUsers(_send(campaign.campaign_id, "tx-b", ["bob"]))  # a replay
    await stack.campaign.SendToUsers(_send("", "tx-c", ["bob"]))  # not attributed

    counted = await report(stack, campaign.campaign_id)
    assert (counted.targeted, counted.sent, counted.suppressed) == (3, 3, 0)
    by_platform = {p.platform: p.sent for p in counted.platform_reports}
    assert by_platform == {IOS: 2, ANDROID: 1}
    assert len(stack.delivery.by_key) == 4  # the replay sent nothing again


@pytest.mark.parametrize("other_app", [False, True])
async def test_an_unknown_or_foreign_campaign_is_not_found_and_nothing_is_sent(
    stack: Stack, other_app: bool
):
    await upsert_user(stack, "ann")
    await import_devices(stack, [device("ann-1", IOS, "ann")])
    campaign_id = "no-such-campaign"
    if other_app:
        await stack.identity.CreateApp(
            identity_service_pb2.CreateAppRequest(
                app=app_pb2.App(display_name="Other"), app_id="other", request_id=str(uuid.uuid4())
            )
        )
        campaign_id = (await create(stack, app_id="other")).campaign_id

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.campaign.SendToUsers(_send(campaign_id, "tx-x", ["ann"]))

    error = parse_error(caught.value)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "CAMPAIGN_NOT_FOUND"
    assert error.metadata["campaign_id"] == campaign_id
    assert stack.delivery.by_key == {}
    # Nothing was remembered either: the same request id works once the campaign is right.
    await stack.campaign.SendToUsers(_send("", "tx-x", ["ann"]))
    assert len(stack.delivery.by_key) == 1
