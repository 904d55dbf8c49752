"""Delivery's metrics as Prometheus scrapes them from the server's /metrics."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

from services.sandbox.apns import new_device_token

from .conftest import apns_credentials, apns_notification
from .queue_helpers import DS, enqueue_request, wait_final


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def samples(text: str, name: str, **labels: str) -> list[float]:
    """The values of the samples of `name` whose labels include `labels`."""
    found = []
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match[1] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            found.append(float(match[2]))
    return found


def _value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    found = samples(text, name, **labels)
    assert found, f"no sample of {name} {labels}"
    return sum(found)


async def test_metrics_count_sends_retries_invalidations_goaways_and_queue_depth(
    start_node, sandbox
):
    idle = await start_node(workers_enabled=False)
    await idle.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    waiting = await idle.stub.Enqueue(
        enqueue_request([apns_notification(new_device_token()) for _ in range(5)])
    )
    await idle.servicer.sampler.sample()
    queued = scrape(idle.server.runtime.metrics.port)

    node = await start_node()
    dead, flaky = new_device_token(), new_device_token()
    sandbox.apns.set_token(dead, "unregistered", unregistered_at_ms=int(time.time() * 1000))
    sandbox.faults.add(
        service="apns", token=flaky, status=503, reason="ServiceUnavailable", times=1
    )
    sandbox.faults.add(service="apns", action="goaway", nth=3, reason="Shutdown", delay=0.02)
    more = await node.stub.Enqueue(
        enqueue_request([apns_notification(t) for t in (dead, flaky, new_device_token())])
    )
    ids = [r.notification_id for r in [*waiting.results, *more.results]]
    await wait_final(node.stub, ids)
    await asyncio.sleep(0.1)
    await node.servicer.sampler.sample()
    text = scrape(node.server.runtime.metrics.port)

    assert _value(queued, "herald_delivery_queue_depth") == 5
    assert _value(queued, "herald_delivery_queue_oldest_age_seconds") >= 0
    assert _value(text, "herald_delivery_queue_depth") == 0
    delivered = _value(
        text, "herald_delivery_sends_total", provider="apns", app="shop", outcome="DELIVERED"
    )
    assert delivered == 7  # 5 waiting + flaky (second attempt) + 1
    assert (
        _value(text, "herald_delivery_sends_total", outcome="TOKEN_INVALID", reason="Unregistered")
        == 1
    )
    assert _value(text, "herald_delivery_retries_total", provider="apns") >= 1
    assert _value(text, "herald_delivery_tokens_invalidated_total", reason="Unregistered") == 1
    assert _value(text, "herald_delivery_pool_goaways_total", provider="apns") == 1
    assert _value(text, "herald_delivery_provider_token_refreshes_total", provider="apns") >= 1
    assert _value(text, "herald_delivery_pool_connections", provider="apns") >= 1
    assert _value(text, "herald_delivery_pool_streams_in_use", provider="apns") == 0
