"""The per-process scheduler: finds due campaigns, claims each with a Redis lease and
runs its fan-out; several Campaign processes share the work and never run one
campaign twice at once.

The due list (`cmp:due`) and the leases live in Redis, so a scheduled campaign survives
restarts, and a campaign whose process died is picked up by another one once the lease
expires, resuming from the persisted cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AbstractContextManager

from opentelemetry import trace

from herald.campaign.v1 import campaign_pb2
from services.campaign.deps import Deps
from services.campaign.fanout import RETRYABLE, Fanout
from services.campaign.reports import in_flight
from services.campaign.store import Stored
from services.campaign.throttle import Stopped
from services.core.errors import HeraldError
from services.core.trace_context import context_of

log = logging.getLogger("herald.campaign.runner")
S = campaign_pb2
ACTIVE = (S.CAMPAIGN_STATE_SCHEDULED, S.CAMPAIGN_STATE_SENDING)
CLOSE_SECONDS = 5.0
RETRY_SECONDS = 1.0  # pause before a fan-out interrupted by a dependency resumes
SETTLE_GRACE_SECONDS = 30  # after the TTL, Delivery's last attempt may still answer


class Runner:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.running: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failing_since: dict[str, float] = {}  # campaign -> first transient error

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name="campaign-scheduler")

    def wake(self) -> None:
        """Look at the due list now (a launch just added to it)."""
        self._wake.set()

    async def close(self) -> None:
        tasks = [t for t in (self._loop_task, *self.running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a shutdown must not hang on a task stuck in a call; the lease
            # expires and another process resumes its campaign anyway.
            await asyncio.wait(tasks, timeout=CLOSE_SECONDS)
        self._loop_task = None
        self.running.clear()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis down for a moment: keep the scheduler alive
                log.exception("scheduler tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.deps.tuning.poll_seconds)
            self._wake.clear()

    async def tick(self) -> None:
        for campaign_id in await self.deps.store.due(self.deps.now_ms()):
            if campaign_id in self.running:
                continue
            ttl = int(self.deps.tuning.lease_seconds * 1000)
            if not await self.deps.store.lease(campaign_id, self.deps.owner, ttl):
                continue
            self.running[campaign_id] = asyncio.create_task(
                self._run(campaign_id), name=f"fanout-{campaign_id}"
            )

    async def _run(self, campaign_id: str) -> None:
        renew = asyncio.create_task(self._renew(campaign_id))
        try:
            await self._fan_out(campaign_id)
        except Stopped:
            await self._after_stop(campaign_id)
        except HeraldError as error:
            if error.reason in RETRYABLE and self._keep_trying(campaign_id):
                # Registration, Identity or Delivery did not answer for a moment (a
                # restart, a slow node): resume from the committed cursor shortly,
                # on whichever process takes the lease, instead of failing the campaign.
                log.warning(
                    "fan-out interrupted (%s); resuming",
                    error.reason,
                    extra={"campaign_id": campaign_id, "reason": error.reason},
                )
                renew.cancel()
                await asyncio.sleep(RETRY_SECONDS)
                self.running.pop(campaign_id, None)
                await self.deps.store.release(campaign_id, self.deps.owner)
                return
            log.warning(
                "campaign failed (%s)",
                error.reason,
                extra={"campaign_id": campaign_id, "reason": error.reason},
            )
            await self._finish(
                campaign_id, S.CAMPAIGN_STATE_FAILED, f"{error.reason}: {error.message}"
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            # Unknown trouble: keep the lease until it expires, then any process retries
            # from the cursor (no hot loop, no lost campaign).
            log.exception("fan-out crashed", extra={"campaign_id": campaign_id})
            renew.cancel()
            self.running.pop(campaign_id, None)
            return
        finally:
            renew.cancel()
        self._failing_since.pop(campaign_id, None)
        self.running.pop(campaign_id, None)
        await self.deps.store.release(campaign_id, self.deps.owner)

    def _keep_trying(self, campaign_id: str) -> bool:
        """True while transient errors of this campaign are younger than give_up_seconds."""
        now = asyncio.get_running_loop().time()
        since = self._failing_since.setdefault(campaign_id, now)
        return now - since < self.deps.tuning.give_up_seconds

    async def _renew(self, campaign_id: str) -> None:
        ttl = int(self.deps.tuning.lease_seconds * 1000)
        while True:
            await asyncio.sleep(self.deps.tuning.lease_seconds / 3)
            if not await self.deps.store.lease(campaign_id, self.deps.owner, ttl):
                log.warning("lease lost", extra={"campaign_id": campaign_id})
                return

    async def _fan_out(self, campaign_id: str) -> None:
        stored = await self.deps.store.get(campaign_id)
        if stored is None or stored.state not in ACTIVE:
            await self.deps.store.remove_due(campaign_id)
            return
        now_ms = self.deps.now_ms()
        if stored.state == S.CAMPAIGN_STATE_SCHEDULED:
            moved, _ = await self.deps.store.transition(
                campaign_id,
                (S.CAMPAIGN_STATE_SCHEDULED,),
                S.CAMPAIGN_STATE_SENDING,
                {"start": now_ms},
            )
            if not moved:
                return
            self.deps.metrics.state(S.CAMPAIGN_STATE_SENDING)
            stored.campaign.state = S.CAMPAIGN_STATE_SENDING
        campaign = stored.campaign
        credentials = await self.deps.delivery.platforms_with_credentials(campaign.app_id)
        app = await self.deps.identity.app(campaign.app_id)
        fanout = Fanout(self.deps, campaign, credentials, app.default_time_zone)
        with self._fan_out_span(stored) as span:
            try:
                await fanout.run(stored.cursor, stored.resolved)
            except Stopped:
                span.set_attribute("herald.stopped", True)  # cancelled or paused: not an error
                raise
            except Exception as error:
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
                raise
        await self._settle(campaign_id, campaign, stored.settle_since_ms)
        await self._finish(campaign_id, S.CAMPAIGN_STATE_COMPLETED, "")

    def _fan_out_span(self, stored: Stored) -> AbstractContextManager[trace.Span]:
        """`campaign.fanout`, a child of the LaunchCampaign call's span (from the
        traceparent the launch stored): the audience calls, the Enqueue calls and so
        Delivery's queue wait and provider attempts of every notification are in the
        launch's trace, also when the fan-out runs at a scheduled time, in another
        process, or resumes after a crash (`herald.resumed`)."""
        parent = context_of({"traceparent": stored.launch_trace}) if stored.launch_trace else None
        campaign = stored.campaign
        return self.deps.tracer.start_as_current_span(
            "campaign.fanout",
            context=parent,
            attributes={
                "herald.app_id": campaign.app_id,
                "herald.campaign_id": campaign.campaign_id,
                "herald.resumed": bool(stored.cursor),
            },
            record_exception=False,
            set_status_on_exception=False,
        )

    async def _settle(
        self, campaign_id: str, campaign: campaign_pb2.Campaign, since_ms: int
    ) -> None:
        """Stays SENDING until every sent notification has its final outcome from
        Delivery (in_flight = 0), so COMPLETED means "the last provider answered" and a
        watcher's progress stream ends after it. Bounded: the message's TTL (+30 s for
        Delivery's last attempt) capped at `settle_max_seconds`, measured from when the
        fan-out first finished (kept in Redis, so a takeover does not restart it);
        after that the campaign completes with what is known and in_flight > 0 stays
        in the report for the outcomes that never came."""
        if since_ms == 0:
            since_ms = self.deps.now_ms()
            await self.deps.store.transition(
                campaign_id, (S.CAMPAIGN_STATE_SENDING,), None, {"settle": since_ms}
            )
        bound = self.deps.tuning.settle_max_seconds
        if campaign.message.HasField("ttl") and campaign.message.ttl.seconds > 0:
            bound = min(bound, campaign.message.ttl.seconds + SETTLE_GRACE_SECONDS)
        deadline = since_ms / 1000 + bound
        while True:
            if await self.deps.store.state(campaign_id) != S.CAMPAIGN_STATE_SENDING:
                raise Stopped()
            if in_flight(await self.deps.reports.counters(campaign_id)) <= 0:
                return
            left = deadline - self.deps.now()
            if left <= 0:
                log.warning("completing with outcomes missing", extra={"campaign_id": campaign_id})
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.deps.clock.sleep(left), self.deps.tuning.settle_poll_seconds
                )

    async def _finish(self, campaign_id: str, state: int, reason: str) -> None:
        fields: dict[str, object] = {"complete": self.deps.now_ms()}
        if reason:
            fields["failure"] = reason[:500]
        moved, _ = await self.deps.store.transition(
            campaign_id, (S.CAMPAIGN_STATE_SENDING, S.CAMPAIGN_STATE_SCHEDULED), state, fields
        )
        await self.deps.store.remove_due(campaign_id)
        if moved:
            self.deps.metrics.state(state)
            await self.deps.reports.expire_dedupe(campaign_id)
        if moved and state == S.CAMPAIGN_STATE_FAILED:
            await self._cancel_queued(campaign_id)

    async def _after_stop(self, campaign_id: str) -> None:
        state = await self.deps.store.state(campaign_id)
        if state == S.CAMPAIGN_STATE_CANCELLED:
            # Cancel asked Delivery already; ask again for what this worker enqueued
            # after that, so nothing of a cancelled campaign stays queued.
            await self._cancel_queued(campaign_id)

    async def _cancel_queued(self, campaign_id: str) -> None:
        stored = await self.deps.store.get(campaign_id)
        if stored is None:
            return
        try:
            await self.deps.delivery.cancel(stored.campaign.app_id, campaign_id)
        except HeraldError as error:
            log.warning(
                "CancelNotifications failed",
                extra={"campaign_id": campaign_id, "reason": error.reason},
            )
