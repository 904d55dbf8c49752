"""Turning command-line text into request fields: enum choices, files, JSON, tokens.

Everything here fails with UsageError (exit 2) before any call is made, so a typo
never reaches a server.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.json_format import ParseDict
from google.protobuf.message import Message

from herald.type.v1 import platform_pb2, push_token_pb2
from services.cli.errors import UsageError

PLATFORMS = {
    "ios": platform_pb2.PLATFORM_IOS,
    "android": platform_pb2.PLATFORM_ANDROID,
    "web": platform_pb2.PLATFORM_WEB,
}
ENVIRONMENTS = {
    "development": platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT,
    "production": platform_pb2.APNS_ENVIRONMENT_PRODUCTION,
}
PROVIDERS = {
    "apns": platform_pb2.PROVIDER_APNS,
    "fcm": platform_pb2.PROVIDER_FCM,
    "webpush": platform_pb2.PROVIDER_WEB_PUSH,
}
AUTHORIZATIONS = {
    "not-determined": platform_pb2.AUTHORIZATION_STATUS_NOT_DETERMINED,
    "denied": platform_pb2.AUTHORIZATION_STATUS_DENIED,
    "provisional": platform_pb2.AUTHORIZATION_STATUS_PROVISIONAL,
    "authorized": platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED,
}
CAPABILITIES = {
    "foreground": platform_pb2.PUSH_CAPABILITY_FOREGROUND,
    "background": platform_pb2.PUSH_CAPABILITY_BACKGROUND,
    "none": platform_pb2.PUSH_CAPABILITY_NONE,
}


def read_text(path: str, what: str) -> str:
    """A local file's text; `-` reads stdin (for secrets piped from a vault)."""
    try:
        if path == "-":
            import sys

            return sys.stdin.read()
        return Path(path).read_text()
    except OSError as error:
        raise UsageError(f"cannot read {what} {path!r}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path!r} is not text (expected PEM or JSON)") from None


def read_bytes(path: str, what: str) -> bytes:
    """A local binary file (a PKCS#12 bundle); `-` reads stdin."""
    try:
        if path == "-":
            import sys

            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {what} {path!r}: {error.strerror or error}") from None


def json_value(text: str, what: str) -> Any:
    """JSON given inline or as `@file`."""
    if text.startswith("@"):
        text = read_text(text[1:], what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{what} is not valid JSON: {error}") from None


def json_object(text: str, what: str) -> dict[str, Any]:
    value = json_value(text, what)
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object")
    return value


def parse_message(data: dict[str, Any], message: Message, what: str) -> Message:
    """A proto from its JSON mapping (either field spelling), naming the bad field."""
    try:
        return ParseDict(data, message)
    except Exception as error:  # json_format raises ParseError and also ValueError/TypeError
        raise UsageError(f"{what}: {error}") from None


def key_values(pairs: list[str] | None, what: str) -> dict[str, str]:
    """`--data key=value` pairs; the value may itself contain `=`."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} must look like key=value, got {pair!r}")
        out[key] = value
    return out


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(value * 1e9))
    return out


def instant(text: str, what: str) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    try:
        out.FromJsonString(text if text.endswith("Z") or "+" in text[10:] else text + "Z")
    except ValueError:
        raise UsageError(f"{what} must be an RFC 3339 time like 2030-01-31T09:00:00Z") from None
    return out


# -- push tokens ------------------------------------------------------------------------
def add_token_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("push token (at most one kind)")
    group.add_argument("--apns-token", metavar="HEX", help="an APNs device token (hex)")
    group.add_argument("--fcm-token", metavar="TOKEN", help="an FCM registration token")
    group.add_argument(
        "--web-subscription",
        metavar="JSON|@FILE",
        help="a Web Push subscription as PushSubscription.toJSON() gives it: "
        '{"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}',
    )


def push_token(args: argparse.Namespace) -> push_token_pb2.PushToken | None:
    given = [
        name for name in ("apns_token", "fcm_token", "web_subscription") if getattr(args, name)
    ]
    if len(given) > 1:
        raise UsageError("give at most one of --apns-token, --fcm-token, --web-subscription")
    if args.apns_token:
        return push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token=args.apns_token))
    if args.fcm_token:
        return push_token_pb2.PushToken(
            fcm=push_token_pb2.FcmToken(registration_token=args.fcm_token)
        )
    if args.web_subscription:
        sub = json_object(args.web_subscription, "--web-subscription")
        keys = sub.get("keys")
        if not isinstance(keys, dict):
            keys = {}
        return push_token_pb2.PushToken(
            web_push=push_token_pb2.WebPushSubscription(
                endpoint=str(sub.get("endpoint", "")),
                p256dh=str(keys.get("p256dh", "")),
                auth=str(keys.get("auth", "")),
            )
        )
    return None
