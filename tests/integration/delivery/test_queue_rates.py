"""Rate limits per (app, provider) shared through Redis by every Delivery process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import grpc
import pytest

from services.core.status import parse_error
from services.delivery.options import parse_rate_limits
from services.sandbox.apns import new_device_token

from .conftest import apns_credentials, apns_notification, seconds
from .queue_helpers import DS, OUT, enqueue_request, wait_final


async def test_a_rate_limit_is_shared_by_two_processes_and_nothing_is_dropped(start_node, sandbox):
    limits = parse_rate_limits("apns=10/1")  # 10 a second, bursts of 10
    # A long reclaim: waits for budget must never look like a dead worker here.
    one = await start_node(rate_limits=limits, reclaim_seconds=10.0)
    two = await start_node(rate_limits=limits, reclaim_seconds=10.0)
    await one.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    tokens = [new_device_token() for _ in range(40)]

    started = time.time()
    first = await one.stub.Enqueue(enqueue_request([apns_notification(t) for t in tokens[:20]]))
    second = await two.stub.Enqueue(enqueue_request([apns_notification(t) for t in tokens[20:]]))
    done = await wait_final(
        one.stub, [r.notification_id for r in [*first.results, *second.results]], within=30
    )

    assert [n.outcome for n in done] == [OUT.DELIVERY_OUTCOME_DELIVERED] * 40
    got = sandbox.received("apns", status=200)
    assert Counter(e["token"] for e in got) == Counter(tokens)  # each exactly once
    times = sorted(e["time"] for e in got)
    # 10 at once, then 10 a second across both processes: the last one ~3 s later.
    assert times[-1] - started >= 2.6
    # The budget is never overspent: the n-th send cannot come before (n - 10) / 10 s
    # after the start. Counted from the start, not per window: a loaded machine may
    # delay sends and bunch them up, but nothing may go out early.
    early = [n for n, t in enumerate(times, 1) if t - started < (n - 10) / 10 - 0.05]
    assert early == []
    assert one.servicer.workers.sent + two.servicer.workers.sent == 40
    # Which process sends what is up to the queue; the budget is one: spending it from
    # one process leaves none for the other.
    await asyncio.sleep(1.1)  # a full burst again
    spent = [await one.servicer.limiter.take("shop", "apns", 0.0) for _ in range(10)]
    taken, wait = await two.servicer.limiter.take("shop", "apns", 0.0)
    assert all(ok for ok, _ in spent)
    assert not taken
    assert 0 < wait <= 0.1


async def test_send_answers_rate_limited_with_a_hint_when_the_budget_is_out(start_node, sandbox):
    node = await start_node(rate_limits=parse_rate_limits("apns:shop=1/60"))
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))

    def send() -> DS.SendRequest:
        n = apns_notification(new_device_token())
        n.ClearField("notification_id")
        return DS.SendRequest(notification=n, request_id=str(uuid.uuid4()), timeout=seconds(3))

    ok = await node.stub.Send(send())
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await node.stub.Send(send())
    queued = await node.stub.Enqueue(enqueue_request([apns_notification(new_device_token())]))

    assert ok.results[0].outcome == OUT.DELIVERY_OUTCOME_DELIVERED
    error = parse_error(limited.value)
    assert (limited.value.code(), error.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
    )
    assert error.retry_after_seconds is not None
    assert 50 <= error.retry_after_seconds <= 60
    assert queued.queued_count == 1  # Enqueue never fails on rate limits: the queue absorbs
    listed = await node.stub.GetNotification(
        DS.GetNotificationRequest(notification_id=queued.results[0].notification_id)
    )
    assert listed.notification.outcome == OUT.DELIVERY_OUTCOME_QUEUED
    assert len(sandbox.received("apns")) == 1
