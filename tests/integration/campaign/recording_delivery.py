"""A stand-in DeliveryService on a real loopback gRPC server that records what it gets.

Used while Delivery's queue (Enqueue, StreamOutcomes, CancelNotifications) is being
built: Campaign talks to it over gRPC exactly as to Delivery. It dedupes by
idempotency key as Delivery promises (at most one send per key and token), answers
outcomes through StreamOutcomes with a cursor, and can be told to fail or slow down.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import grpc

from herald.delivery.v1 import (
    credentials_pb2,
    delivery_service_pb2,
    delivery_service_pb2_grpc,
    notification_pb2,
)
from herald.type.v1 import platform_pb2, push_options_pb2

DS = delivery_service_pb2
PO = push_options_pb2
PROVIDER_OF = {"apns": 1, "fcm": 2, "web_push": 3}
PLATFORM_OF = {"apns": 1, "fcm": 2, "web_push": 3}


class RecordingDelivery(delivery_service_pb2_grpc.DeliveryServiceServicer):
    def __init__(self) -> None:
        self.providers = {
            platform_pb2.PROVIDER_APNS,
            platform_pb2.PROVIDER_FCM,
            platform_pb2.PROVIDER_WEB_PUSH,
        }
        self.by_key: dict[str, notification_pb2.Notification] = {}
        self.enqueue_calls = 0
        self.received: list[notification_pb2.Notification] = []  # every item of every call
        self.sends: list[notification_pb2.Notification] = []
        self.cancelled: list[str] = []
        self.outcomes: list[notification_pb2.OutcomeEvent] = []
        self.auto_deliver = True
        self.dead_tokens: set[str] = set()
        self.failures_left = 0  # answer this many Enqueue calls with UNAVAILABLE
        self.delay = 0.0  # seconds before each Enqueue answers
        self._changed = asyncio.Condition()

    # -- what tests read ---------------------------------------------------------------------
    def keys_of(self, campaign_id: str) -> list[str]:
        return [n.idempotency_key for n in self.received if n.campaign_id == campaign_id]

    def unique(self, campaign_id: str) -> dict[str, notification_pb2.Notification]:
        return {k: n for k, n in self.by_key.items() if n.campaign_id == campaign_id}

    async def emit(
        self, notification: notification_pb2.Notification, outcome: int, reason: str = ""
    ) -> None:
        kind = notification.token.WhichOneof("kind") or "apns"
        event = notification_pb2.OutcomeEvent(
            notification_id=notification.notification_id,
            app_id=notification.app_id,
            campaign_id=notification.campaign_id,
            device_id=notification.device_id,
            user_id=notification.user_id,
            platform=PLATFORM_OF[kind],  # type: ignore[arg-type]
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
            attempt_number=1,
        )
        async with self._changed:
            self.outcomes.append(event)
            self._changed.notify_all()

    # -- DeliveryService ---------------------------------------------------------------------
    async def ListCredentials(self, request: Any, context: Any) -> DS.ListCredentialsResponse:
        return DS.ListCredentialsResponse(
            credentials=[
                credentials_pb2.Credentials(app_id=request.app_id, provider=p)
                for p in sorted(self.providers)
            ]
        )

    async def Enqueue(self, request: DS.EnqueueRequest, context: Any) -> DS.EnqueueResponse:
        self.enqueue_calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures_left > 0:
            self.failures_left -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "delivery is restarting")
        response = DS.EnqueueResponse()
        fresh = []
        for notification in request.notifications:
            self.received.append(notification)
            kind = notification.token.WhichOneof("kind")
            if kind is None or PROVIDER_OF[kind] not in self.providers:
                response.results.add().error.reason = "CREDENTIALS_MISSING"
                continue
            key = notification.idempotency_key or uuid.uuid4().hex
            known = self.by_key.get(key)
            if known is None:
                known = notification_pb2.Notification()
                known.CopyFrom(notification)
                known.notification_id = uuid.uuid4().hex
                self.by_key[key] = known
                fresh.append(known)
            response.results.add(notification_id=known.notification_id)
            response.queued_count += 1
        if self.auto_deliver:
            for notification in fresh:
                token = _canonical(notification)
                if token in self.dead_tokens:
                    await self.emit(notification, PO.DELIVERY_OUTCOME_TOKEN_INVALID, "Unregistered")
                else:
                    await self.emit(notification, PO.DELIVERY_OUTCOME_DELIVERED)
        return response

    async def Send(self, request: DS.SendRequest, context: Any) -> DS.SendResponse:
        notification = notification_pb2.Notification()
        notification.CopyFrom(request.notification)
        notification.notification_id = uuid.uuid4().hex
        self.sends.append(notification)
        kind = notification.token.WhichOneof("kind") or "apns"
        dead = _canonical(notification) in self.dead_tokens
        return DS.SendResponse(
            results=[
                DS.SendResult(
                    notification_id=notification.notification_id,
                    device_id=notification.device_id,
                    platform=PLATFORM_OF[kind],  # type: ignore[arg-type]
                    outcome=PO.DELIVERY_OUTCOME_TOKEN_INVALID
                    if dead
                    else PO.DELIVERY_OUTCOME_DELIVERED,
                    provider_status=410 if dead else 200,
                    provider_reason="Unregistered" if dead else "",
                )
            ]
        )

    async def CancelNotifications(
        self, request: Any, context: Any
    ) -> DS.CancelNotificationsResponse:
        self.cancelled.append(request.campaign_id)
        delivered = {o.notification_id for o in self.outcomes}
        count = 0
        for notification in self.unique(request.campaign_id).values():
            if notification.notification_id not in delivered:
                await self.emit(notification, PO.DELIVERY_OUTCOME_CANCELLED, "CANCELLED")
                count += 1
        return DS.CancelNotificationsResponse(cancelled_count=count)

    async def GetNotification(self, request: Any, context: Any) -> DS.GetNotificationResponse:
        for notification in self.by_key.values():
            if notification.notification_id == request.notification_id:
                return DS.GetNotificationResponse(notification=notification)
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such notification")
        raise AssertionError

    async def StreamOutcomes(self, request: Any, context: Any) -> Any:
        position = (
            int(request.cursor)
            if request.cursor
            else (0 if request.from_earliest else len(self.outcomes))
        )
        while True:
            async with self._changed:
                await self._changed.wait_for(_longer_than(self.outcomes, position))
                batch = self.outcomes[position:]
                position = len(self.outcomes)
            yield DS.StreamOutcomesResponse(outcomes=batch, cursor=str(position))


def _longer_than(items: list[Any], size: int) -> Any:
    return lambda: len(items) > size


def _canonical(notification: notification_pb2.Notification) -> str:
    token = notification.token
    kind = token.WhichOneof("kind")
    if kind == "apns":
        return token.apns.device_token.lower()
    if kind == "fcm":
        return token.fcm.registration_token
    return token.web_push.endpoint


class RecordingServer:
    def __init__(self) -> None:
        self.servicer = RecordingDelivery()  # type: ignore[abstract]
        self.server = grpc.aio.server()
        delivery_service_pb2_grpc.add_DeliveryServiceServicer_to_server(self.servicer, self.server)
        self.port = 0

    async def start(self, port: int) -> None:
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop(0)


__all__ = ["RecordingDelivery", "RecordingServer", "defaultdict"]
