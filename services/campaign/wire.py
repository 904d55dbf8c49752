"""The fan-out's fast path: notifications and Enqueue requests as serialized bytes.

A campaign sends one message to many devices. Per device only a few things differ: the
device's own fields (id, user, token, idempotency key) and the text fields a Liquid
template fills. So a device's notification is built by concatenating protobuf bytes
(a parser merges repeated occurrences of an embedded message field and keeps the last
value of a scalar one):

    the message's constant part for the platform    serialized once per pattern of
                                                    empty / non-empty rendered fields
    + each non-empty rendered text field            tag, length, UTF-8
    + the device's fields                           tag, length, value

and an Enqueue request is the concatenation of its notifications. This is the same
notification `CompiledMessage.render` builds (tests/integration/campaign/test_wire.py
parses both and compares them), minus a proto object and a payload JSON per device:
the provider's size is the pattern's size plus each rendered value's JSON length.

Where a rendered text lands is found by rendering once with a marker in each templated
field; a message whose templates land somewhere else than one plain string field
(data values, the deep link, action titles, the iOS image, which go into maps, lists
or several places) or whose templates read a whole object ({{ user }}) is not
eligible, and the fan-out renders it the general way (`recipients.prepare`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from herald.delivery.v1 import notification_pb2
from herald.identity.v1 import user_pb2
from herald.registration.v1 import device_pb2
from services.campaign.audience import BUILT_IN
from services.campaign.fanout_users import user_of
from services.campaign.messages import PLATFORM_NAMES, CompiledMessage
from services.campaign.recipients import RESERVED_NAMES
from services.core.protowire import SHORT, length, length_delimited, varint
from services.core.protowire import key as field_key

N = notification_pb2.Notification
PAYLOADS = ("apns", "fcm", "web_push")
# Distinct renders kept per platform (a key of attribute values and ~200 bytes, so
# ~30 MB at the limit): a
# template keyed on something unique per device (device.device_id) fills it once and
# then renders every time, at the cost of its Liquid templates only.
CACHE_LIMIT = 100_000
TOO_LARGE = b""  # what `content` answers for a payload over the provider's limit
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"  # private-use: never JSON-escaped


def enqueue_request(notifications: list[bytes], request_id: str) -> bytes:
    """A serialized EnqueueRequest (notifications = 1, request_id = 2)."""
    parts = [b"\n" + length(len(n)) + n for n in notifications]  # b"\n": field 1, bytes
    parts.append(length_delimited(2, request_id.encode()))
    return b"".join(parts)


_APP_ID = N.DESCRIPTOR.fields_by_name["app_id"].number
_DEVICE_ID = N.DESCRIPTOR.fields_by_name["device_id"].number
_USER_ID = N.DESCRIPTOR.fields_by_name["user_id"].number
_TOKEN = N.DESCRIPTOR.fields_by_name["token"].number
_APNS_ENVIRONMENT = field_key(N.DESCRIPTOR.fields_by_name["apns_environment"].number, 0)
_CAMPAIGN_ID = N.DESCRIPTOR.fields_by_name["campaign_id"].number
_IDEMPOTENCY_KEY = N.DESCRIPTOR.fields_by_name["idempotency_key"].number


_DEVICE_ID_TAG, _TOKEN_TAG, _USER_ID_TAG, _IDEMPOTENCY_KEY_TAG = (
    field_key(number, 2) for number in (_DEVICE_ID, _TOKEN, _USER_ID, _IDEMPOTENCY_KEY)
)


class DeviceFields:
    """The device's part of its notification: app, device, user, token, environment,
    campaign and the idempotency key "<campaign_id>:<device_id>"."""

    def __init__(self, campaign_id: str) -> None:
        self.campaign = length_delimited(_CAMPAIGN_ID, campaign_id.encode())
        self.key_prefix = f"{campaign_id}:".encode()
        self._apps: dict[str, bytes] = {}

    def encode(self, device: device_pb2.AudienceDevice) -> bytes:
        # Per device and in the hot loop: pre-encoded tags and lengths, one join.
        app = self._apps.get(device.app_id)
        if app is None:
            app = self._apps[device.app_id] = length_delimited(_APP_ID, device.app_id.encode())
        device_id = device.device_id.encode()
        token = device.token.SerializeToString()
        key = self.key_prefix + device_id
        user_id = device.user_id.encode()
        environment = device.apns_environment
        if len(token) >= 16384 or len(key) >= 16384 or len(user_id) >= 16384:
            return self._encode_long(device)
        short = SHORT
        return b"".join(
            (
                app,
                _DEVICE_ID_TAG,
                short[len(device_id)],
                device_id,
                _TOKEN_TAG,
                short[len(token)],
                token,
                self.campaign,
                _IDEMPOTENCY_KEY_TAG,
                short[len(key)],
                key,
                _USER_ID_TAG + short[len(user_id)] + user_id if user_id else b"",
                _APNS_ENVIRONMENT + varint(environment) if environment else b"",
            )
        )

    def _encode_long(self, device: device_pb2.AudienceDevice) -> bytes:
        """`encode` for fields of 16 KB or more (never seen from real providers)."""
        parts = [
            self._apps[device.app_id],
            length_delimited(_DEVICE_ID, device.device_id.encode()),
            length_delimited(_TOKEN, device.token.SerializeToString()),
            self.campaign,
            length_delimited(_IDEMPOTENCY_KEY, self.key_prefix + device.device_id.encode()),
        ]
        if device.user_id:
            parts.append(length_delimited(_USER_ID, device.user_id.encode()))
        if device.apns_environment:
            parts.append(_APNS_ENVIRONMENT + varint(device.apns_environment))
        return b"".join(parts)


# -- what the templates read, from the user proto and the device ---------------------------
def value_of(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: value_of(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [value_of(v) for v in value.list_value.values]
    return None


def _descend(value: Any, rest: tuple[str, ...]) -> Any:
    # As templates.resolve: below a string or list, the whole value is the key.
    for index, part in enumerate(rest):
        if not isinstance(value, Mapping):
            return ["partial", index, value]
        value = value.get(part)
    return value


def _key_part(value: Any) -> Any:
    # A string stands for itself; anything else as JSON in a 1-tuple, so "1" and 1 (or
    # "null" and nothing) never share a cache entry: they may render differently.
    if type(value) is str:
        return value
    return (json.dumps(value, sort_keys=True, default=str),)


Reader = Callable[[device_pb2.AudienceDevice, user_pb2.User | None], Any]


def _reader(path: tuple[str, ...]) -> Reader | None:
    """How to read one template path the way `recipients.context_of` lays it out;
    None for paths naming a whole object (their value is the object)."""
    head, rest = path[0], path[1:]
    if head == "device":
        if not rest:
            return None
        field = rest[0]
        if field == "platform":
            return lambda d, u: _descend(PLATFORM_NAMES.get(d.platform, ""), rest[1:])
        if field in ("device_id", "locale"):
            return lambda d, u: _descend(getattr(d, field), rest[1:])
        return lambda d, u: None
    if head == "event":
        return (lambda d, u: None) if rest else None  # campaigns carry no event
    if head == "user":
        if not rest:
            return None
        name = rest[0]
        if name in BUILT_IN:
            built_in = lambda d, u: _descend(getattr(u, name) if u is not None else "", rest[1:])  # noqa: E731
            built_in.reads_user = True  # type: ignore[attr-defined]
            return built_in
        head, rest = name, rest[1:]
    elif head in RESERVED_NAMES:
        return None

    def attribute(d: device_pb2.AudienceDevice, u: user_pb2.User | None) -> Any:
        if u is None:
            return None
        found = u.attributes.fields.get(head)
        return None if found is None else _descend(value_of(found), rest)

    attribute.reads_user = True  # type: ignore[attr-defined]
    return attribute


# -- one platform's plan -------------------------------------------------------------------
@dataclass(frozen=True)
class _Base:
    constant: bytes  # the notification with the pattern's non-empty fields left out
    size: int  # the payload JSON's size with "x" in each non-empty field


class PlatformPlan:
    """Where each templated field lands in this platform's notification."""

    def __init__(
        self,
        message: CompiledMessage,
        platform: int,
        campaign_id: str,
        fields: list[tuple[str, int | None, int, bool]],
    ) -> None:
        self.message = message
        self.platform = platform
        self.campaign_id = campaign_id
        self.paths = [path for path, _, _, _ in fields]
        self.templates = [message.fields[path] for path in self.paths]
        self.landing = [(outer, number) for _, outer, number, _ in fields]
        self.sized = [in_payload for _, _, _, in_payload in fields]  # counted in the size
        # Fields this platform never renders still get a text, so no template runs.
        self.unused = {p: "" for p, t in message.fields.items() if not t.constant}
        self.bases: dict[tuple[bool, ...], _Base] = {}
        self.cache: dict[tuple[Any, ...], bytes] = {}
        self.limit = 0

    @classmethod
    def probe(
        cls, message: CompiledMessage, platform: int, campaign_id: str
    ) -> PlatformPlan | None:
        templated = [path for path, t in message.fields.items() if not t.constant]
        marks = {path: f"{_MARK_OPEN}{i}{_MARK_CLOSE}" for i, path in enumerate(templated)}
        rendered = message.render(platform, {}, campaign_id, texts=marks)
        wire = rendered.notification.SerializeToString()
        fields: list[tuple[str, int | None, int, bool]] = []
        for path, mark in marks.items():
            seen = wire.count(mark.encode())
            if seen == 0:
                continue  # this platform does not use the field
            landing = _landing(rendered.notification, mark)
            in_payload = rendered.payload_json.count(json.dumps(mark, ensure_ascii=False))
            if seen != 1 or landing is None or in_payload > 1:
                return None  # lands in a map, a list, or several places
            fields.append((path, *landing, in_payload == 1))
        return cls(message, platform, campaign_id, fields)

    def _base(self, pattern: tuple[bool, ...]) -> _Base:
        base = self.bases.get(pattern)
        if base is None:
            texts = dict(self.unused)
            texts.update((p, "x" if on else "") for p, on in zip(self.paths, pattern, strict=True))
            rendered = self.message.render(self.platform, {}, self.campaign_id, texts=texts)
            n = rendered.notification
            for (outer, number), filled in zip(self.landing, pattern, strict=True):
                if filled:
                    holder: Any = getattr(n, PAYLOADS[outer]) if outer is not None else n
                    holder.ClearField(holder.DESCRIPTOR.fields_by_number[number].name)
            self.limit = rendered.limit
            base = self.bases[pattern] = _Base(n.SerializeToString(), rendered.size)
        return base

    def content(
        self, key: tuple[Any, ...], context: Callable[..., Mapping[str, Any]], *args: Any
    ) -> bytes:
        """The notification without the device's fields, or TOO_LARGE; raises
        TemplateRenderError. `context(*args)` builds the full template context on a miss
        (called with its arguments only then: most devices hit the cache)."""
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        values: list[str] = []
        if self.templates:
            built = context(*args)
            values = [t.render(built) for t in self.templates]
        base = self._base(tuple(bool(v) for v in values))
        size = base.size
        parts = [base.constant]
        for (outer, number), sized, value in zip(self.landing, self.sized, values, strict=True):
            if not value:
                continue
            if sized:  # '"x"' was 3 bytes of the base's size
                size += len(json.dumps(value, ensure_ascii=False).encode()) - 3
            field = length_delimited(number, value.encode())
            parts.append(
                length_delimited(PAYLOAD_NUMBERS[outer], field) if outer is not None else field
            )
        hit = TOO_LARGE if size > self.limit else b"".join(parts)
        if len(self.cache) < CACHE_LIMIT:
            self.cache[key] = hit
        return hit


PAYLOAD_NUMBERS = [N.DESCRIPTOR.fields_by_name[name].number for name in PAYLOADS]


def _landing(n: notification_pb2.Notification, mark: str) -> tuple[int | None, int] | None:
    """(payload index or None for the notification itself, field number) of the plain
    string field holding exactly `mark`."""
    for descriptor, value in n.ListFields():
        if value == mark:
            return None, descriptor.number
    for index, name in enumerate(PAYLOADS):
        if not n.HasField(name):  # type: ignore[arg-type]
            continue
        for descriptor, value in getattr(n, name).ListFields():
            if value == mark:
                return index, descriptor.number
    return None


class FastMessage:
    """A campaign's message on the fast path; `plan(platform)` is None where the
    general path must render (see the module docstring)."""

    def __init__(
        self, message: CompiledMessage, campaign_id: str, readers: list[Reader], masked: bool
    ) -> None:
        self.message = message
        self.campaign_id = campaign_id
        self.device = DeviceFields(campaign_id)
        self._plans: dict[int, PlatformPlan | None] = {}
        # With a read mask, Identity answers only what the templates read, so the
        # user's stored bytes (services/campaign/fanout_users.py) stand for those
        # values in the cache key: no per-device parsing. Equal bytes are equal
        # values; equal values that serialize differently only cost a cache miss.
        self.masked = masked
        self.readers = (
            [r for r in readers if not getattr(r, "reads_user", False)] if masked else readers
        )

    @classmethod
    def build(
        cls, message: CompiledMessage, campaign_id: str, masked: bool = False
    ) -> FastMessage | None:
        """`masked`: users are fetched with a read mask of the templates' attributes."""
        readers = [_reader(path) for path in message.paths]
        if any(reader is None for reader in readers):
            return None
        return cls(message, campaign_id, readers, masked)  # type: ignore[arg-type]

    def plan(self, platform: int) -> PlatformPlan | None:
        if platform not in self._plans:
            self._plans[platform] = PlatformPlan.probe(self.message, platform, self.campaign_id)
        return self._plans[platform]

    def key(self, device: device_pb2.AudienceDevice, stored: bytes | None) -> tuple[Any, ...]:
        """What the message's templates read for this recipient (`stored`: the user as
        fanout_users keeps it, None for none)."""
        if self.masked:
            if not self.readers:  # templates of user attributes only: the common case
                return (stored,)
            return (stored, *(_key_part(read(device, None)) for read in self.readers))
        user = user_of(device.user_id, stored) if stored is not None else None
        return tuple(_key_part(read(device, user)) for read in self.readers)
