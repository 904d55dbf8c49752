"""CRUD, validation errors (Liquid syntax with line and column, audience, schedule),
update masks, launch checks (payload size, credentials, state) and cancel."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from herald.campaign.v1 import audience_pb2, push_message_pb2
from services.core.status import parse_error
from tests.integration.campaign.conftest import (
    APP,
    CS,
    C,
    Stack,
    audience,
    campaign,
    create,
    launch,
    message,
)


async def test_crud_with_update_mask_and_list(stack: Stack):
    first = await create(stack, display_name="one")
    stack.clock.advance(1)  # newest first: the second is newer
    second = await create(stack, display_name="two")
    assert first.state == C.CAMPAIGN_STATE_DRAFT
    got = await stack.campaign.GetCampaign(CS.GetCampaignRequest(campaign_id=first.campaign_id))
    assert got.campaign.display_name == "one"
    updated = await stack.campaign.UpdateCampaign(
        CS.UpdateCampaignRequest(
            campaign=C.Campaign(
                campaign_id=first.campaign_id,
                display_name="renamed",
                message=message("New {{ x }}"),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "message.content.body"]),
        )
    )
    assert updated.campaign.display_name == "renamed"
    assert updated.campaign.message.content.body == "New {{ x }}"
    assert updated.campaign.message.content.title == "Sale"  # outside the mask: kept
    page = await stack.campaign.ListCampaigns(CS.ListCampaignsRequest(app_id=APP, page_size=1))
    assert [c.campaign_id for c in page.campaigns] == [second.campaign_id]
    page2 = await stack.campaign.ListCampaigns(
        CS.ListCampaignsRequest(app_id=APP, page_size=1, page_token=page.next_page_token)
    )
    assert [c.campaign_id for c in page2.campaigns] == [first.campaign_id]
    assert page2.next_page_token == ""
    await stack.campaign.DeleteCampaign(CS.DeleteCampaignRequest(campaign_id=first.campaign_id))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.campaign.GetCampaign(CS.GetCampaignRequest(campaign_id=first.campaign_id))
    assert parse_error(caught.value).reason == "CAMPAIGN_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.campaign.UpdateCampaign(
            CS.UpdateCampaignRequest(
                campaign=C.Campaign(campaign_id=second.campaign_id),
                update_mask=field_mask_pb2.FieldMask(paths=["app_id"]),
            )
        )
    assert parse_error(caught.value).reason == "INVALID_UPDATE_MASK"


async def test_create_is_idempotent_by_request_id(stack: Stack):
    request = CS.CreateCampaignRequest(campaign=campaign(), request_id=str(uuid.uuid4()))
    first = await stack.campaign.CreateCampaign(request)
    again = await stack.campaign.CreateCampaign(request)
    assert again.campaign.campaign_id == first.campaign.campaign_id
    request.campaign.display_name = "other"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.campaign.CreateCampaign(request)
    assert parse_error(caught.value).reason == "REQUEST_ID_MISMATCH"


async def test_template_syntax_error_names_field_line_and_column(stack: Stack):
    bad = message("Hello\n{{ first_name | default: 'there' }")
    bad.ios.title = "{% if vip %}VIP"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.campaign.CreateCampaign(
            CS.CreateCampaignRequest(campaign=campaign(message=bad), request_id="r1")
        )
    error = parse_error(caught.value)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "TEMPLATE_SYNTAX_ERROR"
    fields = dict(error.violations)
    assert fields["campaign.message.content.body"].startswith("line 2, column 1")
    assert "campaign.message.ios.title" in fields


async def test_audience_and_schedule_errors(stack: Stack):
    empty_group = audience(all_of=audience_pb2.AudienceFilterList())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.campaign.CreateCampaign(
            CS.CreateCampaignRequest(campaign=campaign(audience=empty_group), request_id="r2")
        )
    error = parse_error(caught.value)
    assert error.reason == "AUDIENCE_INVALID"
    assert error.violations[0][0] == "campaign.audience.filter.all_of.filters"
    bad_zone = audience(time_zones=audience_pb2.StringList(values=["Mars/Olympus"]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.campaign.PreviewAudience(
            CS.PreviewAudienceRequest(app_id=APP, audience=bad_zone)
        )
    assert parse_error(caught.value).reason == "AUDIENCE_INVALID"
    bad_schedule = C.Schedule(local=C.LocalSchedule(date="2030-02-31"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.campaign.CreateCampaign(
            CS.CreateCampaignRequest(campaign=campaign(schedule=bad_schedule), request_id="r3")
        )
    assert parse_error(caught.value).reason == "SCHEDULE_INVALID"


async def test_launch_checks_payload_size_credentials_and_state(stack: Stack):
    huge = await create(stack, message=message("x" * 5000))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await launch(stack, huge.campaign_id)
    error = parse_error(caught.value)
    assert error.reason == "PAYLOAD_TOO_LARGE"
    assert error.violations[0][0] == "campaign.message.content.body"
    stack.delivery.providers = set()
    fine = await create(stack)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await launch(stack, fine.campaign_id)
    assert parse_error(caught.value).reason == "CREDENTIALS_MISSING"
    stack.delivery.providers = {1, 2, 3}  # type: ignore[arg-type]
    past = await create(stack, schedule=C.Schedule(send_time={"seconds": 1_000}))  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await launch(stack, past.campaign_id)
    assert parse_error(caught.value).reason == "SCHEDULE_INVALID"
    launched = await stack.campaign.LaunchCampaign(
        CS.LaunchCampaignRequest(campaign_id=fine.campaign_id, request_id="L1")
    )
    replay = await stack.campaign.LaunchCampaign(
        CS.LaunchCampaignRequest(campaign_id=fine.campaign_id, request_id="L1")
    )
    assert replay.campaign.launch_time == launched.campaign.launch_time
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await launch(stack, fine.campaign_id)
    assert parse_error(caught.value).reason == "CAMPAIGN_STATE_CONFLICT"


async def test_validate_message_reports_issues_and_rendered_payloads(stack: Stack):
    checked = await stack.campaign.ValidateMessage(
        CS.ValidateMessageRequest(
            app_id=APP,
            message=push_message_pb2.PushMessage(
                content=push_message_pb2.Content(body="Hi {{ first_name }} {{ event.order }}")
            ),
            sample_attributes={"first_name": "Zoe"},  # type: ignore[arg-type]
            event_properties={"order": "A-1"},  # type: ignore[arg-type]
        )
    )
    assert checked.valid
    assert {p.platform for p in checked.rendered_payloads} == {1, 2, 3}
    assert all("Hi Zoe A-1" in p.payload_json for p in checked.rendered_payloads)
    broken = await stack.campaign.ValidateMessage(
        CS.ValidateMessageRequest(
            app_id=APP,
            message=push_message_pb2.PushMessage(
                content=push_message_pb2.Content(body="a\n {{ x ")
            ),
        )
    )
    assert not broken.valid
    assert (broken.issues[0].field, broken.issues[0].line, broken.issues[0].reason) == (
        "message.content.body",
        2,
        "TEMPLATE_SYNTAX_ERROR",
    )
