"""Opaque page tokens and stream cursors, bound to the request that issued them.

A token is base64url(JSON{"q": fingerprint of the filters, "p": position}). The
fingerprint makes a token from another query (or another partition) fail with
INVALID_PAGE_TOKEN / INVALID_CURSOR instead of silently skipping or repeating items.
Tokens are not secret: the position only names ids the caller could list anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from services.core.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def encode(query: str, position: Any) -> str:
    raw = json.dumps({"q": query, "p": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(
    token: str, query: str, field: str = "page_token", reason: str = "INVALID_PAGE_TOKEN"
) -> Any:
    """The position in `token`, or None for an empty token."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        content = json.loads(raw)
    except (binascii.Error, ValueError):
        content = None
    if not isinstance(content, dict) or content.get("q") != query or "p" not in content:
        raise InvalidArgument(
            f"the {field.replace('_', ' ')} was not issued for this request",
            [FieldViolation(field, "was not issued by this RPC for the same filters", reason)],
            reason,
        )
    return content["p"]


def bad_token(field: str = "page_token", reason: str = "INVALID_PAGE_TOKEN") -> InvalidArgument:
    return InvalidArgument(
        f"the {field.replace('_', ' ')} was not issued for this request",
        [FieldViolation(field, "was not issued by this RPC for the same filters", reason)],
        reason,
    )


def page_size(requested: int) -> int:
    if requested <= 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)
