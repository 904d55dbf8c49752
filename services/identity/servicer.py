"""The gRPC edge of the Identity service: proto in, domain call, proto out.

No rule lives here: each RPC converts its request (app_messages.py, user_messages.py),
calls a domain module, and converts the answer back. Domain errors pass through to the
shared ErrorInterceptor, which turns them into statuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from herald.identity.v1 import identity_service_pb2 as pb
from herald.identity.v1 import identity_service_pb2_grpc, user_pb2
from services.core.auth import caller_app
from services.core.protowire import Encoded
from services.core.server import Runtime
from services.identity import app_messages, export_messages, user_messages, user_wire
from services.identity.api_keys import ApiKeys
from services.identity.app_model import SecretMatch
from services.identity.app_store import AppStore
from services.identity.apps import Apps
from services.identity.clock import MICROS_PER_SECOND
from services.identity.delivery_client import Delivery
from services.identity.export import Exporter
from services.identity.registration_client import Registration
from services.identity.sessions import Sessions
from services.identity.subscription import SubscriptionStates
from services.identity.user_store import UserStore
from services.identity.users import Users

Context = Any  # grpc.aio.ServicerContext; unused by the handlers


class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        app_store = AppStore(runtime.redis)
        self.apps = Apps(app_store)
        self.api_keys = ApiKeys(app_store)
        self.devices = Registration(runtime.channel("registration"))
        self.delivery = Delivery(runtime.channel("delivery"))
        self.users = Users(UserStore(runtime.redis))
        self.sessions = Sessions(self.apps, self.users, self.devices)
        self.subscriptions = SubscriptionStates(self.apps, self.users, self.devices)
        self.exporter = Exporter(self.apps, self.users, self.devices)

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
        apps, token = await self.apps.list_page(request.page_size, request.page_token)
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
            request.app_id,
            request.force,
            self.devices.app_has_devices,
            self.devices.purge_app_devices,
            self.delivery.purge_app_credentials,
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

    # --- API keys -------------------------------------------------------------------

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        given = request.api_key
        key, secret = await self.api_keys.create(
            request.app_id,
            given.display_name,
            app_messages.api_key_scope_from_proto(given.scope),
            given.expire_time.ToMicroseconds() if given.HasField("expire_time") else 0,
        )
        return pb.CreateApiKeyResponse(api_key=app_messages.api_key_to_proto(key), key=secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        found, token = await self.api_keys.list_page(
            request.app_id, request.page_size, request.page_token, request.show_revoked
        )
        return pb.ListApiKeysResponse(
            api_keys=[app_messages.api_key_to_proto(key) for key in found], next_page_token=token
        )

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        key = await self.api_keys.revoke(request.app_id, request.api_key_id)
        return pb.RevokeApiKeyResponse(api_key=app_messages.api_key_to_proto(key))

    async def VerifyApiKey(
        self, request: pb.VerifyApiKeyRequest, context: Context
    ) -> pb.VerifyApiKeyResponse:
        key = await self.api_keys.verify(request.key)
        return pb.VerifyApiKeyResponse(api_key=app_messages.api_key_to_proto(key))

    # --- users ----------------------------------------------------------------------

    async def UpsertUser(
        self, request: pb.UpsertUserRequest, context: Context
    ) -> pb.UpsertUserResponse:
        user, created = await self.users.upsert(
            user_messages.user_input(request.user),
            list(request.update_mask.paths),
            request.merge_attributes,
        )
        return pb.UpsertUserResponse(user=user_messages.user_to_proto(user), created=created)

    async def GetUser(self, request: pb.GetUserRequest, context: Context) -> pb.GetUserResponse:
        user = await self.users.get(request.external_id)
        return pb.GetUserResponse(user=user_messages.user_to_proto(user))

    async def LookupUser(
        self, request: pb.LookupUserRequest, context: Context
    ) -> pb.LookupUserResponse:
        user = await self.users.lookup(user_messages.identifier(request.identifier, "identifier"))
        return pb.LookupUserResponse(user=user_messages.user_to_proto(user))

    async def UpdateUser(
        self, request: pb.UpdateUserRequest, context: Context
    ) -> pb.UpdateUserResponse:
        user = await self.users.update(
            user_messages.user_input(request.user), list(request.update_mask.paths)
        )
        return pb.UpdateUserResponse(user=user_messages.user_to_proto(user))

    async def DeleteUser(
        self, request: pb.DeleteUserRequest, context: Context
    ) -> pb.DeleteUserResponse:
        deleted, unbound = await self.users.delete(
            request.external_id, request.allow_missing, self.sessions.unbind_all
        )
        return pb.DeleteUserResponse(deleted=deleted, unbound_device_count=unbound)

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: Context
    ) -> pb.ListUsersResponse:
        users, token = await self.users.list_page(request.page_size, request.page_token)
        return pb.ListUsersResponse(
            users=[user_messages.user_to_proto(user) for user in users], next_page_token=token
        )

    async def BatchGetUsers(  # type: ignore[override] # the answer in wire form, sent as it is
        self, request: pb.BatchGetUsersRequest, context: Context
    ) -> Encoded:  # BatchGetUsersResponse in wire form, sent as it is
        read_mask = list(request.read_mask.paths)
        read = await self.users.batch_get(list(request.external_ids), read_mask)
        return user_wire.batch_get_response(read.found, read.missing, read_mask, read.fields)

    # --- devices: login, logout, subscription state ---------------------------------

    async def ChangeUser(
        self, request: pb.ChangeUserRequest, context: Context
    ) -> pb.ChangeUserResponse:
        login = await self.sessions.change_user(
            request.app_id,
            request.device_id,
            request.external_id,
            request.client_secret,
            request.create_user,
        )
        return pb.ChangeUserResponse(
            previous_external_id=login.previous_external_id,
            external_id=login.external_id,
            changed=login.changed,
        )

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        outcome = await self.sessions.logout(
            request.app_id, request.device_id, request.client_secret, request.external_id
        )
        return pb.LogoutResponse(
            previous_external_id=outcome.previous_external_id,
            applied_policy=app_messages.logout_policy_to_proto(outcome.applied_policy),
            changed=outcome.changed,
        )

    async def GetSubscriptionState(
        self, request: pb.GetSubscriptionStateRequest, context: Context
    ) -> pb.GetSubscriptionStateResponse:
        # Users are shared by the apps, devices are not: an app key sees its own app's.
        state = await self.subscriptions.of(
            user_messages.identifier(request.identifier, "identifier"), only_app=caller_app()
        )
        return pb.GetSubscriptionStateResponse(
            external_id=state.user.external_id,
            entries=[
                user_pb2.SubscriptionEntry(
                    label=entry.label,
                    push_token=user_messages.push_token_info(
                        entry.device, entry.app_name, full_tokens=False
                    ),
                )
                for entry in state.devices
            ],
            push_enabled_any_app=state.push_enabled_any_app,
        )

    async def ExportUsers(
        self, request: pb.ExportUsersRequest, context: Context
    ) -> AsyncIterator[pb.ExportUsersResponse]:
        async for batch in self.exporter.stream(export_messages.export_query(request)):
            yield export_messages.export_response(batch, request.include_full_tokens)
