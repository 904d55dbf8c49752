"""Trace context that travels with a queued notification, and the worker's spans.

Enqueue stores the W3C `traceparent` of the call (unless the caller gave one) in
`Notification.trace_context`; the worker continues that trace: a `queue.wait` span from
the moment the item became due to the moment a worker took it, then one
`delivery.attempt` span per attempt with the provider's answer. Tokens appear redacted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from herald.delivery.v1 import notification_pb2
from services.core.trace_context import context_of
from services.delivery import tokens
from services.delivery.attempt import AttemptResult


def parent_of(notification: notification_pb2.Notification) -> otel_context.Context:
    return context_of(notification.trace_context)


def record_wait(
    tracer: trace.Tracer,
    parent: otel_context.Context,
    notification: notification_pb2.Notification,
    queued_ms: int,
    now_ns: int,
    attempt: int,
) -> None:
    """The time the item waited in the queue, named like the attempt that follows it so
    a trace UI's search by notification or app finds the wait too."""
    if queued_ms <= 0:
        return
    span = tracer.start_span(
        "queue.wait",
        context=parent,
        start_time=queued_ms * 1_000_000,
        attributes={
            "herald.notification_id": notification.notification_id,
            "herald.app_id": notification.app_id,
            "herald.attempt": attempt,
        },
    )
    span.end(end_time=max(now_ns, queued_ms * 1_000_000))


@contextmanager
def attempt_span(
    tracer: trace.Tracer,
    parent: otel_context.Context,
    notification: notification_pb2.Notification,
    attempt: int,
) -> Iterator[trace.Span]:
    attributes: dict[str, Any] = {
        "herald.notification_id": notification.notification_id,
        "herald.app_id": notification.app_id,
        "herald.provider": tokens.provider_of(notification.token),
        "herald.token": tokens.redacted(notification.token),
        "herald.attempt": attempt,
        "herald.retry": attempt - 1,
    }
    if notification.campaign_id:
        attributes["herald.campaign_id"] = notification.campaign_id
    with tracer.start_as_current_span(
        "delivery.attempt", context=parent, kind=trace.SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span


def annotate(span: trace.Span, result: AttemptResult) -> None:
    # One set_attributes call: the SDK takes its lock and checks limits once, not per key.
    attributes: dict[str, Any] = {
        "http.response.status_code": result.status,
        "herald.provider_reason": result.reason,
        "herald.action": result.action.name,
        "herald.connection_id": result.connection_id,
    }
    if result.provider_id:
        name = {"apns": "apns.id", "fcm": "fcm.message_name"}.get(
            result.provider, "webpush.location"
        )
        attributes[f"herald.{name}"] = result.provider_id
    if result.next_retry_delay_seconds is not None:
        attributes["herald.next_retry_seconds"] = result.next_retry_delay_seconds
    span.set_attributes(attributes)
    if result.action.name not in ("DELIVERED", "RETRY"):
        span.set_status(trace.Status(trace.StatusCode.ERROR, result.reason or str(result.status)))


def ids(span: trace.Span) -> tuple[str, str]:
    context = span.get_span_context()
    if not context.is_valid:
        return "", ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
