"""`herald send`: one push to a device, a user's devices or a raw token (Delivery.Send),
and the provider's answer for each device.

The target's platform may be unknown here (a device id or a user with several
devices), so the same title/body fill the APNs, FCM and Web Push payloads and Delivery
uses the one that matches each token.
"""

from __future__ import annotations

import argparse
from typing import Any

from herald.delivery.v1 import delivery_service_pb2, notification_pb2
from herald.type.v1 import platform_pb2, push_options_pb2
from services.cli import formatting, inputs
from services.cli.commands import add_request_id, command, request_id
from services.cli.context import Context
from services.cli.errors import OutcomeError, UsageError

N = notification_pb2
OUTCOME = push_options_pb2.DeliveryOutcome
PRIORITIES = {
    "high": push_options_pb2.NOTIFICATION_PRIORITY_HIGH,
    "normal": push_options_pb2.NOTIFICATION_PRIORITY_NORMAL,
}
# A send counts as refused when the provider (or Delivery) gave a final "no";
# RETRYING and QUEUED are still on their way and are not failures.
REFUSED = {
    push_options_pb2.DELIVERY_OUTCOME_TOKEN_INVALID,
    push_options_pb2.DELIVERY_OUTCOME_FAILED,
}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    send = command(
        commands,
        common,
        "send",
        send_push,
        help="send a push now and show the provider answers",
        description="Send one notification synchronously through Delivery to a device, "
        "every reachable device of a user, or a raw token, and show each provider answer. "
        "Exit code 1 when any device's push was refused.",
    )
    send.add_argument("app_id")
    target = send.add_argument_group("target (exactly one)")
    target.add_argument("--device", default="", metavar="DEVICE_ID")
    target.add_argument("--user", default="", metavar="EXTERNAL_ID")
    target.add_argument("--environment", choices=sorted(inputs.ENVIRONMENTS), help="for APNs")
    inputs.add_token_options(send)
    content = send.add_argument_group("content")
    content.add_argument("--title", default="")
    content.add_argument("--body", default="")
    content.add_argument("--subtitle", default="", help="iOS only")
    content.add_argument("--image-url", default="")
    content.add_argument("--url", default="", help="Web Push: the page opened on click")
    content.add_argument("--badge", type=int, help="iOS badge number")
    content.add_argument("--sound", default="", help='iOS sound, e.g. "default"')
    content.add_argument("--data", action="append", metavar="KEY=VALUE", help="custom data")
    content.add_argument("--background", action="store_true", help="a silent push")
    options = send.add_argument_group("delivery options")
    options.add_argument("--priority", choices=sorted(PRIORITIES))
    options.add_argument("--ttl", type=float, help="seconds the provider may keep trying")
    options.add_argument("--collapse-id", default="")
    options.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for answers (max 60)"
    )
    add_request_id(options)


def _payloads(args: argparse.Namespace, notification: N.Notification) -> None:
    data = inputs.key_values(args.data, "--data")
    apns = N.ApnsPayload(
        title=args.title,
        subtitle=args.subtitle,
        body=args.body,
        sound=args.sound,
        content_available=args.background,
    )
    if args.badge is not None:
        apns.badge = args.badge
    if data:
        apns.custom_data.CopyFrom(inputs.struct(dict(data)))
    notification.apns.CopyFrom(apns)
    notification.fcm.CopyFrom(
        N.FcmPayload(title=args.title, body=args.body, image_url=args.image_url, data=data)
    )
    notification.web_push.CopyFrom(
        N.WebPushPayload(
            title=args.title, body=args.body, image_url=args.image_url, url=args.url, data=data
        )
    )


def build_request(args: argparse.Namespace) -> delivery_service_pb2.SendRequest:
    token = inputs.push_token(args)
    targets = sum((bool(args.device), bool(args.user), token is not None))
    if targets != 1:
        raise UsageError("give exactly one target: --device, --user or a token option")
    if not args.background and not (args.title or args.body):
        raise UsageError("give --title and/or --body (or --background for a silent push)")
    notification = N.Notification(
        app_id=args.app_id,
        device_id=args.device,
        user_id=args.user,
        collapse_id=args.collapse_id,
    )
    if token is not None:
        notification.token.CopyFrom(token)
    if args.environment:
        notification.apns_environment = inputs.ENVIRONMENTS[args.environment]
    if args.priority:
        notification.priority = PRIORITIES[args.priority]
    if args.ttl is not None:
        notification.ttl.CopyFrom(inputs.seconds(args.ttl))
    _payloads(args, notification)
    return delivery_service_pb2.SendRequest(
        notification=notification,
        request_id=request_id(args),
        timeout=inputs.seconds(args.wait),
    )


def _answer(result: delivery_service_pb2.SendResult) -> str:
    if result.HasField("error"):
        return f"{result.error.reason}: {result.error.message}"
    return " ".join(str(x) for x in (result.provider_status or "", result.provider_reason) if x)


def send_push(args: argparse.Namespace, ctx: Context) -> int:
    request = build_request(args)
    # The call may legitimately take the whole --wait (retries): give it that plus slack.
    timeout = max(ctx.client.timeout, args.wait + 5)
    answer = ctx.client.call("delivery", "Send", request, timeout=timeout)
    refused = [r for r in answer.results if r.outcome in REFUSED or r.HasField("error")]
    if ctx.out.json_mode:
        ctx.out.json({"request_id": request.request_id, **formatting.to_json(answer)})
    else:
        ctx.out.table(
            ["notification", "device", "platform", "outcome", "answer", "provider id", "latency"],
            [
                [
                    r.notification_id,
                    r.device_id,
                    formatting.enum_name(platform_pb2.Platform.DESCRIPTOR, r.platform),
                    formatting.enum_name(OUTCOME.DESCRIPTOR, r.outcome),
                    _answer(r),
                    r.apns_id or r.fcm_message_name,
                    formatting.duration(r.latency) if r.HasField("latency") else "",
                ]
                for r in answer.results
            ],
            whole=("notification", "provider id"),
        )
        if answer.results:
            ctx.out.note(f"follow one: herald trace {answer.results[0].notification_id}")
    if refused:
        raise OutcomeError(f"{len(refused)} of {len(answer.results)} pushes were not delivered")
    return 0
