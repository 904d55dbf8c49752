"""`herald notifications list`: find the notifications of an app, a device, a user or a
campaign (Delivery.ListNotifications), with their ids for `herald trace`.

Without it, the only notification ids a person sees are those `herald send` prints:
"why did this user not get that campaign?" starts here.
"""

from __future__ import annotations

import argparse
from typing import Any

from herald.delivery.v1 import delivery_service_pb2
from herald.type.v1 import push_options_pb2
from services.cli import formatting
from services.cli.commands import add_paging, group, list_pages
from services.cli.context import Context

OUTCOMES = formatting.enum_choices(push_options_pb2.DeliveryOutcome)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    notifications = group(
        commands, common, "notifications", help="find notifications (ids for herald trace)"
    )
    list_ = notifications.command(
        "list",
        list_notifications,
        help="an app's notifications, newest first, by device, user, campaign or outcome",
        description="Delivery.ListNotifications: one row per notification with its "
        "outcome and trace id; `herald trace NOTIFICATION_ID` shows its attempts and spans.",
    )
    list_.add_argument("app_id")
    list_.add_argument("--device-id", default="", help="only notifications to this device")
    list_.add_argument("--user-id", default="", help="only notifications to this user")
    list_.add_argument("--campaign-id", default="", help="only this campaign's notifications")
    list_.add_argument(
        "--outcome",
        action="append",
        choices=sorted(OUTCOMES),
        help="only notifications whose current outcome is this (repeatable)",
    )
    add_paging(list_)


def list_notifications(args: argparse.Namespace, ctx: Context) -> int:
    request = delivery_service_pb2.ListNotificationsRequest(
        app_id=args.app_id,
        device_id=args.device_id,
        user_id=args.user_id,
        campaign_id=args.campaign_id,
        outcomes=[OUTCOMES[o] for o in args.outcome or []],
    )
    return list_pages(
        args,
        ctx,
        "delivery",
        "ListNotifications",
        request,
        "notifications",
        ["notification id", "device", "user", "campaign", "outcome", "created", "trace id"],
        lambda n: [
            n.notification_id,
            n.device_id,
            n.user_id,
            n.campaign_id,
            " ".join(
                x
                for x in (
                    formatting.enum_name(push_options_pb2.DeliveryOutcome.DESCRIPTOR, n.outcome),
                    n.outcome_reason,
                )
                if x
            ),
            formatting.timestamp(n.create_time),
            n.trace_id,
        ],
        whole=("notification id", "trace id"),
    )
