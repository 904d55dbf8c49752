"""`herald apps create|get|list|rotate-secret|delete` (IdentityService)."""

from __future__ import annotations

import argparse
from typing import Any

from herald.identity.v1 import app_pb2, identity_service_pb2
from services.cli import formatting, inputs
from services.cli.commands import (
    add_paging,
    add_request_id,
    group,
    json_answered,
    list_pages,
    request_id,
    show,
)
from services.cli.context import Context

ID = identity_service_pb2
LOGOUT_POLICIES = {
    "unregister": app_pb2.LOGOUT_POLICY_UNREGISTER,
    "keep-with-last-user": app_pb2.LOGOUT_POLICY_KEEP_WITH_LAST_USER,
}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    apps = group(commands, common, "apps", help="create and inspect apps (tenants)")

    create = apps.command(
        "create",
        create_app,
        help="create an app; prints its client secret once",
        description="Create an app. Its client secret is printed once: store it.",
    )
    create.add_argument("--id", dest="app_id", default="", help="app id (generated if empty)")
    create.add_argument("--name", required=True, help="display name")
    create.add_argument("--logout-policy", choices=sorted(LOGOUT_POLICIES))
    create.add_argument("--time-zone", default="", help="default IANA time zone (UTC)")
    add_request_id(create)

    get = apps.command("get", get_app, help="show one app")
    get.add_argument("app_id")

    add_paging(apps.command("list", list_apps, help="list apps (needs the admin key)"))

    rotate = apps.command(
        "rotate-secret",
        rotate_secret,
        help="issue a new client secret; prints it once",
        description="Issue a new client secret. The previous one keeps working for the "
        "overlap window (default 24 h) so deployed apps can be updated.",
    )
    rotate.add_argument("app_id")
    rotate.add_argument(
        "--overlap", type=float, default=None, help="seconds the old secret stays valid"
    )

    delete = apps.command(
        "delete",
        delete_app,
        help="delete an app, its keys and credentials (needs the admin key)",
        description="Delete an app. An app that still has devices is refused "
        "(FAILED_PRECONDITION APP_HAS_DEVICES) unless --force, which also purges them.",
    )
    delete.add_argument("app_id")
    delete.add_argument(
        "--force", action="store_true", help="delete even if the app still has devices"
    )


def create_app(args: argparse.Namespace, ctx: Context) -> int:
    app = app_pb2.App(display_name=args.name, default_time_zone=args.time_zone)
    if args.logout_policy:
        app.logout_policy = LOGOUT_POLICIES[args.logout_policy]
    request = ID.CreateAppRequest(app=app, app_id=args.app_id, request_id=request_id(args))
    answer = ctx.client.call("identity", "CreateApp", request)
    if json_answered(ctx, answer):
        return 0
    ctx.out.fields(answer.app, title="App created" if not answer.replayed else "App (replayed)")
    if answer.client_secret:
        ctx.out.secret("Client secret", answer.client_secret)
    else:
        ctx.out.note("no client secret on a replay: rotate it if it was lost")
    return 0


def get_app(args: argparse.Namespace, ctx: Context) -> int:
    return show(
        ctx, ctx.client.call("identity", "GetApp", ID.GetAppRequest(app_id=args.app_id)).app
    )


def list_apps(args: argparse.Namespace, ctx: Context) -> int:
    return list_pages(
        args,
        ctx,
        "identity",
        "ListApps",
        ID.ListAppsRequest(),
        "apps",
        ["app id", "name", "logout policy", "time zone", "created"],
        lambda a: [
            a.app_id,
            a.display_name,
            formatting.enum_name(app_pb2.LogoutPolicy.DESCRIPTOR, a.logout_policy),
            a.default_time_zone,
            formatting.timestamp(a.create_time),
        ],
    )


def rotate_secret(args: argparse.Namespace, ctx: Context) -> int:
    request = ID.RotateClientSecretRequest(app_id=args.app_id)
    if args.overlap is not None:
        request.overlap.CopyFrom(inputs.seconds(args.overlap))
    answer = ctx.client.call("identity", "RotateClientSecret", request)
    if json_answered(ctx, answer):
        return 0
    ctx.out.fields(answer.app, title="Client secret rotated")
    ctx.out.secret("New client secret", answer.client_secret)
    return 0


def delete_app(args: argparse.Namespace, ctx: Context) -> int:
    request = ID.DeleteAppRequest(app_id=args.app_id, force=args.force)
    answer = ctx.client.call("identity", "DeleteApp", request)
    if not json_answered(ctx, answer):
        ctx.out.line(f"app {args.app_id} deleted at {formatting.timestamp(answer.delete_time)}")
    return 0
