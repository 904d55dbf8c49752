"""`herald users upsert|get|lookup|state|export|delete` (IdentityService).

`export` and `delete` act on the user directory every app shares, so with keys
required they need the admin key (--admin-key / HERALD_ADMIN_KEY), not an app's key.

`export` writes JSON lines (one ExportedUser per line) to stdout as batches arrive,
holding at most one batch in memory, so a million-user export streams straight into
a file or `jq`. Tokens are redacted unless --full-tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from herald.identity.v1 import identity_service_pb2, user_pb2
from herald.type.v1 import platform_pb2
from services.cli import formatting, inputs
from services.cli.commands import group, json_answered, show
from services.cli.context import Context
from services.cli.errors import UsageError

ID = identity_service_pb2


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    users = group(commands, common, "users", help="create, find and export users")

    upsert = users.command(
        "upsert",
        upsert_user,
        help="create a user or update the given fields",
        description="Create a user, or update an existing one: only the fields given "
        "are written. --attributes replaces all attributes unless --merge.",
    )
    upsert.add_argument("external_id")
    upsert.add_argument("--email", default="")
    upsert.add_argument("--phone", default="", help="E.164, e.g. +33612345678")
    upsert.add_argument("--time-zone", default="")
    upsert.add_argument("--locale", default="")
    upsert.add_argument("--attributes", metavar="JSON|@FILE", help="a JSON object")
    upsert.add_argument(
        "--attr",
        action="append",
        metavar="KEY=VALUE",
        help="one attribute; VALUE is read as JSON when it parses (42, true, null)",
    )
    upsert.add_argument("--merge", action="store_true", help="merge attributes key by key")

    get = users.command("get", get_user, help="show a user by external id")
    get.add_argument("external_id")

    _identifier_arguments(
        users.command("lookup", lookup_user, help="find a user by id, e-mail or phone")
    )
    _identifier_arguments(
        users.command(
            "state", subscription_state, help="a user's devices: Foreground / Background per app"
        )
    )

    export = users.command(
        "export",
        export_users,
        help="stream users with their push tokens as JSON lines (needs the admin key)",
        description="Select users by identifiers (--id/--email/--phone/--ids-file), by "
        "--segment, or --all. One JSON object per line on stdout. Reads every app's "
        "users, so with keys required it needs the admin key.",
    )
    export.add_argument("--id", action="append", default=[], help="an external id")
    export.add_argument("--email", action="append", default=[])
    export.add_argument("--phone", action="append", default=[])
    export.add_argument("--ids-file", help="a file of external ids, one per line")
    export.add_argument(
        "--segment", metavar="JSON|@FILE", help="a herald.identity.v1.Segment as JSON"
    )
    export.add_argument("--all", action="store_true", help="every user")
    export.add_argument("--app-id", action="append", default=[], help="only tokens of this app")
    export.add_argument("--full-tokens", action="store_true", help="tokens in full")
    export.add_argument("--batch-size", type=int, default=0)
    export.add_argument("--cursor", default="", help="resume after this cursor")
    export.add_argument(
        "--cursor-file", help="write the cursor here after each batch (resume with --cursor)"
    )

    delete = users.command(
        "delete",
        delete_user,
        help="delete a user and unbind their devices in every app (needs the admin key)",
        description="Delete a user: their devices in every app are unbound (they stay "
        "registered, anonymous), then the profile is erased and its e-mail and phone "
        "freed. An unknown user is NOT_FOUND unless --allow-missing.",
    )
    delete.add_argument("external_id")
    delete.add_argument(
        "--allow-missing", action="store_true", help="succeed when no user has this id"
    )


def _identifier_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("external_id", nargs="?", default="")
    parser.add_argument("--email", default="")
    parser.add_argument("--phone", default="")


def _identifier(args: argparse.Namespace) -> user_pb2.UserIdentifier:
    given = {k: v for k in ("external_id", "email", "phone") if (v := getattr(args, k))}
    if len(given) != 1:
        raise UsageError("give exactly one of EXTERNAL_ID, --email, --phone")
    return user_pb2.UserIdentifier(**given)


def _attribute_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def upsert_user(args: argparse.Namespace, ctx: Context) -> int:
    user = user_pb2.User(
        external_id=args.external_id,
        email=args.email,
        phone=args.phone,
        time_zone=args.time_zone,
        locale=args.locale,
    )
    attributes = inputs.json_object(args.attributes, "--attributes") if args.attributes else {}
    for key, value in inputs.key_values(args.attr, "--attr").items():
        attributes[key] = _attribute_value(value)
    if args.attributes is not None or args.attr:
        user.attributes.CopyFrom(inputs.struct(attributes))
    request = ID.UpsertUserRequest(user=user, merge_attributes=args.merge)
    answer = ctx.client.call("identity", "UpsertUser", request)
    title = "User created" if answer.created else "User updated"
    return show(ctx, answer.user, title, answer=answer)


def get_user(args: argparse.Namespace, ctx: Context) -> int:
    request = ID.GetUserRequest(external_id=args.external_id)
    return show(ctx, ctx.client.call("identity", "GetUser", request).user)


def lookup_user(args: argparse.Namespace, ctx: Context) -> int:
    request = ID.LookupUserRequest(identifier=_identifier(args))
    return show(ctx, ctx.client.call("identity", "LookupUser", request).user)


def subscription_state(args: argparse.Namespace, ctx: Context) -> int:
    request = ID.GetSubscriptionStateRequest(identifier=_identifier(args))
    answer = ctx.client.call("identity", "GetSubscriptionState", request)
    if json_answered(ctx, answer):
        return 0
    enabled = "yes" if answer.push_enabled_any_app else "no"
    ctx.out.line(f"user {answer.external_id}: push enabled for any app: {enabled}")
    ctx.out.table(
        ["state", "app", "device", "platform", "token", "last seen"],
        [
            [
                e.label + (" (provisional)" if e.push_token.provisional else ""),
                e.push_token.app_id,
                e.push_token.device_id,
                formatting.enum_name(platform_pb2.Platform.DESCRIPTOR, e.push_token.platform),
                e.push_token.redacted_token,
                formatting.timestamp(e.push_token.last_seen_time),
            ]
            for e in answer.entries
        ],
    )
    return 0


def _selector(args: argparse.Namespace) -> ID.ExportSelector:
    identifiers = [user_pb2.UserIdentifier(external_id=i) for i in args.id]
    identifiers += [user_pb2.UserIdentifier(email=e) for e in args.email]
    identifiers += [user_pb2.UserIdentifier(phone=p) for p in args.phone]
    if args.ids_file:
        lines = inputs.read_text(args.ids_file, "ids file").splitlines()
        identifiers += [user_pb2.UserIdentifier(external_id=s) for x in lines if (s := x.strip())]
    chosen = sum((bool(identifiers), bool(args.segment), args.all))
    if chosen != 1:
        raise UsageError("select users with identifiers, --segment or --all (exactly one)")
    if identifiers:
        return ID.ExportSelector(identifiers=ID.UserIdentifierList(identifiers=identifiers))
    segment = user_pb2.Segment()
    if args.segment:
        inputs.parse_message(inputs.json_object(args.segment, "--segment"), segment, "--segment")
    return ID.ExportSelector(segment=segment)


def export_users(args: argparse.Namespace, ctx: Context) -> int:
    request = ID.ExportUsersRequest(
        selector=_selector(args),
        app_ids=args.app_id,
        include_full_tokens=args.full_tokens,
        batch_size=args.batch_size,
        cursor=args.cursor,
    )
    exported = 0

    # After a connection recycle the export goes on right after the last batch written:
    # `request.cursor` follows the batches (the call in flight has sent its copy).
    for batch in ctx.client.stream("identity", "ExportUsers", request, resume=lambda _: request):
        lines = [json.dumps(formatting.to_json(u), ensure_ascii=False) for u in batch.users]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
        exported += len(lines)
        for missing in batch.not_found:
            kind = missing.WhichOneof("kind") or "identifier"
            ctx.out.err.print(f"not found: {kind} {getattr(missing, kind, '')}", highlight=False)
        if batch.cursor:
            request.cursor = batch.cursor
        if args.cursor_file and batch.cursor:
            # Written only after the batch reached stdout: resuming never skips users.
            Path(args.cursor_file).write_text(batch.cursor + "\n")
    ctx.out.note(f"exported {exported} users")
    return 0


def delete_user(args: argparse.Namespace, ctx: Context) -> int:
    request = ID.DeleteUserRequest(external_id=args.external_id, allow_missing=args.allow_missing)
    answer = ctx.client.call("identity", "DeleteUser", request)
    if json_answered(ctx, answer):
        return 0
    if answer.deleted:
        unbound = answer.unbound_device_count
        ctx.out.line(f"user {args.external_id} deleted; {unbound} device(s) unbound")
    else:
        ctx.out.line(f"no user {args.external_id}: nothing to delete")
    return 0
