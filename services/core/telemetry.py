"""OpenTelemetry set-up: one TracerProvider per process, exporter chosen by configuration.

gRPC server and client spans come from interceptors built here (handed to the server
and to every channel, rather than patched in globally), Redis spans from the redis
instrumentation. With `trace_exporter = auto`, spans go by OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set, and to the local trace store in Redis otherwise (so
`herald trace` shows them with nothing configured); `trace_local_copy` keeps the local
copy alongside OTLP too. `none` records nothing beyond the process (the benchmarks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from services.core.config import ConfigError, Settings
from services.core.trace_export import local_store_processor, quiet_queue_full_warnings

_redis_instrumented = False


def exporter_choice(settings: Settings) -> str:
    """What `trace_exporter` means with this configuration: otlp, local, console or none."""
    if settings.trace_exporter == "auto":
        return "otlp" if settings.otlp_endpoint else "local"
    return settings.trace_exporter


def stores_locally(settings: Settings) -> bool:
    """Whether this configuration writes spans to the local trace store."""
    choice = exporter_choice(settings)
    return choice == "local" or (choice == "otlp" and settings.trace_local_copy)


def _processors(settings: Settings) -> list[SpanProcessor]:
    choice = exporter_choice(settings)
    processors: list[SpanProcessor] = []
    if choice == "console":
        processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
    elif choice == "otlp":
        if not settings.otlp_endpoint:
            raise ConfigError("HERALD_TRACE_EXPORTER=otlp needs OTEL_EXPORTER_OTLP_ENDPOINT")
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        processors.append(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    if stores_locally(settings):
        processors.append(local_store_processor(settings))
    if processors:
        quiet_queue_full_warnings()
    return processors


def setup_tracing(service: str, settings: Settings) -> TracerProvider:
    """A provider for `herald-<service>`; the first one is also made global for libraries."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"herald-{service}"}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    for processor in _processors(settings):
        provider.add_span_processor(processor)
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


def client_interceptors(provider: TracerProvider) -> Sequence[Any]:
    return list(aio_client_interceptors(tracer_provider=provider))


def shutdown_tracing(provider: TracerProvider) -> None:
    """Flush what is buffered so the last spans of a stopping process are not lost."""
    provider.force_flush(timeout_millis=5000)
    provider.shutdown()
