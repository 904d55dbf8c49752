"""Enqueue: check each notification, give it an id, and append the batch to the queue.

Idempotent by request_id (the first answer is kept a day, like Send's). Each item is
checked with Dispatcher.check (bad input and missing credentials become per-item
errors); items with an explicit idempotency key already used for the same token get
the first notification's id and are not queued again. If any shard the batch would go
to is full, the whole call answers RESOURCE_EXHAUSTED (QUEUE_FULL) and queues nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from herald.delivery.v1 import delivery_service_pb2, notification_pb2
from herald.type.v1 import error_pb2
from services.core.errors import (
    Aborted,
    FieldViolation,
    HeraldError,
    InvalidArgument,
    ResourceExhausted,
)
from services.core.redis import RedisClient
from services.core.status import to_status
from services.core.trace_context import current_headers
from services.delivery import queue_keys as keys
from services.delivery import tokens
from services.delivery.dispatch import Dispatcher
from services.delivery.notification_ids import new_ids
from services.delivery.options import DeliveryOptions
from services.delivery.queue_store import NewItem, QueueStore

MAX_BATCH = 1000
IDEMPOTENCY_SECONDS = 24 * 3600
DS = delivery_service_pb2


class EnqueueService:
    def __init__(
        self,
        store: QueueStore,
        dispatcher: Dispatcher,
        redis: RedisClient,
        options: DeliveryOptions,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.redis = redis
        self.options = options

    async def enqueue(self, request: DS.EnqueueRequest) -> DS.EnqueueResponse:
        _check(request)
        key = keys.enqueue_request(request.request_id)
        fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        stored = await self._claim(key, fingerprint)
        if stored is not None:
            return stored
        try:
            response = await self._enqueue(request)
        except BaseException:
            await self.redis.delete(key)  # nothing was queued: a retry may go ahead
            raise
        await self.redis.set(
            key, b"D" + fingerprint + response.SerializeToString(), ex=IDEMPOTENCY_SECONDS
        )
        return response

    async def _claim(self, key: str, fingerprint: bytes) -> DS.EnqueueResponse | None:
        for _ in range(3):
            if await self.redis.set(key, b"P" + fingerprint, nx=True, ex=IDEMPOTENCY_SECONDS):
                return None
            stored: Any = await self.redis.get(key)
            if stored is None:
                continue  # the first call failed and let go meanwhile
            if stored[1:33] != fingerprint:
                raise InvalidArgument(
                    "request_id was used for a different request",
                    [FieldViolation("request_id", "was used for a different request")],
                    reason="REQUEST_ID_MISMATCH",
                )
            if stored[:1] == b"P":
                raise Aborted(
                    "REQUEST_IN_PROGRESS",
                    "an Enqueue with this request_id is still running; retry shortly",
                )
            return DS.EnqueueResponse.FromString(stored[33:])
        raise Aborted("REQUEST_IN_PROGRESS", "the request_id is contended; retry shortly")

    async def _enqueue(self, request: DS.EnqueueRequest) -> DS.EnqueueResponse:
        now_ms = int(time.time() * 1000)
        caller_trace = current_headers()
        results = [DS.EnqueueResult() for _ in request.notifications]
        accepted: list[tuple[int, notification_pb2.Notification]] = []
        ids = new_ids(len(request.notifications))
        seconds, nanos = now_ms // 1000, now_ms % 1000 * 1_000_000
        # The request's own messages become the queued ones (the fingerprint is taken):
        # a copy per notification cost more than the rest of its bookkeeping.
        for position, item in enumerate(request.notifications):
            item.notification_id = ids[position]
            item.create_time.seconds = seconds
            item.create_time.nanos = nanos
            if item.attempts:
                del item.attempts[:]
            if not item.trace_context and caller_trace:
                item.trace_context.update(caller_trace)
            try:
                await self.dispatcher.check(item, prefix="")
            except HeraldError as error:
                results[position].error.CopyFrom(item_error(error))
                continue
            accepted.append((position, item))

        by_shard: dict[int, list[tuple[int, notification_pb2.Notification]]] = {}
        for position, item in accepted:
            shard = keys.shard_for(item.notification_id, self.store.shards)
            by_shard.setdefault(shard, []).append((position, item))
        await self._check_depth({shard: len(items) for shard, items in by_shard.items()})

        keyed = [
            (position, item)
            for items in by_shard.values()
            for position, item in items
            if item.idempotency_key
        ]
        owners = await self.store.claim_idempotency(
            [
                (
                    keys.idempotency(item.idempotency_key, tokens.canonical(item.token)),
                    item.notification_id,
                )
                for _, item in keyed
            ]
        )
        owner_at = {position: owner for (position, _), owner in zip(keyed, owners, strict=True)}
        queued = 0
        appends = []
        for shard, items in by_shard.items():
            fresh: list[NewItem] = []
            for position, item in items:
                owner = owner_at.get(position)
                # An earlier notification with this key and token: answer its id, queue nothing.
                results[position].notification_id = owner or item.notification_id
                if owner is None:
                    fresh.append(new_item(item))
            if fresh:
                queued += len(fresh)
                appends.append(self.store.append(shard, fresh, now_ms))
        await asyncio.gather(*appends)
        return DS.EnqueueResponse(results=results, queued_count=queued)

    async def _check_depth(self, adding: dict[int, int]) -> None:
        if not adding:
            return
        depths = await self.store.depths(sorted(adding))
        full = [s for s, n in adding.items() if depths[s] + n > self.options.queue_max_depth]
        if full:
            # Checked before anything is written: a full queue queues nothing. Concurrent
            # batches may overshoot the bound by at most one batch each.
            raise ResourceExhausted(
                "QUEUE_FULL",
                f"the delivery queue is full ({self.options.queue_max_depth} items per shard); "
                f"retry in {self.options.queue_full_retry_seconds:.0f}s",
                self.options.queue_full_retry_seconds,
                {"max_depth": str(self.options.queue_max_depth)},
            )


def _check(request: DS.EnqueueRequest) -> None:
    problems = []
    if not request.request_id:
        problems.append(FieldViolation("request_id", "is required (a UUID)"))
    if problems:
        raise InvalidArgument("the request has invalid fields", problems)
    count = len(request.notifications)
    if not 1 <= count <= MAX_BATCH:
        raise InvalidArgument(
            f"a batch holds 1 to {MAX_BATCH} notifications, got {count}",
            [FieldViolation("notifications", f"must hold 1 to {MAX_BATCH} items")],
            reason="BATCH_TOO_LARGE",
        )


def new_item(item: notification_pb2.Notification) -> NewItem:
    return NewItem(
        notification_id=item.notification_id,
        payload=item.SerializeToString(),
        app_id=item.app_id,
        device_id=item.device_id,
        user_id=item.user_id,
        campaign_id=item.campaign_id,
    )


def item_error(error: HeraldError) -> error_pb2.ItemError:
    status = to_status(error)
    out = error_pb2.ItemError(
        code=status.code, reason=error.reason, message=error.message, metadata=dict(error.metadata)
    )
    if isinstance(error, InvalidArgument):
        out.field_violations.extend(
            error_pb2.FieldViolation(field=v.field, description=v.description, reason=v.reason)
            for v in error.violations
        )
    return out
