"""The gRPC edge of the Identity service: proto in, domain call, proto out.

No rule lives here: each RPC converts its request (app_messages.py, user_messages.py),
calls a domain module, and converts the answer back. Domain errors pass through to the
shared ErrorInterceptor, which turns them into statuses.

RPCs not overridden yet answer UNIMPLEMENTED (NOT_IMPLEMENTED_YET); see
services/core/pending.py.
"""

from __future__ import annotations

from typing import Any

from herald.identity.v1 import identity_service_pb2 as pb
from herald.identity.v1 import identity_service_pb2_grpc
from services.core.pending import fill_pending
from services.core.server import Runtime
from services.identity import app_messages
from services.identity.app_model import SecretMatch
from services.identity.app_store import AppStore
from services.identity.apps import Apps
from services.identity.clock import MICROS_PER_SECOND
from services.identity.registration_client import Registration

Context = Any  # grpc.aio.ServicerContext; unused by the handlers


class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.apps = Apps(AppStore(runtime.redis))
        self.devices = Registration(runtime.channel("registration"))
        fill_pending(
            self,
            identity_service_pb2_grpc.IdentityServiceServicer,
            pb.DESCRIPTOR.services_by_name["IdentityService"],
            "issue #3",
        )

    # --- apps and client secrets ----------------------------------------------------

    async def CreateApp(
        self, request: pb.CreateAppRequest, context: Context
    ) -> pb.CreateAppResponse:
        created = await self.apps.create(
            app_messages.app_draft(request.app), request.app_id, request.request_id
        )
        return pb.CreateAppResponse(
            app=app_messages.app_to_proto(created.app),
            client_secret=created.client_secret,
            replayed=created.replayed,
        )

    async def GetApp(self, request: pb.GetAppRequest, context: Context) -> pb.GetAppResponse:
        app = await self.apps.get(request.app_id)
        return pb.GetAppResponse(app=app_messages.app_to_proto(app))

    async def ListApps(self, request: pb.ListAppsRequest, context: Context) -> pb.ListAppsResponse:
        apps, token = await self.apps.list(request.page_size, request.page_token)
        return pb.ListAppsResponse(
            apps=[app_messages.app_to_proto(app) for app in apps], next_page_token=token
        )

    async def UpdateApp(
        self, request: pb.UpdateAppRequest, context: Context
    ) -> pb.UpdateAppResponse:
        app = await self.apps.update(
            request.app.app_id,
            app_messages.app_draft(request.app),
            list(request.update_mask.paths),
        )
        return pb.UpdateAppResponse(app=app_messages.app_to_proto(app))

    async def DeleteApp(
        self, request: pb.DeleteAppRequest, context: Context
    ) -> pb.DeleteAppResponse:
        deleted_us = await self.apps.delete(
            request.app_id, request.force, self.devices.app_has_devices
        )
        return pb.DeleteAppResponse(delete_time=app_messages.timestamp(deleted_us))

    async def RotateClientSecret(
        self, request: pb.RotateClientSecretRequest, context: Context
    ) -> pb.RotateClientSecretResponse:
        overlap_us = None
        if request.HasField("overlap"):
            overlap_us = request.overlap.seconds * MICROS_PER_SECOND + request.overlap.nanos // 1000
        secret, app = await self.apps.rotate_client_secret(request.app_id, overlap_us)
        return pb.RotateClientSecretResponse(
            client_secret=secret, app=app_messages.app_to_proto(app)
        )

    async def VerifyClientSecret(
        self, request: pb.VerifyClientSecretRequest, context: Context
    ) -> pb.VerifyClientSecretResponse:
        match = await self.apps.verify_client_secret(request.app_id, request.client_secret)
        return pb.VerifyClientSecretResponse(
            valid=match is not SecretMatch.NONE,
            match=app_messages.secret_match_to_proto(match),
        )
