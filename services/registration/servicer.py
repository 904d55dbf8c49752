"""The gRPC edge of the Registration service: proto in, domain call, proto out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from herald.registration.v1 import registration_service_pb2 as pb
from herald.registration.v1 import registration_service_pb2_grpc
from services.core.auth import caller_app
from services.core.protowire import Encoded
from services.core.server import Runtime
from services.registration import audience_wire, messages
from services.registration.apps import AppDirectory
from services.registration.audience import Audiences
from services.registration.domain import Devices
from services.registration.importer import Importer, ImportMessage
from services.registration.invalidation import Invalidation, Invalidator
from services.registration.listing import Listings
from services.registration.store import RegistrationStore


class RegistrationServicer(registration_service_pb2_grpc.RegistrationServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        store = RegistrationStore(runtime.redis)
        apps = AppDirectory(runtime)
        self.devices = Devices(store, apps)
        self.invalidator = Invalidator(self.devices)
        self.listings = Listings(store, apps)
        self.audiences = Audiences(store, apps)
        self.importer = Importer(self.devices, apps)

    async def RegisterDevice(
        self, request: pb.RegisterDeviceRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterDeviceResponse:
        result = await self.devices.register(
            request.app_id, messages.device_input(request), request.client_secret
        )
        return pb.RegisterDeviceResponse(
            device=messages.device_message(request.app_id, request.device_id, result.record),
            created=result.created,
            token_update=result.token_update,  # type: ignore[arg-type]
            previous_user_id=result.previous_user_id,
        )

    async def UpdatePermission(
        self, request: pb.UpdatePermissionRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdatePermissionResponse:
        rec, previous = await self.devices.update_permission(
            request.app_id,
            request.device_id,
            request.authorization_status,
            messages.token_input(request.token, request.HasField("token")),
            request.apns_environment,
            request.client_secret,
        )
        return pb.UpdatePermissionResponse(
            device=messages.device_message(request.app_id, request.device_id, rec),
            previous_capability=previous,  # type: ignore[arg-type]
        )

    async def UnregisterDevice(
        self, request: pb.UnregisterDeviceRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnregisterDeviceResponse:
        removed, previous_user = await self.devices.unregister(
            request.app_id, request.device_id, request.reason, request.allow_missing
        )
        return pb.UnregisterDeviceResponse(removed=removed, previous_user_id=previous_user)

    async def GetDevice(
        self, request: pb.GetDeviceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDeviceResponse:
        rec = await self.devices.get(request.app_id, request.device_id)
        return pb.GetDeviceResponse(
            device=messages.device_message(request.app_id, request.device_id, rec, request.view)
        )

    async def ListDevices(
        self, request: pb.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDevicesResponse:
        page, token = await self.listings.list_devices(
            request.app_id,
            request.page_size,
            request.page_token,
            list(request.platforms),
            request.capability,
            request.user_id,
            request.view,
        )
        return pb.ListDevicesResponse(
            devices=[
                messages.device_message(d.app_id, d.device_id, d.record, request.view) for d in page
            ],
            next_page_token=token,
        )

    async def ListUserDevices(
        self, request: pb.ListUserDevicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUserDevicesResponse:
        own = caller_app()
        page, token, any_app = await self.listings.list_user_devices(
            request.user_id,
            request.app_id or own,  # an app key sees only its own app's devices
            request.page_size,
            request.page_token,
            request.view,
            caller_app=own,
        )
        return pb.ListUserDevicesResponse(
            devices=[
                messages.device_message(d.app_id, d.device_id, d.record, request.view) for d in page
            ],
            next_page_token=token,
            push_enabled_any_app=any_app,
        )

    async def BatchListUserDevices(
        self, request: pb.BatchListUserDevicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchListUserDevicesResponse:
        answers = await self.listings.batch_list_user_devices(
            list(request.user_ids), request.app_id
        )
        return pb.BatchListUserDevicesResponse(
            users=[
                pb.UserDevices(
                    user_id=user_id,
                    devices=[
                        messages.device_message(d.app_id, d.device_id, d.record, request.view)
                        for d in devices
                    ],
                    push_enabled_any_app=any_app,
                )
                for user_id, (devices, any_app) in zip(request.user_ids, answers, strict=True)
            ]
        )

    async def PurgeAppDevices(
        self, request: pb.PurgeAppDevicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.PurgeAppDevicesResponse:
        return pb.PurgeAppDevicesResponse(purged_count=await self.devices.purge_app(request.app_id))

    async def AssignDeviceUser(
        self, request: pb.AssignDeviceUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.AssignDeviceUserResponse:
        rec, previous_user, changed = await self.devices.assign_user(
            request.app_id,
            request.device_id,
            request.user_id,
            request.expected_user_id,
            request.expect_unbound,
            request.reason,
        )
        return pb.AssignDeviceUserResponse(
            device=messages.device_message(request.app_id, request.device_id, rec),
            previous_user_id=previous_user,
            changed=changed,
        )

    async def InvalidateTokens(
        self, request: pb.InvalidateTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvalidateTokensResponse:
        results = await self.invalidator.invalidate(
            [
                Invalidation(
                    app_id=item.app_id,
                    token=messages.token_input(item.token, item.HasField("token")),
                    provider=item.provider,
                    provider_reason=item.provider_reason,
                    provider_ms=messages.millis(item.provider_time, item.HasField("provider_time")),
                    device_id=item.device_id,
                    notification_id=item.notification_id,
                )
                for item in request.invalidations
            ]
        )
        return pb.InvalidateTokensResponse(
            results=[
                pb.TokenInvalidationResult(
                    outcome=r.outcome,  # type: ignore[arg-type]
                    device_id=r.device_id,
                    user_id=r.user_id,
                    error=messages.item_error(r.problem) if r.problem else None,
                )
                for r in results
            ]
        )

    async def ListTokenChanges(
        self, request: pb.ListTokenChangesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTokenChangesResponse:
        page, token = await self.listings.list_token_changes(
            request.app_id,
            request.device_id,
            request.user_id,
            list(request.kinds),
            request.page_size,
            request.page_token,
        )
        own = caller_app()  # a user's log spans apps; an app key sees its own app's part
        return pb.ListTokenChangesResponse(
            token_changes=[
                messages.token_change(c.app_id, c.device_id, c.entry)
                for c in page
                if not own or c.app_id == own
            ],
            next_page_token=token,
        )

    async def StreamAudience(  # type: ignore[override] # answers in wire form, sent as they are
        self, request: pb.StreamAudienceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Encoded]:  # StreamAudienceResponse in wire form
        partition = (
            (request.partition.index, request.partition.count)
            if request.HasField("partition")
            else None
        )
        writer = audience_wire.ResponseWriter()  # answers in wire form (audience_wire.py)
        async for batch, cursor, streamed in self.audiences.stream(
            messages.audience_query(request.query), request.batch_size, request.cursor, partition
        ):
            yield writer.response(batch, cursor, streamed)

    async def CountAudience(
        self, request: pb.CountAudienceRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountAudienceResponse:
        counted = await self.audiences.count(
            messages.audience_query(request.query), request.exact, request.sample_size
        )
        return pb.CountAudienceResponse(
            device_count=round(counted.devices),
            user_count=round(counted.users),
            exact=counted.exact,
            platform_counts=[
                pb.PlatformCount(platform=platform, count=round(count))  # type: ignore[arg-type]
                for platform, count in sorted(counted.per_platform.items())
            ],
            examined_count=counted.examined,
        )

    async def ImportDevices(
        self,
        request_iterator: AsyncIterator[pb.ImportDevicesRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.ImportDevicesResponse:
        async def batches() -> AsyncIterator[ImportMessage]:
            async for message in request_iterator:
                yield ImportMessage(
                    message.app_id,
                    message.mode,
                    [messages.imported_device(d) for d in message.devices],
                )

        summary = await self.importer.run(batches())
        return pb.ImportDevicesResponse(
            received_count=summary.received,
            created_count=summary.created,
            updated_count=summary.updated,
            skipped_count=summary.skipped,
            failed_count=summary.failed,
            errors=[
                pb.ImportError(
                    index=e.index, device_id=e.device_id, error=messages.item_error(e.problem)
                )
                for e in summary.errors
            ],
            errors_truncated=summary.errors_truncated,
        )
