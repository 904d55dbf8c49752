"""GetTrace: one trace's spans from the local trace store (services/core/trace_store.py).

Delivery answers for the store because `herald trace` starts from a notification, which
Delivery owns; the spans themselves come from every service. Who may read: the admin
key, the services and (with auth off) anyone read every trace; an app key reads a trace
only when the spans that name an app (`herald.app_id`) all name the key's app, and at
least one does. Spans carry app ids, notification ids and provider answers, so a trace
that names no app (an app created, a key verified) is the operator's to read.
"""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

from herald.delivery.v1 import delivery_service_pb2, trace_pb2
from services.core import telemetry
from services.core.auth import caller_app, require_app_access
from services.core.config import Settings
from services.core.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied
from services.core.redis import RedisClient
from services.core.trace_store import TRACE_ID_RE, StoredSpan, read_trace

DS = delivery_service_pb2
APP_ATTRIBUTE = "herald.app_id"
_KINDS = {
    "INTERNAL": trace_pb2.SPAN_KIND_INTERNAL,
    "SERVER": trace_pb2.SPAN_KIND_SERVER,
    "CLIENT": trace_pb2.SPAN_KIND_CLIENT,
    "PRODUCER": trace_pb2.SPAN_KIND_PRODUCER,
    "CONSUMER": trace_pb2.SPAN_KIND_CONSUMER,
}
_STATUSES = {"OK": trace_pb2.SPAN_STATUS_OK, "ERROR": trace_pb2.SPAN_STATUS_ERROR}


class TraceReader:
    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    async def get(self, request: DS.GetTraceRequest) -> DS.GetTraceResponse:
        trace_id = _valid_trace_id(request.trace_id)
        if len(request.notification_id) > 64:
            raise InvalidArgument(
                "the notification id is too long",
                [FieldViolation("notification_id", "must be at most 64 characters")],
            )
        spans, stored = await read_trace(self.redis, trace_id, request.notification_id)
        if not spans:
            raise self._not_found(trace_id)
        if caller_app():
            _require_own_trace(spans)
        return DS.GetTraceResponse(
            trace_id=trace_id,
            spans=[to_proto(span) for span in spans],
            truncated=stored >= self.settings.trace_store_max_spans,
        )

    def _not_found(self, trace_id: str) -> NotFound:
        local = telemetry.stores_locally(self.settings)
        why = (
            f"spans are kept {self.settings.trace_store_ttl_seconds} s after a trace's latest "
            "span; the trace may have expired, or not been sampled"
            if local
            else "this Delivery does not keep spans locally (HERALD_TRACE_EXPORTER is "
            f"{self.settings.trace_exporter!r}); look the trace up in your trace UI"
        )
        return NotFound(
            "TRACE_NOT_FOUND",
            f"no spans are stored for trace {trace_id}: {why}",
            {"trace_id": trace_id, "local_store": "on" if local else "off"},
        )


def _valid_trace_id(given: str) -> str:
    trace_id = given.strip().lower()
    if not TRACE_ID_RE.fullmatch(trace_id) or not trace_id.strip("0"):
        raise InvalidArgument(
            "the trace id is malformed",
            [FieldViolation("trace_id", "must be 32 hex digits, not all zero (a W3C trace id)")],
        )
    return trace_id


def _require_own_trace(spans: list[StoredSpan]) -> None:
    """PERMISSION_DENIED unless every app the trace names is the caller's, and one is."""
    named = {str(s.attributes[APP_ATTRIBUTE]) for s in spans if APP_ATTRIBUTE in s.attributes}
    if not named:
        raise PermissionDenied(
            "APP_ACCESS_DENIED", "this trace names no app: only the admin key may read it"
        )
    for app_id in sorted(named):
        require_app_access(app_id)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value)
    return str(value)


def to_proto(span: StoredSpan) -> trace_pb2.TraceSpan:
    start = timestamp_pb2.Timestamp()
    start.FromNanoseconds(span.start_ns)
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(max(0, span.end_ns - span.start_ns))
    return trace_pb2.TraceSpan(
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        service=span.service,
        name=span.name,
        kind=_KINDS.get(span.kind, trace_pb2.SPAN_KIND_UNSPECIFIED),
        start_time=start,
        duration=duration,
        status=_STATUSES.get(span.status, trace_pb2.SPAN_STATUS_UNSPECIFIED),
        status_message=span.status_message,
        attributes={key: _text(value) for key, value in span.attributes.items()},
    )
