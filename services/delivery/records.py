"""Notification records: what a record hash holds, and the protos built from it.

A record (`dlv:n:{dlvq<shard>}:<id>`) keeps the queued Notification (`n`, token
included, for the workers), the current outcome (`o`, `r`), create / update / complete
times (`cr`, `ut`, `ct`, ms), the last answered attempt (`da`), a running worker's lease
(`lw`, `lu`) and every attempt (`a:<number>`, a serialized DeliveryAttempt). Responses
never carry the token: only its redacted form.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from herald.delivery.v1 import notification_pb2
from herald.type.v1 import platform_pb2, push_options_pb2
from services.delivery import tokens
from services.delivery.attempt import AttemptResult
from services.delivery.queue_store import Finish

PLATFORMS = {
    "apns": platform_pb2.PLATFORM_IOS,
    "fcm": platform_pb2.PLATFORM_ANDROID,
    "webpush": platform_pb2.PLATFORM_WEB,
}
FINAL = {
    push_options_pb2.DELIVERY_OUTCOME_DELIVERED,
    push_options_pb2.DELIVERY_OUTCOME_TOKEN_INVALID,
    push_options_pb2.DELIVERY_OUTCOME_FAILED,
    push_options_pb2.DELIVERY_OUTCOME_CANCELLED,
}


def timestamp(ms: float) -> timestamp_pb2.Timestamp:
    # Microseconds, as a datetime would keep them, without building one (hot path).
    out = timestamp_pb2.Timestamp()
    out.FromMicroseconds(round(ms * 1000))
    return out


def trace_id_of(notification: notification_pb2.Notification) -> str:
    """The trace id in the notification's traceparent ("00-<trace>-<span>-<flags>")."""
    parts = notification.trace_context.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


def outcome_event(
    notification: notification_pb2.Notification,
    outcome: int,
    reason: str,
    *,
    attempt: AttemptResult | None = None,
    event_ms: float,
    trace_id: str = "",
) -> notification_pb2.OutcomeEvent:
    provider = tokens.provider_of(notification.token)
    event = notification_pb2.OutcomeEvent(
        notification_id=notification.notification_id,
        app_id=notification.app_id,
        campaign_id=notification.campaign_id,
        device_id=notification.device_id,
        user_id=notification.user_id,
        platform=PLATFORMS.get(provider, platform_pb2.PLATFORM_UNSPECIFIED),
        redacted_token=tokens.redacted(notification.token),
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason,
        labels=dict(notification.labels),
        trace_id=trace_id or trace_id_of(notification),
    )
    event.event_time.CopyFrom(timestamp(event_ms))
    if attempt is not None:
        event.provider_status = attempt.status
        event.attempt_number = attempt.attempt
        if attempt.provider == "apns":
            event.apns_id = attempt.provider_id
        elif attempt.provider == "fcm":
            event.fcm_message_name = attempt.provider_id
    return event


def notification_view(record: dict[bytes, Any], full: bool) -> notification_pb2.Notification | None:
    """The Notification a read RPC returns: token redacted, current state, attempts
    (FULL), content only with FULL."""
    payload = record.get(b"n")
    if not payload:
        return None
    stored = notification_pb2.Notification.FromString(payload)
    out = notification_pb2.Notification()
    out.CopyFrom(stored)
    out.ClearField("token")
    out.redacted_token = tokens.redacted(stored.token)
    out.outcome = int(record.get(b"o", b"1"))  # type: ignore[assignment]
    out.outcome_reason = (record.get(b"r") or b"").decode()
    if record.get(b"ct"):
        out.complete_time.CopyFrom(timestamp(int(record[b"ct"])))
    out.trace_id = trace_id_of(stored)
    if out.HasField("create_time") and stored.HasField("ttl"):
        expire = out.create_time.ToNanoseconds() + stored.ttl.ToNanoseconds()
        out.expire_time.FromNanoseconds(expire)
    if full:
        numbered = sorted((int(k[2:]), v) for k, v in record.items() if k.startswith(b"a:") and v)
        out.attempts.extend(notification_pb2.DeliveryAttempt.FromString(v) for _, v in numbered)
    else:
        for content in ("apns", "fcm", "web_push"):
            out.ClearField(content)
        out.ClearField("trace_context")
    return out


def finish_of(
    notification: notification_pb2.Notification,
    result: AttemptResult,
    *,
    attempt: int,
    worker_id: str,
    trace_id: str,
    span_id: str,
    now: float,
    hand_to_queue: bool = True,
) -> Finish:
    """What `finish_attempts.lua` records for one answered attempt: the attempt, the new
    outcome, the outcome event and, for a retry, when the queue sends the next one.
    Send passes `hand_to_queue=False` for retries it makes itself (the record stays
    RETRYING, nothing is scheduled)."""
    proto = result.to_proto()
    proto.worker_id = worker_id
    proto.trace_id, proto.span_id = trace_id, span_id
    event = outcome_event(
        notification,
        result.outcome,
        result.outcome_reason,
        attempt=result,
        event_ms=now * 1000,
        trace_id=trace_id,
    )
    retrying = result.next_retry_delay_seconds is not None
    next_due = 0
    if retrying and hand_to_queue:
        next_due = int((now + (result.next_retry_delay_seconds or 0)) * 1000)
    return Finish(
        attempt=attempt,
        attempt_bytes=proto.SerializeToString(),
        outcome=result.outcome,
        reason=result.outcome_reason,
        complete_ms=0 if retrying else int(now * 1000),
        next_due_ms=next_due,
        event_bytes=event.SerializeToString(),
        app_id=notification.app_id,
        campaign_id=notification.campaign_id,
    )
