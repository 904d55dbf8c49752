"""OpenTelemetry set-up: one TracerProvider per process, exporter chosen by configuration.

gRPC server and client spans come from interceptors built here (handed to the server
and to every channel, rather than patched in globally), Redis spans from the redis
instrumentation. With `trace_exporter = auto`, spans go by OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set and stay in process otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from services.core.config import ConfigError, Settings

_redis_instrumented = False


def _exporter(settings: Settings) -> SpanExporter | None:
    choice = settings.trace_exporter
    if choice == "auto":
        choice = "otlp" if settings.otlp_endpoint else "none"
    if choice == "none":
        return None
    if choice == "console":
        return ConsoleSpanExporter()
    if not settings.otlp_endpoint:
        raise ConfigError("HERALD_TRACE_EXPORTER=otlp needs OTEL_EXPORTER_OTLP_ENDPOINT")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.otlp_endpoint)


def setup_tracing(service: str, settings: Settings) -> TracerProvider:
    """A provider for `herald-<service>`; the first one is also made global for libraries."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"herald-{service}"}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    exporter = _exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)  # the first service of the process owns the global
    if settings.trace_redis:
        _instrument_redis(provider)
    return provider


def _instrument_redis(provider: TracerProvider) -> None:
    global _redis_instrumented  # the redis instrumentation patches the client class once
    if _redis_instrumented:
        return
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument(tracer_provider=provider)
    _redis_instrumented = True


def server_interceptors(provider: TracerProvider) -> list[grpc.aio.ServerInterceptor]:
    return [aio_server_interceptor(tracer_provider=provider)]


def client_interceptors(provider: TracerProvider) -> Sequence[Any]:
    return list(aio_client_interceptors(tracer_provider=provider))


def shutdown_tracing(provider: TracerProvider) -> None:
    """Flush what is buffered so the last spans of a stopping process are not lost."""
    provider.force_flush(timeout_millis=5000)
    provider.shutdown()
