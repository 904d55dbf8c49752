"""Validation of an FCM HTTP v1 send request body, as the real endpoint rejects it.

Returns field violations (field path, description) in the shape google.rpc.BadRequest
uses. The API accepts camelCase and snake_case field names alike.
"""

from __future__ import annotations

import json
import re
from typing import Any

Violation = tuple[str, str]

MAX_MESSAGE_BYTES = 4096
MAX_TOPIC_MESSAGE_BYTES = 2048
MAX_TTL_SECONDS = 28 * 24 * 3600  # 4 weeks
TTL_RE = re.compile(r"(\d+)(\.\d{1,9})?s")
TOPIC_RE = re.compile(r"(/topics/)?[a-zA-Z0-9\-_.~%]{1,900}")
LABEL_RE = re.compile(r"[a-zA-Z0-9\-_.~%]{1,50}")
# Plausible registration tokens: no whitespace, a sensible length (real ones are ~150-250).
TOKEN_RE = re.compile(r"[A-Za-z0-9_\-:.%]{32,4096}")
RESERVED_DATA_KEYS = frozenset({"from", "message_type", "notification"})
RESERVED_DATA_PREFIXES = ("google", "gcm")

_REQUEST_FIELDS = {"message", "validate_only"}
_MESSAGE_FIELDS = {
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "token",
    "topic",
    "condition",
}
_NOTIFICATION_FIELDS = {"title", "body", "image"}
_ANDROID_FIELDS = {
    "collapse_key",
    "priority",
    "ttl",
    "restricted_package_name",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
    "bandwidth_constrained_ok",
    "restricted_satellite_ok",
}
_APNS_FIELDS = {"headers", "payload", "fcm_options", "live_activity_token"}
_WEBPUSH_FIELDS = {"headers", "data", "notification", "fcm_options"}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _unknown(path: str, obj: dict[str, Any], allowed: set[str]) -> list[Violation]:
    return [
        (
            path,
            f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': "
            "Cannot find field.",
        )
        for key in obj
        if snake(key) not in allowed
    ]


def _get(obj: dict[str, Any], name: str) -> Any:
    """A field by its snake_case name, whichever spelling the client used."""
    if name in obj:
        return obj[name]
    parts = name.split("_")
    camel = parts[0] + "".join(p.title() for p in parts[1:])
    return obj.get(camel)


def _string_map(path: str, value: Any) -> list[Violation]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [(path, f"Invalid value at '{path}': expected a map of strings")]
    return [
        (f"{path}[{key}].value", f"Invalid value at '{path}[{key}].value' (TYPE_STRING)")
        for key, item in value.items()
        if not isinstance(item, str)
    ]


def _object(path: str, value: Any) -> list[Violation]:
    if value is None or isinstance(value, dict):
        return []
    return [(path, f"Invalid value at '{path}': expected an object")]


def target_of(message: Any) -> tuple[str, str] | None:
    """(kind, value) of the message's single target, if there is one."""
    if not isinstance(message, dict):
        return None
    for kind in ("token", "topic", "condition"):
        value = message.get(kind)
        if isinstance(value, str):
            return kind, value
    return None


def validate_request(body: dict[str, Any]) -> list[Violation]:
    violations = _unknown("", body, _REQUEST_FIELDS)
    violations = [(f or "request", d.replace("at ''", "at 'request'")) for f, d in violations]
    validate_only = _get(body, "validate_only")
    if validate_only is not None and not isinstance(validate_only, bool):
        violations.append(("validate_only", "Invalid value at 'validate_only' (TYPE_BOOL)"))
    message = body.get("message")
    if not isinstance(message, dict):
        violations.append(("message", "Message must be set."))
        return violations
    violations += validate_message(message)
    return violations


def validate_message(message: dict[str, Any]) -> list[Violation]:
    violations = _unknown("message", message, _MESSAGE_FIELDS)
    targets = [k for k in ("token", "topic", "condition") if message.get(k) not in (None, "")]
    if len(targets) != 1:
        violations.append(
            (
                "message",
                "Exactly one of message.token, message.topic or message.condition "
                "must be specified.",
            )
        )
    token = message.get("token")
    if token is not None and (not isinstance(token, str) or not TOKEN_RE.fullmatch(token)):
        violations.append(
            ("message.token", "The registration token is not a valid FCM registration token")
        )
    topic = message.get("topic")
    if topic is not None and (not isinstance(topic, str) or not TOPIC_RE.fullmatch(topic)):
        violations.append(("message.topic", "Invalid topic name."))
    condition = message.get("condition")
    if condition is not None and not isinstance(condition, str):
        violations.append(("message.condition", "Invalid value at 'message.condition'"))

    data = message.get("data")
    violations += _string_map("message.data", data)
    if isinstance(data, dict):
        for key in data:
            lowered = key.lower()
            if lowered in RESERVED_DATA_KEYS or lowered.startswith(RESERVED_DATA_PREFIXES):
                violations.append(("message.data", f"Invalid data payload key: {key}"))

    notification = message.get("notification")
    violations += _object("message.notification", notification)
    if isinstance(notification, dict):
        violations += _unknown("message.notification", notification, _NOTIFICATION_FIELDS)
        violations += _strings("message.notification", notification)

    android = message.get("android")
    violations += _object("message.android", android)
    if isinstance(android, dict):
        violations += _validate_android(android)

    apns = message.get("apns")
    violations += _object("message.apns", apns)
    if isinstance(apns, dict):
        violations += _unknown("message.apns", apns, _APNS_FIELDS)
        violations += _string_map("message.apns.headers", apns.get("headers"))
        violations += _object("message.apns.payload", apns.get("payload"))

    webpush = message.get("webpush")
    violations += _object("message.webpush", webpush)
    if isinstance(webpush, dict):
        violations += _unknown("message.webpush", webpush, _WEBPUSH_FIELDS)
        violations += _string_map("message.webpush.headers", webpush.get("headers"))
        violations += _string_map("message.webpush.data", webpush.get("data"))
        violations += _object("message.webpush.notification", webpush.get("notification"))
        link = (_get(webpush, "fcm_options") or {}).get("link")
        if link is not None and (not isinstance(link, str) or not link.startswith("https://")):
            violations.append(("message.webpush.fcm_options.link", "Link must be HTTPS."))

    fcm_options = _get(message, "fcm_options")
    violations += _object("message.fcm_options", fcm_options)
    if isinstance(fcm_options, dict):
        label = _get(fcm_options, "analytics_label")
        if label is not None and (not isinstance(label, str) or not LABEL_RE.fullmatch(label)):
            violations.append(("message.fcm_options.analytics_label", "Invalid analytics label"))
    return violations


def _strings(path: str, obj: dict[str, Any]) -> list[Violation]:
    return [
        (f"{path}.{key}", f"Invalid value at '{path}.{key}' (TYPE_STRING)")
        for key, value in obj.items()
        if not isinstance(value, str)
    ]


def _validate_android(android: dict[str, Any]) -> list[Violation]:
    violations = _unknown("message.android", android, _ANDROID_FIELDS)
    priority = android.get("priority")
    # The proto enum is NORMAL | HIGH; firebase-admin sends them in lower case, accepted.
    if priority is not None and (
        not isinstance(priority, str) or priority.upper() not in ("NORMAL", "HIGH")
    ):
        violations.append(
            (
                "message.android.priority",
                f"Invalid value at 'message.android.priority' "
                f"(type.googleapis.com/google.firebase.fcm.v1.AndroidConfig.AndroidMessagePriority),"
                f' "{priority}"',
            )
        )
    ttl = android.get("ttl")
    if ttl is not None:
        match = TTL_RE.fullmatch(ttl) if isinstance(ttl, str) else None
        if match is None:
            violations.append(
                (
                    "message.android.ttl",
                    "Invalid value at 'message.android.ttl' (type.googleapis.com/"
                    "google.protobuf.Duration), Illegal duration format; duration must end with 's'",
                )
            )
        elif int(match.group(1)) > MAX_TTL_SECONDS:
            violations.append(("message.android.ttl", "TTL must not exceed 4 weeks (2419200s)"))
    violations += _string_map("message.android.data", android.get("data"))
    violations += _object("message.android.notification", android.get("notification"))
    collapse_key = _get(android, "collapse_key")
    if collapse_key is not None and not isinstance(collapse_key, str):
        violations.append(("message.android.collapse_key", "Invalid value (TYPE_STRING)"))
    direct_boot_ok = _get(android, "direct_boot_ok")
    if direct_boot_ok is not None and not isinstance(direct_boot_ok, bool):
        violations.append(("message.android.direct_boot_ok", "Invalid value (TYPE_BOOL)"))
    return violations


def message_size(message: dict[str, Any]) -> int:
    """Bytes of the message as FCM would deliver it: everything but the target."""
    payload = {k: v for k, v in message.items() if k not in ("token", "topic", "condition")}
    return len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())


def size_limit(message: dict[str, Any]) -> int:
    return MAX_TOPIC_MESSAGE_BYTES if message.get("topic") else MAX_MESSAGE_BYTES
