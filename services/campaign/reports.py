"""Report counters: written by the fan-out (targeted, suppressed, sent), by Delivery's
outcomes (delivered, bounced, failed) and by engagement (opened, dismissed,
conversions); read as CampaignReport and CampaignProgress.

Counters live in one hash per campaign (`p<platform>:<name>` per platform,
`s:`/`b:`/`f:`/`c:` + reason for the breakdowns, `h:<platform>` for recipients held
for later). Outcomes and engagement are counted once per notification / event id.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from herald.campaign.v1 import report_pb2
from herald.type.v1 import platform_pb2
from services.campaign import keys
from services.core.redis import RedisClient, load_script

SCRIPTS = "services.campaign.scripts"
PLATFORMS = (platform_pb2.PLATFORM_IOS, platform_pb2.PLATFORM_ANDROID, platform_pb2.PLATFORM_WEB)


class ReportStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis: Any = redis  # redis-py's async stubs do not type bytes replies
        self._outcome: Any = load_script(redis, SCRIPTS, "outcome.lua")
        self._engagement: Any = load_script(redis, SCRIPTS, "engagement.lua")

    async def counters(self, campaign_id: str) -> dict[str, int]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.report(campaign_id))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def outcomes(self, items: list[tuple[str, str, str, str, int]]) -> int:
        """(campaign id, notification id, counter, reason, platform) each; returns new ones."""
        if not items:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for campaign_id, notification_id, counter, reason, platform in items:
            await self._outcome(
                keys=[keys.finals(campaign_id), keys.report(campaign_id)],
                args=[notification_id, counter, reason or "UNKNOWN", platform],
                client=pipe,
            )
        return sum(int(x) for x in await pipe.execute())

    async def engagement(
        self,
        campaign_id: str,
        event_id: str,
        kind: str,
        notification_id: str,
        conversion: str,
        platform: int,
    ) -> bool:
        recorded = await self._engagement(
            keys=[
                keys.events(campaign_id),
                keys.opened(campaign_id),
                keys.dismissed(campaign_id),
                keys.report(campaign_id),
            ],
            args=[event_id, kind, notification_id, conversion, platform],
        )
        return bool(recorded)

    async def unattributed_event(self, app_id: str, event_id: str) -> bool:
        """Dedupe for events no campaign claims (kept 30 days)."""
        return bool(
            await self.redis.set(keys.app_event(app_id, event_id), 1, nx=True, ex=30 * 86400)
        )


def _by_reason(counters: dict[str, int], prefix: str) -> list[report_pb2.ReasonCount]:
    found = [
        report_pb2.ReasonCount(reason=name[len(prefix) :], count=value)
        for name, value in counters.items()
        if name.startswith(prefix) and value
    ]
    return sorted(found, key=lambda r: (-r.count, r.reason))


def to_report(
    campaign_id: str, state: int, c: dict[str, int], now_ms: int
) -> report_pb2.CampaignReport:
    sent = c.get("sent", 0)
    finals = c.get("delivered", 0) + c.get("bounced", 0) + c.get("failed", 0)
    targeted, suppressed = c.get("targeted", 0), c.get("suppressed", 0)
    report = report_pb2.CampaignReport(
        campaign_id=campaign_id,
        state=state,  # type: ignore[arg-type]
        targeted=targeted,
        suppressed=suppressed,
        suppressed_by_reason=_by_reason(c, "s:"),
        sent=sent,
        delivered=c.get("delivered", 0),
        bounced=c.get("bounced", 0),
        bounced_by_reason=_by_reason(c, "b:"),
        failed=c.get("failed", 0),
        failed_by_reason=_by_reason(c, "f:"),
        in_flight=max(0, sent - finals),
        pending=max(0, targeted - suppressed - sent),
        opened=c.get("opened", 0),
        dismissed=c.get("dismissed", 0),
        conversions=c.get("conversions", 0),
        conversions_by_event=_by_reason(c, "c:"),
    )
    for platform in PLATFORMS:
        p = f"p{platform}:"
        if not c.get(p + "targeted", 0):
            continue
        report.platform_reports.add(
            platform=platform,
            targeted=c.get(p + "targeted", 0),
            suppressed=c.get(p + "suppressed", 0),
            sent=c.get(p + "sent", 0),
            delivered=c.get(p + "delivered", 0),
            bounced=c.get(p + "bounced", 0),
            failed=c.get(p + "failed", 0),
            opened=c.get(p + "opened", 0),
        )
    report.report_time.CopyFrom(_ts(now_ms))
    return report


def _ts(ms: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromMilliseconds(ms)
    return out


def to_progress(
    report: report_pb2.CampaignReport, estimated: int, resolved: bool, send_rate: float
) -> report_pb2.CampaignProgress:
    denominator = report.targeted if resolved else max(estimated, report.targeted)
    done = report.sent + report.suppressed
    fraction = (
        1.0 if denominator == 0 and resolved else (done / denominator if denominator else 0.0)
    )
    progress = report_pb2.CampaignProgress(
        campaign_id=report.campaign_id,
        state=report.state,
        estimated_targeted=estimated,
        audience_resolved=resolved,
        targeted=report.targeted,
        suppressed=report.suppressed,
        sent=report.sent,
        delivered=report.delivered,
        bounced=report.bounced,
        failed=report.failed,
        send_rate=send_rate,
        fraction_complete=min(1.0, fraction),
    )
    progress.snapshot_time.CopyFrom(report.report_time)
    return progress
