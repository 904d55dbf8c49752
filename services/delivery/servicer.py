"""The gRPC edge of the Delivery service: proto in, domain call, proto out.

Credentials (Put/Get/List/Delete) and Send are implemented here; the queue RPCs
(Enqueue, StreamOutcomes, GetNotification, ListNotifications, CancelNotifications)
answer UNIMPLEMENTED (NOT_IMPLEMENTED_YET) until they land; see
services/core/pending.py.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import grpc

from herald.delivery.v1 import delivery_service_pb2, delivery_service_pb2_grpc
from services.core.errors import FieldViolation, InvalidArgument, NotFound, Validator
from services.core.pending import fill_pending
from services.core.server import Runtime
from services.delivery import credentials as creds
from services.delivery.dispatch import Dispatcher
from services.delivery.registration import RegistrationClient
from services.delivery.send import SendService

ISSUE = "issue #5"
DS = delivery_service_pb2
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


class DeliveryServicer(delivery_service_pb2_grpc.DeliveryServiceServicer):
    def __init__(self, runtime: Runtime, dispatcher: Dispatcher | None = None) -> None:
        self.runtime = runtime
        registration = RegistrationClient(lambda: runtime.channel("registration"))
        self.dispatcher = dispatcher or Dispatcher(runtime.settings, runtime.redis, registration)
        self.store = self.dispatcher.store
        self.sender = SendService(self.dispatcher, runtime.redis, registration)
        fill_pending(
            self,
            delivery_service_pb2_grpc.DeliveryServiceServicer,
            delivery_service_pb2.DESCRIPTOR.services_by_name["DeliveryService"],
            ISSUE,
        )

    async def close(self) -> None:
        await self.dispatcher.close()

    # -- credentials ------------------------------------------------------------------
    async def PutCredentials(
        self, request: DS.PutCredentialsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DS.PutCredentialsResponse:
        new = creds.validate(request.credentials)
        if request.validate_only:
            now = time.time()
            preview = creds.Credential(new.slot, new.kind, {}, new.public, 0, now, now)
            return DS.PutCredentialsResponse(credentials=creds.to_proto(preview))
        stored, replaced = await self.store.put(new)
        self.dispatcher.credentials.invalidate(new.slot)
        return DS.PutCredentialsResponse(credentials=creds.to_proto(stored), replaced=replaced)

    async def GetCredentials(
        self, request: DS.GetCredentialsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DS.GetCredentialsResponse:
        slot = _slot(request.app_id, request.provider, request.apns_environment)
        stored = await self.store.get(slot)
        if stored is None:
            raise _not_found(slot)
        return DS.GetCredentialsResponse(credentials=creds.to_proto(stored))

    async def ListCredentials(
        self, request: DS.ListCredentialsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DS.ListCredentialsResponse:
        check = Validator()
        check.require(bool(creds.APP_ID_RE.fullmatch(request.app_id)), "app_id", "is required")
        check.require(0 <= request.page_size <= MAX_PAGE_SIZE, "page_size", "must be 0 to 100")
        check.raise_if_any()
        after = _read_page_token(request.page_token, request.app_id)
        size = request.page_size or DEFAULT_PAGE_SIZE
        found = [c for c in await self.store.list(request.app_id) if c.slot.name > after]
        page = found[:size]
        next_token = _page_token(request.app_id, page[-1].slot.name) if len(found) > size else ""
        return DS.ListCredentialsResponse(
            credentials=[creds.to_proto(c) for c in page], next_page_token=next_token
        )

    async def DeleteCredentials(
        self, request: DS.DeleteCredentialsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DS.DeleteCredentialsResponse:
        slot = _slot(request.app_id, request.provider, request.apns_environment)
        if not await self.store.delete(slot):
            raise _not_found(slot)
        self.dispatcher.credentials.invalidate(slot)
        response = DS.DeleteCredentialsResponse()
        response.delete_time.GetCurrentTime()
        return response

    # -- sending ----------------------------------------------------------------------
    async def Send(
        self, request: DS.SendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DS.SendResponse:
        return await self.sender.send(request)


def _slot(app_id: str, provider: int, environment: int) -> creds.Slot:
    check = Validator()
    slot = creds.slot_of(app_id, provider, environment, check, "")
    check.raise_if_any()
    return slot


def _not_found(slot: creds.Slot) -> NotFound:
    return NotFound(
        "CREDENTIALS_NOT_FOUND",
        f"app {slot.app_id} has no {slot.name} credentials",
        {"app_id": slot.app_id, "provider": slot.name},
    )


def _page_token(app_id: str, after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"a": app_id, "k": after}).encode()).decode()


def _read_page_token(token: str, app_id: str) -> str:
    if not token:
        return ""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if data["a"] == app_id:
            return str(data["k"])
    except (ValueError, KeyError, TypeError):
        pass
    raise InvalidArgument(
        "the page token was not issued for this request",
        [FieldViolation("page_token", "was not issued by ListCredentials for this app")],
        reason="INVALID_PAGE_TOKEN",
    )
