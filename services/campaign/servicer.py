"""The gRPC edge of the Campaign service: proto in, domain call, proto out.

The domain lives in campaigns.py (lifecycle), fanout.py + runner.py (sending),
transactional.py (SendToUsers, SendTest), preview.py (PreviewAudience,
ValidateMessage), engagement.py and reports.py; Redis access in store.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from herald.campaign.v1 import campaign_pb2, campaign_service_pb2, campaign_service_pb2_grpc
from services.campaign.campaigns import FINAL, Campaigns
from services.campaign.clients import DeliveryClient, IdentityClient, RegistrationClient
from services.campaign.clock import Clock
from services.campaign.deps import Deps
from services.campaign.engagement import Engagement
from services.campaign.frequency import FrequencyCaps
from services.campaign.outcomes import OutcomeConsumer
from services.campaign.preview import preview, validate_message
from services.campaign.reports import ReportStore, to_progress, to_report
from services.campaign.runner import Runner
from services.campaign.store import CampaignStore
from services.campaign.telemetry import CampaignMetrics
from services.campaign.transactional import Transactional
from services.core.auth import caller_app, require_app_access
from services.core.server import Runtime

CS = campaign_service_pb2
Context = grpc.aio.ServicerContext[Any, Any]


def build_deps(runtime: Runtime) -> Deps:
    redis = runtime.redis
    return Deps(
        redis=redis,
        store=CampaignStore(redis),
        reports=ReportStore(redis),
        caps=FrequencyCaps(redis),
        registration=RegistrationClient(lambda: runtime.channel("registration")),
        identity=IdentityClient(lambda: runtime.channel("identity")),
        delivery=DeliveryClient(lambda: runtime.channel("delivery")),
        metrics=CampaignMetrics(runtime.metrics.meter),
        tracer=runtime.tracer_provider.get_tracer("herald.campaign"),
    )


class CampaignServicer(campaign_service_pb2_grpc.CampaignServiceServicer):
    def __init__(self, runtime: Runtime, deps: Deps | None = None) -> None:
        self.runtime = runtime
        self.deps = deps or build_deps(runtime)
        self.runner = Runner(self.deps)
        self.outcomes = OutcomeConsumer(self.deps)
        self.campaigns = Campaigns(self.deps, self.runner)
        self.transactional = Transactional(self.deps)
        self.engagement = Engagement(self.deps)
        self.deps.metrics.running(lambda: len(self.runner.running))

    def start(self) -> None:
        self.runner.start()
        self.outcomes.start()

    def use_clock(self, clock: Clock) -> None:
        """Test and demo hook: every schedule, throttle and cap reads this clock."""
        self.deps.clock = clock
        self.runner.wake()

    async def close(self) -> None:
        await self.runner.close()
        await self.outcomes.close()

    async def CreateCampaign(
        self, request: CS.CreateCampaignRequest, context: Context
    ) -> CS.CreateCampaignResponse:
        campaign = await self.campaigns.create(
            request.campaign, request.request_id, request.validate_only
        )
        return CS.CreateCampaignResponse(campaign=campaign)

    async def _check_owner(self, campaign_id: str) -> None:
        """An app key reaches only its own app's campaigns (RPCs that name a campaign by id)."""
        if caller_app():
            stored = await self.campaigns.get(campaign_id)
            require_app_access(stored.campaign.app_id)

    async def GetCampaign(
        self, request: CS.GetCampaignRequest, context: Context
    ) -> CS.GetCampaignResponse:
        await self._check_owner(request.campaign_id)
        return CS.GetCampaignResponse(
            campaign=(await self.campaigns.get(request.campaign_id)).campaign
        )

    async def ListCampaigns(
        self, request: CS.ListCampaignsRequest, context: Context
    ) -> CS.ListCampaignsResponse:
        page, token = await self.campaigns.list(
            request.app_id, request.page_size, request.page_token, [int(s) for s in request.states]
        )
        return CS.ListCampaignsResponse(campaigns=page, next_page_token=token)

    async def UpdateCampaign(
        self, request: CS.UpdateCampaignRequest, context: Context
    ) -> CS.UpdateCampaignResponse:
        await self._check_owner(request.campaign.campaign_id)
        return CS.UpdateCampaignResponse(
            campaign=await self.campaigns.update(request.campaign, request.update_mask)
        )

    async def DeleteCampaign(
        self, request: CS.DeleteCampaignRequest, context: Context
    ) -> CS.DeleteCampaignResponse:
        await self._check_owner(request.campaign_id)
        await self.campaigns.delete(request.campaign_id)
        return CS.DeleteCampaignResponse(campaign_id=request.campaign_id)

    async def LaunchCampaign(
        self, request: CS.LaunchCampaignRequest, context: Context
    ) -> CS.LaunchCampaignResponse:
        await self._check_owner(request.campaign_id)
        campaign, estimated = await self.campaigns.launch(request.campaign_id, request.request_id)
        return CS.LaunchCampaignResponse(campaign=campaign, estimated_devices=estimated)

    async def CancelCampaign(
        self, request: CS.CancelCampaignRequest, context: Context
    ) -> CS.CancelCampaignResponse:
        await self._check_owner(request.campaign_id)
        return CS.CancelCampaignResponse(campaign=await self.campaigns.cancel(request.campaign_id))

    async def GetCampaignReport(
        self, request: CS.GetCampaignReportRequest, context: Context
    ) -> CS.GetCampaignReportResponse:
        await self._check_owner(request.campaign_id)
        stored = await self.campaigns.get(request.campaign_id)
        counters = await self.deps.reports.counters(request.campaign_id)
        return CS.GetCampaignReportResponse(
            report=to_report(request.campaign_id, stored.state, counters, self.deps.now_ms())
        )

    async def WatchCampaign(
        self, request: CS.WatchCampaignRequest, context: Context
    ) -> AsyncIterator[CS.WatchCampaignResponse]:
        await self._check_owner(request.campaign_id)
        interval = 1.0
        if request.HasField("min_interval"):
            interval = max(0.1, request.min_interval.ToMilliseconds() / 1000)
        loop = asyncio.get_running_loop()
        last_sent, last_at = None, loop.time()
        while True:
            stored = await self.campaigns.get(request.campaign_id)
            counters = await self.deps.reports.counters(request.campaign_id)
            report = to_report(request.campaign_id, stored.state, counters, self.deps.now_ms())
            now = loop.time()
            rate = (
                0.0 if last_sent is None else (report.sent - last_sent) / max(1e-3, now - last_at)
            )
            last_sent, last_at = report.sent, now
            yield CS.WatchCampaignResponse(
                progress=to_progress(report, stored.estimated, stored.resolved, rate)
            )
            if stored.state in FINAL:
                return
            await asyncio.sleep(interval)

    async def PreviewAudience(
        self, request: CS.PreviewAudienceRequest, context: Context
    ) -> CS.PreviewAudienceResponse:
        return await preview(self.deps, request.app_id, request.audience, request.background)

    async def ValidateMessage(
        self, request: CS.ValidateMessageRequest, context: Context
    ) -> CS.ValidateMessageResponse:
        return await validate_message(self.deps, request)

    async def SendToUsers(
        self, request: CS.SendToUsersRequest, context: Context
    ) -> CS.SendToUsersResponse:
        return await self.transactional.send_to_users(request)

    async def SendTest(self, request: CS.SendTestRequest, context: Context) -> CS.SendTestResponse:
        return await self.transactional.send_test(request)

    async def RecordEngagement(
        self, request: CS.RecordEngagementRequest, context: Context
    ) -> CS.RecordEngagementResponse:
        return await self.engagement.record(request)


__all__ = ["CampaignServicer", "campaign_pb2"]
