"""Transactional sends (SendToUsers) and test sends (SendTest).

Every reachable device of each user receives the message, rendered with the user's
attributes and the event properties. Without wait_for_results the notifications are
enqueued (one Enqueue); with it, each device goes through Delivery.Send and its
provider answer is returned. A replayed request_id returns the first answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from herald.campaign.v1 import campaign_pb2, campaign_service_pb2, push_message_pb2
from herald.delivery.v1 import notification_pb2
from herald.registration.v1 import device_pb2
from herald.type.v1 import error_pb2, platform_pb2, push_options_pb2
from services.campaign import keys
from services.campaign.deps import Deps
from services.campaign.messages import CompiledMessage
from services.campaign.recipients import FREQUENCY_CAPPED, prepare
from services.campaign.store import Stored
from services.campaign.validation import message_violations, raise_for
from services.core.errors import (
    FailedPrecondition,
    FieldViolation,
    HeraldError,
    InvalidArgument,
    NotFound,
)

CS = campaign_service_pb2
MAX_USERS = 1000
NAMESPACE = uuid.UUID("6f1c1d2a-37f4-4e43-8f0d-1b9a6f2f4c11")
REPLAY_TTL = 86400
FOREGROUND = platform_pb2.PUSH_CAPABILITY_FOREGROUND
NONE = platform_pb2.PUSH_CAPABILITY_NONE


def audience_device(device: device_pb2.Device) -> device_pb2.AudienceDevice:
    return device_pb2.AudienceDevice(
        app_id=device.app_id,
        device_id=device.device_id,
        platform=device.platform,
        token=device.token,
        apns_environment=device.apns_environment,
        user_id=device.user_id,
        capability=device.capability,
        provisional=device.provisional,
        locale=device.locale,
        time_zone=device.time_zone,
        app_version=device.app_version,
    )


def reachable(device: device_pb2.Device, background: bool) -> bool:
    if not device.HasField("token") or device.capability == NONE:
        return False
    return background or device.capability == FOREGROUND or device.provisional


def _item_error(error: HeraldError) -> error_pb2.ItemError:
    return error_pb2.ItemError(code=error.code.value[0], reason=error.reason, message=error.message)


def _error(code: int, reason: str, message: str) -> error_pb2.ItemError:
    return error_pb2.ItemError(code=code, reason=reason, message=message)


class Transactional:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def send_to_users(self, request: CS.SendToUsersRequest) -> CS.SendToUsersResponse:
        found = [
            FieldViolation(v.field, v.description, v.reason)
            for v in message_violations(request.message)
        ]
        if not request.app_id:
            found.append(FieldViolation("app_id", "is required"))
        if not request.request_id:
            found.append(FieldViolation("request_id", "is required (a UUID)"))
        if request.HasField("timeout") and not 0 <= request.timeout.seconds <= 60:
            found.append(FieldViolation("timeout", "must be at most 60 s"))
        if not 1 <= len(request.user_ids) <= MAX_USERS:
            raise InvalidArgument(
                f"send to 1 to {MAX_USERS} users",
                [FieldViolation("user_ids", f"must hold 1 to {MAX_USERS} ids")],
                reason="BATCH_TOO_LARGE",
            )
        raise_for(found, "the request has invalid fields")
        fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
        replay_key = keys.send_request(request.app_id, request.request_id)
        stored: bytes | None = await self.deps.redis.get(replay_key)
        if stored is not None:
            if stored[:64].decode() != fingerprint:
                raise InvalidArgument(
                    "request_id was used for a different request",
                    [FieldViolation("request_id", "was used for a different request")],
                    reason="REQUEST_ID_MISMATCH",
                )
            return CS.SendToUsersResponse.FromString(stored[64:])
        await self.deps.identity.app(request.app_id)
        if request.campaign_id:  # reports of an unknown campaign would be orphans
            await self._campaign_of_app(request.app_id, request.campaign_id)
        response = await self._send(request)
        await self.deps.redis.set(
            replay_key, fingerprint.encode() + response.SerializeToString(), ex=REPLAY_TTL
        )
        return response

    async def _campaign_of_app(self, app_id: str, campaign_id: str) -> Stored:
        """The stored campaign; NOT_FOUND when it does not exist in this app (a campaign
        of another app is not named as such: its id says nothing to this caller)."""
        stored = await self.deps.store.get(campaign_id)
        if stored is None or stored.campaign.app_id != app_id:
            raise NotFound(
                "CAMPAIGN_NOT_FOUND",
                "the campaign does not exist in this app",
                {"campaign_id": campaign_id},
            )
        return stored

    async def _send(self, request: CS.SendToUsersRequest) -> CS.SendToUsersResponse:
        message = CompiledMessage(request.message)
        event = (
            json_format.MessageToDict(request.event_properties)
            if request.HasField("event_properties")
            else {}
        )
        users = await self.deps.identity.users(request.user_ids)
        devices = await asyncio.gather(
            *(
                self._devices(request.app_id, u, request.message.background)
                for u in request.user_ids
            )
        )
        capped: set[str] = set()
        if request.apply_frequency_cap and request.campaign_id:
            stored = await self.deps.store.get(request.campaign_id)
            if stored is not None and stored.campaign.HasField("frequency_cap"):
                listed = [u for u in request.user_ids if u in users]
                allowed = await self.deps.caps.allow(
                    request.app_id,
                    listed,
                    stored.campaign.frequency_cap,
                    f"tx:{request.request_id}",
                    self.deps.now_ms(),
                )
                capped = set(listed) - allowed
        response = CS.SendToUsersResponse()
        pending: list[tuple[CS.DeviceSendResult, notification_pb2.Notification]] = []
        for user_id, user_devices in zip(request.user_ids, devices, strict=True):
            result = response.results.add(user_id=user_id)
            if user_id not in users:
                result.error.CopyFrom(_error(5, "USER_NOT_FOUND", "no user has this external id"))
            elif not user_devices:
                result.error.CopyFrom(
                    _error(9, "USER_NOT_REACHABLE", "the user has no reachable device in this app")
                )
            elif user_id in capped:
                result.error.CopyFrom(
                    _error(9, FREQUENCY_CAPPED, "the user reached the frequency cap")
                )
            else:
                for device in user_devices:
                    item = result.devices.add(
                        app_id=device.app_id, device_id=device.device_id, platform=device.platform
                    )
                    prepared = prepare(
                        message,
                        device,
                        users[user_id],
                        campaign_id=request.campaign_id,
                        idempotency_key=f"{request.request_id}:{device.device_id}",
                        event=event,
                    )
                    if prepared.notification is None:
                        item.error.CopyFrom(_error(3, prepared.suppressed, prepared.detail))
                    else:
                        pending.append((item, prepared.notification))
                if (
                    result.devices
                    and all(d.HasField("error") for d in result.devices)
                    and all(d.error.reason == "TEMPLATE_RENDER_ERROR" for d in result.devices)
                ):
                    result.error.CopyFrom(
                        _error(3, "TEMPLATE_RENDER_ERROR", result.devices[0].error.message)
                    )
        if request.wait_for_results:
            timeout = (
                float(request.timeout.seconds)
                if request.HasField("timeout") and request.timeout.seconds
                else 10.0
            )
            await self._send_now(pending, request.request_id, timeout)
        else:
            await self._enqueue(pending, request.request_id)
        if request.campaign_id:
            await self._attribute(request.campaign_id, response)
        return response

    async def _devices(
        self, app_id: str, user_id: str, background: bool
    ) -> list[device_pb2.AudienceDevice]:
        answer = await self.deps.registration.user_devices(user_id, app_id)
        return [audience_device(d) for d in answer.devices if reachable(d, background)]

    async def _enqueue(
        self,
        pending: list[tuple[CS.DeviceSendResult, notification_pb2.Notification]],
        request_id: str,
    ) -> None:
        for start in range(0, len(pending), 1000):
            part = pending[start : start + 1000]
            answer = await self.deps.delivery.enqueue(
                [n for _, n in part], str(uuid.uuid5(NAMESPACE, f"{request_id}:{start}"))
            )
            for (item, _), result in zip(part, answer.results, strict=False):
                if result.HasField("error") and result.error.reason:
                    item.error.CopyFrom(result.error)
                else:
                    item.notification_id = result.notification_id
                    item.outcome = push_options_pb2.DELIVERY_OUTCOME_QUEUED

    async def _send_now(
        self,
        pending: list[tuple[CS.DeviceSendResult, notification_pb2.Notification]],
        request_id: str,
        wait: float,
    ) -> None:
        limit = asyncio.Semaphore(32)

        async def one(
            item: CS.DeviceSendResult, notification: notification_pb2.Notification
        ) -> None:
            async with limit:
                try:
                    answer = await self.deps.delivery.send(
                        notification,
                        str(uuid.uuid5(NAMESPACE, f"{request_id}:{notification.device_id}")),
                        wait,
                    )
                except HeraldError as error:
                    item.error.CopyFrom(_item_error(error))
                    return
                fill(item, answer.results[0] if answer.results else None)

        await asyncio.gather(*(one(item, n) for item, n in pending))

    async def _attribute(self, campaign_id: str, response: CS.SendToUsersResponse) -> None:
        counts: dict[str, int] = {}
        for result in response.results:
            for device in result.devices:
                p = f"p{device.platform}:"
                for name in (
                    ("targeted", "sent")
                    if not device.HasField("error")
                    else ("targeted", "suppressed")
                ):
                    counts[name] = counts.get(name, 0) + 1
                    counts[p + name] = counts.get(p + name, 0) + 1
                if device.HasField("error"):
                    counts[f"s:{device.error.reason}"] = (
                        counts.get(f"s:{device.error.reason}", 0) + 1
                    )
        await self.deps.reports.add(campaign_id, counts)

    # -- SendTest ------------------------------------------------------------------------
    async def send_test(self, request: CS.SendTestRequest) -> CS.SendTestResponse:
        source = request.WhichOneof("source")
        target = request.WhichOneof("target")
        found: list[FieldViolation] = []
        if not request.app_id:
            found.append(FieldViolation("app_id", "is required"))
        if source is None:
            found.append(FieldViolation("source", "set campaign_id or message"))
        if target is None:
            found.append(FieldViolation("target", "set user_id or device_id"))
        if source == "message":
            found += message_violations(request.message)
        raise_for(found, "the request has invalid fields")
        await self.deps.identity.app(request.app_id)
        message: push_message_pb2.PushMessage = request.message
        campaign_id = ""
        if source == "campaign_id":
            stored = await self._campaign_of_app(request.app_id, request.campaign_id)
            message = stored.campaign.message
            campaign_id = request.campaign_id
        devices, user = await self._test_targets(request, message.background)
        compiled = CompiledMessage(message)
        event = (
            json_format.MessageToDict(request.event_properties)
            if request.HasField("event_properties")
            else {}
        )
        response = CS.SendTestResponse()
        pending = []
        for device in devices:
            item = response.devices.add(
                app_id=device.app_id, device_id=device.device_id, platform=device.platform
            )
            prepared = prepare(
                compiled, device, user, campaign_id="", idempotency_key="", event=event
            )
            if prepared.notification is None:
                reason = prepared.suppressed
                raise InvalidArgument(
                    prepared.detail or "the message cannot be rendered",
                    [
                        FieldViolation(
                            prepared.rendered.largest_field if prepared.rendered else "message",
                            prepared.detail,
                            reason,
                        )
                    ],
                    reason=reason,
                )
            prepared.notification.labels["test"] = campaign_id or "message"
            pending.append((item, prepared.notification))
        await self._send_now(pending, uuid.uuid4().hex, 10.0)
        return response

    async def _test_targets(
        self, request: CS.SendTestRequest, background: bool
    ) -> tuple[list[device_pb2.AudienceDevice], Mapping[str, Any] | None]:
        if request.WhichOneof("target") == "device_id":
            device = await self.deps.registration.device(request.app_id, request.device_id)
            if not device.HasField("token") or device.capability == NONE:
                raise FailedPrecondition(
                    "DEVICE_HAS_NO_TOKEN",
                    "the device has no usable token",
                    {"device_id": request.device_id},
                )
            user = None
            if device.user_id:
                user = (await self.deps.identity.users([device.user_id])).get(device.user_id)
            return [audience_device(device)], user
        users = await self.deps.identity.users([request.user_id])
        if request.user_id not in users:
            raise NotFound(
                "USER_NOT_FOUND", "no user has this external id", {"user_id": request.user_id}
            )
        answer = await self.deps.registration.user_devices(request.user_id, request.app_id)
        devices = [audience_device(d) for d in answer.devices if reachable(d, True)]
        if not devices:
            raise FailedPrecondition(
                "USER_NOT_REACHABLE",
                "the user has no device with a token in this app",
                {"user_id": request.user_id},
            )
        return devices, users[request.user_id]


def fill(item: CS.DeviceSendResult, result: Any) -> None:
    if result is None:
        item.outcome = push_options_pb2.DELIVERY_OUTCOME_QUEUED
        return
    item.notification_id = result.notification_id
    item.outcome = result.outcome
    item.provider_status = result.provider_status
    item.provider_reason = result.provider_reason
    if result.HasField("error") and result.error.reason:
        item.error.CopyFrom(result.error)


__all__ = ["Transactional", "campaign_pb2"]
