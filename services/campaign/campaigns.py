"""Campaign lifecycle rules: create (idempotent), read, list, update with a mask,
delete, launch (checks, estimate, due time) and cancel. The fan-out itself is
`fanout.py`, started by `runner.py` when the campaign is due.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import uuid

from google.protobuf import field_mask_pb2

from herald.campaign.v1 import campaign_pb2
from services.campaign import audience as audiences
from services.campaign import preview, schedules
from services.campaign.deps import Deps
from services.campaign.messages import PLATFORMS, CompiledMessage
from services.campaign.recipients import context_of
from services.campaign.runner import Runner
from services.campaign.store import Stored
from services.campaign.templates import TemplateRenderError
from services.campaign.validation import campaign_violations, raise_for
from services.core.errors import (
    FailedPrecondition,
    FieldViolation,
    HeraldError,
    InvalidArgument,
    NotFound,
    Validator,
)
from services.core.trace_context import current_headers

log = logging.getLogger("herald.campaign")
S = campaign_pb2
EDITABLE = (
    "display_name",
    "description",
    "message",
    "audience",
    "schedule",
    "throttle",
    "frequency_cap",
    "conversion_tracking",
)
EDITABLE_WHEN_SCHEDULED = ("display_name", "description")
FINAL = (S.CAMPAIGN_STATE_COMPLETED, S.CAMPAIGN_STATE_CANCELLED, S.CAMPAIGN_STATE_FAILED)
DEFAULT_PAGE, MAX_PAGE = 50, 500
# The estimate answers in well under a second at a million devices (a sample, not a
# scan); this bounds what a launch waits when a dependency is slow.
ESTIMATE_SECONDS = 3.0


def not_found(campaign_id: str) -> NotFound:
    return NotFound(
        "CAMPAIGN_NOT_FOUND",
        f"campaign {campaign_id!r} does not exist",
        {"campaign_id": campaign_id},
    )


def conflict(state: int, action: str) -> FailedPrecondition:
    name = S.CampaignState.Name(state)  # type: ignore[arg-type]
    return FailedPrecondition(
        "CAMPAIGN_STATE_CONFLICT", f"a {name} campaign cannot be {action}", {"state": name}
    )


class Campaigns:
    def __init__(self, deps: Deps, runner: Runner) -> None:
        self.deps = deps
        self.runner = runner

    async def get(self, campaign_id: str) -> Stored:
        stored = await self.deps.store.get(campaign_id) if campaign_id else None
        if stored is None:
            raise not_found(campaign_id)
        return stored

    # -- create --------------------------------------------------------------------------
    async def create(
        self, campaign: campaign_pb2.Campaign, request_id: str, validate_only: bool
    ) -> campaign_pb2.Campaign:
        found = campaign_violations(campaign, self.deps.now())
        if not request_id and not validate_only:
            found.append(FieldViolation("request_id", "is required (a UUID)"))
        raise_for(found)
        await self.deps.identity.app(campaign.app_id)  # APP_NOT_FOUND
        if validate_only:
            out = campaign_pb2.Campaign()
            out.CopyFrom(campaign)
            out.state = S.CAMPAIGN_STATE_DRAFT
            return out
        fingerprint = hashlib.sha256(self.deps.store.definition_bytes(campaign)).hexdigest()[:32]
        campaign_id = uuid.uuid4().hex
        existing = await self.deps.store.claim_request(
            campaign.app_id, request_id, f"{campaign_id}:{fingerprint}"
        )
        if existing is not None:
            earlier_id, _, earlier_print = existing.partition(":")
            if earlier_print != fingerprint:
                raise InvalidArgument(
                    "request_id was used for a different campaign",
                    [FieldViolation("request_id", "was used for a different request")],
                    reason="REQUEST_ID_MISMATCH",
                )
            stored = await self.deps.store.get(earlier_id)
            if stored is not None:
                return stored.campaign
            campaign_id = earlier_id  # the first call stopped before writing: finish it
        new = campaign_pb2.Campaign()
        new.CopyFrom(campaign)
        new.campaign_id = campaign_id
        await self.deps.store.create(new, self.deps.now_ms())
        self.deps.metrics.state(S.CAMPAIGN_STATE_DRAFT)
        return (await self.get(campaign_id)).campaign

    # -- list ------------------------------------------------------------------------------
    async def list(
        self, app_id: str, page_size: int, page_token: str, states: list[int]
    ) -> tuple[list[campaign_pb2.Campaign], str]:
        check = Validator()
        check.require(bool(app_id), "app_id", "is required")
        check.require(0 <= page_size <= MAX_PAGE, "page_size", f"must be 0 to {MAX_PAGE}")
        check.raise_if_any()
        await self.deps.identity.app(app_id)
        before = _read_token(page_token, app_id, states)
        size = page_size or DEFAULT_PAGE
        page: list[campaign_pb2.Campaign] = []
        last: tuple[int, str] | None = before
        more = False
        while len(page) <= size:
            ids = await self.deps.store.list_ids(app_id, last, size * 2)
            if not ids:
                break
            for campaign_id, score in ids:
                last = (score, campaign_id)
                stored = await self.deps.store.get(campaign_id)
                if stored is None:  # deleted between the index and the record: repair
                    await self.deps.store.drop_from_list(app_id, campaign_id)
                    continue
                if states and stored.state not in states:
                    continue
                if len(page) == size:
                    more = True
                    break
                page.append(stored.campaign)
            if more:
                break
        token = ""
        if more and page:
            tail = page[-1]
            token = _token(app_id, states, tail.create_time.ToMilliseconds(), tail.campaign_id)
        return page, token

    # -- update ----------------------------------------------------------------------------
    async def update(
        self, campaign: campaign_pb2.Campaign, mask: field_mask_pb2.FieldMask
    ) -> campaign_pb2.Campaign:
        paths = list(mask.paths)
        bad = [p for p in paths if p.split(".")[0] not in EDITABLE]
        if not paths or bad:
            raise InvalidArgument(
                "the update mask is empty or names a field that cannot be updated",
                [
                    FieldViolation(
                        "update_mask", f"unknown or immutable: {', '.join(bad) or '(empty)'}"
                    )
                ],
                reason="INVALID_UPDATE_MASK",
            )
        stored = await self.get(campaign.campaign_id)
        if stored.state == S.CAMPAIGN_STATE_SCHEDULED:
            if any(p.split(".")[0] not in EDITABLE_WHEN_SCHEDULED for p in paths):
                raise conflict(stored.state, "changed except for display_name and description")
            allowed: tuple[int, ...] = (S.CAMPAIGN_STATE_SCHEDULED, S.CAMPAIGN_STATE_DRAFT)
        elif stored.state == S.CAMPAIGN_STATE_DRAFT:
            allowed = (S.CAMPAIGN_STATE_DRAFT,)
        else:
            raise conflict(stored.state, "updated")
        merged = campaign_pb2.Campaign()
        merged.CopyFrom(stored.campaign)
        try:
            field_mask_pb2.FieldMask(paths=paths).MergeMessage(
                campaign, merged, replace_message_field=True, replace_repeated_field=True
            )
        except ValueError as error:
            raise InvalidArgument(
                "the update mask names an unknown field",
                [FieldViolation("update_mask", str(error))],
                reason="INVALID_UPDATE_MASK",
            ) from None
        raise_for(campaign_violations(merged, self.deps.now()))
        done, state = await self.deps.store.transition(
            stored.campaign.campaign_id,
            allowed,
            None,
            {"proto": self.deps.store.definition_bytes(merged), "update": self.deps.now_ms()},
        )
        if not done:
            if state is None:
                raise not_found(campaign.campaign_id)
            raise conflict(state, "updated")
        return (await self.get(campaign.campaign_id)).campaign

    # -- delete ----------------------------------------------------------------------------
    async def delete(self, campaign_id: str) -> None:
        stored = await self.get(campaign_id)
        done, state = await self.deps.store.delete(stored.campaign)
        if not done:
            if state is None:
                raise not_found(campaign_id)
            raise conflict(state, "deleted (cancel it first)")

    # -- launch ----------------------------------------------------------------------------
    async def launch(self, campaign_id: str, request_id: str) -> tuple[campaign_pb2.Campaign, int]:
        stored = await self.get(campaign_id)
        campaign = stored.campaign
        if stored.state != S.CAMPAIGN_STATE_DRAFT:
            if request_id and stored.launch_request_id == request_id:
                return campaign, stored.estimated
            raise conflict(stored.state, "launched")
        now = self.deps.now()
        if schedules.send_time_passed(campaign.schedule, now):
            raise InvalidArgument(
                "the send time has passed",
                [
                    FieldViolation(
                        "campaign.schedule", "the send time is in the past", "SCHEDULE_INVALID"
                    )
                ],
                reason="SCHEDULE_INVALID",
            )
        targeted = audiences.targeted_platforms(campaign.audience)
        check_payload_sizes(campaign, targeted)
        with_credentials = await self.deps.delivery.platforms_with_credentials(campaign.app_id)
        if targeted and not (targeted & with_credentials):
            raise FailedPrecondition(
                "CREDENTIALS_MISSING",
                "the app has no provider credentials for any platform this campaign targets",
                {"app_id": campaign.app_id},
            )
        estimated = await self.estimate(campaign)
        due = schedules.first_due(campaign.schedule, now)
        state = S.CAMPAIGN_STATE_SCHEDULED if due > now + 1 else S.CAMPAIGN_STATE_SENDING
        now_ms = self.deps.now_ms()
        fields: dict[str, object] = {
            "launch": now_ms,
            "launch_req": request_id,
            "estimated": estimated,
            # The fan-out runs later, maybe in another process: it continues this
            # call's trace, so each notification's trace starts at its launch.
            "trace": current_headers().get("traceparent", ""),
        }
        if state == S.CAMPAIGN_STATE_SENDING:
            fields["start"] = now_ms
        done, before = await self.deps.store.transition(
            campaign_id, (S.CAMPAIGN_STATE_DRAFT,), state, fields
        )
        if not done:
            if before is None:
                raise not_found(campaign_id)
            raise conflict(before, "launched")
        self.deps.metrics.state(state)
        await self.deps.store.set_due(campaign_id, int(due * 1000))
        self.runner.wake()
        return (await self.get(campaign_id)).campaign, estimated

    async def estimate(self, campaign: campaign_pb2.Campaign) -> int:
        """The preview's estimate (preview.py): its cost does not grow with the audience,
        so the launch waits a fraction of a second for it. If Registration or Identity
        cannot answer within ESTIMATE_SECONDS the launch goes on with 0 ("unknown"):
        progress then counts against targeted as the fan-out resolves it."""
        try:
            async with asyncio.timeout(ESTIMATE_SECONDS):
                answer = await preview.estimate(
                    self.deps,
                    campaign.app_id,
                    campaign.audience,
                    campaign.message.background,
                    with_user_ids=False,
                )
            return int(answer.estimated_devices)
        except (HeraldError, TimeoutError) as error:  # an estimate must not block a launch
            reason = error.reason if isinstance(error, HeraldError) else "TIMEOUT"
            log.warning("audience estimate failed", extra={"reason": reason})
            return 0

    # -- cancel ----------------------------------------------------------------------------
    async def cancel(self, campaign_id: str) -> campaign_pb2.Campaign:
        stored = await self.get(campaign_id)
        if stored.state == S.CAMPAIGN_STATE_CANCELLED:
            return stored.campaign
        done, before = await self.deps.store.transition(
            campaign_id,
            (S.CAMPAIGN_STATE_SCHEDULED, S.CAMPAIGN_STATE_SENDING),
            S.CAMPAIGN_STATE_CANCELLED,
            {"complete": self.deps.now_ms()},
            cancel_held=True,
        )
        if not done:
            if before is None:
                raise not_found(campaign_id)
            if before != S.CAMPAIGN_STATE_CANCELLED:
                raise conflict(before, "cancelled")
        else:
            self.deps.metrics.state(S.CAMPAIGN_STATE_CANCELLED)
        await self.deps.store.remove_due(campaign_id)
        await self.deps.reports.expire_dedupe(campaign_id)
        try:
            await self.deps.delivery.cancel(stored.campaign.app_id, campaign_id)
        except HeraldError as error:
            # The worker asks again when it stops; a queued notification of a cancelled
            # campaign is the lesser harm than a cancel that fails.
            log.warning(
                "CancelNotifications failed",
                extra={"campaign_id": campaign_id, "reason": error.reason},
            )
        return (await self.get(campaign_id)).campaign


def check_payload_sizes(campaign: campaign_pb2.Campaign, platforms: set[int]) -> None:
    """Renders the message for each targeted platform with an empty profile (every
    `default:` applies) and rejects a launch whose payload is over a provider's limit."""
    message = CompiledMessage(campaign.message)
    found: list[FieldViolation] = []
    reason = "PAYLOAD_TOO_LARGE"
    for platform in PLATFORMS:
        if platform not in platforms:
            continue
        try:
            rendered = message.render(
                platform, context_of(None, platform, None), campaign.campaign_id
            )
        except TemplateRenderError as error:
            reason = "TEMPLATE_RENDER_ERROR"
            found.append(FieldViolation("campaign.message", str(error), reason))
            continue
        if rendered.too_large:
            found.append(
                FieldViolation(
                    f"campaign.{rendered.largest_field}",
                    f"makes the {_provider(platform)} payload {rendered.size} bytes, over the {rendered.limit}-byte limit",
                    "PAYLOAD_TOO_LARGE",
                )
            )
    if found:
        raise InvalidArgument("the rendered payload is invalid", found, reason=reason)


def _provider(platform: int) -> str:
    return {1: "APNs", 2: "FCM", 3: "Web Push"}.get(platform, "provider")


def _token(app_id: str, states: list[int], score: int, campaign_id: str) -> str:
    raw = json.dumps({"a": app_id, "s": sorted(states), "t": score, "c": campaign_id})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _read_token(token: str, app_id: str, states: list[int]) -> tuple[int, str] | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if data["a"] == app_id and data["s"] == sorted(states):
            return int(data["t"]), str(data["c"])
    except (ValueError, KeyError, TypeError):
        pass
    raise InvalidArgument(
        "the page token was not issued for this request",
        [FieldViolation("page_token", "was not issued by ListCampaigns for these filters")],
        reason="INVALID_PAGE_TOKEN",
    )
