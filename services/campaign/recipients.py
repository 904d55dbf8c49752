"""From a device (and its user) to a rendered Delivery notification, or a suppression.

Shared by campaign fan-out, transactional sends and test sends: what a template sees,
which user fields must be fetched, and the notification Delivery receives (with the
idempotency key that makes a resumed fan-out send nothing twice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from herald.delivery.v1 import notification_pb2
from herald.registration.v1 import device_pb2
from services.campaign.audience import BUILT_IN, CompiledAudience
from services.campaign.messages import PLATFORM_NAMES, CompiledMessage, Rendered
from services.campaign.templates import TemplateRenderError

TEMPLATE_RENDER_ERROR = "TEMPLATE_RENDER_ERROR"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
CREDENTIALS_MISSING = "CREDENTIALS_MISSING"
FREQUENCY_CAPPED = "FREQUENCY_CAPPED"
RESERVED_NAMES = ("user", "device", "event")


def user_fields(
    message: CompiledMessage, audience: CompiledAudience | None, need_zone: bool
) -> list[str] | None:
    """The BatchGetUsers read mask; None: every field. [] means no user is needed."""
    paths: set[str] = set()
    for name in message.variables():
        if name == "user":
            return None
        if name not in RESERVED_NAMES:
            paths.add(f"attributes.{name}")
    if audience is not None and audience.needs_user:
        return None  # attribute filters may address any path
    if need_zone:
        paths.add("time_zone")
    return sorted(paths)


def context_of(
    device: device_pb2.AudienceDevice | None,
    platform: int,
    user: Mapping[str, Any] | None,
    event: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    attributes = dict((user or {}).get("attributes") or {})
    context: dict[str, Any] = {k: v for k, v in attributes.items() if k not in RESERVED_NAMES}
    built_in = {name: (user or {}).get(name) or "" for name in BUILT_IN}
    context["user"] = {**attributes, **built_in}
    context["device"] = {
        "platform": PLATFORM_NAMES.get(platform, ""),  # type: ignore[call-overload]
        "device_id": device.device_id if device is not None else "",
        "locale": device.locale if device is not None else "",
    }
    context["event"] = dict(event or {})
    return context


@dataclass
class Prepared:
    notification: notification_pb2.Notification | None
    rendered: Rendered | None
    suppressed: str = ""
    detail: str = ""


def prepare(
    message: CompiledMessage,
    device: device_pb2.AudienceDevice,
    user: Mapping[str, Any] | None,
    *,
    campaign_id: str,
    idempotency_key: str,
    event: Mapping[str, Any] | None = None,
) -> Prepared:
    """Renders the message for the device; suppression reasons instead of exceptions."""
    try:
        rendered = message.render_cached(
            device.platform, context_of(device, device.platform, user, event), campaign_id
        )
    except TemplateRenderError as error:
        return Prepared(None, None, TEMPLATE_RENDER_ERROR, str(error))
    if rendered.too_large:
        return Prepared(
            None,
            rendered,
            PAYLOAD_TOO_LARGE,
            f"{rendered.largest_field} makes the payload {rendered.size} bytes (limit {rendered.limit})",
        )
    notification = rendered.notification
    notification.app_id = device.app_id
    notification.device_id = device.device_id
    notification.user_id = device.user_id
    notification.token.CopyFrom(device.token)
    notification.apns_environment = device.apns_environment
    if campaign_id:
        notification.campaign_id = campaign_id
    if idempotency_key:
        notification.idempotency_key = idempotency_key
    return Prepared(notification, rendered)
