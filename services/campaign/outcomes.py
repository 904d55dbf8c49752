"""Delivery's outcomes into report counters.

One process at a time (the holder of `cmp:outcomes:lease`) follows
Delivery.StreamOutcomes from the cursor persisted in Redis. Each final outcome is
counted once per notification (StreamOutcomes is at-least-once), so a takeover that
replays a batch counts nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import grpc

from herald.type.v1 import push_options_pb2
from services.campaign import keys
from services.campaign.deps import Deps

log = logging.getLogger("herald.campaign.outcomes")
PO = push_options_pb2
COUNTERS = {
    PO.DELIVERY_OUTCOME_DELIVERED: "delivered",
    PO.DELIVERY_OUTCOME_TOKEN_INVALID: "bounced",
    PO.DELIVERY_OUTCOME_FAILED: "failed",
    PO.DELIVERY_OUTCOME_CANCELLED: "cancelled",
}
RETRY_SECONDS = 1.0


class OutcomeConsumer:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="campaign-outcomes")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=5.0)  # bounded, as Runner.close
            self._task = None

    async def _loop(self) -> None:
        ttl = int(self.deps.tuning.lease_seconds * 1000)
        while True:
            try:
                if await self.deps.store.global_lease(keys.OUTCOMES_LEASE, self.deps.owner, ttl):
                    await self._follow(ttl)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as error:
                # UNAVAILABLE is routine: Delivery not up yet at start-up, and every
                # server recycles its connections after 5 minutes; the loop resumes
                # from the stored cursor. Anything else deserves a look.
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    log.info("outcome stream reconnecting", extra={"code": "UNAVAILABLE"})
                elif error.code() != grpc.StatusCode.UNIMPLEMENTED:
                    log.warning("outcome stream ended", extra={"code": error.code().name})
            except Exception:
                log.exception("outcome consumer failed")
            await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self, ttl: int) -> None:
        redis = self.deps.redis
        raw = await redis.get(keys.OUTCOMES_CURSOR)
        cursor = raw.decode() if raw else ""
        call = self.deps.delivery.outcomes(cursor, from_earliest=not cursor)
        renewed = asyncio.get_running_loop().time()
        try:
            async for response in call:
                items = [
                    (
                        o.campaign_id,
                        o.notification_id,
                        COUNTERS[o.outcome],
                        o.reason,
                        int(o.platform),
                    )
                    for o in response.outcomes
                    if o.campaign_id and o.outcome in COUNTERS
                ]
                await self.deps.reports.outcomes(items)
                # One metric update per kind of outcome in the batch, not per outcome.
                for outcome, count in Counter(item[2] for item in items).items():
                    self.deps.metrics.outcomes.add(count, {"outcome": outcome})
                if response.cursor:
                    await redis.set(keys.OUTCOMES_CURSOR, response.cursor)
                if asyncio.get_running_loop().time() - renewed > self.deps.tuning.lease_seconds / 3:
                    if not await self.deps.store.global_lease(
                        keys.OUTCOMES_LEASE, self.deps.owner, ttl
                    ):
                        return
                    renewed = asyncio.get_running_loop().time()
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.OUT_OF_RANGE:  # CURSOR_EXPIRED: start over
                await redis.delete(keys.OUTCOMES_CURSOR)
            raise
        finally:
            call.cancel()
