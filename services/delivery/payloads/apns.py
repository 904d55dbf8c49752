"""The APNs request (headers and JSON body) for one notification."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from herald.delivery.v1 import notification_pb2
from herald.type.v1 import push_options_pb2
from services.core.errors import Validator
from services.delivery.payloads import ProviderRequest, too_large, ttl_seconds

MAX_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120
MAX_COLLAPSE_ID = 64

PT = push_options_pb2
PUSH_TYPES = {
    PT.APNS_PUSH_TYPE_ALERT: ("alert", ""),
    PT.APNS_PUSH_TYPE_BACKGROUND: ("background", ""),
    PT.APNS_PUSH_TYPE_VOIP: ("voip", ".voip"),
    PT.APNS_PUSH_TYPE_COMPLICATION: ("complication", ".complication"),
    PT.APNS_PUSH_TYPE_FILEPROVIDER: ("fileprovider", ".pushkit.fileprovider"),
    PT.APNS_PUSH_TYPE_MDM: ("mdm", ""),
    PT.APNS_PUSH_TYPE_LIVEACTIVITY: ("liveactivity", ".push-type.liveactivity"),
    PT.APNS_PUSH_TYPE_LOCATION: ("location", ".location-query"),
    PT.APNS_PUSH_TYPE_PUSHTOTALK: ("pushtotalk", ".voip-ptt"),
    PT.APNS_PUSH_TYPE_WIDGETS: ("widgets", ".push-type.widgets"),
    PT.APNS_PUSH_TYPE_CONTROLS: ("controls", ".push-type.controls"),
}
INTERRUPTION_LEVELS = {
    PT.INTERRUPTION_LEVEL_PASSIVE: "passive",
    PT.INTERRUPTION_LEVEL_ACTIVE: "active",
    PT.INTERRUPTION_LEVEL_TIME_SENSITIVE: "time-sensitive",
    PT.INTERRUPTION_LEVEL_CRITICAL: "critical",
}


@dataclass(frozen=True)
class Checked:
    """What the checks found: everything of the request but its per-send headers."""

    type_name: str
    topic_suffix: str
    priority: int
    collapse_id: str
    body: bytes


def check(notification: notification_pb2.Notification, prefix: str = "notification.") -> Checked:
    """Validate the APNs part and size the body; raises InvalidArgument naming the field.
    Enqueue stops here: the request itself is built at each send."""
    apns = notification.apns
    p = f"{prefix}apns."
    check = Validator()
    has_alert = bool(apns.title or apns.subtitle or apns.body)
    if apns.push_type == PT.APNS_PUSH_TYPE_UNSPECIFIED:
        push_type = (
            PT.APNS_PUSH_TYPE_BACKGROUND
            if apns.content_available and not has_alert
            else PT.APNS_PUSH_TYPE_ALERT
        )
    else:
        push_type = apns.push_type
    if push_type not in PUSH_TYPES:
        check.add(f"{p}push_type", "is not a known APNs push type")
        check.raise_if_any()
    type_name, suffix = PUSH_TYPES[push_type]
    priority = _priority(notification, type_name, check, p)
    collapse_id = apns.collapse_id or notification.collapse_id
    collapse_path = f"{p}collapse_id" if apns.collapse_id else f"{prefix}collapse_id"
    check.require(
        len(collapse_id.encode()) <= MAX_COLLAPSE_ID, collapse_path, "must be at most 64 bytes"
    )
    # Both travel as HTTP/2 header values: with a control character or surrounding
    # space the transport could only refuse the request after it was queued.
    for value, path in ((apns.topic, f"{p}topic"), (collapse_id, collapse_path)):
        check.require(
            _header_safe(value), path, "must not contain control characters or surrounding spaces"
        )
    if apns.HasField("relevance_score"):
        check.require(
            0.0 <= apns.relevance_score <= 1.0, f"{p}relevance_score", "must be between 0 and 1"
        )
    if apns.HasField("badge"):
        check.require(apns.badge >= 0, f"{p}badge", "must not be negative")
    body = _body(apns, p, check)
    check.raise_if_any()
    limit = MAX_VOIP_PAYLOAD if type_name == "voip" else MAX_PAYLOAD
    if len(body) > limit:
        field = f"{p}raw_payload_json" if apns.raw_payload_json else f"{p}body"
        raise too_large(field, len(body), limit, "APNs payload")
    return Checked(type_name, suffix, priority, collapse_id, body)


def build(
    notification: notification_pb2.Notification,
    bundle_id: str,
    apns_id: str,
    prefix: str = "notification.",
    now: float | None = None,
) -> ProviderRequest:
    """Headers and body for POST /3/device/<token>; raises InvalidArgument naming the field."""
    checked = check(notification, prefix)
    ttl = ttl_seconds(notification)
    now = time.time() if now is None else now
    headers = [
        ("apns-push-type", checked.type_name),
        ("apns-priority", str(checked.priority)),
        ("apns-topic", notification.apns.topic or bundle_id + checked.topic_suffix),
        ("apns-expiration", "0" if ttl == 0 else str(int(now) + ttl)),
        ("apns-id", apns_id),
    ]
    if checked.collapse_id:
        headers.append(("apns-collapse-id", checked.collapse_id))
    token = notification.token.apns.device_token.lower()
    return ProviderRequest(f"/3/device/{token}", tuple(headers), checked.body)


def _header_safe(value: str) -> bool:
    return value.isprintable() and value == value.strip()


def _priority(
    notification: notification_pb2.Notification, type_name: str, check: Validator, p: str
) -> int:
    explicit = notification.apns.priority
    if explicit:
        check.require(explicit in (10, 5, 1), f"{p}priority", "must be 10, 5 or 1")
        check.require(
            not (type_name == "background" and explicit == 10),
            f"{p}priority",
            "background pushes must use priority 5 (or 1)",
        )
        return explicit
    if (
        type_name == "background"
        or notification.priority == push_options_pb2.NOTIFICATION_PRIORITY_NORMAL
    ):
        return 5
    return 10


def _body(apns: notification_pb2.ApnsPayload, p: str, check: Validator) -> bytes:
    if apns.raw_payload_json:
        try:
            raw = json.loads(apns.raw_payload_json)
        except ValueError:
            raw = None
        check.require(isinstance(raw, dict), f"{p}raw_payload_json", "must be a JSON object")
        return apns.raw_payload_json.encode()
    aps: dict[str, Any] = {}
    alert = {
        k: v
        for k, v in (("title", apns.title), ("subtitle", apns.subtitle), ("body", apns.body))
        if v
    }
    if alert:
        aps["alert"] = alert
    if apns.HasField("badge"):
        aps["badge"] = apns.badge
    if apns.sound:
        aps["sound"] = apns.sound
    if apns.category:
        aps["category"] = apns.category
    if apns.thread_id:
        aps["thread-id"] = apns.thread_id
    if apns.mutable_content:
        aps["mutable-content"] = 1
    if apns.content_available:
        aps["content-available"] = 1
    if apns.interruption_level:
        aps["interruption-level"] = INTERRUPTION_LEVELS.get(apns.interruption_level, "active")
    if apns.HasField("relevance_score"):
        aps["relevance-score"] = apns.relevance_score
    payload: dict[str, Any] = {"aps": aps}
    if apns.HasField("custom_data"):
        custom = json_format.MessageToDict(apns.custom_data)
        check.require("aps" not in custom, f"{p}custom_data", 'must not contain the key "aps"')
        payload.update({k: v for k, v in custom.items() if k != "aps"})
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
