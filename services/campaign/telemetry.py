"""Campaign's own metrics (OpenTelemetry, scraped by Prometheus on the service's
/metrics port beside the RPC metrics every service has).

Counted per process: Prometheus sums the replicas. Instruments are added to once per
batch, not per device, so they cost nothing measurable in a million-device fan-out.

| Prometheus name | labels | what |
|---|---|---|
| `herald_campaign_state_changes_total` | `state` | campaigns this process moved into a state |
| `herald_campaign_fanouts_running` | | fan-outs this process runs now (gauge) |
| `herald_campaign_devices_targeted_total` | `platform` | audience devices that matched |
| `herald_campaign_devices_enqueued_total` | `platform` | notifications handed to Delivery |
| `herald_campaign_devices_suppressed_total` | `reason` | targeted devices not sent to |
| `herald_campaign_renders_total` | | messages rendered for a device |
| `herald_campaign_render_errors_total` | `reason` | TEMPLATE_RENDER_ERROR, PAYLOAD_TOO_LARGE |
| `herald_campaign_outcomes_total` | `outcome` | Delivery outcomes counted into reports |
| `herald_campaign_engagement_total` | `kind` | engagement events recorded into reports |
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation

from herald.campaign.v1 import campaign_pb2
from herald.type.v1 import platform_pb2

PLATFORMS: dict[int, str] = {
    int(platform_pb2.PLATFORM_IOS): "ios",
    int(platform_pb2.PLATFORM_ANDROID): "android",
    int(platform_pb2.PLATFORM_WEB): "web",
}


def state_name(state: int) -> str:
    return campaign_pb2.CampaignState.Name(state).removeprefix("CAMPAIGN_STATE_")  # type: ignore[arg-type]


class CampaignMetrics:
    def __init__(self, meter: Meter | None = None) -> None:
        meter = meter or NoOpMeter("herald")
        self._meter = meter
        self.state_changes = meter.create_counter(
            "herald.campaign.state_changes", description="Campaigns moved into a state"
        )
        self.targeted = meter.create_counter(
            "herald.campaign.devices.targeted", description="Audience devices that matched"
        )
        self.enqueued = meter.create_counter(
            "herald.campaign.devices.enqueued", description="Notifications handed to Delivery"
        )
        self.suppressed = meter.create_counter(
            "herald.campaign.devices.suppressed", description="Targeted devices not sent to"
        )
        self.renders = meter.create_counter(
            "herald.campaign.renders", description="Messages rendered for a device"
        )
        self.render_errors = meter.create_counter(
            "herald.campaign.render_errors", description="Renders that suppressed the device"
        )
        self.outcomes = meter.create_counter(
            "herald.campaign.outcomes", description="Delivery outcomes counted into reports"
        )
        self.engagement = meter.create_counter(
            "herald.campaign.engagement", description="Engagement events recorded"
        )

    def running(self, count: Callable[[], int]) -> None:
        """Registers the gauge of fan-outs running in this process."""

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(count())

        self._meter.create_observable_gauge(
            "herald.campaign.fanouts_running",
            callbacks=[observe],
            description="Fan-outs this process runs now",
        )

    def state(self, state: int) -> None:
        self.state_changes.add(1, {"state": state_name(state)})

    def batch(self, counters: Mapping[str, int]) -> None:
        """A committed fan-out batch's counters (the same deltas as the report's)."""
        for name, value in counters.items():
            if value <= 0:  # counters only grow; a batch's deltas here never shrink
                continue
            if name.startswith("s:"):
                reason = name[2:]
                self.suppressed.add(value, {"reason": reason})
                if reason in ("TEMPLATE_RENDER_ERROR", "PAYLOAD_TOO_LARGE"):
                    self.render_errors.add(value, {"reason": reason})
            elif name.startswith("p") and ":" in name:
                platform, counter = name[1:].split(":", 1)
                label = {"platform": PLATFORMS.get(int(platform), platform)}
                if counter == "targeted":
                    self.targeted.add(value, label)
                elif counter == "sent":
                    self.enqueued.add(value, label)
