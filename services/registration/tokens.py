"""Push token validation, canonical strings, redaction and index digests."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.core.errors import Validator
from services.core.logs import redact
from services.core.web_push_subscription import RULE as ENDPOINT_RULE
from services.core.web_push_subscription import endpoint_ok, is_p256_point
from services.registration.model import APNS, FCM, WEB_PUSH, Token

TOKEN_MALFORMED = "TOKEN_MALFORMED"  # noqa: S105 - an error reason, not a secret
TOKEN_PLATFORM_MISMATCH = "TOKEN_PLATFORM_MISMATCH"  # noqa: S105 - an error reason

APNS_MIN_HEX, APNS_MAX_HEX = 64, 200
FCM_MAX_LENGTH = 1024  # real registration tokens are ~150-250 characters
P256DH_BYTES, AUTH_BYTES = 65, 16

_HEX = re.compile(r"^[0-9a-fA-F]+$")
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
_FCM_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no whitespace

KIND_NAMES = {APNS: "apns", FCM: "fcm", WEB_PUSH: "web_push"}


@dataclass(frozen=True, slots=True)
class TokenInput:
    """A PushToken as the caller sent it; kind 0 when the oneof is unset."""

    kind: int
    apns_device_token: str = ""
    fcm_registration_token: str = ""
    web_endpoint: str = ""
    web_p256dh: str = ""
    web_auth: str = ""


def _base64url(value: str) -> bytes | None:
    if not _BASE64URL.match(value):
        return None
    try:
        return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        return None


def check_token(check: Validator, path: str, given: TokenInput) -> Token | None:
    """Validates a token's own shape (not its platform); adds TOKEN_MALFORMED violations."""
    if given.kind == APNS:
        hex_token = given.apns_device_token
        if not (
            APNS_MIN_HEX <= len(hex_token) <= APNS_MAX_HEX
            and len(hex_token) % 2 == 0
            and _HEX.match(hex_token)
        ):
            check.add(
                f"{path}.apns.device_token",
                f"must be {APNS_MIN_HEX} to {APNS_MAX_HEX} hex digits (an even count)",
                TOKEN_MALFORMED,
            )
            return None
        return Token(APNS, hex_token.lower())
    if given.kind == FCM:
        registration = given.fcm_registration_token
        if not registration or len(registration) > FCM_MAX_LENGTH:
            check.add(
                f"{path}.fcm.registration_token",
                f"must be 1 to {FCM_MAX_LENGTH} characters",
                TOKEN_MALFORMED,
            )
            return None
        if not _FCM_CHARS.match(registration):
            check.add(
                f"{path}.fcm.registration_token",
                "must not contain whitespace or non-ASCII characters",
                TOKEN_MALFORMED,
            )
            return None
        return Token(FCM, registration)
    if given.kind == WEB_PUSH:
        return _check_web(check, f"{path}.web_push", given)
    check.add(path, "exactly one of apns, fcm or web_push must be set", TOKEN_MALFORMED)
    return None


def _check_web(check: Validator, path: str, given: TokenInput) -> Token | None:
    ok = True
    endpoint = given.web_endpoint
    if not endpoint_ok(endpoint):
        check.add(f"{path}.endpoint", ENDPOINT_RULE, TOKEN_MALFORMED)
        ok = False
    p256dh = _base64url(given.web_p256dh)
    if p256dh is None or not is_p256_point(p256dh):
        check.add(
            f"{path}.p256dh",
            f"must be base64url of a {P256DH_BYTES}-byte uncompressed P-256 point",
            TOKEN_MALFORMED,
        )
        ok = False
    auth = _base64url(given.web_auth)
    if auth is None or len(auth) != AUTH_BYTES:
        check.add(f"{path}.auth", f"must be base64url of {AUTH_BYTES} bytes", TOKEN_MALFORMED)
        ok = False
    if not ok or p256dh is None or auth is None:
        return None
    return Token(WEB_PUSH, endpoint, p256dh, auth)


def redact_token(token: Token | None) -> str:
    """What logs, errors and BASIC views show of a token."""
    if token is None:
        return ""
    if token.kind == WEB_PUSH:
        parts = urlsplit(token.value)
        # The host says which push service; the path is the secret part. Hosts are
        # short in practice; the cap keeps a log entry's size bounded anyway.
        return f"{parts.scheme}://{parts.netloc[:100]}/…{token.value[-4:]}"
    return redact(token.value)


def encode_base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_digest(app_id: str, canonical: str) -> bytes:
    """16 bytes identifying (app, token): the first 12 name the index field, the rest its shard.

    96 bits make an accidental collision among billions of tokens negligible; the index
    is verified against the device record anyway, so a collision could only hide a
    token from a lookup, never hand it to the wrong device.
    """
    return hashlib.blake2b(f"{app_id}\n{canonical}".encode(), digest_size=16).digest()
