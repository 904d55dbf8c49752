"""A PushMessage compiled once (every Liquid field parsed) and rendered per recipient.

Rendering produces the Delivery notification body for the recipient's platform (APNs,
FCM or Web Push fields; no token) and the size the provider will count, so that a
payload over the provider's limit is caught here (PAYLOAD_TOO_LARGE naming the field)
and never reaches a provider as a 413. The JSON built for sizing mirrors what
Delivery's payload builders send (docs/delivery.md, "Payloads").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf import struct_pb2

from herald.campaign.v1 import push_message_pb2
from herald.delivery.v1 import notification_pb2
from herald.type.v1 import platform_pb2, push_options_pb2
from services.campaign.templates import Template, TemplateProblem, TemplateSyntaxError, lookup
from services.core.errors import FieldViolation

IOS, ANDROID, WEB = (
    platform_pb2.PLATFORM_IOS,
    platform_pb2.PLATFORM_ANDROID,
    platform_pb2.PLATFORM_WEB,
)
PLATFORMS = (IOS, ANDROID, WEB)
APNS_LIMIT, APNS_VOIP_LIMIT, FCM_LIMIT, WEB_LIMIT = 4096, 5120, 4096, 3993
RESERVED_DATA_KEYS = frozenset({"aps", "from", "message_type", "notification"})
CAMPAIGN_KEY = "herald_cid"  # lets the SDK report the campaign with an open
PLATFORM_NAMES = {IOS: "ios", ANDROID: "android", WEB: "web"}


def limit_of(platform: int, message: push_message_pb2.PushMessage) -> int:
    if platform == IOS:
        voip = message.ios.push_type == push_options_pb2.APNS_PUSH_TYPE_VOIP
        return APNS_VOIP_LIMIT if voip else APNS_LIMIT
    return FCM_LIMIT if platform == ANDROID else WEB_LIMIT


@dataclass
class Rendered:
    platform: int
    notification: notification_pb2.Notification
    payload_json: str
    size: int
    limit: int
    largest_field: str

    @property
    def too_large(self) -> bool:
        return self.size > self.limit


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _is_reserved(key: str) -> bool:
    return key in RESERVED_DATA_KEYS or key.lower().startswith(("google", "gcm"))


# Distinct renders kept per message (~1-2 KB each): a template keyed on something
# unique per device (device.device_id) fills it once and then renders every time.
RENDER_CACHE_LIMIT = 10_000


class CompiledMessage:
    """Every Liquid field of a message, parsed once; `violations` lists the bad ones."""

    def __init__(self, message: push_message_pb2.PushMessage, prefix: str = "message") -> None:
        self.message = message
        self._renders: dict[tuple[Any, ...], Rendered] = {}
        self._texts: Mapping[str, str] | None = None  # set during render(texts=...)
        self._all_paths: tuple[tuple[str, ...], ...] | None = None
        self.prefix = prefix
        self.violations: list[FieldViolation] = []
        self.fields: dict[str, Template] = {}
        self.problems: dict[str, TemplateProblem] = {}  # field path -> syntax error
        m = message
        texts: dict[str, str] = {
            "content.title": m.content.title,
            "content.body": m.content.body,
            "content.image_url": m.content.image_url,
            "ios.title": m.ios.title,
            "ios.subtitle": m.ios.subtitle,
            "ios.body": m.ios.body,
            "android.title": m.android.title,
            "android.body": m.android.body,
            "android.image_url": m.android.image_url,
            "web.title": m.web.title,
            "web.body": m.web.body,
            "web.url": m.web.url,
            "web.image_url": m.web.image_url,
            "deep_link": m.deep_link,
            "collapse_id": m.collapse_id,
        }
        for index, action in enumerate(m.web.actions):
            texts[f"web.actions[{index}].title"] = action.title
        for key, value in m.data.items():
            texts[f'data["{key}"]'] = value
        for path, source in texts.items():
            if not source:
                continue
            try:
                self.fields[path] = Template(source)
            except TemplateSyntaxError as error:
                p = error.problem
                self.problems[f"{prefix}.{path}"] = p
                self.violations.append(
                    FieldViolation(
                        f"{prefix}.{path}",
                        f"line {p.line}, column {p.column}: {p.description}",
                        "TEMPLATE_SYNTAX_ERROR",
                    )
                )

    def render_cached(
        self, platform: int, context: Mapping[str, Any], campaign_id: str = ""
    ) -> Rendered:
        """`render`, memoised on the values of the variables the message actually reads
        (a campaign renders the same few combinations for most of its audience: "Hi
        Anna, a deal in Paris"), so a repeat costs a dict lookup and one proto copy
        instead of every template, the payload JSON and its size. The notification is
        a fresh copy: callers fill in the device's fields."""
        key = (platform, campaign_id, *(lookup(context, path) for path in self._paths))
        hit = self._renders.get(key)
        if hit is None:
            hit = self.render(platform, context, campaign_id)
            if len(self._renders) < RENDER_CACHE_LIMIT:
                self._renders[key] = hit
        fresh = notification_pb2.Notification()
        fresh.CopyFrom(hit.notification)
        return replace(hit, notification=fresh)

    @property
    def paths(self) -> tuple[tuple[str, ...], ...]:
        """Every variable path the message's templates read (a render depends on these)."""
        return self._paths

    @property
    def _paths(self) -> tuple[tuple[str, ...], ...]:
        if self._all_paths is None:
            found = {path for template in self.fields.values() for path in template.paths}
            self._all_paths = tuple(sorted(found))
        return self._all_paths

    def variables(self) -> set[str]:
        found: set[str] = set()
        for template in self.fields.values():
            found |= template.variables()
        return found

    def _text(self, path: str, context: Mapping[str, Any], out: dict[str, str]) -> str:
        template = self.fields.get(path)
        if template is None:
            return ""
        if self._texts is not None and path in self._texts:
            value = self._texts[path]
        else:
            value = template.render(context)
        out[path] = value
        return value

    def _first(self, paths: tuple[str, ...], ctx: Mapping[str, Any], out: dict[str, str]) -> str:
        for path in paths:
            if path in self.fields:
                return self._text(path, ctx, out)
        return ""

    def render(
        self,
        platform: int,
        context: Mapping[str, Any],
        campaign_id: str = "",
        texts: Mapping[str, str] | None = None,
    ) -> Rendered:
        """Raises TemplateRenderError; the size check is the caller's (Rendered.too_large).

        `texts` stands in for the rendered value of the fields it names (the fan-out's
        fast path, services/campaign/wire.py, renders with markers to see where each
        templated field lands)."""
        self._texts = texts
        try:
            return self._render(platform, context, campaign_id)
        finally:
            self._texts = None

    def _render(self, platform: int, context: Mapping[str, Any], campaign_id: str) -> Rendered:
        m = self.message
        used: dict[str, str] = {}
        data = {
            key: self._text(f'data["{key}"]', context, used)
            for key in m.data
            if not _is_reserved(key)
        }
        deep_link = self._text("deep_link", context, used)
        if deep_link:
            data["deep_link"] = deep_link
        if campaign_id:
            data[CAMPAIGN_KEY] = campaign_id
        notification = notification_pb2.Notification(
            collapse_id=self._text("collapse_id", context, used),
            priority=m.priority
            or (
                push_options_pb2.NOTIFICATION_PRIORITY_NORMAL
                if m.background
                else push_options_pb2.NOTIFICATION_PRIORITY_HIGH
            ),
        )
        if m.HasField("ttl"):
            notification.ttl.CopyFrom(m.ttl)
        if platform == IOS:
            body = self._apns(notification, data, context, used)
        elif platform == ANDROID:
            body = self._fcm(notification, data, context, used)
        else:
            body = self._web(notification, data, deep_link, context, used)
        payload = _json(body)
        largest = max(used, key=lambda path: len(used[path].encode()), default="content.body")
        return Rendered(
            platform,
            notification,
            payload,
            len(payload.encode()),
            limit_of(platform, m),
            f"{self.prefix}.{largest}",
        )

    def _apns(
        self,
        n: notification_pb2.Notification,
        data: dict[str, str],
        ctx: Mapping[str, Any],
        used: dict[str, str],
    ) -> dict[str, Any]:
        m, ios = self.message, self.message.ios
        apns = n.apns
        aps: dict[str, Any] = {}
        if not m.background:
            apns.title = self._first(("ios.title", "content.title"), ctx, used)
            apns.subtitle = self._text("ios.subtitle", ctx, used)
            apns.body = self._first(("ios.body", "content.body"), ctx, used)
            alert = {
                k: v
                for k, v in (
                    ("title", apns.title),
                    ("subtitle", apns.subtitle),
                    ("body", apns.body),
                )
                if v
            }
            if alert:
                aps["alert"] = alert
            if ios.HasField("badge"):
                apns.badge = ios.badge
                aps["badge"] = ios.badge
            for name, value in (
                ("sound", ios.sound),
                ("category", ios.category),
                ("thread-id", ios.thread_id),
            ):
                if value:
                    aps[name] = value
            apns.sound, apns.category, apns.thread_id = ios.sound, ios.category, ios.thread_id
            if ios.mutable_content:
                apns.mutable_content = True
                aps["mutable-content"] = 1
            if ios.interruption_level:
                apns.interruption_level = ios.interruption_level
                aps["interruption-level"] = "time-sensitive"  # the longest name, for sizing
            if ios.HasField("relevance_score"):
                apns.relevance_score = ios.relevance_score
                aps["relevance-score"] = ios.relevance_score
        else:
            apns.content_available = True
            aps["content-available"] = 1
        apns.push_type = ios.push_type or (
            push_options_pb2.APNS_PUSH_TYPE_BACKGROUND
            if m.background
            else push_options_pb2.APNS_PUSH_TYPE_ALERT
        )
        custom: dict[str, Any] = dict(data)
        image = self._first(("content.image_url",), ctx, used) if not m.background else ""
        if image:
            custom["image_url"] = image
        if custom:
            struct = struct_pb2.Struct()
            struct.update(custom)
            apns.custom_data.CopyFrom(struct)
        return {"aps": aps, **custom}

    def _fcm(
        self,
        n: notification_pb2.Notification,
        data: dict[str, str],
        ctx: Mapping[str, Any],
        used: dict[str, str],
    ) -> dict[str, Any]:
        m, android = self.message, self.message.android
        fcm = n.fcm
        message: dict[str, Any] = {}
        if data:
            fcm.data.update(data)
            message["data"] = data
        if not m.background:
            fcm.title = self._first(("android.title", "content.title"), ctx, used)
            fcm.body = self._first(("android.body", "content.body"), ctx, used)
            fcm.image_url = self._first(("android.image_url", "content.image_url"), ctx, used)
            shown = {
                k: v
                for k, v in (("title", fcm.title), ("body", fcm.body), ("image", fcm.image_url))
                if v
            }
            if shown:
                message["notification"] = shown
            fcm.channel_id, fcm.icon, fcm.color = android.channel_id, android.icon, android.color
            fcm.click_action = android.click_action
        fcm.android_priority = android.priority
        fcm.collapse_key = android.collapse_key
        if android.HasField("ttl"):
            fcm.android_ttl.CopyFrom(android.ttl)
        extra = {
            k: v
            for k, v in (
                ("channel_id", fcm.channel_id),
                ("icon", fcm.icon),
                ("color", fcm.color),
                ("click_action", fcm.click_action),
            )
            if v
        }
        shape: dict[str, Any] = {"priority": "NORMAL", "ttl": "2419200s"}
        if fcm.collapse_key or n.collapse_id:
            shape["collapse_key"] = fcm.collapse_key or n.collapse_id
        if extra:
            shape["notification"] = extra
        message["android"] = shape
        return message

    def _web(
        self,
        n: notification_pb2.Notification,
        data: dict[str, str],
        deep_link: str,
        ctx: Mapping[str, Any],
        used: dict[str, str],
    ) -> dict[str, Any]:
        m, web = self.message, self.message.web
        payload = n.web_push
        if m.background:
            raw = _json({"data": data})
            payload.raw_payload = raw.encode()
            return {"data": data}
        payload.title = self._first(("web.title", "content.title"), ctx, used)
        payload.body = self._first(("web.body", "content.body"), ctx, used)
        payload.icon_url = web.icon_url
        payload.image_url = self._first(("web.image_url", "content.image_url"), ctx, used)
        payload.badge_url = web.badge_url
        payload.url = self._text("web.url", ctx, used) or deep_link
        payload.require_interaction = web.require_interaction
        payload.urgency = web.urgency
        for index, action in enumerate(web.actions):
            payload.actions.add(
                action=action.action,
                title=self._text(f"web.actions[{index}].title", ctx, used),
                icon_url=action.icon_url,
            )
        if data:
            payload.data.update(data)
        content: dict[str, Any] = {
            k: v
            for k, v in (
                ("title", payload.title),
                ("body", payload.body),
                ("icon", payload.icon_url),
                ("image", payload.image_url),
                ("badge", payload.badge_url),
                ("url", payload.url),
            )
            if v
        }
        if payload.actions:
            content["actions"] = [
                {
                    k: v
                    for k, v in (("action", a.action), ("title", a.title), ("icon", a.icon_url))
                    if v
                }
                for a in payload.actions
            ]
        if data:
            content["data"] = data
        if payload.require_interaction:
            content["requireInteraction"] = True
        return content
