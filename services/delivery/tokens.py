"""Push tokens: which provider a token goes to, its canonical string, its shape."""

from __future__ import annotations

import base64
import re

from herald.type.v1 import push_token_pb2
from services.core.errors import FieldViolation, InvalidArgument
from services.core.logs import redact
from services.core.web_push_subscription import RULE as ENDPOINT_RULE
from services.core.web_push_subscription import endpoint_ok, is_p256_point

APNS_TOKEN_RE = re.compile(r"[0-9a-fA-F]{64,200}")
FCM_TOKEN_RE = re.compile(r"[^\s]{16,4096}")
TOKEN_MALFORMED = "TOKEN_MALFORMED"  # noqa: S105 - a reason name, not a secret


def provider_of(token: push_token_pb2.PushToken) -> str:
    """ "apns", "fcm", "webpush", or "" when no kind is set."""
    kind = token.WhichOneof("kind")
    return {"apns": "apns", "fcm": "fcm", "web_push": "webpush"}.get(kind or "", "")


def canonical(token: push_token_pb2.PushToken) -> str:
    kind = token.WhichOneof("kind")
    if kind == "apns":
        return token.apns.device_token.lower()
    if kind == "fcm":
        return token.fcm.registration_token
    if kind == "web_push":
        return token.web_push.endpoint
    return ""


def redacted(token: push_token_pb2.PushToken) -> str:
    if token.WhichOneof("kind") == "web_push":
        endpoint = token.web_push.endpoint
        origin = "/".join(endpoint.split("/", 3)[:3])
        return f"{origin}/…{endpoint[-4:]}"
    return redact(canonical(token))


def _b64url(value: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return None


def _b64url_len(value: str) -> int:
    decoded = _b64url(value)
    return -1 if decoded is None else len(decoded)


def _is_p256_point(value: str) -> bool:
    raw = _b64url(value)
    return raw is not None and is_p256_point(raw)


def check_token(token: push_token_pb2.PushToken, path: str) -> None:
    """Raise TOKEN_MALFORMED naming the field when the token cannot be sent to."""
    kind = token.WhichOneof("kind")
    bad: list[FieldViolation] = []
    if kind == "apns":
        value = token.apns.device_token
        if not APNS_TOKEN_RE.fullmatch(value) or len(value) % 2:
            bad.append(
                FieldViolation(f"{path}.apns.device_token", "must be hex (64 or more digits)")
            )
    elif kind == "fcm":
        if not FCM_TOKEN_RE.fullmatch(token.fcm.registration_token):
            bad.append(
                FieldViolation(
                    f"{path}.fcm.registration_token", "must be 16+ characters without whitespace"
                )
            )
    elif kind == "web_push":
        sub = token.web_push
        if not endpoint_ok(sub.endpoint):
            bad.append(FieldViolation(f"{path}.web_push.endpoint", ENDPOINT_RULE))
        if not _is_p256_point(sub.p256dh):
            bad.append(
                FieldViolation(
                    f"{path}.web_push.p256dh",
                    "must be a P-256 public key (65 bytes, uncompressed) in base64url",
                )
            )
        if _b64url_len(sub.auth) != 16:
            bad.append(FieldViolation(f"{path}.web_push.auth", "must be 16 bytes in base64url"))
    else:
        raise InvalidArgument("a token is required", [FieldViolation(path, "is required")])
    if bad:
        raise InvalidArgument("the token is malformed", bad, reason=TOKEN_MALFORMED)
