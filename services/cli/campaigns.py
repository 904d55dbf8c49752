"""`herald campaigns create|get|list|launch|cancel|watch|report` (CampaignService).

`create` builds a campaign from flags (a message, a few common audience conditions,
a send time) or from a JSON file of the Campaign message for everything else; flags
given beside --file override it. Watching and reporting live in campaign_views.py.
"""

from __future__ import annotations

import argparse
from typing import Any

from herald.campaign.v1 import audience_pb2, campaign_pb2, campaign_service_pb2, push_message_pb2
from services.cli import campaign_views, formatting, inputs
from services.cli.commands import add_paging, add_request_id, group, list_pages, request_id, show
from services.cli.context import Context
from services.cli.errors import UsageError

CS = campaign_service_pb2
STATES = formatting.enum_choices(campaign_pb2.CampaignState)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    campaigns = group(commands, common, "campaigns", help="create, launch and follow campaigns")

    create = campaigns.command(
        "create",
        create_campaign,
        help="create a DRAFT campaign",
        description="Create a campaign in DRAFT. Title, body, data and deep link are "
        "Liquid templates ({{ first_name | default: 'there' }}).",
    )
    create.add_argument("app_id")
    create.add_argument("--name", help="display name")
    create.add_argument("--file", metavar="JSON|@FILE", help="a herald.campaign.v1.Campaign")
    message = create.add_argument_group("message")
    message.add_argument("--title", default="")
    message.add_argument("--body", default="")
    message.add_argument("--image-url", default="")
    message.add_argument("--deep-link", default="")
    message.add_argument("--data", action="append", metavar="KEY=VALUE")
    message.add_argument("--background", action="store_true", help="a silent push")
    audience = create.add_argument_group("audience (conditions are ANDed)")
    audience.add_argument("--platform", action="append", choices=sorted(inputs.PLATFORMS))
    audience.add_argument("--user-id", action="append", help="only these users")
    audience.add_argument(
        "--audience", metavar="JSON|@FILE", help="a herald.campaign.v1.Audience (replaces above)"
    )
    audience.add_argument("--users-only", action="store_true", help="skip anonymous devices")
    timing = create.add_argument_group("schedule and rate")
    timing.add_argument("--send-at", metavar="TIME", help="RFC 3339 send time (default: now)")
    timing.add_argument("--throttle", type=int, metavar="PER_MINUTE", help="max sends/minute")
    create.add_argument("--validate-only", action="store_true", help="check, create nothing")
    add_request_id(create)

    get = campaigns.command("get", get_campaign, help="show one campaign")
    get.add_argument("campaign_id")

    list_ = campaigns.command("list", list_campaigns, help="list an app's campaigns")
    list_.add_argument("app_id")
    list_.add_argument("--state", action="append", choices=sorted(STATES))
    add_paging(list_)

    launch = campaigns.command("launch", launch_campaign, help="launch a DRAFT campaign")
    launch.add_argument("campaign_id")
    add_request_id(launch)
    launch.add_argument("--watch", action="store_true", help="then show live progress")

    cancel = campaigns.command("cancel", cancel_campaign, help="cancel a SCHEDULED or SENDING one")
    cancel.add_argument("campaign_id")

    campaign_views.register(campaigns)


def _message(args: argparse.Namespace, message: push_message_pb2.PushMessage) -> None:
    content = message.content
    for name in ("title", "body", "image_url"):
        if getattr(args, name):
            setattr(content, name, getattr(args, name))
    if args.deep_link:
        message.deep_link = args.deep_link
    message.data.update(inputs.key_values(args.data, "--data"))
    if args.background:
        message.background = True


def _audience(args: argparse.Namespace, campaign: campaign_pb2.Campaign) -> None:
    if args.audience:
        data = inputs.json_object(args.audience, "--audience")
        campaign.audience.CopyFrom(
            inputs.parse_message(data, audience_pb2.Audience(), "--audience")  # type: ignore[arg-type]
        )
    conditions = []
    if args.platform:
        platforms = [inputs.PLATFORMS[p] for p in args.platform]
        conditions.append(
            audience_pb2.AudienceFilter(platforms=audience_pb2.PlatformList(platforms=platforms))
        )
    if args.user_id:
        conditions.append(
            audience_pb2.AudienceFilter(user_ids=audience_pb2.StringList(values=args.user_id))
        )
    if conditions and args.audience:
        raise UsageError("--audience replaces --platform/--user-id; give one or the other")
    if len(conditions) == 1:
        campaign.audience.filter.CopyFrom(conditions[0])
    elif conditions:
        campaign.audience.filter.all_of.filters.extend(conditions)
    if args.users_only:
        campaign.audience.users_only = True


def build_campaign(args: argparse.Namespace) -> campaign_pb2.Campaign:
    campaign = campaign_pb2.Campaign()
    if args.file:
        data = inputs.json_object(args.file, "--file")
        inputs.parse_message(data, campaign, "--file")
    campaign.app_id = args.app_id
    if args.name:
        campaign.display_name = args.name
    if not campaign.display_name:
        raise UsageError("give --name (or display_name in --file)")
    _message(args, campaign.message)
    _audience(args, campaign)
    if args.send_at:
        campaign.schedule.send_time.CopyFrom(inputs.instant(args.send_at, "--send-at"))
    if args.throttle is not None:
        campaign.throttle.messages_per_minute = args.throttle
    return campaign


def create_campaign(args: argparse.Namespace, ctx: Context) -> int:
    request = CS.CreateCampaignRequest(
        campaign=build_campaign(args),
        request_id=request_id(args),
        validate_only=args.validate_only,
    )
    answer = ctx.client.call("campaign", "CreateCampaign", request)
    title = "Campaign valid (nothing created)" if args.validate_only else "Campaign created"
    show(ctx, answer.campaign, title)
    if not args.validate_only:
        ctx.out.note(f"launch it: herald campaigns launch {answer.campaign.campaign_id} --watch")
    return 0


def get_campaign(args: argparse.Namespace, ctx: Context) -> int:
    request = CS.GetCampaignRequest(campaign_id=args.campaign_id)
    return show(ctx, ctx.client.call("campaign", "GetCampaign", request).campaign)


def list_campaigns(args: argparse.Namespace, ctx: Context) -> int:
    return list_pages(
        args,
        ctx,
        "campaign",
        "ListCampaigns",
        CS.ListCampaignsRequest(app_id=args.app_id, states=[STATES[s] for s in args.state or []]),
        "campaigns",
        ["campaign id", "name", "state", "created", "launched"],
        lambda c: [
            c.campaign_id,
            c.display_name,
            formatting.enum_name(campaign_pb2.CampaignState.DESCRIPTOR, c.state),
            formatting.timestamp(c.create_time),
            formatting.timestamp(c.launch_time),
        ],
    )


def launch_campaign(args: argparse.Namespace, ctx: Context) -> int:
    request = CS.LaunchCampaignRequest(campaign_id=args.campaign_id, request_id=request_id(args))
    answer = ctx.client.call("campaign", "LaunchCampaign", request)
    if ctx.out.json_mode and not args.watch:
        ctx.out.json(formatting.to_json(answer))
        return 0
    state = formatting.enum_name(campaign_pb2.CampaignState.DESCRIPTOR, answer.campaign.state)
    if not ctx.out.json_mode:
        ctx.out.line(
            f"campaign {answer.campaign.campaign_id} launched: {state}, "
            f"about {answer.estimated_devices} devices"
        )
    if args.watch:
        return campaign_views.watch(ctx, args.campaign_id, interval=0.5)
    return 0


def cancel_campaign(args: argparse.Namespace, ctx: Context) -> int:
    request = CS.CancelCampaignRequest(campaign_id=args.campaign_id)
    answer = ctx.client.call("campaign", "CancelCampaign", request)
    return show(ctx, answer.campaign, title="Campaign cancelled")
