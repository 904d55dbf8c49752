"""A trace's spans (Delivery.GetTrace) as a tree a person can read in a terminal:
each span indented under its parent, with its service, when it started (from the
trace's first span), how long it took, how it ended, and the attributes that say
what happened (provider, HTTP status, reason, apns-id...)."""

from __future__ import annotations

from collections.abc import Sequence

from herald.delivery.v1 import trace_pb2
from services.cli import formatting

# (attribute, label) in the order shown; the rest of the attributes are in --json.
KEY_ATTRIBUTES = (
    ("herald.app_id", "app"),
    ("herald.provider", "provider"),
    ("http.response.status_code", "status"),
    ("herald.provider_reason", "reason"),
    ("herald.action", "action"),
    ("herald.apns.id", "apns-id"),
    ("herald.fcm.message_name", "fcm-name"),
    ("herald.webpush.location", "location"),
    ("herald.retry", "retry"),
    ("herald.next_retry_seconds", "next retry s"),
    ("herald.token", "token"),
    ("rpc.grpc.status_code", "grpc status"),
)
# Attribute values that say nothing worth a column's width.
_QUIET = {"rpc.grpc.status_code": "0"}
# A pipelined Redis span is named by all its commands; the tree shows the start.
MAX_NAME_CHARS = 56
COLUMNS = ("span", "service", "start", "duration", "status", "details")


def ordered(spans: Sequence[trace_pb2.TraceSpan]) -> list[tuple[int, trace_pb2.TraceSpan]]:
    """(depth, span) depth-first, children in start order. A span whose parent is not
    stored (the caller's span outside Herald, or one past the store's cap) is a root."""
    known = {span.span_id for span in spans}
    children: dict[str, list[trace_pb2.TraceSpan]] = {}
    roots = []
    for span in spans:  # GetTrace answers in start order; the tree keeps it
        parent = span.parent_span_id
        if parent and parent in known and parent != span.span_id:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    out: list[tuple[int, trace_pb2.TraceSpan]] = []
    stack = [(0, span) for span in reversed(roots)]
    seen: set[str] = set()
    while stack:  # iterative: a deep trace must not hit the recursion limit
        depth, span = stack.pop()
        if span.span_id in seen:
            continue
        seen.add(span.span_id)
        out.append((depth, span))
        stack.extend((depth + 1, child) for child in reversed(children.get(span.span_id, [])))
    return out


NOTIFICATION_ATTRIBUTE = "herald.notification_id"


def focus(
    spans: Sequence[trace_pb2.TraceSpan], notification_id: str, span_ids: Sequence[str] = ()
) -> list[trace_pb2.TraceSpan]:
    """The spans about one notification when the trace also carries others (a
    campaign's trace holds every recipient's attempts): its attempt spans (named by the
    attribute or by the record's span ids), everything under them, and the chain of
    spans above them up to the root. A trace of this notification alone is kept whole;
    a shared trace without any span of this notification gives nothing."""
    own = {s.span_id for s in spans if s.attributes.get(NOTIFICATION_ATTRIBUTE) == notification_id}
    own |= set(span_ids) & {s.span_id for s in spans}
    others = any(
        s.attributes.get(NOTIFICATION_ATTRIBUTE, notification_id) != notification_id for s in spans
    )
    if not others:
        return list(spans)
    if not own:
        return []  # the trace is another's story here (this one's spans were past the cap)
    parents = {s.span_id: s.parent_span_id for s in spans}
    kept = set(own)
    for span_id in own:  # the chain up to the root
        parent = parents.get(span_id, "")
        while parent in parents and parent not in kept:
            kept.add(parent)
            parent = parents[parent]
    grew = True
    while grew:  # and everything below the notification's own spans
        below = {s.span_id for s in spans if s.parent_span_id in own and s.span_id not in own}
        grew = bool(below)
        own |= below
        kept |= below
    return [s for s in spans if s.span_id in kept]


def service_name(span: trace_pb2.TraceSpan) -> str:
    return span.service.removeprefix("herald-")


def status_text(span: trace_pb2.TraceSpan) -> str:
    if span.status == trace_pb2.SPAN_STATUS_ERROR:
        return f"ERROR {span.status_message}".strip()
    return "OK" if span.status == trace_pb2.SPAN_STATUS_OK else ""


def details(span: trace_pb2.TraceSpan) -> str:
    found = [
        f"{label}={span.attributes[key]}"
        for key, label in KEY_ATTRIBUTES
        if span.attributes.get(key, "") not in ("", _QUIET.get(key))
    ]
    return " ".join(found)


def short_name(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"


def rows(spans: Sequence[trace_pb2.TraceSpan]) -> list[list[str]]:
    if not spans:
        return []
    origin = min(span.start_time.ToNanoseconds() for span in spans)
    return [
        [
            "  " * depth + ("└ " if depth else "") + short_name(span.name),
            service_name(span),
            f"+{(span.start_time.ToNanoseconds() - origin) / 1e6:.1f} ms",
            formatting.duration(span.duration),
            status_text(span),
            details(span),
        ]
        for depth, span in ordered(spans)
    ]
