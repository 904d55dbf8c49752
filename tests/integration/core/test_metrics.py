"""Each service exposes Prometheus metrics: RPC rate, latency and status."""

from __future__ import annotations

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.core import probe
from tests.integration.core.probe import PROBE_SPEC, Request


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_rpcs_are_counted_by_method_and_status_with_latency_buckets(start_service):
    server = await start_service(PROBE_SPEC)
    port = server.runtime.metrics.port
    assert port > 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for _ in range(3):
            await probe.call(channel)(Request(service="ok"))
        with pytest.raises(grpc.aio.AioRpcError):
            await probe.call(channel)(Request(service="missing"))
        with pytest.raises(grpc.aio.AioRpcError):
            async for _item in probe.stream(channel)(Request(service="invalid")):
                pass
    samples = _scrape(port)

    def count(method: str, code: str) -> float:
        labels = frozenset(
            {
                "rpc_service": probe.SERVICE,
                "rpc_method": method,
                "rpc_grpc_status_code": code,
            }.items()
        )
        return samples.get(("herald_rpc_server_duration_seconds_count", labels), 0.0)

    assert count("Call", "OK") == 3
    assert count("Call", "NOT_FOUND") == 1
    assert count("Stream", "INVALID_ARGUMENT") == 1
    buckets = [
        value
        for (name, labels), value in samples.items()
        if name == "herald_rpc_server_duration_seconds_bucket"
        and ("rpc_grpc_status_code", "OK") in labels
    ]
    assert len(buckets) > 10  # explicit latency buckets, not the default coarse ones


async def test_metrics_can_be_turned_off(start_service, settings):
    server = await start_service(
        PROBE_SPEC, settings.model_copy(update={"metrics_port": 0, "registration_port": 0})
    )
    assert server.runtime.metrics.port == 0
