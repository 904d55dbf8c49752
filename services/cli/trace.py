"""`herald trace <notification-id>`: one notification with every attempt, the
provider's answer, the latency, and the trace id that links its spans
(Delivery.GetNotification); then the span tree of each of its traces from the local
trace store (Delivery.GetTrace). `herald trace --trace-id <id>` shows any trace."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import grpc

from herald.delivery.v1 import delivery_service_pb2, notification_pb2, trace_pb2
from herald.type.v1 import platform_pb2, push_options_pb2
from services.cli import formatting, span_tree
from services.cli.commands import command, json_answered
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
# Spans reach the trace store about a second after they end (each process exports in
# batches): a notification this fresh may have spans on their way, worth waiting for.
RECENT_SECONDS = 30
ARRIVAL_WAIT_SECONDS = 5.0
ARRIVAL_POLL_SECONDS = 0.3


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    trace = command(
        commands,
        common,
        "trace",
        trace_notification,
        help="every attempt of one notification, with provider answers and its span tree",
        description="Show a notification's attempts (provider, answer, outcome, latency) "
        "and then the spans of its traces, from every service, as a tree. The spans come "
        "from the services' local trace store: with an OTLP collector configured they "
        "are only there with HERALD_TRACE_LOCAL_COPY=true. --trace-id shows any trace.",
    )
    trace.add_argument("notification_id", nargs="?", default="")
    trace.add_argument("--trace-id", default="", help="show this trace's spans instead")


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
    traces = [_fetch_trace(t, ctx, notification) for t in _trace_ids(notification)]
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


def _fetch_trace(trace_id: str, ctx: Context, notification: Any = None) -> _Trace:
    """GetTrace; a trace the store does not hold (export not local, expired) or a
    Delivery without GetTrace is something to say, not a failure: the attempts stand.

    Services write their spans to the store about a second after the spans end, so
    right after a push (`herald send` then `herald trace`) the store may not hold the
    attempt spans yet: no span at all (TRACE_NOT_FOUND), only spans that name no app
    (an app key is refused those), or a tree without the attempts. For a notification
    that finished moments ago, ask again until its attempt spans are there, for a few
    seconds at most."""
    request = delivery_service_pb2.GetTraceRequest(
        trace_id=trace_id, notification_id=notification.notification_id if notification else ""
    )
    expected = _attempt_spans(notification, trace_id)
    waiting = _recent(notification)
    deadline = time.monotonic() + ARRIVAL_WAIT_SECONDS
    while True:
        try:
            answer = ctx.client.call("delivery", "GetTrace", request)
        except ServerError as error:
            if waiting and _not_arrived(error) and time.monotonic() < deadline:
                time.sleep(ARRIVAL_POLL_SECONDS)
                continue
            if error.details.reason == "TRACE_NOT_FOUND":
                return _Trace(trace_id, None, _not_stored(error))
            if error.details.code == grpc.StatusCode.UNIMPLEMENTED:
                return _Trace(
                    trace_id, None, "This Delivery does not serve GetTrace (an older one)."
                )
            raise
        stored = {span.span_id for span in answer.spans}
        if not waiting or expected <= stored or time.monotonic() >= deadline:
            return _Trace(trace_id, answer, "")
        time.sleep(ARRIVAL_POLL_SECONDS)


def _attempt_spans(notification: Any, trace_id: str) -> set[str]:
    if notification is None:
        return set()
    return {a.span_id for a in notification.attempts if a.trace_id == trace_id and a.span_id}


def _recent(notification: Any) -> bool:
    """Whether the notification's spans may still be on their way to the store."""
    if notification is None:
        return False
    latest = max(
        [notification.create_time.ToNanoseconds(), notification.complete_time.ToNanoseconds()]
        + [a.start_time.ToNanoseconds() for a in notification.attempts]
    )
    return time.time_ns() - latest < RECENT_SECONDS * 1_000_000_000


def _not_arrived(error: ServerError) -> bool:
    # An app key is refused a trace whose stored spans name no app yet: the attempt
    # spans, which name it, are the ones still on their way. A Delivery that keeps no
    # spans locally will never have them: no point waiting.
    if error.details.reason == "TRACE_NOT_FOUND":
        return error.details.metadata.get("local_store") != "off"
    return error.details.reason == "APP_ACCESS_DENIED"


def _not_stored(error: ServerError) -> str:
    if error.details.metadata.get("local_store") == "off":
        return (
            "The services do not keep spans locally (tracing exports by OTLP only, or is "
            "off): look the trace id up in your trace UI, or set "
            "HERALD_TRACE_LOCAL_COPY=true."
        )
    return (
        "None are stored: they expired, the trace was not sampled, or (for a push "
        "moments ago) they have not reached the store yet: try again in a few seconds."
    )


def _show_trace(trace_id: str, ctx: Context) -> int:
    request = delivery_service_pb2.GetTraceRequest(trace_id=trace_id)
    answer = ctx.client.call("delivery", "GetTrace", request)
    if not json_answered(ctx, answer):
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
