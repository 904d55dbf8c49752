"""Identity's view of Registration: the device calls it needs, with errors translated.

Registration owns devices; Identity only reads them through its API (never its keys)
and asks it to move bindings. A failure Registration reports with a reason (for
example DEVICE_NOT_FOUND, DEVICE_USER_MISMATCH) reaches Identity's caller unchanged; an
unreachable Registration becomes UNAVAILABLE (DEPENDENCY_UNAVAILABLE).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from herald.registration.v1 import (
    device_pb2,
    registration_service_pb2,
    registration_service_pb2_grpc,
)
from herald.type.v1 import platform_pb2, push_token_pb2
from services.identity.dependency_errors import translate

CALL_TIMEOUT_SECONDS = 5.0
_DEVICES_PAGE = 1000
BATCH_USERS = 1000  # BatchListUserDevices' limit
_Response = TypeVar("_Response")


@dataclass(frozen=True)
class DeviceSnapshot:
    """A device as Identity shows it (subscription state, export)."""

    app_id: str
    device_id: str
    platform: platform_pb2.Platform.ValueType
    redacted_token: str
    token: push_token_pb2.PushToken | None  # only when full tokens were asked for
    capability: platform_pb2.PushCapability.ValueType
    provisional: bool
    last_seen_us: int
    user_id: str


@dataclass(frozen=True)
class UserDevices:
    devices: list[DeviceSnapshot]
    push_enabled_any_app: bool


@dataclass(frozen=True)
class Assignment:
    previous_user_id: str
    user_id: str
    changed: bool


def _snapshot(device: device_pb2.Device) -> DeviceSnapshot:
    return DeviceSnapshot(
        app_id=device.app_id,
        device_id=device.device_id,
        platform=device.platform,
        redacted_token=device.redacted_token,
        token=device.token if device.HasField("token") else None,
        capability=device.capability,
        provisional=device.provisional,
        last_seen_us=device.last_seen_time.ToMicroseconds()
        if device.HasField("last_seen_time")
        else 0,
        user_id=device.user_id,
    )


class Registration:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = registration_service_pb2_grpc.RegistrationServiceStub(channel)

    async def _call(
        self, method: Callable[..., Awaitable[_Response]], request: object
    ) -> _Response:
        try:
            return await method(request, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            raise translate(error, "Registration") from None

    async def app_has_devices(self, app_id: str) -> bool:
        answer = await self._call(
            self.stub.ListDevices,
            registration_service_pb2.ListDevicesRequest(app_id=app_id, page_size=1),
        )
        return len(answer.devices) > 0

    async def purge_app_devices(self, app_id: str) -> int:
        answer = await self._call(
            self.stub.PurgeAppDevices,
            registration_service_pb2.PurgeAppDevicesRequest(app_id=app_id),
        )
        return answer.purged_count

    async def get_device(self, app_id: str, device_id: str) -> DeviceSnapshot:
        answer = await self._call(
            self.stub.GetDevice,
            registration_service_pb2.GetDeviceRequest(app_id=app_id, device_id=device_id),
        )
        return _snapshot(answer.device)

    async def assign(
        self,
        app_id: str,
        device_id: str,
        user_id: str,
        *,
        reason: str,
        expected_user_id: str = "",
    ) -> Assignment:
        answer = await self._call(
            self.stub.AssignDeviceUser,
            registration_service_pb2.AssignDeviceUserRequest(
                app_id=app_id,
                device_id=device_id,
                user_id=user_id,
                expected_user_id=expected_user_id,
                reason=reason,
            ),
        )
        return Assignment(answer.previous_user_id, answer.device.user_id, answer.changed)

    async def user_devices(self, user_id: str, *, full_tokens: bool = False) -> UserDevices:
        """Every device of the user in every app (all pages; a user has a handful)."""
        view = device_pb2.DEVICE_VIEW_FULL if full_tokens else device_pb2.DEVICE_VIEW_BASIC
        devices: list[DeviceSnapshot] = []
        page_token = ""
        push_enabled = False
        while True:
            answer = await self._call(
                self.stub.ListUserDevices,
                registration_service_pb2.ListUserDevicesRequest(
                    user_id=user_id, page_size=_DEVICES_PAGE, page_token=page_token, view=view
                ),
            )
            devices.extend(_snapshot(device) for device in answer.devices)
            push_enabled = push_enabled or answer.push_enabled_any_app
            page_token = answer.next_page_token
            if not page_token:
                return UserDevices(devices, push_enabled)

    async def users_devices(
        self, user_ids: list[str], *, full_tokens: bool = False
    ) -> list[UserDevices]:
        """Devices of many users, BATCH_USERS per BatchListUserDevices call (ExportUsers
        makes one call per 1,000 users instead of one per user)."""
        view = device_pb2.DEVICE_VIEW_FULL if full_tokens else device_pb2.DEVICE_VIEW_BASIC
        found: list[UserDevices] = []
        for start in range(0, len(user_ids), BATCH_USERS):
            answer = await self._call(
                self.stub.BatchListUserDevices,
                registration_service_pb2.BatchListUserDevicesRequest(
                    user_ids=user_ids[start : start + BATCH_USERS], view=view
                ),
            )
            found += [
                UserDevices([_snapshot(d) for d in user.devices], user.push_enabled_any_app)
                for user in answer.users
            ]
        return found
