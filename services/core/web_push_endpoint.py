"""What a Web Push endpoint must look like, for Registration (when a browser subscribes)
and Delivery (when a caller hands Enqueue or Send a subscription directly)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

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
