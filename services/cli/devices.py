"""`herald devices register|get|list|changes` (RegistrationService).

Tokens are shown redacted unless --show-tokens asks for the full view (a FULL-scope
key once keys are enforced); the client secret for binding a user comes from
--client-secret or HERALD_CLIENT_SECRET and is never printed.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from herald.registration.v1 import device_pb2, registration_service_pb2
from herald.type.v1 import platform_pb2
from services.cli import formatting, inputs
from services.cli.commands import add_paging, group, list_pages, show
from services.cli.context import Context
from services.cli.errors import UsageError

RS = registration_service_pb2
CHANGE_KINDS = formatting.enum_choices(device_pb2.TokenChangeKind)


def _view(args: argparse.Namespace) -> device_pb2.DeviceView.ValueType:
    return device_pb2.DEVICE_VIEW_FULL if args.show_tokens else device_pb2.DEVICE_VIEW_BASIC


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    devices = group(commands, common, "devices", help="register and inspect devices")

    reg = devices.command(
        "register",
        register_device,
        help="register or refresh a device (what an SDK does at session start)",
    )
    reg.add_argument("app_id")
    reg.add_argument("device_id")
    reg.add_argument("--platform", required=True, choices=sorted(inputs.PLATFORMS))
    reg.add_argument("--os-version", required=True, help='for example "17.4" or "14"')
    reg.add_argument("--app-version", default="")
    reg.add_argument("--locale", default="", help="BCP 47 tag, e.g. en-US")
    reg.add_argument("--time-zone", default="", help="IANA name, e.g. Europe/Paris")
    reg.add_argument("--authorization", choices=sorted(inputs.AUTHORIZATIONS))
    reg.add_argument(
        "--environment", choices=sorted(inputs.ENVIRONMENTS), help="APNs environment (iOS)"
    )
    reg.add_argument("--user-id", default="", help="bind the device to this user")
    reg.add_argument(
        "--client-secret",
        default=os.environ.get("HERALD_CLIENT_SECRET", ""),
        help="the app's client secret, needed with --user-id (HERALD_CLIENT_SECRET)",
    )
    inputs.add_token_options(reg)

    get = devices.command("get", get_device, help="show one device")
    get.add_argument("app_id")
    get.add_argument("device_id")
    get.add_argument("--show-tokens", action="store_true", help="show the full token")

    list_ = devices.command("list", list_devices, help="list an app's devices")
    list_.add_argument("app_id")
    list_.add_argument("--platform", action="append", choices=sorted(inputs.PLATFORMS))
    list_.add_argument("--capability", choices=sorted(inputs.CAPABILITIES))
    list_.add_argument("--user-id", default="", help="only devices bound to this user")
    list_.add_argument("--show-tokens", action="store_true", help="show full tokens")
    add_paging(list_)

    changes = devices.command(
        "changes",
        token_changes,
        help="the token change log of a device or of a user",
        description="Newest first. Select a device (APP_ID DEVICE_ID) or a user (--user-id).",
    )
    changes.add_argument("app_id", nargs="?", default="")
    changes.add_argument("device_id", nargs="?", default="")
    changes.add_argument("--user-id", default="")
    changes.add_argument("--kind", action="append", choices=sorted(CHANGE_KINDS))
    add_paging(changes)


def register_device(args: argparse.Namespace, ctx: Context) -> int:
    request = RS.RegisterDeviceRequest(
        app_id=args.app_id,
        device_id=args.device_id,
        platform=inputs.PLATFORMS[args.platform],
        os_version=args.os_version,
        app_version=args.app_version,
        locale=args.locale,
        time_zone=args.time_zone,
        user_id=args.user_id,
        client_secret=args.client_secret,
    )
    token = inputs.push_token(args)
    if token is not None:
        request.token.CopyFrom(token)
    if args.authorization:
        request.authorization_status = inputs.AUTHORIZATIONS[args.authorization]
    if args.environment:
        request.apns_environment = inputs.ENVIRONMENTS[args.environment]
    answer = ctx.client.call("registration", "RegisterDevice", request)
    update = formatting.enum_name(RS.TokenUpdate.DESCRIPTOR, answer.token_update)
    title = f"Device {'created' if answer.created else 'updated'} (token {update})"
    if answer.previous_user_id:
        title += f", moved from user {answer.previous_user_id}"
    return show(ctx, answer.device, title, answer=answer)


def get_device(args: argparse.Namespace, ctx: Context) -> int:
    request = RS.GetDeviceRequest(app_id=args.app_id, device_id=args.device_id, view=_view(args))
    return show(ctx, ctx.client.call("registration", "GetDevice", request).device)


def _token_text(device: device_pb2.Device) -> str:
    if device.HasField("token"):
        kind = device.token.WhichOneof("kind")
        if kind == "apns":
            return device.token.apns.device_token
        if kind == "fcm":
            return device.token.fcm.registration_token
        if kind == "web_push":
            return device.token.web_push.endpoint
    return device.redacted_token


def list_devices(args: argparse.Namespace, ctx: Context) -> int:
    request = RS.ListDevicesRequest(
        app_id=args.app_id,
        platforms=[inputs.PLATFORMS[p] for p in args.platform or []],
        user_id=args.user_id,
        view=_view(args),
    )
    if args.capability:
        request.capability = inputs.CAPABILITIES[args.capability]
    return list_pages(
        args,
        ctx,
        "registration",
        "ListDevices",
        request,
        "devices",
        ["device id", "platform", "capability", "user", "token", "last seen"],
        lambda d: [
            d.device_id,
            formatting.enum_name(platform_pb2.Platform.DESCRIPTOR, d.platform),
            formatting.enum_name(platform_pb2.PushCapability.DESCRIPTOR, d.capability)
            + (" (provisional)" if d.provisional else ""),
            d.user_id,
            _token_text(d),
            formatting.timestamp(d.last_seen_time),
        ],
    )


def token_changes(args: argparse.Namespace, ctx: Context) -> int:
    # Exactly one log: a device's (APP_ID DEVICE_ID) or a user's (--user-id, APP_ID optional).
    if bool(args.device_id) == bool(args.user_id):
        raise UsageError("select one log: APP_ID DEVICE_ID, or --user-id USER [APP_ID]")
    request = RS.ListTokenChangesRequest(
        app_id=args.app_id,
        device_id=args.device_id,
        user_id=args.user_id,
        kinds=[CHANGE_KINDS[k] for k in args.kind or []],
    )
    return list_pages(
        args,
        ctx,
        "registration",
        "ListTokenChanges",
        request,
        "token_changes",
        ["time", "kind", "device", "from user", "to user", "token", "reason"],
        lambda c: [
            formatting.timestamp(c.change_time),
            formatting.enum_name(device_pb2.TokenChangeKind.DESCRIPTOR, c.kind),
            c.device_id,
            c.from_user_id,
            c.to_user_id,
            c.redacted_token
            + (f" (was {c.previous_redacted_token})" if c.previous_redacted_token else ""),
            c.reason,
        ],
    )
