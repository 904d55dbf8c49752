"""The synchronous Send: one notification to a token, a device or a user's devices.

Each target gets its own notification id and up to as many attempts as fit in the
request's timeout (the Dispatcher says when to retry). Each target's notification gets
a record like a queued one (GetNotification, ListNotifications and `herald trace` find
it, every attempt is recorded, outcomes go to StreamOutcomes); one still retrying at the
deadline is handed to the queue's retry schedule and answered RETRYING. Idempotent by request_id: the
first answer is kept for a day and returned to a retry; a retry with another request
is REQUEST_ID_MISMATCH.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import timestamp_pb2
from opentelemetry import context as otel_context
from opentelemetry import trace

from herald.delivery.v1 import delivery_service_pb2, notification_pb2
from herald.type.v1 import platform_pb2, push_options_pb2
from services.core.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    HeraldError,
    InvalidArgument,
)
from services.core.redis import RedisClient, hash_tag
from services.core.status import to_status
from services.core.trace_context import current_headers
from services.delivery import queue_keys, queue_tracing, records, tokens
from services.delivery.attempt import AttemptResult
from services.delivery.dispatch import Dispatcher
from services.delivery.enqueue import new_item
from services.delivery.queue_store import Entry, QueueStore
from services.delivery.ratelimit import RateLimiter
from services.delivery.registration import RegistrationClient

DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 60.0
IDEMPOTENCY_SECONDS = 24 * 3600
PLATFORMS = {
    "apns": platform_pb2.PLATFORM_IOS,
    "fcm": platform_pb2.PLATFORM_ANDROID,
    "webpush": platform_pb2.PLATFORM_WEB,
}


def send_key(app_id: str, request_id: str) -> str:
    return f"dlv:send:{hash_tag(app_id)}:{request_id}"


@dataclass
class Target:
    notification: notification_pb2.Notification
    error: HeraldError | None = None
    attempts: list[AttemptResult] = field(default_factory=list)
    cancelled: bool = False  # CancelNotifications stopped it between two attempts


class SendService:
    def __init__(
        self,
        dispatcher: Dispatcher,
        redis: RedisClient,
        registration: RegistrationClient,
        queue: QueueStore,
        tracer: trace.Tracer,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.redis = redis
        self.registration = registration
        self.queue = queue
        self.tracer = tracer
        self.limiter = limiter
        # The lease owner on Send's records (never a queue worker's id).
        self.owner = f"send-{uuid.uuid4().hex[:12]}"

    async def send(
        self, request: delivery_service_pb2.SendRequest
    ) -> delivery_service_pb2.SendResponse:
        time_limit = _time_limit(request)
        n = request.notification
        key = send_key(n.app_id, request.request_id)
        fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        stored = await self._claim(key, fingerprint)
        if stored is not None:
            return stored
        try:
            response = await self._send(n, time_limit)
        except BaseException:
            await self.redis.delete(key)  # nothing was sent (or the caller may retry)
            raise
        await self.redis.set(
            key, b"D" + fingerprint + response.SerializeToString(), ex=IDEMPOTENCY_SECONDS
        )
        return response

    async def _claim(
        self, key: str, fingerprint: bytes
    ) -> delivery_service_pb2.SendResponse | None:
        if await self.redis.set(key, b"P" + fingerprint, nx=True, ex=IDEMPOTENCY_SECONDS):
            return None
        stored: Any = await self.redis.get(key)
        if stored is None:
            return await self._claim(key, fingerprint)
        if stored[1:33] != fingerprint:
            raise InvalidArgument(
                "request_id was used for a different request",
                [FieldViolation("request_id", "was used for a different request")],
                reason="REQUEST_ID_MISMATCH",
            )
        if stored[:1] == b"P":
            raise Aborted(
                "REQUEST_IN_PROGRESS", "a Send with this request_id is still running; retry shortly"
            )
        return delivery_service_pb2.SendResponse.FromString(stored[33:])

    async def _send(
        self, n: notification_pb2.Notification, time_limit: float
    ) -> delivery_service_pb2.SendResponse:
        targets = await self._targets(n)
        deadline = time.monotonic() + time_limit
        if len(targets) == 1 and n.HasField("token"):
            # A single token: input and configuration problems are the call's status.
            prepared = await self.dispatcher.prepare(targets[0].notification)
            wait = self.dispatcher.circuit_wait(prepared)
            if wait > 0:
                raise FailedPrecondition(
                    "CIRCUIT_OPEN",
                    f"app {n.app_id}'s {prepared.provider} sends are paused after configuration errors "
                    f"({prepared.credential.last_error or 'see GetCredentials'}); the circuit half-opens in "
                    f"{wait:.0f}s, or at once when the credentials are replaced",
                    {
                        "provider": prepared.provider,
                        "last_error": prepared.credential.last_error,
                        "retry_seconds": f"{wait:.0f}",
                    },
                )
            await self._take_budget(targets[0])  # RATE_LIMITED is the call's status
        elif self.limiter is not None:
            for target in targets:
                if target.error is None:
                    try:
                        await self._take_budget(target)
                    except HeraldError as error:
                        target.error = error
        await asyncio.gather(*(self._attempts(t, deadline) for t in targets if t.error is None))
        return delivery_service_pb2.SendResponse(results=[_result(t) for t in targets])

    async def _targets(self, n: notification_pb2.Notification) -> list[Target]:
        if n.HasField("token"):
            return [Target(_copy(n, n.token, n.apns_environment, n.device_id))]
        if n.device_id:
            device = await self.registration.device(n.app_id, n.device_id)
            if not device.HasField("token"):
                raise FailedPrecondition(
                    "DEVICE_HAS_NO_TOKEN", f"device {n.device_id} has no usable token"
                )
            return [Target(_copy(n, device.token, device.apns_environment, device.device_id))]
        if n.user_id:
            devices = [
                d
                for d in await self.registration.user_devices(n.app_id, n.user_id)
                if d.HasField("token")
                and d.capability != platform_pb2.PUSH_CAPABILITY_NONE
                and (not n.app_id or d.app_id == n.app_id)
            ]
            if not devices:
                raise FailedPrecondition(
                    "USER_NOT_REACHABLE",
                    f"user {n.user_id} has no reachable device in app {n.app_id}",
                )
            targets = []
            for device in devices:
                target = Target(_copy(n, device.token, device.apns_environment, device.device_id))
                try:
                    await self.dispatcher.check(target.notification)
                except HeraldError as error:
                    target.error = error
                targets.append(target)
            return targets
        raise InvalidArgument(
            "a target is required",
            [
                FieldViolation(
                    "notification.token", "one of token, device_id or user_id is required"
                )
            ],
        )

    async def _take_budget(self, target: Target) -> None:
        """Send does not wait for rate budget (the queue does): out of budget is
        RESOURCE_EXHAUSTED (RATE_LIMITED) with the wait as retry hint."""
        if self.limiter is not None:
            n = target.notification
            await self.limiter.check_now(n.app_id, tokens.provider_of(n.token))

    async def _attempts(self, target: Target, deadline: float) -> None:
        n = target.notification
        if not n.trace_context:
            n.trace_context.update(current_headers())
        shard = queue_keys.shard_for(n.notification_id, self.queue.shards)
        now = time.time()
        # The lease lasts past the deadline by one send: the last attempt may start then.
        lease_s = deadline - time.monotonic() + self.dispatcher.send_timeout + 1
        await self.queue.open_direct(
            shard, new_item(n), int(now * 1000), self.owner, int((now + lease_s) * 1000)
        )
        attempt = 1
        while True:
            remaining = deadline - time.monotonic()
            with queue_tracing.attempt_span(
                self.tracer, otel_context.get_current(), n, attempt
            ) as span:
                result = await self.dispatcher.deliver(
                    n,
                    attempt,
                    time_limit=max(0.05, min(self.dispatcher.send_timeout, remaining)),
                )
                queue_tracing.annotate(span, result)
                trace_id, span_id = queue_tracing.ids(span)
            target.attempts.append(result)
            delay = result.next_retry_delay_seconds
            again = delay is not None and time.monotonic() + delay < deadline
            # A retry that does not fit before the deadline goes to the queue's schedule
            # (the workers send it when due) instead of being dropped.
            done = records.finish_of(
                n,
                result,
                attempt=attempt,
                worker_id=self.owner,
                trace_id=trace_id,
                span_id=span_id,
                now=time.time(),
                hand_to_queue=not again,
            )
            await self.queue.finish(shard, n.notification_id, "", done, int(time.time() * 1000))
            if not again or delay is None:
                return
            await asyncio.sleep(delay)
            attempt += 1
            # Take the lease back (finish dropped it); a CancelNotifications that came
            # in between wins, and the Send stops here.
            status, _ = await self.queue.begin(
                Entry(shard, "", n.notification_id, attempt, 0),
                self.owner,
                int(time.time() * 1000),
                lease_ms=int(
                    (deadline - time.monotonic() + self.dispatcher.send_timeout + 1) * 1000
                ),
            )
            if status != "GO":
                target.cancelled = True
                return


def _time_limit(request: delivery_service_pb2.SendRequest) -> float:
    problems = []
    if not request.request_id:
        problems.append(FieldViolation("request_id", "is required (a UUID)"))
    if not request.HasField("notification") or not request.notification.app_id:
        problems.append(FieldViolation("notification.app_id", "is required"))
    seconds = (
        request.timeout.ToNanoseconds() / 1e9 if request.HasField("timeout") else DEFAULT_TIMEOUT
    )
    if not 0 < seconds <= MAX_TIMEOUT:
        problems.append(FieldViolation("timeout", "must be more than 0 and at most 60 s"))
    if problems:
        raise InvalidArgument("the request has invalid fields", problems)
    return seconds


def _copy(
    n: notification_pb2.Notification, token: object, environment: int, device_id: str
) -> notification_pb2.Notification:
    out = notification_pb2.Notification()
    out.CopyFrom(n)
    out.token.CopyFrom(token)  # type: ignore[arg-type]
    out.apns_environment = environment  # type: ignore[assignment]
    out.device_id = device_id
    out.notification_id = str(uuid.uuid4())
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    out.create_time.CopyFrom(now)
    return out


def _result(target: Target) -> delivery_service_pb2.SendResult:
    n = target.notification
    out = delivery_service_pb2.SendResult(
        notification_id=n.notification_id,
        device_id=n.device_id,
        platform=PLATFORMS.get(tokens.provider_of(n.token), platform_pb2.PLATFORM_UNSPECIFIED),
    )
    if target.error is not None:
        status = to_status(target.error)
        out.outcome = push_options_pb2.DELIVERY_OUTCOME_FAILED
        out.provider_reason = target.error.reason
        out.error.code = status.code
        out.error.reason = target.error.reason
        out.error.message = target.error.message
        return out
    last = target.attempts[-1]
    out.outcome = last.outcome  # type: ignore[assignment]
    if target.cancelled:
        out.outcome = push_options_pb2.DELIVERY_OUTCOME_CANCELLED
    out.provider_status = last.status
    out.provider_reason = last.reason
    if last.provider == "apns":
        out.apns_id = last.provider_id
    elif last.provider == "fcm":
        out.fcm_message_name = last.provider_id
    out.latency.FromNanoseconds(int(sum(a.latency_ms for a in target.attempts) * 1e6))
    return out
