"""Helpers for the queue tests: Delivery servers with quick queue options, stubs,
Enqueue requests and waiting for outcomes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from herald.delivery.v1 import delivery_service_pb2, delivery_service_pb2_grpc, notification_pb2
from herald.type.v1 import push_options_pb2
from services.core.config import Settings
from services.core.server import RunningServer
from services.delivery.options import DeliveryOptions, parse_rate_limits
from services.delivery.servicer import DeliveryServicer
from services.delivery.spec import spec_with

DS = delivery_service_pb2
OUT = push_options_pb2
FINAL = {
    OUT.DELIVERY_OUTCOME_DELIVERED,
    OUT.DELIVERY_OUTCOME_TOKEN_INVALID,
    OUT.DELIVERY_OUTCOME_FAILED,
    OUT.DELIVERY_OUTCOME_CANCELLED,
}


def quick_options(**changes: Any) -> DeliveryOptions:
    """Small, fast settings: few shards, a 2 s reclaim (sends to the in-process sandbox
    take milliseconds, but the test machine may be busy), retries polled every 50 ms, no
    rate limit unless asked."""
    base = DeliveryOptions(
        queue_shards=4,
        reclaim_seconds=2.0,
        retry_poll_seconds=0.05,
        worker_concurrency=64,
        read_batch=32,
        rate_limits=parse_rate_limits(""),
    )
    return base.with_changes(**changes)


class Node:
    """One running Delivery server with a client stub."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub: Any = delivery_service_pb2_grpc.DeliveryServiceStub(self.channel)

    @property
    def servicer(self) -> DeliveryServicer:
        servicer: DeliveryServicer = self.server.servicer
        return servicer

    async def close(self) -> None:
        await self.channel.close(None)


NodeStarter = Callable[..., Awaitable[Node]]


def node_starter(start_service: Any, settings: Settings, opened: list[Node]) -> NodeStarter:
    async def start(options: DeliveryOptions | None = None, **changes: Any) -> Node:
        chosen = options or quick_options(**changes)
        server = await start_service(spec_with(chosen), settings)
        node = Node(server)
        opened.append(node)
        return node

    return start


def enqueue_request(
    notifications: list[notification_pb2.Notification], request_id: str = ""
) -> DS.EnqueueRequest:
    for n in notifications:
        n.ClearField("notification_id")
    return DS.EnqueueRequest(
        notifications=notifications, request_id=request_id or str(uuid.uuid4())
    )


async def wait_for(
    check: Callable[[], Awaitable[bool]], within: float = 15.0, every: float = 0.05
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)


async def outcome_of(stub: Any, notification_id: str) -> notification_pb2.Notification:
    answer = await stub.GetNotification(DS.GetNotificationRequest(notification_id=notification_id))
    found: notification_pb2.Notification = answer.notification
    return found


async def wait_final(
    stub: Any, ids: list[str], within: float = 20.0
) -> list[notification_pb2.Notification]:
    found: dict[str, notification_pb2.Notification] = {}

    async def all_final() -> bool:
        for nid in ids:
            if nid not in found:
                n = await outcome_of(stub, nid)
                if n.outcome in FINAL:
                    found[nid] = n
        return len(found) == len(ids)

    await wait_for(all_final, within, every=0.1)
    return [found[nid] for nid in ids]
