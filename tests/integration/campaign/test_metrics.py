"""Campaign's metrics on its /metrics port: states, fan-out, renders, outcomes,
engagement (the names are listed in services/campaign/telemetry.py)."""

from __future__ import annotations

import re

import requests
from google.protobuf import timestamp_pb2

from herald.campaign.v1 import report_pb2
from tests.integration.campaign.conftest import (
    ANDROID,
    CS,
    IOS,
    START,
    C,
    Stack,
    create,
    device,
    import_devices,
    launch,
    message,
    upsert_user,
    wait_state,
)


def scrape(stack: Stack) -> str:
    port = stack.servers["campaign"].runtime.metrics.port
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels...}` (labels matched as a subset), 0 when absent."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def test_metrics_count_states_fan_out_renders_and_outcomes(stack: Stack):
    await upsert_user(stack, "anna", first_name="Anna")
    await upsert_user(stack, "verbose", first_name="x" * 4100)
    await import_devices(
        stack,
        [
            device("a1", IOS, "anna"),
            device("a2", ANDROID, "anna"),
            device("v1", IOS, "verbose"),
            device("anon", ANDROID),
        ],
    )
    created = await create(stack, message=message("Hi {{ first_name | default: 'there' }}"))
    cid = created.campaign_id
    await launch(stack, cid)
    await wait_state(stack, cid, C.CAMPAIGN_STATE_COMPLETED)
    opened = report_pb2.EngagementEvent(
        event_id="o1",
        kind=report_pb2.ENGAGEMENT_KIND_OPENED,
        campaign_id=cid,
        app_id="shop",
        event_time=timestamp_pb2.Timestamp(seconds=int(START)),
    )
    # The same event twice: recorded once, counted once.
    await stack.campaign.RecordEngagement(CS.RecordEngagementRequest(events=[opened, opened]))
    text = scrape(stack)
    assert value(text, "herald_campaign_state_changes_total", state="DRAFT") == 1
    assert value(text, "herald_campaign_state_changes_total", state="SENDING") == 1
    assert value(text, "herald_campaign_state_changes_total", state="COMPLETED") == 1
    assert value(text, "herald_campaign_devices_targeted_total") == 4
    assert value(text, "herald_campaign_devices_targeted_total", platform="ios") == 2
    assert value(text, "herald_campaign_devices_enqueued_total") == 3
    assert value(text, "herald_campaign_devices_suppressed_total", reason="PAYLOAD_TOO_LARGE") == 1
    assert value(text, "herald_campaign_renders_total") == 4
    assert value(text, "herald_campaign_render_errors_total", reason="PAYLOAD_TOO_LARGE") == 1
    assert value(text, "herald_campaign_outcomes_total", outcome="delivered") == 3
    assert value(text, "herald_campaign_engagement_total", kind="opened") == 1
    assert "herald_campaign_fanouts_running" in text
