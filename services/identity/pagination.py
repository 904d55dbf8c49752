"""Opaque page tokens and stream cursors, bound to the query that issued them.

A token is base64url JSON {"k": kind, "q": query fingerprint, "p": position}. Decoding
checks the kind and the fingerprint, so a token from another RPC or another filter is
rejected (INVALID_PAGE_TOKEN / INVALID_CURSOR) instead of silently skipping data.
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


def fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def encode(kind: str, query: str, position: Any) -> str:
    payload = json.dumps({"k": kind, "q": query, "p": position}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode(
    token: str, kind: str, query: str, field: str = "page_token", reason: str = "INVALID_PAGE_TOKEN"
) -> Any:
    """The position a token carries; raises InvalidArgument(reason) if it is not ours."""
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if payload["k"] == kind and payload["q"] == query:
            return payload["p"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        pass
    raise InvalidArgument(
        f"{field} was not issued by this RPC for the same query",
        [FieldViolation(field, "is not a token this RPC issued for the same query")],
        reason=reason,
    )


def page_size(requested: int, field: str = "page_size") -> int:
    if requested < 0:
        raise InvalidArgument(
            "the request has invalid fields", [FieldViolation(field, "must not be negative")]
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
