"""Traces exported by OTLP when a collector is configured, and kept locally too with
HERALD_TRACE_LOCAL_COPY (the compose stack's settings): a real OTLP/gRPC receiver gets
the push's spans from the real exporter, with the provider attempt's attributes and the
token redacted, and `herald trace` shows the same trace from the local store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from services.core.config import Settings
from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.sandbox.apns import new_device_token

from .conftest import create_app, run_cli
from .test_send_and_trace import _put_credentials


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps every span with its service's name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = _value(resource_spans.resource.attributes, "service.name")
            for scope in resource_spans.scope_spans:
                self.spans += [(service, span) for span in scope.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


def _value(attributes: Iterable[common_pb2.KeyValue], key: str) -> str:
    for attribute in attributes:
        if attribute.key == key:
            value: common_pb2.AnyValue = attribute.value
            return str(getattr(value, value.WhichOneof("value") or "string_value"))
    return ""


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    server = grpc.aio.server()
    receiver = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield receiver, port
    await server.stop(None)


async def test_spans_reach_an_otlp_collector_and_the_local_store(
    collector, settings: Settings, start_services, redis, sandbox
):  # the collector first: it must outlive the services, which flush their spans at stop
    receiver, port = collector
    exporting = settings.model_copy(
        update={
            "trace_exporter": "auto",
            "otlp_endpoint": f"http://127.0.0.1:{port}",
            "trace_local_copy": True,
        }
    )
    servers = await start_services(IDENTITY_SPEC, DELIVERY_SPEC, base=exporting)
    addresses = {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}
    await create_app(addresses)
    for put in await _put_credentials(addresses, sandbox):
        assert put.code == 0, put.stderr
    token = new_device_token()

    sent = await run_cli(
        "send", "shop", "--apns-token", token, "--environment", "development",
        "--title", "Hi", "--body", "x", "--json", addresses=addresses,
    )  # fmt: skip
    assert sent.code == 0, sent.stderr
    (result,) = sent.json()["results"]
    traced = await run_cli("trace", result["notification_id"], "--json", addresses=addresses)
    assert traced.code == 0, traced.stderr
    trace_id = traced.json()["trace_id"]
    (stored,) = traced.json()["traces"]
    assert "delivery.attempt" in [s["name"] for s in stored["spans"]]  # the local copy

    def exported() -> list[tuple[str, trace_pb2.Span]]:
        return [(s, span) for s, span in receiver.spans if span.trace_id.hex() == trace_id]

    # The SDK exports in batches (every few seconds): wait for the attempt to arrive.
    for _ in range(300):
        if any(span.name == "delivery.attempt" for _, span in exported()):
            break
        await asyncio.sleep(0.1)
    spans = exported()
    (attempt,) = [span for _, span in spans if span.name == "delivery.attempt"]
    attributes = attempt.attributes
    assert _value(attributes, "herald.provider") == "apns"
    assert _value(attributes, "herald.app_id") == "shop"
    assert _value(attributes, "http.response.status_code") == "200"
    assert _value(attributes, "herald.apns.id")
    assert _value(attributes, "herald.retry") == "0"
    assert _value(attributes, "herald.token") == f"{token[:4]}…{token[-4:]}"
    assert all(token not in str(span) for _, span in spans)
    services = {service for service, span in spans if span.name.endswith("/Send")}
    assert services == {"herald-delivery"}
