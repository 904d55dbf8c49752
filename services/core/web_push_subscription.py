"""What a Web Push subscription must be, for Registration (when a browser subscribes)
and Delivery (when a caller hands Enqueue or Send a subscription directly): an
endpoint a push service URL can be, and a p256dh key messages can be encrypted to."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

WEB_ENDPOINT_MAX_LENGTH = 2048
_URL_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII: no controls, spaces, non-ASCII
RULE = (
    f"must be an https URL with a host, at most {WEB_ENDPOINT_MAX_LENGTH} printable ASCII "
    "characters, without user info (user:password@)"
)


def endpoint_ok(endpoint: str) -> bool:
    """A push service URL as browsers hand it out (RFC 8030): https, a host, ASCII.

    Control characters could split a log line or an HTTP request line, user info
    (user:pw@host) has no place in a push service URL and would be shown by redaction,
    non-ASCII means it was not taken from PushSubscription.endpoint, and a URL that
    does not parse (`https://[::1/x`) could only fail at each send."""
    if not endpoint or len(endpoint) > WEB_ENDPOINT_MAX_LENGTH or not _URL_CHARS.match(endpoint):
        return False
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and bool(parts.hostname)
        and "@" not in parts.netloc
        and parts.username is None
    )


def is_p256_point(raw: bytes) -> bool:
    """65 bytes that are an uncompressed point on P-256 (RFC 8291's p256dh). A key of
    the right length off the curve could only fail at encryption, at every send."""
    if len(raw) != 65 or raw[0] != 0x04:
        return False
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        return False
    return True
