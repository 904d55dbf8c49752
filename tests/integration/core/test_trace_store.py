"""The local trace store against the real redis-server (or cluster): real SDK spans
through the real exporter, read back as Delivery reads them."""

from __future__ import annotations

import logging

import pytest
import redis
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.core.config import Settings
from services.core.embedded_redis import EmbeddedRedis, free_port
from services.core.trace_export import OncePerInterval, RedisSpanExporter
from services.core.trace_store import notification_key, read_trace, trace_id_hex, trace_key


def _tracer(exporter: RedisSpanExporter, service: str = "herald-test") -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def store_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"trace_store_max_spans": 10, "trace_store_ttl_seconds": 120})


async def test_spans_of_two_services_land_in_one_trace_with_parents_and_attributes(
    redis, store_settings
):
    delivery = _tracer(RedisSpanExporter(store_settings), "herald-delivery")
    campaign = _tracer(RedisSpanExporter(store_settings), "herald-campaign")
    try:
        with (
            campaign.get_tracer("t").start_as_current_span(
                "SendToUsers", kind=SpanKind.SERVER
            ) as root,
            delivery.get_tracer("t").start_as_current_span(
                "delivery.attempt",
                kind=SpanKind.CLIENT,
                attributes={
                    "herald.provider": "apns",
                    "http.response.status_code": 410,
                    "herald.token": "3f2a…9c1d",
                    "herald.client_secret": "never-stored",
                    "herald.labels": ("a", "b"),
                    "note": "x" * 1000,
                },
            ) as attempt,
        ):
            attempt.set_status(Status(StatusCode.ERROR, "Unregistered"))
        trace_id = trace_id_hex(root.get_span_context().trace_id)

        spans, stored = await read_trace(redis, trace_id)
    finally:
        delivery.shutdown()
        campaign.shutdown()

    assert stored == 2
    assert [(s.service, s.name, s.kind) for s in spans] == [
        ("herald-campaign", "SendToUsers", "SERVER"),
        ("herald-delivery", "delivery.attempt", "CLIENT"),
    ]
    first, second = spans
    assert first.parent_span_id == ""
    assert second.parent_span_id == first.span_id
    assert second.status == "ERROR"
    assert second.status_message == "Unregistered"
    assert first.start_ns <= second.start_ns <= second.end_ns <= first.end_ns
    assert second.attributes["herald.provider"] == "apns"
    assert second.attributes["http.response.status_code"] == 410
    assert second.attributes["herald.labels"] == ["a", "b"]
    assert "herald.client_secret" not in second.attributes  # a secret is never stored
    assert len(second.attributes["note"]) == 300  # long values are cut


async def test_a_trace_keeps_its_first_spans_up_to_the_cap_and_expires(redis, store_settings):
    exporter = RedisSpanExporter(store_settings)
    provider = _tracer(exporter)
    tracer = provider.get_tracer("t")
    try:
        with tracer.start_as_current_span("root") as root:
            for index in range(25):
                with tracer.start_as_current_span(f"child-{index:02d}"):
                    pass
        with tracer.start_as_current_span("another trace") as other:
            pass
        trace_id = trace_id_hex(root.get_span_context().trace_id)
        spans, stored = await read_trace(redis, trace_id)
        others, _ = await read_trace(redis, trace_id_hex(other.get_span_context().trace_id))
        ttl = await redis.ttl(trace_key(trace_id))
    finally:
        provider.shutdown()

    # Children end before their parent: the first ten to end are kept, the rest dropped.
    assert stored == 10
    assert [s.name for s in spans] == [f"child-{index:02d}" for index in range(10)]
    assert [s.name for s in others] == ["another trace"]  # a full trace costs no other
    assert 0 < ttl <= 120


async def test_a_notifications_spans_are_kept_past_the_traces_cap(redis, store_settings):
    """A campaign's trace holds every recipient's spans, far past the cap: the spans
    that name a notification are kept for it anyway, and read back when asked for it."""
    exporter = RedisSpanExporter(store_settings)
    provider = _tracer(exporter)
    tracer = provider.get_tracer("t")
    try:
        with tracer.start_as_current_span("LaunchCampaign") as root:
            for index in range(30):  # three spans per recipient: 90, the cap is 10
                named = {"herald.notification_id": f"n{index:02d}"}
                with tracer.start_as_current_span("Enqueue"):
                    with tracer.start_as_current_span("queue.wait", attributes=named):
                        pass
                    with tracer.start_as_current_span("delivery.attempt", attributes=named):
                        pass
        trace_id = trace_id_hex(root.get_span_context().trace_id)
        first, stored = await read_trace(redis, trace_id, "n00")
        late, _ = await read_trace(redis, trace_id, "n29")
        whole, _ = await read_trace(redis, trace_id)
        ttl = await redis.ttl(notification_key(trace_id, "n29"))
    finally:
        provider.shutdown()

    assert stored == 10  # the trace's own list stays at the cap
    assert len(whole) == 10
    assert not any(s.attributes.get("herald.notification_id") == "n29" for s in whole)
    mine = [s.name for s in late if s.attributes.get("herald.notification_id") == "n29"]
    assert mine == ["queue.wait", "delivery.attempt"]
    assert len(late) == 12  # the cap's ten, and n29's two
    # n00's spans are in the trace's list too: not answered twice.
    assert [s.span_id for s in first] == [s.span_id for s in whole]
    assert 0 < ttl <= 120


def test_an_unreachable_redis_drops_spans_logs_once_and_recovers(store_settings, tmp_path, caplog):
    late = EmbeddedRedis(tmp_path, port=free_port())  # not started yet: nobody listens
    exporter = RedisSpanExporter(
        store_settings.model_copy(update={"redis_url": late.url, "redis_cluster": False})
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "herald-test"}))
    tracer = provider.get_tracer("t")
    spans = []
    for name in ("first", "second", "third"):
        with tracer.start_as_current_span(name) as span:
            pass
        spans.append(span)

    with caplog.at_level(logging.INFO, logger="herald.tracing"):
        failed = [exporter.export([span]) for span in spans[:2]]
        late.start()
        try:
            recovered = exporter.export([spans[2]])
            client = redis.Redis.from_url(late.url)
            stored = client.lrange(
                trace_key(trace_id_hex(spans[2].get_span_context().trace_id)), 0, -1
            )
            client.close()
        finally:
            exporter.shutdown()
            late.stop()

    assert failed == [SpanExportResult.FAILURE, SpanExportResult.FAILURE]
    assert recovered == SpanExportResult.SUCCESS
    messages = [r.getMessage() for r in caplog.records if r.name == "herald.tracing"]
    assert len([m for m in messages if m.startswith("spans not stored")]) == 1
    assert any(m.startswith("spans stored again") for m in messages)
    assert len(stored) == 1


async def test_lone_background_redis_commands_and_health_checks_are_not_stored(
    redis, store_settings
):
    provider = _tracer(RedisSpanExporter(store_settings))
    redis_scope = provider.get_tracer("opentelemetry.instrumentation.redis")
    try:
        # A queue poll outside any trace: a root Redis span, one every few seconds forever.
        with redis_scope.start_as_current_span("XREADGROUP", kind=SpanKind.CLIENT) as poll:
            pass
        with provider.get_tracer("t").start_as_current_span(
            "/grpc.health.v1.Health/Check", kind=SpanKind.SERVER
        ) as probe:
            pass
        # The same command inside a call's trace is part of the story.
        with (
            provider.get_tracer("t").start_as_current_span("Enqueue") as call,
            redis_scope.start_as_current_span("XADD", kind=SpanKind.CLIENT),
        ):
            pass
        stored = {
            name: (await read_trace(redis, trace_id_hex(span.get_span_context().trace_id)))[0]
            for name, span in (("poll", poll), ("probe", probe), ("call", call))
        }
    finally:
        provider.shutdown()

    assert stored["poll"] == []
    assert stored["probe"] == []
    assert [s.name for s in stored["call"]] == ["Enqueue", "XADD"]


def test_an_overflowing_span_queue_warns_once_per_interval_not_per_span(caplog):
    # The SDK warns on the RPC's own thread for every dropped span; the filter the
    # services install lets one through per interval.
    logger = logging.getLogger("herald.test.span_queue")
    once = OncePerInterval("Queue full", interval_seconds=3600)
    logger.addFilter(once)
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            for _ in range(5):
                logger.warning("Queue full, dropping %s.", "span")
            logger.warning("another warning")
    finally:
        logger.removeFilter(once)

    assert [r.getMessage() for r in caplog.records] == [
        "Queue full, dropping span.",
        "another warning",
    ]


def test_an_unreachable_cluster_drops_spans_and_logs_once(store_settings, caplog):
    nowhere = store_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "redis_cluster": True}
    )
    exporter = RedisSpanExporter(nowhere)
    tracer = TracerProvider(resource=Resource.create({"service.name": "herald-test"})).get_tracer(
        "t"
    )
    with tracer.start_as_current_span("first") as span:
        pass

    with caplog.at_level(logging.INFO, logger="herald.tracing"):
        results = [exporter.export([span]) for _ in range(2)]
    exporter.shutdown()

    assert results == [SpanExportResult.FAILURE, SpanExportResult.FAILURE]
    warnings = [r for r in caplog.records if r.name == "herald.tracing"]
    assert [r.getMessage()[:16] for r in warnings] == ["spans not stored"]
