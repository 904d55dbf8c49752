"""OpenTelemetry metrics, exposed for Prometheus on each service's own port.

Every service gets RPC rate, latency and status from the RPC wrapper (rpc_wrapper.py
records `herald_rpc_server_duration_seconds{rpc_service, rpc_method,
rpc_grpc_status_code}`, a histogram whose count is the rate); services add their own
instruments through `Runtime.metrics.meter` (queue depth, sends by outcome, pool state, ...). Each process
has its own registry, so several services in one process (the tests) never collide.
"""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, MetricsHandler

# RPC latencies worth telling apart: sub-millisecond Redis hits up to slow provider calls.
SHUTDOWN_POLL_SECONDS = 0.02  # how soon a stopping service's /metrics thread notices
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.provider = MeterProvider(
            resource=Resource.create({"service.name": f"herald-{service}"}),
            metric_readers=[
                PrometheusMetricReader(scope_info_enabled=False, registry=self.registry)
            ],
            views=[
                View(
                    instrument_name="herald.rpc.server.duration",
                    aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS),
                )
            ],
        )
        self.meter: Meter = self.provider.get_meter("herald")
        self.rpc_duration = self.meter.create_histogram(
            "herald.rpc.server.duration", unit="s", description="Time to answer an RPC"
        )
        self._http: Any = None
        self.port = 0

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on `port` (0 picks a free one); returns the bound port."""
        self._http = _metrics_server(host, port, self.registry)
        threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="metrics-http",
            daemon=True,
        ).start()
        self.port = int(self._http.server_port)
        return self.port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        self.provider.shutdown()


def _metrics_server(host: str, port: int, registry: CollectorRegistry) -> ThreadingHTTPServer:
    """prometheus_client's handler in our own server: its start_http_server polls for
    shutdown every 0.5 s, so each service's stop took half a second, blocking the
    event loop while it waited."""

    class QuietHandler(MetricsHandler.factory(registry)):  # type: ignore[misc]
        def log_message(self, format: str, *args: Any) -> None:
            """No access log line per scrape."""

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    return Server((host, port), QuietHandler)
