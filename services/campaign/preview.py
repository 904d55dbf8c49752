"""PreviewAudience (a quick estimate) and ValidateMessage (issues and rendered payloads).

The estimate costs the same at a thousand devices and at ten million:

- Registration's CountAudience of the pushed-down query, in its estimate mode (whole
  shards read until ~5,000 devices, scaled; exact when the app holds no more);
- when the audience has no filter, that query *is* the audience (users_only and the
  reachability are pushed down), so Registration's answer is the preview;
- otherwise the whole filter is evaluated on a sample: the first SAMPLE devices of
  StreamAudience, with their users from Identity. Devices are spread over shards by a
  hash of their id, but within a shard they stream in id order, which may follow age
  (UUIDv7, ULID, counters): so on a big app the stream is thinned to one hash
  partition, sized for the sample to span SAMPLE_SHARDS whole shards rather than the
  low ids of one. The match ratio scales Registration's count;
  users are the matching user-bound devices divided by the devices per user of the
  pushed-down audience (a user with four devices is not four users).

`estimate` is also LaunchCampaign's estimate (estimated_targeted of the progress).
"""

from __future__ import annotations

import math
from collections import Counter
from contextlib import aclosing
from typing import Any

from google.protobuf import json_format

from herald.campaign.v1 import audience_pb2, campaign_service_pb2, push_message_pb2
from herald.registration.v1 import device_pb2, registration_service_pb2
from services.campaign import audience as audiences
from services.campaign.deps import Deps
from services.campaign.messages import PLATFORMS, CompiledMessage
from services.campaign.recipients import RESERVED_NAMES, context_of
from services.campaign.templates import TemplateRenderError
from services.campaign.validation import message_violations
from services.core.errors import NotFound

SAMPLE = 2000
SAMPLE_SHARDS = 2
REGISTRATION_SHARDS = 256  # an app's device shards in Registration (docs/registration.md)
SAMPLE_USER_IDS = 10
ERROR = campaign_service_pb2.ISSUE_SEVERITY_ERROR
WARNING = campaign_service_pb2.ISSUE_SEVERITY_WARNING
Preview = campaign_service_pb2.PreviewAudienceResponse


async def preview(
    deps: Deps, app_id: str, audience: audience_pb2.Audience, background: bool
) -> Preview:
    audiences.raise_if_invalid(audience)
    await deps.identity.app(app_id)
    return await estimate(deps, app_id, audience, background, with_user_ids=True)


async def estimate(
    deps: Deps,
    app_id: str,
    audience: audience_pb2.Audience,
    background: bool,
    with_user_ids: bool,
) -> Preview:
    """The audience's estimated size (module docstring); `with_user_ids`: also a few
    user ids of the audience (a preview shows them; a launch does not need them)."""
    query = audiences.registration_query(app_id, audience, background)
    if query is None:
        return Preview(exact=True)
    counted = await deps.registration.count(query)
    compiled = audiences.CompiledAudience(audience, background)
    if compiled.device_only:
        answer = Preview(
            estimated_devices=counted.device_count,
            estimated_users=counted.user_count,
            exact=counted.exact,
            platform_estimates=[
                campaign_service_pb2.PlatformEstimate(
                    platform=c.platform, estimated_devices=c.count
                )
                for c in counted.platform_counts
            ],
        )
        if with_user_ids and counted.user_count:
            answer.sample_user_ids.extend(await _first_user_ids(deps, query))
        return answer
    return await _sampled(deps, query, compiled, counted)


async def _first_user_ids(deps: Deps, query: registration_service_pb2.AudienceQuery) -> list[str]:
    """A few user ids from the audience's first batch (shard 0)."""
    async with aclosing(deps.registration.stream_audience(query, "", 500)) as stream:
        async for response in stream:
            return sorted({d.user_id for d in response.devices if d.user_id})[:SAMPLE_USER_IDS]
    return []


async def _sampled(
    deps: Deps,
    query: registration_service_pb2.AudienceQuery,
    compiled: audiences.CompiledAudience,
    counted: registration_service_pb2.CountAudienceResponse,
) -> Preview:
    streamed = bound = 0
    matched: list[device_pb2.AudienceDevice] = []
    exhausted = True
    count = sample_partitions(counted.device_count)
    partition = (0, count) if count > 1 else None
    stream_of = deps.registration.stream_audience(query, "", 500, partition)
    async with aclosing(stream_of) as stream:
        async for response in stream:
            devices = list(response.devices)
            streamed += len(devices)
            bound += sum(1 for d in devices if d.user_id)
            matched += await _matching(deps, compiled, devices)
            if streamed >= SAMPLE:
                exhausted = False
                break
    if exhausted and partition is None:  # every device was evaluated: no scaling
        scale, users = 1.0, float(len({d.user_id for d in matched if d.user_id}))
    else:
        scale = counted.device_count / streamed if streamed else 0.0
        # Registration's users per user-bound device (its user_count is a proper
        # distinct-user estimate); the stream's share of bound devices stands in for
        # the audience's.
        bound_devices = counted.device_count * bound / streamed
        per_device = counted.user_count / bound_devices if bound_devices else 0.0
        users = sum(1 for d in matched if d.user_id) * scale * per_device
    users_seen = sorted({d.user_id for d in matched if d.user_id})
    per_platform = Counter(d.platform for d in matched)
    return Preview(
        estimated_devices=round(len(matched) * scale),
        # At least the users seen; never more users than devices.
        estimated_users=min(round(len(matched) * scale), max(len(users_seen), round(users))),
        exact=exhausted and partition is None,
        platform_estimates=[
            campaign_service_pb2.PlatformEstimate(platform=p, estimated_devices=round(n * scale))
            for p, n in sorted(per_platform.items())
        ],
        sample_user_ids=users_seen[:SAMPLE_USER_IDS],
    )


def sample_partitions(devices: int) -> int:
    """How many hash partitions to split the stream into, so that SAMPLE devices of one
    are SAMPLE_SHARDS whole shards' slices and a sliver of the next (1, no split, up to
    256,000 devices, where SAMPLE devices already span SAMPLE_SHARDS shards; 4 at a
    million). More shards would cost Registration more reads for little gain."""
    per_shard = devices / REGISTRATION_SHARDS
    return max(1, min(REGISTRATION_SHARDS, math.ceil(per_shard * SAMPLE_SHARDS / SAMPLE)))


async def _matching(
    deps: Deps, compiled: audiences.CompiledAudience, devices: list[device_pb2.AudienceDevice]
) -> list[device_pb2.AudienceDevice]:
    """The devices the whole filter holds for, with their users as the fan-out sees them."""
    user_ids = {d.user_id for d in devices if d.user_id}
    users = await deps.identity.users(user_ids) if compiled.needs_user else {}
    any_app = (
        await deps.registration.push_enabled_any_app(user_ids, deps.tuning.users_concurrency)
        if compiled.needs_any_app
        else {}
    )
    return [
        device
        for device in devices
        if compiled.matches(
            audiences.Recipient(device, users.get(device.user_id), any_app.get(device.user_id))
        )
    ]


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
