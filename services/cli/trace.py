"""`herald trace <notification-id>`: one notification with every attempt, the
provider's answer, the latency, and the trace id that links its spans
(Delivery.GetNotification); then the span tree of each of its traces from the local
trace store (Delivery.GetTrace). `herald trace --trace-id <id>` shows any trace."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import grpc

from herald.delivery.v1 import delivery_service_pb2, notification_pb2, trace_pb2
from herald.type.v1 import platform_pb2, push_options_pb2
from services.cli import formatting, span_tree
from services.cli.context import Context
from services.cli.errors import ServerError, UsageError

N = notification_pb2
# What identifies the notification; the content fields are in --json.
SUMMARY = (
    "notification_id",
    "app_id",
    "device_id",
    "user_id",
    "campaign_id",
    "redacted_token",
    "outcome",
    "outcome_reason",
    "create_time",
    "expire_time",
    "complete_time",
    "trace_id",
)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    trace = commands.add_parser(
        "trace",
        parents=[common],
        help="every attempt of one notification, with provider answers and its span tree",
        description="Show a notification's attempts (provider, answer, outcome, latency) "
        "and then the spans of its traces, from every service, as a tree. The spans come "
        "from the services' local trace store: with an OTLP collector configured they "
        "are only there with HERALD_TRACE_LOCAL_COPY=true. --trace-id shows any trace.",
    )
    trace.add_argument("notification_id", nargs="?", default="")
    trace.add_argument("--trace-id", default="", help="show this trace's spans instead")
    trace.set_defaults(handler=trace_notification)


def _summary(notification: Any) -> N.Notification:
    shown: Any = N.Notification()
    for name in SUMMARY:
        field = N.Notification.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None:
            if notification.HasField(name):
                getattr(shown, name).CopyFrom(getattr(notification, name))
        else:
            setattr(shown, name, getattr(notification, name))
    return shown


def _provider_id(attempt: N.DeliveryAttempt) -> str:
    return attempt.apns_id or attempt.fcm_message_name or attempt.web_push_location


def trace_notification(args: argparse.Namespace, ctx: Context) -> int:
    if bool(args.notification_id) == bool(args.trace_id):
        raise UsageError("herald trace: give a notification id or --trace-id (one of them)")
    if args.trace_id:
        return _show_trace(args.trace_id, ctx)
    request = delivery_service_pb2.GetNotificationRequest(notification_id=args.notification_id)
    notification = ctx.client.call("delivery", "GetNotification", request).notification
    traces = [_fetch_trace(trace_id, ctx) for trace_id in _trace_ids(notification)]
    if ctx.out.json_mode:
        ctx.out.json({**formatting.to_json(notification), "traces": [t.json() for t in traces]})
        return 0
    _show_attempts(notification, ctx)
    for found in traces:
        found.show(ctx, notification)
    return 0


def _show_attempts(notification: Any, ctx: Context) -> None:
    ctx.out.fields(_summary(notification), title="Notification")
    attempts = notification.attempts
    ctx.out.table(
        ["#", "start", "provider", "answer", "outcome", "action", "latency", "provider id"],
        [
            [
                str(a.attempt_number),
                formatting.timestamp(a.start_time),
                formatting.enum_name(platform_pb2.Provider.DESCRIPTOR, a.provider),
                " ".join(x for x in (str(a.provider_status or ""), a.provider_reason) if x),
                formatting.enum_name(push_options_pb2.DeliveryOutcome.DESCRIPTOR, a.outcome),
                formatting.enum_name(N.ProviderAction.DESCRIPTOR, a.action)
                + (
                    f" at {formatting.timestamp(a.next_attempt_time)}"
                    if a.next_attempt_time.seconds
                    else ""
                ),
                formatting.duration(a.latency),
                _provider_id(a),
            ]
            for a in attempts
        ],
        title=f"Attempts ({len(attempts)})",
        whole=("start", "provider id"),
    )
    # The ids that find each attempt in the trace UI and the logs, apart so the
    # table above stays readable in a terminal.
    ctx.out.table(
        ["#", "trace id", "span id", "connection", "worker"],
        [
            [str(a.attempt_number), a.trace_id, a.span_id, a.connection_id, a.worker_id]
            for a in attempts
        ],
        title="Attempt spans",
        whole=("trace id", "span id"),
    )


def _trace_ids(notification: Any) -> list[str]:
    """The notification's trace and any other its attempts ran in, first seen first."""
    ids = [notification.trace_id, *(a.trace_id for a in notification.attempts)]
    return list(dict.fromkeys(i for i in ids if i))


class _Trace:
    """One trace's spans, or why there are none to show."""

    def __init__(
        self, trace_id: str, answer: delivery_service_pb2.GetTraceResponse | None, missing: str
    ) -> None:
        self.trace_id = trace_id
        self.answer = answer
        self.missing = missing

    def json(self) -> dict[str, Any]:
        if self.answer is None:
            return {"trace_id": self.trace_id, "spans": [], "missing": self.missing}
        return formatting.to_json(self.answer)

    def show(self, ctx: Context, notification: Any) -> None:
        if self.answer is None:
            ctx.out.line(f"Trace {self.trace_id}: no spans to show. {self.missing}")
            return
        spans = span_tree.focus(
            self.answer.spans,
            notification.notification_id,
            [a.span_id for a in notification.attempts if a.span_id],
        )
        if not spans:
            capped = " (the trace reached the store's cap)" if self.answer.truncated else ""
            ctx.out.line(
                f"Trace {self.trace_id}: none of this notification's spans are among the "
                f"{len(self.answer.spans)} stored{capped}; herald trace --trace-id "
                f"{self.trace_id} shows them."
            )
            return
        _print_tree(self.answer, ctx, spans)
        hidden = len(self.answer.spans) - len(spans)
        if hidden:
            ctx.out.line(
                f"{hidden} more spans of this trace (other notifications', work they "
                f"share) are not shown: herald trace --trace-id {self.trace_id}"
            )


def _fetch_trace(trace_id: str, ctx: Context) -> _Trace:
    """GetTrace; a trace the store does not hold (export not local, expired) or a
    Delivery without GetTrace is something to say, not a failure: the attempts stand."""
    request = delivery_service_pb2.GetTraceRequest(trace_id=trace_id)
    try:
        return _Trace(trace_id, ctx.client.call("delivery", "GetTrace", request), "")
    except ServerError as error:
        if error.details.reason == "TRACE_NOT_FOUND":
            return _Trace(trace_id, None, _not_stored(error))
        if error.details.code == grpc.StatusCode.UNIMPLEMENTED:
            return _Trace(trace_id, None, "This Delivery does not serve GetTrace (an older one).")
        raise


def _not_stored(error: ServerError) -> str:
    if error.details.metadata.get("local_store") == "off":
        return (
            "The services do not keep spans locally (tracing exports by OTLP only, or is "
            "off): look the trace id up in your trace UI, or set "
            "HERALD_TRACE_LOCAL_COPY=true."
        )
    return "None are stored: they expired, or the trace was not sampled."


def _show_trace(trace_id: str, ctx: Context) -> int:
    request = delivery_service_pb2.GetTraceRequest(trace_id=trace_id)
    answer = ctx.client.call("delivery", "GetTrace", request)
    if ctx.out.json_mode:
        ctx.out.json(formatting.to_json(answer))
        return 0
    _print_tree(answer, ctx)
    return 0


def _print_tree(
    answer: delivery_service_pb2.GetTraceResponse,
    ctx: Context,
    spans: Sequence[trace_pb2.TraceSpan] | None = None,
) -> None:
    shown = answer.spans if spans is None else spans
    services = sorted({span_tree.service_name(s) for s in shown})
    ctx.out.table(
        span_tree.COLUMNS,
        span_tree.rows(shown),
        title=f"Trace {answer.trace_id}: {len(shown)} spans from {', '.join(services)}",
        whole=("span", "duration"),
    )
    if answer.truncated:
        ctx.out.line(
            "The trace reached the store's cap of spans per trace "
            "(HERALD_TRACE_STORE_MAX_SPANS): later spans were not kept."
        )
