"""The local trace store: every service's finished spans, kept in the shared Redis.

With no OTLP collector configured (or with `trace_local_copy`), each service's
`RedisSpanExporter` (services/core/trace_export.py) appends its spans here, so the spans
of one trace from all four services land in one place, and Delivery's GetTrace (behind
`herald trace`) reads them back.

One Redis list per trace, `trace:{<trace id>}`: the hash tag is the trace id, so a trace
is one key on one Cluster slot. Each item is one span as compact JSON (the keys below);
the list keeps the first `trace_store_max_spans` spans and expires
`trace_store_ttl_seconds` after the latest write.

A span that names a notification (`herald.notification_id`: its queue waits and
attempts) is also kept in that notification's list, `trace:{<trace id>}:n:<id>`, cap or
not: a campaign's trace holds every recipient's spans, far more than the cap, and
`herald trace <notification>` must still find that notification's. Those lists are as
short as a notification's attempts and expire `trace_store_ttl_seconds` after their own
latest write (so they may outlive a capped trace's list, which later spans no longer
touch: GetTrace then answers the notification's spans alone).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from services.core.redis import RedisClient, hash_tag

TRACE_ID_RE = re.compile(r"[0-9a-f]{32}")
# Attribute keys that could only hold a secret; the span producers never set them, but
# a stored span outlives the code that made it, so they are dropped on the way in.
_SECRET_MARKERS = ("secret", "password", "authorization", "api_key", "apikey", "private_key")
# Long values (exception messages, statements) are cut: the store is for finding where
# time went and what failed, not for payloads.
MAX_VALUE_CHARS = 300


NOTIFICATION_ATTRIBUTE = "herald.notification_id"


def trace_key(trace_id: str) -> str:
    return "trace:" + hash_tag(trace_id)


def notification_key(trace_id: str, notification_id: str) -> str:
    return f"{trace_key(trace_id)}:n:{notification_id}"


def trace_id_hex(trace_id: int) -> str:
    return format(trace_id, "032x")


@dataclass(frozen=True)
class StoredSpan:
    """One span as stored: kind and status are the OpenTelemetry names."""

    service: str
    name: str
    span_id: str
    parent_span_id: str
    kind: str  # INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER
    start_ns: int
    end_ns: int
    status: str  # UNSET, OK, ERROR
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)


def _value(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    if isinstance(value, (bool, int, float)):
        return value
    return [_value(item) for item in value]  # OpenTelemetry allows homogeneous sequences


@functools.lru_cache(maxsize=4096)  # attribute names are few; this runs for every one
def _kept(key: str) -> bool:
    lowered = key.lower()
    return not any(marker in lowered for marker in _SECRET_MARKERS)


# Enum `.name` is a property lookup; spans are encoded by the thousand.
_KIND_NAMES = {kind: kind.name for kind in SpanKind}
_STATUS_NAMES = {code: code.name for code in StatusCode}


def encode(span: ReadableSpan) -> str:
    """The span as one compact JSON line (keys: svc, name, id, parent, kind, start, end,
    status, msg, attrs; empty ones left out)."""
    context = span.context
    assert context is not None  # a finished SDK span always has one
    status = span.status.status_code
    data: dict[str, Any] = {
        "svc": span.resource.attributes.get("service.name", ""),
        "name": span.name,
        "id": format(context.span_id, "016x"),
        "kind": _KIND_NAMES[span.kind],
        "start": span.start_time or 0,
        "end": span.end_time or span.start_time or 0,
        "status": _STATUS_NAMES[status],
    }
    if span.parent is not None:
        data["parent"] = format(span.parent.span_id, "016x")
    if status is StatusCode.ERROR and span.status.description:
        data["msg"] = span.status.description[:MAX_VALUE_CHARS]
    if span.attributes:
        attributes = {k: _value(v) for k, v in span.attributes.items() if _kept(k)}
        if attributes:
            data["attrs"] = attributes
    return _ENCODER.encode(data)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def decode(raw: bytes | str) -> StoredSpan | None:
    """A stored span, or None for an item this version cannot read."""
    try:
        data = json.loads(raw)
        return StoredSpan(
            service=str(data["svc"]),
            name=str(data["name"]),
            span_id=str(data["id"]),
            parent_span_id=str(data.get("parent", "")),
            kind=str(data.get("kind", "INTERNAL")),
            start_ns=int(data["start"]),
            end_ns=int(data["end"]),
            status=str(data.get("status", "UNSET")),
            status_message=str(data.get("msg", "")),
            attributes=dict(data.get("attrs", {})),
        )
    except (ValueError, KeyError, TypeError):
        return None


async def read_trace(
    redis: RedisClient, trace_id: str, notification_id: str = ""
) -> tuple[list[StoredSpan], int]:
    """The stored spans of a trace ordered by start time (with `notification_id`, that
    notification's kept spans too), and how many items the trace's list holds (compared
    with the cap to tell a truncated trace)."""
    raw: list[bytes] = await redis.lrange(trace_key(trace_id), 0, -1)  # type: ignore[assignment]
    spans = [span for span in map(decode, raw) if span is not None]
    if notification_id:
        own: list[bytes] = await redis.lrange(  # type: ignore[assignment]
            notification_key(trace_id, notification_id), 0, -1
        )
        known = {span.span_id for span in spans}
        spans += [s for s in map(decode, own) if s is not None and s.span_id not in known]
    spans.sort(key=lambda span: (span.start_ns, span.end_ns))
    return spans, len(raw)
