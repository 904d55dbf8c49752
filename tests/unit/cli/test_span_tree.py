"""The span tree `herald trace` prints: parents before children, children in start
order, orphans as roots, and the attributes that tell what happened."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

from herald.delivery.v1 import trace_pb2
from services.cli import span_tree


def _span(span_id: str, parent: str, start_ms: int, name: str = "", **attributes: str):
    start = timestamp_pb2.Timestamp()
    start.FromMilliseconds(1_700_000_000_000 + start_ms)
    return trace_pb2.TraceSpan(
        span_id=span_id,
        parent_span_id=parent,
        service="herald-delivery",
        name=name or span_id,
        start_time=start,
        duration=duration_pb2.Duration(nanos=2_500_000),
        attributes=attributes,
    )


def test_children_follow_their_parent_in_start_order_and_orphans_are_roots():
    spans = [
        _span("root", "", 0),
        _span("a", "root", 1),
        _span("orphan", "gone", 2),  # its parent ran outside Herald, or was capped
        _span("a1", "a", 3),
        _span("b", "root", 4),
        _span("self", "self", 5),  # a corrupt self-reference is shown once, as a root
    ]

    order = [(depth, span.span_id) for depth, span in span_tree.ordered(spans)]

    assert order == [
        (0, "root"),
        (1, "a"),
        (2, "a1"),
        (1, "b"),
        (0, "orphan"),
        (0, "self"),
    ]


def test_a_row_shows_offset_duration_status_and_the_telling_attributes():
    attempt = _span(
        "attempt",
        "root",
        7,
        name="delivery.attempt",
        **{
            "herald.app_id": "shop",
            "herald.provider": "apns",
            "http.response.status_code": "410",
            "herald.provider_reason": "Unregistered",
            "herald.apns.id": "5e2c",
            "rpc.grpc.status_code": "0",
            "herald.connection_id": "c1",
        },
    )
    attempt.status = trace_pb2.SPAN_STATUS_ERROR
    attempt.status_message = "Unregistered"
    long_name = "HSET EXPIRE ZADD " * 10

    rows = span_tree.rows([_span("root", "", 0, name=long_name), attempt])

    assert rows[0][0] == long_name[: span_tree.MAX_NAME_CHARS - 1] + "…"
    assert rows[1] == [
        "  └ delivery.attempt",
        "delivery",
        "+7.0 ms",
        "2.5 ms",
        "ERROR Unregistered",
        "app=shop provider=apns status=410 reason=Unregistered apns-id=5e2c",
    ]


def test_a_campaign_trace_is_narrowed_to_one_notifications_path_and_attempts():
    spans = [
        _span("launch", "", 0),
        _span("enqueue-1", "launch", 1),
        _span("enqueue-2", "launch", 2),
        _span("mine", "enqueue-1", 3, **{"herald.notification_id": "n1"}),
        _span("mine-redis", "mine", 4),
        _span("retry", "enqueue-1", 5),  # named only by the record's span id
        _span("theirs", "enqueue-1", 6, **{"herald.notification_id": "n2"}),
        _span("theirs-2", "enqueue-2", 7, **{"herald.notification_id": "n3"}),
    ]

    kept = [s.span_id for s in span_tree.focus(spans, "n1", ["retry"])]
    alone = [s.span_id for s in span_tree.focus(spans[:5], "n1")]

    past_the_cap = span_tree.focus(spans, "n9")

    assert kept == ["launch", "enqueue-1", "mine", "mine-redis", "retry"]
    assert past_the_cap == []  # not the whole campaign instead
    assert alone == ["launch", "enqueue-1", "enqueue-2", "mine", "mine-redis"]  # whole
