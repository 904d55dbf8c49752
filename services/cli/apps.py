"""`herald apps create|get|list|rotate-secret` (IdentityService)."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from herald.identity.v1 import app_pb2, identity_service_pb2
from services.cli import formatting, inputs
from services.cli.context import Context, add_paging, collect_pages, next_page_note

ID = identity_service_pb2
LOGOUT_POLICIES = {
    "unregister": app_pb2.LOGOUT_POLICY_UNREGISTER,
    "keep-with-last-user": app_pb2.LOGOUT_POLICY_KEEP_WITH_LAST_USER,
}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("apps", parents=[common], help="create and inspect apps (tenants)")
    sub = group.add_subparsers(title="apps commands", metavar="COMMAND", required=True)

    create = sub.add_parser(
        "create",
        parents=[common],
        help="create an app; prints its client secret once",
        description="Create an app. Its client secret is printed once: store it.",
    )
    create.add_argument("--id", dest="app_id", default="", help="app id (generated if empty)")
    create.add_argument("--name", required=True, help="display name")
    create.add_argument("--logout-policy", choices=sorted(LOGOUT_POLICIES))
    create.add_argument("--time-zone", default="", help="default IANA time zone (UTC)")
    create.add_argument("--request-id", default="", help="idempotency key (a new UUID)")
    create.set_defaults(handler=create_app)

    get = sub.add_parser("get", parents=[common], help="show one app")
    get.add_argument("app_id")
    get.set_defaults(handler=get_app)

    list_ = sub.add_parser("list", parents=[common], help="list apps (needs the admin key)")
    add_paging(list_)
    list_.set_defaults(handler=list_apps)

    rotate = sub.add_parser(
        "rotate-secret",
        parents=[common],
        help="issue a new client secret; prints it once",
        description="Issue a new client secret. The previous one keeps working for the "
        "overlap window (default 24 h) so deployed apps can be updated.",
    )
    rotate.add_argument("app_id")
    rotate.add_argument(
        "--overlap", type=float, default=None, help="seconds the old secret stays valid"
    )
    rotate.set_defaults(handler=rotate_secret)


def create_app(args: argparse.Namespace, ctx: Context) -> int:
    app = app_pb2.App(display_name=args.name, default_time_zone=args.time_zone)
    if args.logout_policy:
        app.logout_policy = LOGOUT_POLICIES[args.logout_policy]
    request = ID.CreateAppRequest(
        app=app, app_id=args.app_id, request_id=args.request_id or str(uuid.uuid4())
    )
    answer = ctx.client.call("identity", "CreateApp", request)
    if ctx.out.json_mode:
        ctx.out.json(formatting.to_json(answer))
        return 0
    ctx.out.fields(answer.app, title="App created" if not answer.replayed else "App (replayed)")
    if answer.client_secret:
        ctx.out.secret("Client secret", answer.client_secret)
    else:
        ctx.out.note("no client secret on a replay: rotate it if it was lost")
    return 0


def get_app(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.call("identity", "GetApp", ID.GetAppRequest(app_id=args.app_id))
    if ctx.out.json_mode:
        ctx.out.json(formatting.to_json(answer.app))
    else:
        ctx.out.fields(answer.app)
    return 0


def list_apps(args: argparse.Namespace, ctx: Context) -> int:
    def fetch(token: str) -> tuple[Any, str]:
        request = ID.ListAppsRequest(page_size=args.page_size, page_token=token)
        answer = ctx.client.call("identity", "ListApps", request)
        return answer.apps, answer.next_page_token

    apps, token = collect_pages(args, fetch)
    if ctx.out.json_mode:
        ctx.out.json({"apps": [formatting.to_json(a) for a in apps], "next_page_token": token})
        return 0
    ctx.out.table(
        ["app id", "name", "logout policy", "time zone", "created"],
        [
            [
                a.app_id,
                a.display_name,
                formatting.enum_name(app_pb2.LogoutPolicy.DESCRIPTOR, a.logout_policy),
                a.default_time_zone,
                formatting.timestamp(a.create_time),
            ]
            for a in apps
        ],
    )
    next_page_note(ctx, token)
    return 0


def rotate_secret(args: argparse.Namespace, ctx: Context) -> int:
    request = ID.RotateClientSecretRequest(app_id=args.app_id)
    if args.overlap is not None:
        request.overlap.CopyFrom(inputs.seconds(args.overlap))
    answer = ctx.client.call("identity", "RotateClientSecret", request)
    if ctx.out.json_mode:
        ctx.out.json(formatting.to_json(answer))
        return 0
    ctx.out.fields(answer.app, title="Client secret rotated")
    ctx.out.secret("New client secret", answer.client_secret)
    return 0
