"""W3C trace context carried in data rather than in a call's metadata.

Work that outlives the RPC that asked for it keeps the caller's trace this way: a
queued notification (Delivery stores it on the item) and a campaign's fan-out (Campaign
stores the launch's on the campaign, and the fan-out, later or in another process,
continues that trace).
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


def current_headers() -> dict[str, str]:
    """The active span's context as W3C headers (`traceparent`, and `tracestate` when
    set); empty when there is no active span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def context_of(headers: Mapping[str, str]) -> otel_context.Context:
    """A context whose parent is the span the headers name (none when they name none:
    spans started in it are roots)."""
    return _PROPAGATOR.extract(dict(headers))
