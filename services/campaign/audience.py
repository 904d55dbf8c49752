"""Audiences: validate the filter tree, push what Registration can answer into its
AudienceQuery, and evaluate the whole tree on each streamed device.

The tree is always evaluated in full on every device Campaign receives; the query
sent to Registration only narrows the stream (conditions of the top-level AND that
Registration understands exactly). So the pushdown is an optimisation that can never
change who receives a campaign.

The tree is compiled once per campaign (`CompiledAudience`): each node's kind, its
children and what it compares with (user id and zone sets, the version, the attribute
condition) are prepared then, not per device. User-attribute conditions follow the
rules Identity's export segments follow too (services/core/attribute_filters.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import available_timezones

from herald.campaign.v1 import audience_pb2
from herald.registration.v1 import device_pb2, registration_service_pb2
from herald.type.v1 import filter_pb2, platform_pb2
from services.core.app_versions import version_key
from services.core.attribute_filters import (
    BUILT_IN_FIELDS,
    COMPARISONS,
    INSTANT_RANGE,
    compare,
    compile_filter,
    holds,
    micros,
    resolve,
    valid_instant,
)
from services.core.errors import FieldViolation, InvalidArgument

AUDIENCE_INVALID = "AUDIENCE_INVALID"
MAX_DEPTH = 10
MAX_CHILDREN = 100
MAX_USER_IDS = 100_000
MAX_PUSHED_USER_IDS = 10_000  # Registration's own limit on AudienceQuery.user_ids
MAX_VALUES = 1000
FOREGROUND = platform_pb2.PUSH_CAPABILITY_FOREGROUND
BACKGROUND = platform_pb2.PUSH_CAPABILITY_BACKGROUND
_ZONES: set[str] = set()

OPERATORS = tuple(COMPARISONS)
# The user fields a filter (and a template) names directly, not as attributes.
BUILT_IN = BUILT_IN_FIELDS


def is_time_zone(name: str) -> bool:
    if not _ZONES:
        _ZONES.update(available_timezones())
    return name in _ZONES or name == "UTC"


# -- validation ---------------------------------------------------------------------------
def validate(audience: audience_pb2.Audience, prefix: str = "audience") -> list[FieldViolation]:
    found: list[FieldViolation] = []
    if audience.HasField("filter"):
        _check(audience.filter, f"{prefix}.filter", 1, found)
    return found


def _bad(found: list[FieldViolation], path: str, description: str) -> None:
    found.append(FieldViolation(path, description, AUDIENCE_INVALID))


def _check(
    node: audience_pb2.AudienceFilter, path: str, depth: int, found: list[FieldViolation]
) -> None:
    if depth > MAX_DEPTH:
        _bad(found, path, f"the filter tree is deeper than {MAX_DEPTH} levels")
        return
    kind = node.WhichOneof("condition")
    if kind is None:
        _bad(found, path, "set exactly one condition")
    elif kind in ("all_of", "any_of"):
        children = getattr(node, kind).filters
        if not 1 <= len(children) <= MAX_CHILDREN:
            _bad(found, f"{path}.{kind}.filters", f"must hold 1 to {MAX_CHILDREN} filters")
        for index, child in enumerate(children):
            _check(child, f"{path}.{kind}.filters[{index}]", depth + 1, found)
    elif kind == "negate":
        _check(node.negate, f"{path}.negate", depth + 1, found)
    elif kind == "platforms":
        values = node.platforms.platforms
        if not values or any(p not in (1, 2, 3) for p in values):
            _bad(found, f"{path}.platforms.platforms", "must list known platforms, at least one")
    elif kind == "app_version":
        if node.app_version.operator not in OPERATORS:
            _bad(found, f"{path}.app_version.operator", "is required")
        if version_key(node.app_version.version) is None:
            _bad(found, f"{path}.app_version.version", 'must be a dotted version such as "4.12.0"')
    elif kind in ("locales", "time_zones", "user_ids"):
        values = getattr(node, kind).values
        limit = MAX_USER_IDS if kind == "user_ids" else MAX_VALUES
        if not 1 <= len(values) <= limit or any(not v for v in values):
            _bad(found, f"{path}.{kind}.values", f"must hold 1 to {limit} non-empty values")
        if kind == "time_zones":
            for index, zone in enumerate(values):
                if zone and not is_time_zone(zone):
                    _bad(found, f"{path}.time_zones.values[{index}]", "is not an IANA time zone")
    elif kind == "user_attribute":
        _check_attribute(node.user_attribute, f"{path}.user_attribute", found)


def _check_attribute(
    condition: filter_pb2.AttributeFilter, path: str, found: list[FieldViolation]
) -> None:
    if not condition.attribute:
        _bad(found, f"{path}.attribute", "is required")
    kind = condition.WhichOneof("condition")
    if kind is None:
        _bad(
            found,
            path,
            "set one condition (equals, in_values, exists, number, before_time, after_time)",
        )
    elif kind == "number":
        if condition.number.operator not in OPERATORS:
            _bad(found, f"{path}.number.operator", "is required")
        if not math.isfinite(condition.number.value):
            _bad(found, f"{path}.number.value", "must be a finite number")
    elif kind == "in_values" and not 1 <= len(condition.in_values.values) <= MAX_VALUES:
        _bad(found, f"{path}.in_values.values", f"must hold 1 to {MAX_VALUES} values")
    elif kind in ("before_time", "after_time") and not valid_instant(
        micros(getattr(condition, kind))
    ):
        _bad(found, f"{path}.{kind}", INSTANT_RANGE)


def raise_if_invalid(audience: audience_pb2.Audience, prefix: str = "audience") -> None:
    found = validate(audience, prefix)
    if found:
        raise InvalidArgument("the audience is invalid", found, reason=AUDIENCE_INVALID)


# -- what a device is evaluated on -----------------------------------------------------------
@dataclass
class Recipient:
    """A streamed device with what the filter may ask about its user."""

    device: device_pb2.AudienceDevice
    user: Mapping[str, Any] | None = (
        None  # {"external_id", "email", "phone", "locale", "time_zone", "attributes"}
    )
    push_enabled_any_app: bool | None = None

    @property
    def time_zone(self) -> str:
        if self.device.time_zone:
            return self.device.time_zone
        return str((self.user or {}).get("time_zone") or "")


# -- evaluation ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, slots=True)
class _Node:
    """A filter node as evaluated: its condition's kind, its children, and what the
    condition compares with, prepared once per campaign rather than per device."""

    kind: str | None
    message: audience_pb2.AudienceFilter
    children: tuple[_Node, ...] = ()
    # user_ids: frozenset; time_zones: frozenset; locales: lower-cased tuple;
    # app_version: (Comparison | None, version key | None); user_attribute: AttributeCondition
    operand: Any = None


def _compile(node: audience_pb2.AudienceFilter) -> _Node:
    kind = node.WhichOneof("condition")
    if kind in ("all_of", "any_of"):
        return _Node(kind, node, tuple(_compile(child) for child in getattr(node, kind).filters))
    if kind == "negate":
        return _Node(kind, node, (_compile(node.negate),))
    operand: Any = None
    if kind == "user_ids":
        operand = frozenset(node.user_ids.values)
    elif kind == "time_zones":
        operand = frozenset(node.time_zones.values)
    elif kind == "locales":
        operand = tuple(p.lower() for p in node.locales.values)
    elif kind == "app_version":
        condition = node.app_version
        operand = (COMPARISONS.get(condition.operator), version_key(condition.version))
    elif kind == "user_attribute":
        operand = compile_filter(node.user_attribute)
    return _Node(kind, node, operand=operand)


@dataclass
class CompiledAudience:
    audience: audience_pb2.Audience
    background: bool
    needs_user: bool = False
    needs_any_app: bool = False
    _root: _Node | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.audience.HasField("filter"):
            self._root = _compile(self.audience.filter)
            self._scan(self._root)

    def _scan(self, node: _Node) -> None:
        for child in node.children:
            self._scan(child)
        if node.kind == "user_attribute":
            self.needs_user = True
        elif node.kind == "time_zones":
            self.needs_user = True  # the user's zone stands in for a device without one
        elif node.kind == "push_enabled_any_app":
            self.needs_any_app = True

    @property
    def device_only(self) -> bool:
        """No filter: whether a device matches depends on the device alone
        (`matches_device`, no Recipient needed)."""
        return self._root is None

    def matches_device(self, device: device_pb2.AudienceDevice) -> bool:
        if self.audience.users_only and not device.user_id:
            return False
        return self.background or device.capability == FOREGROUND or device.provisional

    def matches(self, recipient: Recipient) -> bool:
        device = recipient.device
        if self.audience.users_only and not device.user_id:
            return False
        if not self.background and not (device.capability == FOREGROUND or device.provisional):
            return False  # a visible push needs a device that can show it
        if self._root is None:
            return True
        return _holds(self._root, recipient)


def _holds(node: _Node, r: Recipient) -> bool:
    kind = node.kind
    d = r.device
    if kind == "all_of":
        return all(_holds(child, r) for child in node.children)
    if kind == "any_of":
        return any(_holds(child, r) for child in node.children)
    if kind == "negate":
        return not _holds(node.children[0], r)
    message = node.message
    if kind == "push_enabled":
        return (d.capability == FOREGROUND) == message.push_enabled
    if kind == "push_enabled_any_app":
        enabled = d.capability == FOREGROUND or bool(r.push_enabled_any_app)
        return enabled == message.push_enabled_any_app
    if kind == "background_reachable":
        return (d.capability in (FOREGROUND, BACKGROUND)) == message.background_reachable
    if kind == "provisional":
        return d.provisional == message.provisional
    if kind == "platforms":
        return d.platform in message.platforms.platforms
    if kind == "app_version":
        comparison, want = node.operand
        have = version_key(d.app_version)
        return have is not None and want is not None and compare(comparison, have, want)
    if kind == "locales":
        locale = d.locale.lower()
        return any(locale == p or locale.startswith(p + "-") for p in node.operand)
    if kind == "time_zones":
        return r.time_zone in node.operand
    if kind == "user_ids":
        return bool(d.user_id) and d.user_id in node.operand
    if kind == "user_attribute":
        user = r.user
        if user is None:
            return False
        condition = node.operand
        found, value = resolve(condition.attribute, user.get, user.get("attributes") or {})
        return holds(condition, found, value)
    return False


# -- pushdown ----------------------------------------------------------------------------------
def registration_query(
    app_id: str, audience: audience_pb2.Audience, background: bool
) -> registration_service_pb2.AudienceQuery | None:
    """The narrowest AudienceQuery holding every device the tree can match; None: nobody."""
    query = registration_service_pb2.AudienceQuery(
        app_ids=[app_id],
        reachability=device_pb2.REACHABILITY_ANY_TOKEN
        if background
        else device_pb2.REACHABILITY_VISIBLE,
        user_bound_only=audience.users_only,
    )
    conjuncts: list[audience_pb2.AudienceFilter] = []
    if audience.HasField("filter"):
        _flatten(audience.filter, conjuncts)
    platforms: set[int] | None = None
    for node in conjuncts:
        kind = node.WhichOneof("condition")
        if kind == "push_enabled" and node.push_enabled:
            query.reachability = device_pb2.REACHABILITY_FOREGROUND
        elif kind == "platforms":
            wanted = {int(p) for p in node.platforms.platforms}
            platforms = wanted if platforms is None else platforms & wanted
        elif kind == "app_version":
            query.app_versions.append(node.app_version)
        elif kind == "locales" and not query.locales:
            query.locales.extend(node.locales.values)
        elif (
            kind == "user_ids"
            and len(node.user_ids.values) <= MAX_PUSHED_USER_IDS
            and not query.user_ids
        ):
            query.user_ids.extend(node.user_ids.values)
            query.user_bound_only = True
    if platforms is not None:
        if not platforms:  # platforms ANDed with disjoint platforms: nobody
            return None
        query.platforms.extend(sorted(platforms))  # type: ignore[arg-type]
    return query


def _flatten(node: audience_pb2.AudienceFilter, out: list[audience_pb2.AudienceFilter]) -> None:
    if node.WhichOneof("condition") == "all_of":
        for child in node.all_of.filters:
            _flatten(child, out)
    else:
        out.append(node)


def targeted_platforms(audience: audience_pb2.Audience) -> set[int]:
    """Platforms the audience can reach (all three unless a top-level AND restricts them)."""
    query = registration_query("-", audience, True)
    if query is None:
        return set()
    return set(query.platforms) if query.platforms else {1, 2, 3}
