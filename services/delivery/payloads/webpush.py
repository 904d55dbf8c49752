"""The Web Push request (RFC 8030 headers, RFC 8291 aes128gcm body) for one notification.

VAPID (the Authorization header) is added by the sender, which caches the JWT per
origin; this module only builds and encrypts.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from herald.delivery.v1 import notification_pb2
from herald.type.v1 import push_options_pb2
from services.core.errors import Validator
from services.delivery.payloads import ProviderRequest, too_large, ttl_seconds
from services.delivery.webpush_crypto import OVERHEAD, encrypt

MAX_WIRE = 4096
MAX_PLAINTEXT = MAX_WIRE - OVERHEAD  # 3993
TOPIC_RE = re.compile(r"[A-Za-z0-9_\-]{1,32}")
URGENCIES = {
    push_options_pb2.WEB_PUSH_URGENCY_VERY_LOW: "very-low",
    push_options_pb2.WEB_PUSH_URGENCY_LOW: "low",
    push_options_pb2.WEB_PUSH_URGENCY_NORMAL: "normal",
    push_options_pb2.WEB_PUSH_URGENCY_HIGH: "high",
}


def plaintext_of(notification: notification_pb2.Notification) -> bytes:
    web = notification.web_push
    if web.raw_payload:
        return bytes(web.raw_payload)
    content: dict[str, Any] = {}
    for key, value in (
        ("title", web.title),
        ("body", web.body),
        ("icon", web.icon_url),
        ("image", web.image_url),
        ("badge", web.badge_url),
        ("url", web.url),
        ("tag", web.tag),
    ):
        if value:
            content[key] = value
    if web.actions:
        content["actions"] = [
            {k: v for k, v in (("action", a.action), ("title", a.title), ("icon", a.icon_url)) if v}
            for a in web.actions
        ]
    if web.data:
        content["data"] = dict(web.data)
    if web.require_interaction:
        content["requireInteraction"] = True
    return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()


def build(
    notification: notification_pb2.Notification, prefix: str = "notification."
) -> ProviderRequest:
    """The encrypted request; raises InvalidArgument naming the field."""
    plaintext, topic = check(notification, prefix)
    subscription = notification.token.web_push
    body = encrypt(plaintext, subscription.p256dh, subscription.auth)
    headers = [
        ("ttl", str(ttl_seconds(notification))),
        ("urgency", _urgency(notification)),
        ("content-encoding", "aes128gcm"),
        ("content-type", "application/octet-stream"),
    ]
    if topic:
        headers.append(("topic", topic))
    url = urlsplit(subscription.endpoint)
    path = url.path + (f"?{url.query}" if url.query else "")
    return ProviderRequest(path or "/", tuple(headers), body)


def check(
    notification: notification_pb2.Notification, prefix: str = "notification."
) -> tuple[bytes, str]:
    """Validate the Web Push part and size the plaintext; raises InvalidArgument naming
    the field. Returns the plaintext and the Topic. Enqueue stops here: each send
    encrypts anew (RFC 8291 wants a fresh key and salt per message)."""
    web = notification.web_push
    p = f"{prefix}web_push."
    check = Validator()
    topic = web.topic or notification.collapse_id
    if topic:
        check.require(
            bool(TOPIC_RE.fullmatch(topic)),
            f"{p}topic" if web.topic else f"{prefix}collapse_id",
            "must be 1-32 URL-safe base64 characters to be a Web Push Topic",
        )
    check.raise_if_any()
    plaintext = plaintext_of(notification)
    if len(plaintext) > MAX_PLAINTEXT:
        raise too_large(
            f"{p}raw_payload" if web.raw_payload else p.rstrip("."),
            len(plaintext),
            MAX_PLAINTEXT,
            "Web Push plaintext",
        )
    return plaintext, topic


def _urgency(notification: notification_pb2.Notification) -> str:
    explicit = URGENCIES.get(notification.web_push.urgency)
    if explicit:
        return explicit
    return (
        "normal"
        if notification.priority == push_options_pb2.NOTIFICATION_PRIORITY_NORMAL
        else "high"
    )
