"""PreviewAudience (a quick estimate) and ValidateMessage (issues and rendered payloads).

The estimate counts the pushed-down query exactly in Registration, then evaluates the
whole filter on a sample of the stream (the first SAMPLE devices, spread over shards by
hash): small audiences are exact, large ones scaled by the sample's match ratio.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from google.protobuf import json_format

from herald.campaign.v1 import audience_pb2, campaign_service_pb2, push_message_pb2
from services.campaign import audience as audiences
from services.campaign.deps import Deps
from services.campaign.messages import PLATFORMS, CompiledMessage
from services.campaign.recipients import RESERVED_NAMES, context_of
from services.campaign.templates import TemplateRenderError
from services.campaign.validation import message_violations
from services.core.errors import NotFound

SAMPLE = 2000
ERROR = campaign_service_pb2.ISSUE_SEVERITY_ERROR
WARNING = campaign_service_pb2.ISSUE_SEVERITY_WARNING


async def preview(
    deps: Deps, app_id: str, audience: audience_pb2.Audience, background: bool
) -> campaign_service_pb2.PreviewAudienceResponse:
    audiences.raise_if_invalid(audience)
    await deps.identity.app(app_id)
    query = audiences.registration_query(app_id, audience, background)
    if query is None:
        return campaign_service_pb2.PreviewAudienceResponse(exact=True)
    total = int((await deps.registration.count(query)).device_count)
    compiled = audiences.CompiledAudience(audience, background)
    streamed = 0
    matched: list[Any] = []
    async for response in deps.registration.stream_audience(query, "", 500):
        devices = list(response.devices)
        streamed += len(devices)
        users = (
            await deps.identity.users({d.user_id for d in devices if d.user_id})
            if compiled.needs_user
            else {}
        )
        any_app: dict[str, bool] = {}
        if compiled.needs_any_app:
            for user_id in {d.user_id for d in devices if d.user_id}:
                any_app[user_id] = (
                    await deps.registration.user_devices(user_id)
                ).push_enabled_any_app
        for device in devices:
            recipient = audiences.Recipient(
                device, users.get(device.user_id), any_app.get(device.user_id)
            )
            if compiled.matches(recipient):
                matched.append(device)
        if streamed >= SAMPLE:
            break
    exact = streamed >= total or streamed < SAMPLE
    scale = 1.0 if exact or not streamed else total / streamed
    users_seen = {d.user_id for d in matched if d.user_id}
    per_platform = Counter(d.platform for d in matched)
    return campaign_service_pb2.PreviewAudienceResponse(
        estimated_devices=round(len(matched) * scale),
        estimated_users=round(len(users_seen) * scale),
        exact=exact,
        platform_estimates=[
            campaign_service_pb2.PlatformEstimate(platform=p, estimated_devices=round(n * scale))
            for p, n in sorted(per_platform.items())
        ],
        sample_user_ids=sorted(users_seen)[:10],
    )


async def validate_message(
    deps: Deps, request: campaign_service_pb2.ValidateMessageRequest
) -> campaign_service_pb2.ValidateMessageResponse:
    await deps.identity.app(request.app_id)
    user: dict[str, Any] | None = None
    if request.sample_user_id:
        found = await deps.identity.users([request.sample_user_id])
        if request.sample_user_id not in found:
            raise NotFound(
                "USER_NOT_FOUND",
                "the sample user does not exist",
                {"user_id": request.sample_user_id},
            )
        user = found[request.sample_user_id]
    elif request.HasField("sample_attributes"):
        user = {"attributes": json_format.MessageToDict(request.sample_attributes)}
    event = (
        json_format.MessageToDict(request.event_properties)
        if request.HasField("event_properties")
        else {}
    )
    return check_message(request.message, user, event)


def check_message(
    message: push_message_pb2.PushMessage, user: dict[str, Any] | None, event: dict[str, Any]
) -> campaign_service_pb2.ValidateMessageResponse:
    response = campaign_service_pb2.ValidateMessageResponse()
    compiled = CompiledMessage(message)
    for violation in message_violations(message):
        problem = compiled.problems.get(violation.field)
        response.issues.add(
            field=violation.field,
            line=problem.line if problem else 0,
            column=problem.column if problem else 0,
            reason=violation.reason or "INVALID_ARGUMENT",
            description=violation.description,
            severity=ERROR,
        )
    known = set((user or {}).get("attributes") or {}) | set(RESERVED_NAMES)
    for name in sorted(compiled.variables() - known):
        response.issues.add(
            field="message",
            reason="UNKNOWN_VARIABLE",
            description=f"{{{{ {name} }}}} is not an attribute of the sample user; it renders empty unless a default applies",
            severity=WARNING,
        )
    if not compiled.problems:
        for platform in PLATFORMS:
            try:
                rendered = compiled.render(platform, context_of(None, platform, user, event))
            except TemplateRenderError as error:
                response.issues.add(
                    field="message",
                    reason="TEMPLATE_RENDER_ERROR",
                    description=str(error),
                    severity=ERROR,
                )
                continue
            response.rendered_payloads.add(
                platform=platform,
                payload_json=rendered.payload_json,
                size_bytes=rendered.size,
                limit_bytes=rendered.limit,
            )
            if rendered.too_large:
                response.issues.add(
                    field=rendered.largest_field,
                    reason="PAYLOAD_TOO_LARGE",
                    description=f"the payload is {rendered.size} bytes, over the {rendered.limit}-byte limit",
                    severity=ERROR,
                )
    response.valid = not any(issue.severity == ERROR for issue in response.issues)
    return response
