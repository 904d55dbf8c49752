"""Campaign's view of Registration, Identity and Delivery, with errors translated.

Campaign owns none of devices, users or the queue: it reads and writes them only through
these calls. An unreachable service becomes UNAVAILABLE (DEPENDENCY_UNAVAILABLE, with
the service's name); an error with a reason (APP_NOT_FOUND, DEVICE_NOT_FOUND, ...)
reaches Campaign's caller unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2

from herald.delivery.v1 import (
    delivery_service_pb2,
    delivery_service_pb2_grpc,
    notification_pb2,
)
from herald.identity.v1 import identity_service_pb2, identity_service_pb2_grpc, user_pb2
from herald.registration.v1 import (
    device_pb2,
    registration_service_pb2,
    registration_service_pb2_grpc,
)
from herald.type.v1 import platform_pb2
from services.core.errors import HeraldError, Unavailable
from services.core.status import parse_error

CALL_TIMEOUT = 10.0
ENQUEUE_METHOD = "/herald.delivery.v1.DeliveryService/Enqueue"
PROVIDER_PLATFORM = {
    platform_pb2.PROVIDER_APNS: platform_pb2.PLATFORM_IOS,
    platform_pb2.PROVIDER_FCM: platform_pb2.PLATFORM_ANDROID,
    platform_pb2.PROVIDER_WEB_PUSH: platform_pb2.PLATFORM_WEB,
}


def translate(error: grpc.aio.AioRpcError, service: str) -> HeraldError:
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(
            "DEPENDENCY_UNAVAILABLE",
            f"the {service} service did not answer; retry with backoff",
            {"service": service},
        )
    details = parse_error(error)
    return HeraldError(
        details.reason or error.code().name, details.message, details.metadata, details.code
    )


async def _call(service: str, method: Any, request: object, seconds: float = CALL_TIMEOUT) -> Any:
    try:
        return await method(request, timeout=seconds)
    except grpc.aio.AioRpcError as error:
        raise translate(error, service) from None


def plain(value: Any) -> Any:
    """A Struct / ListValue (or what indexing one returns) as plain Python values."""
    if isinstance(value, struct_pb2.Struct):
        return {key: plain(value[key]) for key in value}
    if isinstance(value, struct_pb2.ListValue):
        return [plain(item) for item in value]
    return value


def user_context(user: user_pb2.User) -> dict[str, Any]:
    """A user as audiences and templates see it."""
    return {
        "external_id": user.external_id,
        "email": user.email,
        "phone": user.phone,
        "locale": user.locale,
        "time_zone": user.time_zone,
        "attributes": plain(user.attributes),
    }


class RegistrationClient:
    def __init__(self, channel: Callable[[], grpc.aio.Channel]) -> None:
        self._channel = channel

    @property
    def stub(self) -> Any:
        return registration_service_pb2_grpc.RegistrationServiceStub(self._channel())

    async def stream_audience(
        self,
        query: registration_service_pb2.AudienceQuery,
        cursor: str,
        batch_size: int,
        partition: tuple[int, int] | None = None,
    ) -> AsyncGenerator[registration_service_pb2.StreamAudienceResponse, None]:
        """`partition`: (index, count), only that hash-slice of the audience."""
        request = registration_service_pb2.StreamAudienceRequest(
            query=query, cursor=cursor, batch_size=batch_size
        )
        if partition is not None:
            request.partition.index, request.partition.count = partition
        call = self.stub.StreamAudience(request)
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            raise translate(error, "registration") from None
        finally:
            call.cancel()

    async def count(
        self, query: registration_service_pb2.AudienceQuery
    ) -> registration_service_pb2.CountAudienceResponse:
        """Registration's quick count: exact up to 5,000 devices in the app, else an
        estimate from a sample of whole shards (exact = false), so it answers in a
        fraction of a second at any audience size."""
        return await _call(
            "registration",
            self.stub.CountAudience,
            registration_service_pb2.CountAudienceRequest(query=query),
        )

    async def user_devices(
        self, user_id: str, app_id: str = ""
    ) -> registration_service_pb2.ListUserDevicesResponse:
        """The user's devices (first 1,000) and whether any app has them push enabled."""
        return await _call(
            "registration",
            self.stub.ListUserDevices,
            registration_service_pb2.ListUserDevicesRequest(
                user_id=user_id, app_id=app_id, page_size=1000, view=device_pb2.DEVICE_VIEW_FULL
            ),
        )

    async def push_enabled_any_app(
        self, user_ids: Iterable[str], concurrency: int
    ) -> dict[str, bool]:
        """Whether each user has a foreground-capable device in any app ("push enabled
        for any app"), asked concurrently with at most `concurrency` calls in flight."""
        limit = asyncio.Semaphore(concurrency)

        async def one(user_id: str) -> tuple[str, bool]:
            async with limit:
                return user_id, (await self.user_devices(user_id)).push_enabled_any_app

        return dict(await asyncio.gather(*(one(u) for u in set(user_ids))))

    async def device(self, app_id: str, device_id: str) -> device_pb2.Device:
        answer = await _call(
            "registration",
            self.stub.GetDevice,
            registration_service_pb2.GetDeviceRequest(
                app_id=app_id, device_id=device_id, view=device_pb2.DEVICE_VIEW_FULL
            ),
        )
        return answer.device


class IdentityClient:
    def __init__(self, channel: Callable[[], grpc.aio.Channel]) -> None:
        self._channel = channel

    @property
    def stub(self) -> Any:
        return identity_service_pb2_grpc.IdentityServiceStub(self._channel())

    async def app(self, app_id: str) -> Any:
        answer = await _call(
            "identity", self.stub.GetApp, identity_service_pb2.GetAppRequest(app_id=app_id)
        )
        return answer.app

    async def users(
        self, external_ids: Iterable[str], paths: Iterable[str] = ()
    ) -> dict[str, dict[str, Any]]:
        """Users by external id (at most 1,000); unknown ids are absent."""
        found = await self.user_messages(external_ids, paths)
        return {external_id: user_context(user) for external_id, user in found.items()}

    async def user_messages(
        self, external_ids: Iterable[str], paths: Iterable[str] = ()
    ) -> dict[str, user_pb2.User]:
        """`users` as the protos (the fan-out reads only the fields its templates use)."""
        ids = list(dict.fromkeys(external_ids))
        if not ids:
            return {}
        request = identity_service_pb2.BatchGetUsersRequest(external_ids=ids)
        wanted = list(paths)
        if wanted:
            request.read_mask.CopyFrom(field_mask_pb2.FieldMask(paths=wanted))
        answer = await _call("identity", self.stub.BatchGetUsers, request)
        return {user.external_id: user for user in answer.users}


class DeliveryClient:
    def __init__(self, channel: Callable[[], grpc.aio.Channel]) -> None:
        self._channel = channel

    @property
    def stub(self) -> Any:
        return delivery_service_pb2_grpc.DeliveryServiceStub(self._channel())

    async def enqueue_serialized(self, request: bytes) -> delivery_service_pb2.EnqueueResponse:
        """Enqueue with a request serialized by the caller (the fan-out builds it from
        bytes, services/campaign/wire.py)."""
        method = self._channel().unary_unary(
            ENQUEUE_METHOD,
            request_serializer=None,  # already bytes
            response_deserializer=delivery_service_pb2.EnqueueResponse.FromString,
        )
        return await _call("delivery", method, request, seconds=30.0)

    async def enqueue(
        self, notifications: list[notification_pb2.Notification], request_id: str
    ) -> delivery_service_pb2.EnqueueResponse:
        return await _call(
            "delivery",
            self.stub.Enqueue,
            delivery_service_pb2.EnqueueRequest(notifications=notifications, request_id=request_id),
            seconds=30.0,
        )

    async def send(
        self, notification: notification_pb2.Notification, request_id: str, wait: float
    ) -> delivery_service_pb2.SendResponse:
        request = delivery_service_pb2.SendRequest(
            notification=notification,
            request_id=request_id,
            timeout=duration_pb2.Duration(seconds=int(wait)),
        )
        return await _call("delivery", self.stub.Send, request, seconds=wait + 5.0)

    async def cancel(self, app_id: str, campaign_id: str) -> int:
        answer = await _call(
            "delivery",
            self.stub.CancelNotifications,
            delivery_service_pb2.CancelNotificationsRequest(app_id=app_id, campaign_id=campaign_id),
        )
        return int(answer.cancelled_count)

    async def platforms_with_credentials(self, app_id: str) -> set[int]:
        answer = await _call(
            "delivery",
            self.stub.ListCredentials,
            delivery_service_pb2.ListCredentialsRequest(app_id=app_id, page_size=100),
        )
        return {
            PROVIDER_PLATFORM[c.provider]
            for c in answer.credentials
            if c.provider in PROVIDER_PLATFORM
        }

    async def notification(self, notification_id: str) -> notification_pb2.Notification:
        answer: Any = await _call(
            "delivery",
            self.stub.GetNotification,
            delivery_service_pb2.GetNotificationRequest(notification_id=notification_id),
        )
        return answer.notification

    def outcomes(self, cursor: str, from_earliest: bool) -> Any:
        """The raw StreamOutcomes call (the consumer handles its errors and restarts)."""
        return self.stub.StreamOutcomes(
            delivery_service_pb2.StreamOutcomesRequest(
                cursor=cursor, from_earliest=from_earliest, batch_size=1000
            )
        )
