"""Traces: server spans for every RPC, client spans on Runtime channels, one trace across."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.core.config import ConfigError, load_settings
from services.core.telemetry import _processors, exporter_choice, stores_locally
from services.core.trace_export import RedisSpanExporter
from tests.integration.core import probe
from tests.integration.core.probe import PROBE_SPEC, Request


async def test_a_call_between_services_is_one_trace_with_client_and_server_spans(start_service):
    server = await start_service(PROBE_SPEC)
    spans = InMemorySpanExporter()
    server.runtime.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    # The runtime's own channel (as one service calls another) points at the probe.
    server.runtime.settings = server.runtime.settings.model_copy(
        update={"registration_address": f"127.0.0.1:{server.port}"}
    )
    channel = server.runtime.channel("registration")
    await probe.call(channel)(Request(service="ok"))
    with pytest.raises(grpc.aio.AioRpcError):
        await probe.call(channel)(Request(service="missing"))
    with pytest.raises(grpc.aio.AioRpcError):
        await probe.call(channel)(Request(service="crash"))

    finished = spans.get_finished_spans()
    servers = [s for s in finished if s.kind == SpanKind.SERVER]
    clients = [s for s in finished if s.kind == SpanKind.CLIENT]
    assert [s.name for s in servers] == [f"/{probe.SERVICE}/Call"] * 3
    assert len(clients) == 3
    for client, served in zip(clients, servers, strict=True):
        assert served.context.trace_id == client.context.trace_id
        assert served.parent is not None
        assert served.parent.span_id == client.context.span_id
    codes = [dict(s.attributes or {}).get("rpc.grpc.status_code") for s in servers]
    assert codes == [0, grpc.StatusCode.NOT_FOUND.value[0], grpc.StatusCode.INTERNAL.value[0]]
    # OpenTelemetry's rule for server spans: a caller's mistake (NOT_FOUND) is not a
    # server error, a crash (INTERNAL) is.
    assert [s.status.status_code for s in servers] == [
        StatusCode.UNSET,
        StatusCode.UNSET,
        StatusCode.ERROR,
    ]


@pytest.mark.parametrize(
    ("given", "choice", "local"),
    [
        ({"trace_exporter": "none"}, "none", False),
        ({"trace_exporter": "auto", "otlp_endpoint": ""}, "local", True),
        ({"trace_exporter": "local", "otlp_endpoint": "http://127.0.0.1:4317"}, "local", True),
        ({"trace_exporter": "console"}, "console", False),
        ({"trace_exporter": "auto", "otlp_endpoint": "http://127.0.0.1:4317"}, "otlp", False),
        (
            {
                "trace_exporter": "auto",
                "otlp_endpoint": "http://127.0.0.1:4317",
                "trace_local_copy": True,
            },
            "otlp",
            True,
        ),
    ],
)
def test_the_exporter_follows_configuration(given, choice, local):
    settings = load_settings(**given)
    processors = _processors(settings)
    try:
        assert exporter_choice(settings) == choice
        assert stores_locally(settings) is local
        exporters = [type(p._batch_processor._exporter) for p in processors]
        expected = {
            "none": [],
            "console": [ConsoleSpanExporter],
            "otlp": [OTLPSpanExporter],
            "local": [],
        }[choice] + ([RedisSpanExporter] if local else [])
        assert exporters == expected
    finally:
        for processor in processors:
            processor.shutdown()


def test_otlp_without_an_endpoint_stops_the_service_at_start():
    with pytest.raises(ConfigError, match="needs OTEL_EXPORTER_OTLP_ENDPOINT"):
        _processors(load_settings(trace_exporter="otlp", otlp_endpoint=""))
