"""Checks of a campaign's fields (every violation listed at once, nothing saved)."""

from __future__ import annotations

import re

from herald.campaign.v1 import campaign_pb2, push_message_pb2
from services.campaign import audience as audiences
from services.campaign import schedules
from services.campaign.messages import RESERVED_DATA_KEYS, CompiledMessage
from services.core.errors import FieldViolation, InvalidArgument

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_DATA_KEYS = 100
COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")
APP_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def message_violations(
    message: push_message_pb2.PushMessage, prefix: str = "message"
) -> list[FieldViolation]:
    """Template syntax plus the static rules of a message."""
    found = list(CompiledMessage(message, prefix).violations)

    def bad(path: str, description: str) -> None:
        found.append(FieldViolation(f"{prefix}.{path}", description))

    m = message
    has_body = bool(m.content.body or m.ios.body or m.android.body or m.web.body)
    if not m.background and not has_body:
        bad("content.body", "is required unless the message is background")
    if len(m.data) > MAX_DATA_KEYS:
        bad("data", f"at most {MAX_DATA_KEYS} keys")
    for key in m.data:
        if not key or key in RESERVED_DATA_KEYS or key.lower().startswith(("google", "gcm")):
            bad(f'data["{key}"]', "is a reserved key")
    if len(m.web.actions) > 2:
        bad("web.actions", "at most 2 actions")
    for index, action in enumerate(m.web.actions):
        if not action.action:
            bad(f"web.actions[{index}].action", "is required")
        if not action.title:
            bad(f"web.actions[{index}].title", "is required")
    if m.ios.HasField("badge") and m.ios.badge < 0:
        bad("ios.badge", "must not be negative")
    if m.ios.HasField("relevance_score") and not 0.0 <= m.ios.relevance_score <= 1.0:
        bad("ios.relevance_score", "must be between 0 and 1")
    if m.android.color and not COLOR_RE.fullmatch(m.android.color):
        bad("android.color", "must be #rrggbb")
    if m.HasField("ttl") and (m.ttl.seconds < 0 or m.ttl.seconds > 28 * 86400):
        bad("ttl", "must be 0 to 28 days")
    if m.android.HasField("ttl") and (
        m.android.ttl.seconds < 0 or m.android.ttl.seconds > 28 * 86400
    ):
        bad("android.ttl", "must be 0 to 28 days")
    return found


def campaign_violations(
    campaign: campaign_pb2.Campaign, now: float, prefix: str = "campaign"
) -> list[FieldViolation]:
    found: list[FieldViolation] = []

    def bad(path: str, description: str) -> None:
        found.append(FieldViolation(f"{prefix}.{path}", description))

    if not APP_ID_RE.fullmatch(campaign.app_id):
        bad("app_id", "is required (letters, digits, '.', '_', '-'; at most 63)")
    if not campaign.display_name.strip():
        bad("display_name", "is required")
    elif len(campaign.display_name) > MAX_NAME:
        bad("display_name", f"must be at most {MAX_NAME} characters")
    if len(campaign.description) > MAX_DESCRIPTION:
        bad("description", f"must be at most {MAX_DESCRIPTION} characters")
    if not campaign.HasField("message"):
        bad("message", "is required")
    else:
        found += message_violations(campaign.message, f"{prefix}.message")
    found += audiences.validate(campaign.audience, f"{prefix}.audience")
    found += schedules.validate(campaign.schedule, now, f"{prefix}.schedule")
    if campaign.HasField("throttle") and campaign.throttle.messages_per_minute < 1:
        bad("throttle.messages_per_minute", "must be at least 1")
    if campaign.HasField("frequency_cap"):
        cap = campaign.frequency_cap
        if cap.max_messages < 1:
            bad("frequency_cap.max_messages", "must be at least 1")
        if cap.period.seconds < 1 or cap.period.seconds > 90 * 86400:
            bad("frequency_cap.period", "must be 1 s to 90 days")
    if campaign.HasField("conversion_tracking"):
        tracking = campaign.conversion_tracking
        if not tracking.event_names or any(not name for name in tracking.event_names):
            bad("conversion_tracking.event_names", "must list at least one event name")
        if tracking.HasField("window") and tracking.window.seconds <= 0:
            bad("conversion_tracking.window", "must be positive")
    return found


def raise_for(
    found: list[FieldViolation], message: str = "the campaign has invalid fields"
) -> None:
    """One status: the most specific reason when every violation shares it."""
    if not found:
        return
    reasons = {violation.reason for violation in found}
    reason = reasons.pop() if len(reasons) == 1 and "" not in reasons else "INVALID_ARGUMENT"
    if reason == "INVALID_ARGUMENT" and any(v.reason == "TEMPLATE_SYNTAX_ERROR" for v in found):
        reason = "TEMPLATE_SYNTAX_ERROR"  # the one a template editor must show first
    raise InvalidArgument(message, found, reason=reason)
