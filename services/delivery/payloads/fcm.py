"""The FCM HTTP v1 send request for one notification."""

from __future__ import annotations

import json
import re
from typing import Any

from herald.delivery.v1 import notification_pb2
from herald.type.v1 import push_options_pb2
from services.core.errors import Validator
from services.delivery.payloads import (
    MAX_TTL_SECONDS,
    ProviderRequest,
    duration_seconds,
    too_large,
    ttl_seconds,
)

MAX_MESSAGE = 4096
RESERVED_DATA_KEYS = frozenset({"from", "message_type", "notification"})
RESERVED_DATA_PREFIXES = ("google", "gcm")
COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")


def build(
    notification: notification_pb2.Notification, project_id: str, prefix: str = "notification."
) -> ProviderRequest:
    """The send request; raises InvalidArgument naming the field."""
    sized = check(notification, prefix)
    token = json.dumps(notification.token.fcm.registration_token, ensure_ascii=False)
    # {"message":{"token":...,<the sized message's members>}}: the token goes first, as
    # FCM's own examples put it, and the message is serialised once.
    body = f'{{"message":{{"token":{token},{sized[1:]}}}'.encode()
    headers = (("content-type", "application/json; charset=UTF-8"),)
    return ProviderRequest(f"/v1/projects/{project_id}/messages:send", headers, body)


def check(notification: notification_pb2.Notification, prefix: str = "notification.") -> str:
    """Validate the FCM part and size the message; raises InvalidArgument naming the
    field. Returns the message without its target as JSON (what FCM's limit counts;
    Enqueue stops here, the request is built at each send)."""
    fcm = notification.fcm
    p = f"{prefix}fcm."
    check = Validator()
    for key in fcm.data:
        reserved = key in RESERVED_DATA_KEYS or key.lower().startswith(RESERVED_DATA_PREFIXES)
        check.require(not reserved, f'{p}data["{key}"]', "is a key FCM reserves")
    ttl = (
        duration_seconds(fcm.android_ttl)
        if fcm.HasField("android_ttl")
        else ttl_seconds(notification)
    )
    check.require(
        ttl <= MAX_TTL_SECONDS,
        f"{p}android_ttl" if fcm.HasField("android_ttl") else f"{prefix}ttl",
        "must be at most 28 days",
    )
    if fcm.color:
        check.require(bool(COLOR_RE.fullmatch(fcm.color)), f"{p}color", "must be #rrggbb")
    check.raise_if_any()

    message: dict[str, Any] = {}
    if fcm.data:
        message["data"] = dict(fcm.data)
    shown = {
        k: v for k, v in (("title", fcm.title), ("body", fcm.body), ("image", fcm.image_url)) if v
    }
    if shown:
        message["notification"] = shown
    android: dict[str, Any] = {"priority": _priority(notification), "ttl": f"{ttl}s"}
    collapse_key = fcm.collapse_key or notification.collapse_id
    if collapse_key:
        android["collapse_key"] = collapse_key
    if fcm.restricted_package_name:
        android["restricted_package_name"] = fcm.restricted_package_name
    if fcm.direct_boot_ok:
        android["direct_boot_ok"] = True
    android_notification = {
        k: v
        for k, v in (
            ("channel_id", fcm.channel_id),
            ("icon", fcm.icon),
            ("color", fcm.color),
            ("tag", fcm.tag),
            ("click_action", fcm.click_action),
        )
        if v
    }
    if android_notification:
        android["notification"] = android_notification
    message["android"] = android
    if fcm.analytics_label:
        message["fcm_options"] = {"analytics_label": fcm.analytics_label}
    # FCM counts the message without its target (what the device receives).
    sized = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    size = len(sized.encode())
    if size > MAX_MESSAGE:
        field = f"{p}data" if fcm.data and not (fcm.title or fcm.body) else f"{p}body"
        raise too_large(field, size, MAX_MESSAGE, "FCM message")
    return sized


def _priority(notification: notification_pb2.Notification) -> str:
    explicit = notification.fcm.android_priority
    if explicit == push_options_pb2.ANDROID_PRIORITY_NORMAL:
        return "NORMAL"
    if explicit == push_options_pb2.ANDROID_PRIORITY_HIGH:
        return "HIGH"
    return (
        "NORMAL"
        if notification.priority == push_options_pb2.NOTIFICATION_PRIORITY_NORMAL
        else "HIGH"
    )
