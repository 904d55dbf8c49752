"""`herald trace <notification-id>`: one notification with every attempt, the
provider's answer, the latency, and the trace id that links its spans
(Delivery.GetNotification)."""

from __future__ import annotations

import argparse
from typing import Any

from herald.delivery.v1 import delivery_service_pb2, notification_pb2
from herald.type.v1 import platform_pb2, push_options_pb2
from services.cli import formatting
from services.cli.context import Context

N = notification_pb2
# What identifies the notification; the content fields are in --json.
SUMMARY = (
    "notification_id",
    "app_id",
    "device_id",
    "user_id",
    "campaign_id",
    "redacted_token",
    "outcome",
    "outcome_reason",
    "create_time",
    "expire_time",
    "complete_time",
    "trace_id",
)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    trace = commands.add_parser(
        "trace",
        parents=[common],
        help="every attempt of one notification, with provider answers and trace ids",
    )
    trace.add_argument("notification_id")
    trace.set_defaults(handler=trace_notification)


def _summary(notification: Any) -> N.Notification:
    shown: Any = N.Notification()
    for name in SUMMARY:
        field = N.Notification.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None:
            if notification.HasField(name):
                getattr(shown, name).CopyFrom(getattr(notification, name))
        else:
            setattr(shown, name, getattr(notification, name))
    return shown


def _provider_id(attempt: N.DeliveryAttempt) -> str:
    return attempt.apns_id or attempt.fcm_message_name or attempt.web_push_location


def trace_notification(args: argparse.Namespace, ctx: Context) -> int:
    request = delivery_service_pb2.GetNotificationRequest(notification_id=args.notification_id)
    notification = ctx.client.call("delivery", "GetNotification", request).notification
    if ctx.out.json_mode:
        ctx.out.json(formatting.to_json(notification))
        return 0
    ctx.out.fields(_summary(notification), title="Notification")
    attempts = notification.attempts
    ctx.out.table(
        ["#", "start", "provider", "answer", "outcome", "action", "latency", "provider id"],
        [
            [
                str(a.attempt_number),
                formatting.timestamp(a.start_time),
                formatting.enum_name(platform_pb2.Provider.DESCRIPTOR, a.provider),
                " ".join(x for x in (str(a.provider_status or ""), a.provider_reason) if x),
                formatting.enum_name(push_options_pb2.DeliveryOutcome.DESCRIPTOR, a.outcome),
                formatting.enum_name(N.ProviderAction.DESCRIPTOR, a.action)
                + (
                    f" at {formatting.timestamp(a.next_attempt_time)}"
                    if a.next_attempt_time.seconds
                    else ""
                ),
                formatting.duration(a.latency),
                _provider_id(a),
            ]
            for a in attempts
        ],
        title=f"Attempts ({len(attempts)})",
        whole=("start", "provider id"),
    )
    # The ids that find each attempt in the trace UI and the logs, apart so the
    # table above stays readable in a terminal.
    ctx.out.table(
        ["#", "trace id", "span id", "connection", "worker"],
        [
            [str(a.attempt_number), a.trace_id, a.span_id, a.connection_id, a.worker_id]
            for a in attempts
        ],
        title="Spans",
        whole=("trace id", "span id"),
    )
    return 0
