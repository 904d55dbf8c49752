"""RecordEngagement: opens, dismissals, receipts and conversions from mobile gateways.

An event is attributed to a campaign by its campaign_id, else by its notification id
(Delivery.GetNotification names the campaign). Each event id is recorded once; opens
and dismissals count distinct notifications; a conversion counts when its name is one
the campaign tracks and it happened within the window after the campaign started.
"""

from __future__ import annotations

import logging

from herald.campaign.v1 import campaign_pb2, campaign_service_pb2, report_pb2
from herald.type.v1 import error_pb2
from services.campaign.deps import Deps
from services.core.errors import FieldViolation, HeraldError, InvalidArgument, NotFound

log = logging.getLogger("herald.campaign.engagement")
CS = campaign_service_pb2
R = report_pb2
MAX_EVENTS = 1000
DEFAULT_WINDOW = 3 * 86400
KINDS = {
    R.ENGAGEMENT_KIND_OPENED: "opened",
    R.ENGAGEMENT_KIND_DISMISSED: "dismissed",
    R.ENGAGEMENT_KIND_CONVERSION: "conversion",
    R.ENGAGEMENT_KIND_RECEIVED: "received",
}


def _problems(event: report_pb2.EngagementEvent) -> list[error_pb2.FieldViolation]:
    found = []
    for ok, path, what in (
        (
            bool(event.event_id) and len(event.event_id) <= 200,
            "event_id",
            "is required (at most 200 characters)",
        ),
        (bool(event.app_id), "app_id", "is required"),
        (event.kind in KINDS, "kind", "must be OPENED, DISMISSED, CONVERSION or RECEIVED"),
        (event.HasField("event_time"), "event_time", "is required"),
        (
            event.kind != R.ENGAGEMENT_KIND_CONVERSION or bool(event.conversion_event),
            "conversion_event",
            "is required for a conversion",
        ),
    ):
        if not ok:
            found.append(error_pb2.FieldViolation(field=path, description=what))
    return found


class Engagement:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._campaign_of: dict[str, str] = {}  # notification id -> campaign id (bounded)

    async def record(self, request: CS.RecordEngagementRequest) -> CS.RecordEngagementResponse:
        if not 1 <= len(request.events) <= MAX_EVENTS:
            raise InvalidArgument(
                f"send 1 to {MAX_EVENTS} events",
                [FieldViolation("events", f"must hold 1 to {MAX_EVENTS} events")],
                reason="BATCH_TOO_LARGE",
            )
        response = CS.RecordEngagementResponse()
        for event in request.events:
            result = response.results.add(event_id=event.event_id)
            problems = _problems(event)
            if problems:
                result.status = CS.ENGAGEMENT_STATUS_REJECTED
                result.error.CopyFrom(
                    error_pb2.ItemError(
                        code=3,
                        reason="INVALID_ARGUMENT",
                        message="the event has invalid fields",
                        field_violations=problems,
                    )
                )
                continue
            try:
                recorded = await self._one(event)
            except HeraldError as error:
                result.status = CS.ENGAGEMENT_STATUS_REJECTED
                result.error.CopyFrom(
                    error_pb2.ItemError(
                        code=error.code.value[0], reason=error.reason, message=error.message
                    )
                )
                continue
            result.status = (
                CS.ENGAGEMENT_STATUS_RECORDED if recorded else CS.ENGAGEMENT_STATUS_DUPLICATE
            )
            if recorded:
                response.recorded_count += 1
                self.deps.metrics.engagement.add(1, {"kind": KINDS[event.kind]})
            else:
                response.duplicate_count += 1
        return response

    async def _campaign_id(self, event: report_pb2.EngagementEvent) -> str:
        if event.campaign_id:
            return event.campaign_id
        if not event.notification_id:
            return ""
        cached = self._campaign_of.get(event.notification_id)
        if cached is not None:
            return cached
        try:
            notification = await self.deps.delivery.notification(event.notification_id)
        except HeraldError as error:
            log.info("event not attributed", extra={"reason": error.reason})
            return ""
        if len(self._campaign_of) > 100_000:
            self._campaign_of.clear()
        self._campaign_of[event.notification_id] = notification.campaign_id
        return notification.campaign_id

    async def _one(self, event: report_pb2.EngagementEvent) -> bool:
        campaign_id = await self._campaign_id(event)
        stored = await self.deps.store.get(campaign_id) if campaign_id else None
        if stored is None or stored.campaign.app_id != event.app_id:
            if event.campaign_id:
                raise NotFound(
                    "CAMPAIGN_NOT_FOUND",
                    "the campaign does not exist in this app",
                    {"campaign_id": event.campaign_id},
                )
            return await self.deps.reports.unattributed_event(event.app_id, event.event_id)
        conversion = ""
        if event.kind == R.ENGAGEMENT_KIND_CONVERSION:
            conversion = self._counted_conversion(stored.campaign, event)
        tracking = stored.campaign.conversion_tracking
        window = tracking.window.seconds if tracking.HasField("window") else DEFAULT_WINDOW
        return await self.deps.reports.engagement(
            campaign_id,
            event.event_id,
            KINDS[event.kind],
            event.notification_id,
            conversion,
            0,
            # Dedupe sets outlive the conversion window by a day after completion.
            ttl_ms=(window + 86400) * 1000,
        )

    @staticmethod
    def _counted_conversion(
        campaign: campaign_pb2.Campaign, event: report_pb2.EngagementEvent
    ) -> str:
        tracking = campaign.conversion_tracking
        if event.conversion_event not in tracking.event_names:
            return ""
        window = tracking.window.seconds if tracking.HasField("window") else DEFAULT_WINDOW
        started = campaign.start_time.ToMilliseconds() or campaign.launch_time.ToMilliseconds()
        happened = event.event_time.ToMilliseconds()
        if started and not started <= happened + 60_000 <= started + window * 1000 + 60_000:
            return ""  # outside the window (a minute of clock skew allowed either way)
        return event.conversion_event
