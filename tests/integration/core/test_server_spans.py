"""Server spans from the RPC wrapper: OpenTelemetry's semantic conventions, the caller's
trace continued, streaming RPCs traced, unknown methods still UNIMPLEMENTED."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.core.status import parse_error
from tests.integration.core import probe
from tests.integration.core.probe import PROBE_SPEC, Request

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
async def traced(start_service):
    server = await start_service(PROBE_SPEC)
    spans = InMemorySpanExporter()
    server.runtime.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel, spans


async def test_a_server_span_carries_the_rpc_semantic_conventions(traced):
    channel, spans = traced
    await probe.call(channel)(Request(service="ok"))

    (span,) = await _finished(spans)
    assert span.name == f"/{probe.SERVICE}/Call"
    assert span.kind == SpanKind.SERVER
    attributes = dict(span.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == probe.SERVICE
    assert attributes["rpc.method"] == "Call"
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["net.peer.ip"] == "127.0.0.1"
    assert attributes["net.peer.name"] == "localhost"
    assert int(attributes["net.peer.port"]) > 0
    assert str(attributes["rpc.user_agent"]).startswith("grpc-python")
    assert span.status.status_code == StatusCode.UNSET


async def test_the_callers_trace_context_makes_the_server_span_its_child(traced):
    channel, spans = traced
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    await probe.call(channel)(Request(service="ok"), metadata=(("traceparent", traceparent),))

    (span,) = await _finished(spans)
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT_SPAN_ID


async def test_a_stream_failing_midway_is_one_span_with_its_status_code(traced):
    channel, spans = traced
    received = []

    async def read_all() -> None:
        async for item in probe.stream(channel)(Request(service="invalid")):
            received.append(item)

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await read_all()
    assert len(received) == 1
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert parse_error(failure.value).violations == (("cursor", "is not a cursor"),)

    (span,) = await _finished(spans)
    assert span.name == f"/{probe.SERVICE}/Stream"
    attributes = dict(span.attributes or {})
    assert attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert span.status.status_code == StatusCode.UNSET  # the caller's mistake


async def test_a_crash_is_an_error_span_with_the_exception_recorded(traced):
    channel, spans = traced
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await probe.call(channel)(Request(service="crash"))
    assert failure.value.code() == grpc.StatusCode.INTERNAL

    (span,) = await _finished(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


async def test_an_unknown_method_is_unimplemented(traced):
    channel, _ = traced
    unknown = channel.unary_unary(
        f"/{probe.SERVICE}/NoSuchMethod",
        request_serializer=Request.SerializeToString,
        response_deserializer=Request.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await unknown(Request())
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def _finished(spans, within: float = 2.0) -> tuple:
    """The finished spans once there are any: the server ends its span just after the
    answer is on its way, so a caller can see the answer first."""
    for _ in range(int(within / 0.01)):
        if spans.get_finished_spans():
            break
        await asyncio.sleep(0.01)
    return spans.get_finished_spans()
