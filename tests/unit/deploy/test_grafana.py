"""The Grafana dashboard only charts metrics the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "herald-dashboard.json"
# Names the services' metrics tests scrape from real /metrics endpoints.
SCRAPED_BY_TESTS = [
    ROOT / "tests" / "integration" / "core" / "test_metrics.py",
    ROOT / "tests" / "integration" / "delivery" / "test_metrics.py",
    ROOT / "tests" / "integration" / "campaign" / "test_metrics.py",
    ROOT / "tests" / "e2e" / "cli" / "test_certificate_credentials.py",
]


def _base(name: str) -> str:
    return re.sub(r"_(bucket|count|sum)$", "", name)


def test_every_panel_queries_a_metric_a_service_is_tested_to_export():
    exported = {
        _base(name)
        for path in SCRAPED_BY_TESTS
        for name in re.findall(r"herald_[a-z_]+", path.read_text())
    }
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        (target,) = panel["targets"]
        used = {_base(name) for name in re.findall(r"herald_[a-z_]+", target["expr"])}
        assert used, panel["title"]
        assert used <= exported, (panel["title"], used - exported)


def test_the_dashboard_covers_rpcs_queue_sends_pools_and_campaigns():
    text = DASHBOARD.read_text()
    for metric in (
        "herald_rpc_server_duration_seconds",
        "herald_delivery_queue_depth",
        "herald_delivery_sends_total",
        "herald_delivery_pool_connections",
        "herald_delivery_pool_streams_in_use",
        "herald_delivery_credentials_expiry_seconds",
        "herald_delivery_tokens_invalidated_total",
        "herald_campaign_devices_enqueued_total",
    ):
        assert metric in text


def test_no_panel_hides_a_series_behind_or():
    """`a or b` keeps b's series only where a has none with the same labels: two
    aggregations `by` the same labels must be told apart (label_replace) to both show."""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        (target,) = panel["targets"]
        sides = target["expr"].split(" or ")
        if len(sides) < 2:
            continue
        # A side's series: its `by` labels, and the label value label_replace gives it.
        series = {
            (
                tuple(re.findall(r"by \(([^)]*)\)", side)),
                tuple(re.findall(r'"(\w+)", "([^"]+)", "", ""\)', side)),
            )
            for side in sides
        }
        assert len(series) == len(sides), panel["title"]
