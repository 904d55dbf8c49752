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

from herald.campaign.v1 import campaign_pb2
from services.campaign.deps import Deps
from services.campaign.fanout import Fanout
from services.campaign.throttle import Stopped
from services.core.errors import HeraldError

log = logging.getLogger("herald.campaign.runner")
S = campaign_pb2
ACTIVE = (S.CAMPAIGN_STATE_SCHEDULED, S.CAMPAIGN_STATE_SENDING)
CLOSE_SECONDS = 5.0


class Runner:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.running: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

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
            log.warning(
                "campaign failed", extra={"campaign_id": campaign_id, "reason": error.reason}
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
        self.running.pop(campaign_id, None)
        await self.deps.store.release(campaign_id, self.deps.owner)

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
            stored.campaign.state = S.CAMPAIGN_STATE_SENDING
        campaign = stored.campaign
        credentials = await self.deps.delivery.platforms_with_credentials(campaign.app_id)
        app = await self.deps.identity.app(campaign.app_id)
        fanout = Fanout(self.deps, campaign, credentials, app.default_time_zone)
        await fanout.run(stored.cursor, stored.resolved)
        await self._finish(campaign_id, S.CAMPAIGN_STATE_COMPLETED, "")

    async def _finish(self, campaign_id: str, state: int, reason: str) -> None:
        fields: dict[str, object] = {"complete": self.deps.now_ms()}
        if reason:
            fields["failure"] = reason[:500]
        moved, _ = await self.deps.store.transition(
            campaign_id, (S.CAMPAIGN_STATE_SENDING, S.CAMPAIGN_STATE_SCHEDULED), state, fields
        )
        await self.deps.store.remove_due(campaign_id)
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
