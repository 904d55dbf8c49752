"""The fan-out of one campaign: stream the audience from Registration in batches,
fetch the users from Identity in batches, decide per device (audience, schedule, quiet
hours, credentials, frequency cap, rendering), pace by the throttle, enqueue to
Delivery in batches, and record each batch with its stream cursor in one script.

Only one process runs a campaign's fan-out at a time (it holds the campaign's lease).
Memory holds one batch, never the audience: recipients due later (local time, quiet
hours) are parked in Redis (`held`) and sent when due. A crash between Enqueue and the
commit replays the batch from the previous cursor; every notification carries the
idempotency key "<campaign_id>:<device_id>", so Delivery sends nothing twice and the
counters, committed with the cursor, count it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from herald.campaign.v1 import campaign_pb2
from herald.registration.v1 import device_pb2, registration_service_pb2
from services.campaign import audience as audiences
from services.campaign import schedules, wire
from services.campaign.clients import user_context
from services.campaign.deps import Deps
from services.campaign.fanout_users import FanoutUsers, user_of
from services.campaign.messages import CompiledMessage
from services.campaign.recipients import (
    CREDENTIALS_MISSING,
    FREQUENCY_CAPPED,
    PAYLOAD_TOO_LARGE,
    TEMPLATE_RENDER_ERROR,
    context_of,
    prepare,
    user_fields,
)
from services.campaign.templates import TemplateRenderError
from services.campaign.throttle import STOP_CHECK_SECONDS, Stopped, Throttle
from services.core.errors import HeraldError

log = logging.getLogger("herald.campaign.fanout")
S = campaign_pb2
RETRYABLE = {
    "DEPENDENCY_UNAVAILABLE",
    "QUEUE_FULL",
    "RATE_LIMITED",
    "NOT_IMPLEMENTED_YET",
    "UNAVAILABLE",
}
CANCELLED = "CANCELLED"
IDEMPOTENCY_NAMESPACE = uuid.UUID("0b7a3f0e-6c1d-4f57-9a55-5f1f3b1f6a01")


# A rendered notification (serialized), its device, and the device's platform.
Outgoing = tuple[bytes, device_pb2.AudienceDevice, int]
# A streamed batch and its users being fetched; None after the last one.
Ahead = (
    tuple[registration_service_pb2.StreamAudienceResponse, "asyncio.Future[dict[str, bytes]]"]
    | None
)


def _context(device: device_pb2.AudienceDevice, stored: bytes | None) -> dict[str, Any]:
    """The full template context, built only when a render is not cached."""
    user = user_context(user_of(device.user_id, stored)) if stored is not None else None
    return context_of(device, device.platform, user)


@dataclass
class Batch:
    """What one batch decided; committed atomically with the cursor."""

    counters: Counter[str] = field(default_factory=Counter)
    hold: list[tuple[int, bytes]] = field(default_factory=list)
    # Each ready device with its user (fanout_users: serialized, None if it has none).
    ready: list[tuple[device_pb2.AudienceDevice, bytes | None]] = field(default_factory=list)

    def count(self, name: str, platform: int, delta: int = 1) -> None:
        self.counters[name] += delta
        self.counters[f"p{platform}:{name}"] += delta

    def suppress(self, reason: str, platform: int) -> None:
        self.count("suppressed", platform)
        self.counters[f"s:{reason}"] += 1


class Fanout:
    def __init__(
        self, deps: Deps, campaign: campaign_pb2.Campaign, credentials: set[int], default_zone: str
    ) -> None:
        self.deps = deps
        self.campaign = campaign
        self.id = campaign.campaign_id
        self.credentials = credentials
        self.default_zone = default_zone or "UTC"
        self.message = CompiledMessage(campaign.message)
        self.audience = audiences.CompiledAudience(campaign.audience, campaign.message.background)
        self.schedule = campaign.schedule
        self.launch = campaign.launch_time.ToMilliseconds() / 1000
        self.max_hold = (
            float(campaign.message.ttl.seconds) if campaign.message.HasField("ttl") else None
        )
        need_zone = self.schedule.WhichOneof("when") == "local" or self.schedule.HasField(
            "quiet_hours"
        )
        self.user_paths = user_fields(
            self.message, self.audience, need_zone or self.audience.needs_user
        )
        # Sent now, whatever the recipient's zone: no due time to work out per device.
        self.immediate = not need_zone
        self.users = FanoutUsers(deps.identity, self.user_paths, deps.tuning.known_users)
        self.fast = wire.FastMessage.build(
            self.message, self.id, masked=self.user_paths is not None
        )
        self.throttle = (
            Throttle(campaign.throttle.messages_per_minute, lambda: self.deps.clock)
            if campaign.HasField("throttle")
            else None
        )
        self.lost = False

    # -- control -----------------------------------------------------------------------
    async def should_stop(self) -> bool:
        if self.lost:
            return True
        return await self.deps.store.state(self.id) != S.CAMPAIGN_STATE_SENDING

    async def run(self, cursor: str, resolved: bool) -> None:
        """Runs to completion; raises Stopped when cancelled or the lease was lost."""
        if not resolved:
            await self._stream(cursor)
        await self._drain_held()

    # -- phase 1: the audience stream ----------------------------------------------------------
    async def _stream(self, cursor: str) -> None:
        query = audiences.registration_query(
            self.campaign.app_id, self.campaign.audience, self.campaign.message.background
        )
        if query is None:  # the filter can match nobody
            await self._commit(Batch(), cursor=None, resolved=True)
            return
        # The next batches' devices and users are fetched while this one is rendered
        # and enqueued (at most `prefetch_batches` ahead, so memory stays flat): the
        # three processes then work at the same time instead of in turn.
        ahead: asyncio.Queue[Ahead] = asyncio.Queue(self.deps.tuning.prefetch_batches)
        reader = asyncio.create_task(self._read_ahead(query, cursor, ahead))
        try:
            while (item := await ahead.get()) is not None:
                response, users = item
                if await self.should_stop():
                    raise Stopped()
                batch = await self._decide(list(response.devices), await users)
                await self._send_then_commit(batch, response.cursor)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            while not ahead.empty():
                left = ahead.get_nowait()
                if left is not None:
                    left[1].cancel()
                    await asyncio.gather(left[1], return_exceptions=True)
        await self._commit(Batch(), cursor=None, resolved=True)

    async def _read_ahead(
        self,
        query: registration_service_pb2.AudienceQuery,
        cursor: str,
        ahead: asyncio.Queue[Ahead],
    ) -> None:
        try:
            async for response in self.deps.registration.stream_audience(
                query, cursor, self.deps.tuning.batch_size
            ):
                users = asyncio.ensure_future(self.users.fetch(response.devices))
                await ahead.put((response, users))
        except Exception as error:  # reaches the fan-out through the queue, in order
            failed: asyncio.Future[dict[str, bytes]] = asyncio.Future()
            failed.set_exception(error)
            await ahead.put((registration_service_pb2.StreamAudienceResponse(), failed))
            return
        await ahead.put(None)

    async def _send_then_commit(
        self, batch: Batch, cursor: str | None, released: list[bytes] | None = None
    ) -> None:
        try:
            await self._send(batch)
        except Stopped:
            # Cancelled mid-batch: what was enqueued is counted all the same (commit.lua
            # accepts a cancelled campaign's last batch), the rest as suppressed CANCELLED.
            await self._commit(batch, cursor=None, resolved=False, released=released)
            raise
        await self._commit(batch, cursor=cursor, resolved=False, released=released)

    async def _decide(
        self, devices: list[device_pb2.AudienceDevice], users: dict[str, bytes]
    ) -> Batch:
        batch = Batch()
        any_app = await self._any_app(devices) if self.audience.needs_any_app else {}
        now = self.deps.now()
        # The filter and the local time read the user as a dict; templates do not.
        wants_view = self.audience.needs_user or not self.immediate
        views: dict[str, dict[str, Any]] = {}
        targeted: Counter[int] = Counter()
        if self.audience.device_only and self.immediate:  # the common case, kept lean
            matches = self.audience.matches_device
            ready = batch.ready
            for device in devices:
                if matches(device):
                    targeted[device.platform] += 1
                    ready.append((device, users.get(device.user_id)))
            for platform, count in targeted.items():
                batch.count("targeted", platform, count)
            return batch
        for device in devices:
            user_id = device.user_id
            user = users.get(user_id) if user_id else None
            view = None
            if wants_view and user is not None:
                view = views.get(user_id)
                if view is None:
                    view = views[user_id] = user_context(user_of(user_id, user))
            recipient = audiences.Recipient(device, view, any_app.get(user_id))
            if not self.audience.matches(recipient):
                continue
            targeted[device.platform] += 1
            if self.immediate:
                batch.ready.append((device, user))
                continue
            zone = recipient.time_zone or self.default_zone
            due = schedules.due_for(self.schedule, zone, now, self.launch, self.max_hold)
            if due.suppressed:
                batch.suppress(due.suppressed, device.platform)
            elif due.at > now + 0.5:
                batch.hold.append((int(due.at * 1000), device.SerializeToString()))
                batch.counters[f"h:{device.platform}"] += 1
            else:
                batch.ready.append((device, user))
        for platform, count in targeted.items():
            batch.count("targeted", platform, count)
        return batch

    async def _any_app(self, devices: list[device_pb2.AudienceDevice]) -> dict[str, bool]:
        # A foreground device answers for its user by itself: only the others are asked.
        wanted = {d.user_id for d in devices if d.user_id and d.capability != audiences.FOREGROUND}
        return await self.deps.registration.push_enabled_any_app(
            wanted, self.deps.tuning.users_concurrency
        )

    # -- sending ----------------------------------------------------------------------
    async def _send(self, batch: Batch) -> None:
        """Caps, renders and enqueues the batch's ready recipients; fills its counters."""
        ready = batch.ready
        if not ready:
            return
        if self.campaign.HasField("frequency_cap"):
            allowed = await self.deps.caps.allow(
                self.campaign.app_id,
                (d.user_id for d, _ in ready if d.platform in self.credentials),
                self.campaign.frequency_cap,
                self.id,
                self.deps.now_ms(),
            )
        outgoing: list[Outgoing] = []
        renders = 0
        views: dict[str, dict[str, Any]] = {}
        capped = self.campaign.HasField("frequency_cap")
        fast = self.fast
        # Per device below: what does not change within a batch is looked up once.
        plans = {p: fast.plan(p) for p in self.credentials} if fast is not None else {}
        for device, user in ready:
            platform = device.platform
            if platform not in self.credentials:
                batch.suppress(CREDENTIALS_MISSING, platform)
                continue
            if capped and device.user_id and device.user_id not in allowed:
                batch.suppress(FREQUENCY_CAPPED, platform)
                continue
            renders += 1
            plan = plans.get(platform)
            if plan is not None and fast is not None:
                try:
                    content = plan.content(fast.key(device, user), _context, device, user)
                except TemplateRenderError:
                    batch.suppress(TEMPLATE_RENDER_ERROR, platform)
                    continue
                if content is wire.TOO_LARGE:
                    batch.suppress(PAYLOAD_TOO_LARGE, platform)
                    continue
                outgoing.append((content + fast.device.encode(device), device, platform))
                continue
            view = None
            if user is not None:
                view = views.get(device.user_id)
                if view is None:
                    view = views[device.user_id] = user_context(user_of(device.user_id, user))
            prepared = prepare(
                self.message,
                device,
                view,
                campaign_id=self.id,
                idempotency_key=f"{self.id}:{device.device_id}",
            )
            if prepared.notification is None:
                batch.suppress(prepared.suppressed, platform)
                continue
            outgoing.append((prepared.notification.SerializeToString(), device, platform))
        self.deps.metrics.renders.add(renders)
        chunk = self.deps.tuning.enqueue_chunk
        if self.throttle is not None:
            chunk = min(chunk, self.throttle.chunk)
        done = 0
        try:
            for start in range(0, len(outgoing), chunk):
                part = outgoing[start : start + chunk]
                if self.throttle is not None:
                    await self.throttle.take(len(part), self.should_stop)
                await self._enqueue(part, batch)
                done = start + len(part)
        except Stopped:
            for _, _, unsent_platform in outgoing[done:]:
                batch.suppress(CANCELLED, unsent_platform)
            raise

    async def _enqueue(self, part: list[Outgoing], batch: Batch) -> None:
        # The same recipients always make the same request id, so a replayed batch is
        # recognised by Delivery as a retry (and per-notification idempotency keys
        # cover a batch that changed meanwhile).
        request_id = str(
            uuid.uuid5(
                IDEMPOTENCY_NAMESPACE, "\n".join(f"{self.id}:{d.device_id}" for _, d, _ in part)
            )
        )
        request = wire.enqueue_request([n for n, _, _ in part], request_id)
        loop = asyncio.get_running_loop()
        failing_since = loop.time()
        delay = 0.2
        while True:
            try:
                answer = await self.deps.delivery.enqueue_serialized(request)
                break
            except HeraldError as error:
                if error.reason not in RETRYABLE:
                    raise
                if loop.time() - failing_since > self.deps.tuning.give_up_seconds:
                    raise
                retry = getattr(error, "retry_after_seconds", None) or delay
                log.warning(
                    "enqueue failed; retrying",
                    extra={"campaign_id": self.id, "reason": error.reason, "retry_in": retry},
                )
                await asyncio.sleep(min(retry, STOP_CHECK_SECONDS * 4))
                delay = min(delay * 2, 2.0)
                if await self.should_stop():
                    raise Stopped() from None
        sent: Counter[int] = Counter()
        for (_, _, platform), result in zip(part, answer.results, strict=False):
            if result.HasField("error") and result.error.reason:
                batch.suppress(result.error.reason, platform)
            else:
                sent[platform] += 1
        for platform, count in sent.items():
            batch.count("sent", platform, count)

    async def _commit(
        self, batch: Batch, cursor: str | None, resolved: bool, released: list[bytes] | None = None
    ) -> None:
        done = await self.deps.store.commit(
            self.id,
            self.deps.owner,
            cursor,
            resolved,
            dict(batch.counters),
            batch.hold,
            released or [],
        )
        if done:  # counted in the report: the same deltas go to the metrics
            self.deps.metrics.batch(batch.counters)
        if done == 0:
            self.lost = True
            raise Stopped()
        if done == 2:  # counted, but the campaign was cancelled meanwhile
            raise Stopped()

    # -- phase 2: recipients held for their local time or quiet hours ---------------------
    async def _drain_held(self) -> None:
        while True:
            if await self.should_stop():
                raise Stopped()
            now_ms = self.deps.now_ms()
            members = await self.deps.store.held_due(self.id, now_ms, self.deps.tuning.batch_size)
            if members:
                devices = [device_pb2.AudienceDevice.FromString(m) for m in members]
                batch = Batch()
                users = await self.users.fetch(devices, remembered=False)
                for device in devices:
                    batch.counters[f"h:{device.platform}"] -= 1
                    batch.ready.append(
                        (device, users.get(device.user_id) if device.user_id else None)
                    )
                await self._send_then_commit(batch, None, released=members)
                continue
            upcoming = await self.deps.store.next_held(self.id)
            if upcoming is None:
                return
            wait = upcoming / 1000 - self.deps.now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.deps.clock.sleep(wait), STOP_CHECK_SECONDS)
