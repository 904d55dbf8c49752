"""The gRPC edge of the Delivery service: proto in, domain call, proto out.

Credentials (Put/Get/List/Delete), Send, the queue: Enqueue, StreamOutcomes,
GetNotification, ListNotifications, CancelNotifications, and GetTrace (traces.py). The servicer also owns the
process's queue workers: `start()` (called by the spec's build) starts them, `close()`
(awaited by the bootstrap at shutdown) stops them gracefully.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc

from herald.delivery.v1 import delivery_service_pb2, delivery_service_pb2_grpc
from services.core.auth import caller_app, require_app_access
from services.core.errors import FieldViolation, InvalidArgument, NotFound, Validator
from services.core.pending import fill_pending
from services.core.server import Runtime
from services.delivery import credentials as creds
from services.delivery.dispatch import Dispatcher
from services.delivery.enqueue import EnqueueService
from services.delivery.metrics import DeletedApps, DeliveryMetrics, ExpirySampler, QueueSampler
from services.delivery.notifications import NotificationRecords
from services.delivery.options import DeliveryOptions
from services.delivery.outcomes import OutcomeStream
from services.delivery.queue_store import QueueStore
from services.delivery.ratelimit import RateLimiter
from services.delivery.registration import RegistrationClient
from services.delivery.send import SendService
from services.delivery.traces import TraceReader
from services.delivery.workers import WorkerPool

ISSUE = "issue #5"
DS = delivery_service_pb2
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


class DeliveryServicer(delivery_service_pb2_grpc.DeliveryServiceServicer):
    def __init__(
        self,
        runtime: Runtime,
        dispatcher: Dispatcher | None = None,
        options: DeliveryOptions | None = None,
    ) -> None:
        self.runtime = runtime
        self.options = options or DeliveryOptions()
        registration = RegistrationClient(lambda: runtime.channel("registration"))
        self.dispatcher = dispatcher or Dispatcher(runtime.settings, runtime.redis, registration)
        self.store = self.dispatcher.store
        self.queue = QueueStore(runtime.redis, self.options)
        self.limiter = RateLimiter(runtime.redis, self.options)
        tracer = runtime.tracer_provider.get_tracer("herald.delivery")
        self.sender = SendService(
            self.dispatcher, runtime.redis, registration, self.queue, tracer, self.limiter
        )
        self.enqueuer = EnqueueService(self.queue, self.dispatcher, runtime.redis, self.options)
        self.records = NotificationRecords(self.queue)
        self.outcomes = OutcomeStream(self.queue)
        self.traces = TraceReader(runtime.redis, runtime.settings)
        self.metrics = DeliveryMetrics(runtime.metrics.meter)
        self.dispatcher.use_metrics(self.metrics)
        self.sampler = QueueSampler(self.queue)
        self.metrics.observe(
            "herald.delivery.queue.depth",
            "Items a shard holds (queued and in flight)",
            "1",
            self.sampler.depths,
        )
        self.metrics.observe(
            "herald.delivery.queue.oldest_age",
            "Age of a shard's oldest item",
            "s",
            self.sampler.ages,
        )
        refresh = self.options.credential_expiry_refresh_seconds
        self.expiry = ExpirySampler(
            self.store,
            # Whether an app still exists is asked again every tenth refresh (5 min).
            DeletedApps(lambda: runtime.channel("identity"), recheck_seconds=10 * refresh),
            refresh,
        )
        self.metrics.observe(
            "herald.delivery.credentials.expiry",
            "Seconds until a stored credential (APNs certificate) expires, every app's",
            "s",
            self.expiry.gauge,
        )
        self.workers = WorkerPool(
            self.queue,
            self.dispatcher,
            self.limiter,
            self.options,
            tracer,
        )
        fill_pending(
            self,
            delivery_service_pb2_grpc.DeliveryServiceServicer,
            delivery_service_pb2.DESCRIPTOR.services_by_name["DeliveryService"],
            ISSUE,
        )

    async def start(self) -> None:
        await self.queue.ensure_groups()
        self.sampler.start()
        self.expiry.start()
        if self.options.workers_enabled:
            await self.workers.start()

    async def close(self) -> None:
        await self.sampler.close()
        await self.expiry.close()
        await self.workers.close(self.runtime.settings.shutdown_grace_seconds)
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
        self.expiry.note(new.slot, creds.expire_time(new.public))
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
        self.expiry.note(slot, 0)
        response = DS.DeleteCredentialsResponse()
        response.delete_time.GetCurrentTime()
        return response

    # -- sending ----------------------------------------------------------------------
    async def Send(
        self, request: DS.SendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DS.SendResponse:
        return await self.sender.send(request)

    # -- the queue ----------------------------------------------------------------------
    async def Enqueue(
        self, request: DS.EnqueueRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DS.EnqueueResponse:
        return await self.enqueuer.enqueue(request)

    async def StreamOutcomes(
        self, request: DS.StreamOutcomesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[DS.StreamOutcomesResponse]:
        async for batch in self.outcomes.stream(_own_app(request)):
            yield batch

    async def GetNotification(
        self, request: DS.GetNotificationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DS.GetNotificationResponse:
        found = await self.records.get(request.notification_id)
        require_app_access(found.app_id)  # an app key reads only its own app's notifications
        return DS.GetNotificationResponse(notification=found)

    async def ListNotifications(
        self, request: DS.ListNotificationsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DS.ListNotificationsResponse:
        return await self.records.list_page(_own_app(request))

    async def CancelNotifications(
        self, request: DS.CancelNotificationsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DS.CancelNotificationsResponse:
        return await self.records.cancel(_own_app(request))

    async def GetTrace(
        self, request: DS.GetTraceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DS.GetTraceResponse:
        return await self.traces.get(request)


AppScoped = TypeVar(
    "AppScoped",
    DS.StreamOutcomesRequest,
    DS.ListNotificationsRequest,
    DS.CancelNotificationsRequest,
)


def _own_app(request: AppScoped) -> AppScoped:
    """For an app key, a request without an app filter is narrowed to the key's app."""
    own = caller_app()
    if not own or request.app_id:
        return request  # the interceptor already held a named app to the key's
    narrowed = type(request)()
    narrowed.CopyFrom(request)
    narrowed.app_id = own
    return narrowed


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
