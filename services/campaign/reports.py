"""Report counters: written by the fan-out (targeted, suppressed, sent), by Delivery's
outcomes (delivered, bounced, failed) and by engagement (opened, dismissed,
conversions); read as CampaignReport and CampaignProgress.

Counters live in one hash per campaign (`p<platform>:<name>` per platform,
`s:`/`b:`/`f:`/`c:` + reason for the breakdowns, `h:<platform>` for recipients held
for later). Outcomes and engagement are counted once per notification / event id.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from google.protobuf import timestamp_pb2

from herald.campaign.v1 import report_pb2
from herald.type.v1 import platform_pb2
from services.campaign import keys
from services.core.redis import RedisClient, load_script

SCRIPTS = "services.campaign.scripts"
PLATFORMS = (platform_pb2.PLATFORM_IOS, platform_pb2.PLATFORM_ANDROID, platform_pb2.PLATFORM_WEB)
# How long the per-notification dedupe sets (finals, opened, dismissed, events) live
# after the campaign is final: Delivery keeps its notification records 7 days, so a
# late outcome or open cannot be attributed after that anyway. Without it a 1M-device
# campaign would keep ~50 MB of notification ids in Redis forever.
DEDUPE_TTL_SECONDS = 7 * 86400


class ReportStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis: Any = redis  # redis-py's async stubs do not type bytes replies
        self._outcome: Any = load_script(redis, SCRIPTS, "outcome.lua")
        self._engagement: Any = load_script(redis, SCRIPTS, "engagement.lua")
        self._counters: Any = load_script(redis, SCRIPTS, "counters.lua")
        self.dedupe_ttl_ms = DEDUPE_TTL_SECONDS * 1000

    async def counters(self, campaign_id: str) -> dict[str, int]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.report(campaign_id))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def outcomes(self, items: list[tuple[str, str, str, str, int]]) -> int:
        """(campaign id, notification id, counter, reason, platform) each; returns new ones.

        One script call per campaign of the batch (its keys share the campaign's hash
        tag), so it runs unchanged on Redis Cluster, where redis-py refuses scripts in
        a pipeline; the calls of different campaigns run concurrently.
        """
        by_campaign: dict[str, list[Any]] = defaultdict(list)
        for campaign_id, notification_id, counter, reason, platform in items:
            by_campaign[campaign_id] += [notification_id, counter, reason or "UNKNOWN", platform]
        counted = await asyncio.gather(
            *(
                self._outcome(
                    keys=[keys.finals(cid), keys.report(cid), keys.campaign(cid)],
                    args=[self.dedupe_ttl_ms, *args],
                )
                for cid, args in by_campaign.items()
            )
        )
        return sum(int(x) for x in counted)

    async def add(self, campaign_id: str, counters: dict[str, int]) -> None:
        """Adds deltas to the report in one script (one key: Cluster-safe and atomic)."""
        args: list[Any] = []
        for name, delta in counters.items():
            if delta:
                args += [name, delta]
        if args:
            await self._counters(keys=[keys.report(campaign_id)], args=args)

    async def expire_dedupe(self, campaign_id: str) -> None:
        """Called when the campaign turns final; the scripts renew it on late writes."""
        for key in (
            keys.finals(campaign_id),
            keys.opened(campaign_id),
            keys.dismissed(campaign_id),
            keys.events(campaign_id),
        ):
            await self.redis.pexpire(key, self.dedupe_ttl_ms)

    async def engagement(
        self,
        campaign_id: str,
        event_id: str,
        kind: str,
        notification_id: str,
        conversion: str,
        platform: int,
        ttl_ms: int | None = None,
    ) -> bool:
        """`ttl_ms`: the dedupe sets' expiry once final (longer for a long conversion
        window); the default otherwise."""
        recorded = await self._engagement(
            keys=[
                keys.events(campaign_id),
                keys.opened(campaign_id),
                keys.dismissed(campaign_id),
                keys.report(campaign_id),
                keys.campaign(campaign_id),
            ],
            args=[
                event_id,
                kind,
                notification_id,
                conversion,
                platform,
                max(ttl_ms or 0, self.dedupe_ttl_ms),
            ],
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


def in_flight(c: dict[str, int]) -> int:
    """Sent notifications without a final outcome yet."""
    return c.get("sent", 0) - c.get("delivered", 0) - c.get("bounced", 0) - c.get("failed", 0)


def to_report(
    campaign_id: str, state: int, c: dict[str, int], now_ms: int
) -> report_pb2.CampaignReport:
    sent = c.get("sent", 0)
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
        in_flight=max(0, in_flight(c)),
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
