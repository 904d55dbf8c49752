"""Delivery's calls to Registration: token invalidation and device lookups for Send.

Registration is another team's service and may not implement these RPCs yet; an
UNIMPLEMENTED answer is logged (once per RPC) and reported, never fatal for a send.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from herald.registration.v1 import (
    device_pb2,
    registration_service_pb2,
    registration_service_pb2_grpc,
)
from herald.type.v1 import push_token_pb2
from services.core.errors import FailedPrecondition, NotFound, Unavailable, Unimplemented
from services.delivery.credentials import PROVIDER_ENUMS

log = logging.getLogger(__name__)
R = registration_service_pb2
SERVICE = "herald.registration.v1.RegistrationService"


class RegistrationClient:
    def __init__(self, channel: Callable[[], grpc.aio.Channel], timeout: float = 3.0) -> None:
        self._channel = channel
        self.timeout = timeout
        self._warned: set[str] = set()

    def _stub(self) -> Any:
        # The generated stub is typed for the sync API; on an aio channel calls are awaitable.
        return registration_service_pb2_grpc.RegistrationServiceStub(self._channel())

    async def invalidate(
        self,
        app_id: str,
        token: push_token_pb2.PushToken,
        provider: str,
        reason: str,
        provider_time: float,
        device_id: str = "",
        notification_id: str = "",
    ) -> str:
        """Ask Registration to drop a dead token; returns its verdict (REMOVED,
        KEPT_REREGISTERED, NOT_FOUND) or why it could not be asked."""
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(dt.datetime.fromtimestamp(provider_time, dt.UTC))
        request = R.InvalidateTokensRequest(
            invalidations=[
                R.TokenInvalidation(
                    app_id=app_id,
                    token=token,
                    provider=PROVIDER_ENUMS[provider],
                    provider_reason=reason,
                    provider_time=stamp,
                    device_id=device_id,
                    notification_id=notification_id,
                )
            ]
        )
        try:
            response: R.InvalidateTokensResponse = await self._stub().InvalidateTokens(
                request, timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            return self._failed("InvalidateTokens", error)
        result = response.results[0] if response.results else None
        if result is None:
            return "NO_RESULT"
        return R.InvalidationOutcome.Name(result.outcome).removeprefix("INVALIDATION_OUTCOME_")

    def _failed(self, rpc: str, error: grpc.aio.AioRpcError) -> str:
        code = error.code()
        if code == grpc.StatusCode.UNIMPLEMENTED:
            if rpc not in self._warned:
                self._warned.add(rpc)
                log.warning(
                    "Registration does not implement %s yet; dead tokens are not removed", rpc
                )
            return "UNIMPLEMENTED"
        log.warning("Registration %s failed: %s", rpc, code.name)
        return code.name

    async def device(self, app_id: str, device_id: str) -> device_pb2.Device:
        request = R.GetDeviceRequest(
            app_id=app_id, device_id=device_id, view=device_pb2.DEVICE_VIEW_FULL
        )
        try:
            response: R.GetDeviceResponse = await self._stub().GetDevice(
                request, timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _mapped(
                "GetDevice", error, "DEVICE_NOT_FOUND", "the device is not registered in this app"
            ) from None
        return response.device

    async def user_devices(self, app_id: str, user_id: str) -> list[device_pb2.Device]:
        devices: list[device_pb2.Device] = []
        page_token = ""
        while True:
            request = R.ListUserDevicesRequest(
                user_id=user_id,
                app_id=app_id,
                page_size=1000,
                page_token=page_token,
                view=device_pb2.DEVICE_VIEW_FULL,
            )
            try:
                response: R.ListUserDevicesResponse = await self._stub().ListUserDevices(
                    request, timeout=self.timeout
                )
            except grpc.aio.AioRpcError as error:
                raise _mapped("ListUserDevices", error, "USER_NOT_FOUND", "no such user") from None
            devices.extend(response.devices)
            page_token = response.next_page_token
            if not page_token or len(devices) > 10_000:
                return devices


def _mapped(rpc: str, error: grpc.aio.AioRpcError, not_found: str, message: str) -> Exception:
    code = error.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(not_found, message)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return Unimplemented(
            "NOT_IMPLEMENTED_YET",
            f"sending to this target needs Registration's {rpc}, which is not implemented yet; send to a token",
            {"rpc": f"{SERVICE}/{rpc}", "issue": "issue #3"},
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(
            "DEPENDENCY_UNAVAILABLE",
            f"Registration did not answer {rpc}",
            {"service": "registration"},
        )
    return FailedPrecondition(
        "DEPENDENCY_FAILED",
        f"Registration answered {rpc} with {code.name}",
        {"service": "registration"},
    )
