"""`herald keys create|list|revoke`: an app's API keys (IdentityService).

With HERALD_REQUIRE_API_KEYS every caller needs a key; this is how an operator makes
them: a REGISTER key for a mobile gateway, a FULL key for a backend. The key itself is
printed once, by `create`; `list` shows only its id and prefix, to recognise it.
"""

from __future__ import annotations

import argparse
from typing import Any

from herald.identity.v1 import app_pb2, identity_service_pb2
from services.cli import formatting, inputs
from services.cli.commands import add_paging, group, json_answered, list_pages, show
from services.cli.context import Context

ID = identity_service_pb2
SCOPES = {
    "register": app_pb2.API_KEY_SCOPE_REGISTER,
    "full": app_pb2.API_KEY_SCOPE_FULL,
}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    keys = group(commands, common, "keys", help="an app's API keys (register-only or full)")

    create = keys.command(
        "create",
        create_key,
        help="create an API key; prints the key once",
        description="Create an API key for an app. 'register' reaches only the mobile "
        "gateway RPCs (RegisterDevice, UpdatePermission, UnregisterDevice, ChangeUser, "
        "Logout, RecordEngagement); 'full' every RPC on the app's own data. The key is "
        "printed once: store it.",
    )
    create.add_argument("app_id")
    create.add_argument("--name", required=True, help='what the key is for ("ios-gateway")')
    create.add_argument("--scope", required=True, choices=sorted(SCOPES))
    create.add_argument("--expire-at", metavar="TIME", help="RFC 3339 end of validity (never)")

    list_ = keys.command("list", list_keys, help="list an app's keys (never the keys)")
    list_.add_argument("app_id")
    list_.add_argument("--revoked", action="store_true", help="revoked keys too")
    add_paging(list_)

    revoke = keys.command("revoke", revoke_key, help="revoke a key now")
    revoke.add_argument("app_id")
    revoke.add_argument("api_key_id")


def create_key(args: argparse.Namespace, ctx: Context) -> int:
    key = app_pb2.ApiKey(display_name=args.name, scope=SCOPES[args.scope])
    if args.expire_at:
        key.expire_time.CopyFrom(inputs.instant(args.expire_at, "--expire-at"))
    answer = ctx.client.call(
        "identity", "CreateApiKey", ID.CreateApiKeyRequest(app_id=args.app_id, api_key=key)
    )
    if json_answered(ctx, answer):
        return 0
    ctx.out.fields(answer.api_key, title="API key created")
    ctx.out.secret("API key", answer.key)
    return 0


def _row(key: app_pb2.ApiKey) -> list[str]:
    return [
        key.api_key_id,
        key.display_name,
        formatting.enum_name(app_pb2.ApiKeyScope.DESCRIPTOR, key.scope),
        f"{key.key_prefix}…",
        formatting.timestamp(key.create_time),
        formatting.timestamp(key.expire_time) or "never",
        formatting.timestamp(key.last_use_time),
        formatting.timestamp(key.revoke_time),
    ]


def list_keys(args: argparse.Namespace, ctx: Context) -> int:
    return list_pages(
        args,
        ctx,
        "identity",
        "ListApiKeys",
        ID.ListApiKeysRequest(app_id=args.app_id, show_revoked=args.revoked),
        "api_keys",
        ["key id", "name", "scope", "prefix", "created", "expires", "last used", "revoked"],
        _row,
        whole=("key id",),
    )


def revoke_key(args: argparse.Namespace, ctx: Context) -> int:
    request = ID.RevokeApiKeyRequest(app_id=args.app_id, api_key_id=args.api_key_id)
    answer = ctx.client.call("identity", "RevokeApiKey", request)
    return show(ctx, answer.api_key, title="API key revoked")
