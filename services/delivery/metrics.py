"""Delivery's metrics, through the service's OpenTelemetry meter (Prometheus /metrics).

Counters are recorded where things happen (an attempt answered, a GOAWAY, a provider
token minted, a token invalidated); gauges are read when Prometheus scrapes: pool state
and credential expiry from the Dispatcher's live objects, queue depth and oldest age
from the last sample of the shards (Redis cannot be read inside a synchronous
callback, so `QueueSampler` refreshes them every few seconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation

from services.delivery.attempt import AttemptResult
from services.delivery.queue_store import QueueStore

log = logging.getLogger(__name__)
OUTCOME_NAMES = {1: "QUEUED", 2: "DELIVERED", 3: "TOKEN_INVALID", 4: "RETRYING", 5: "FAILED"}


class DeliveryMetrics:
    def __init__(self, meter: Meter | None = None) -> None:
        self.meter = meter or NoOpMeter("herald.delivery")
        m = self.meter
        self._sends = m.create_counter(
            "herald.delivery.sends",
            description="Attempts answered, by provider, app, outcome, reason",
        )
        self._retries = m.create_counter(
            "herald.delivery.retries",
            description="Attempts that will be retried, by provider and reason",
        )
        self._goaways = m.create_counter(
            "herald.delivery.pool.goaways", description="GOAWAY frames received, by provider"
        )
        self._refreshes = m.create_counter(
            "herald.delivery.provider_token.refreshes",
            description="APNs JWTs minted and FCM access tokens fetched, by provider",
        )
        self._invalidated = m.create_counter(
            "herald.delivery.tokens.invalidated",
            description="Tokens the provider called dead (sent to Registration), by reason and verdict",
        )

    def attempt(self, app_id: str, result: AttemptResult) -> None:
        outcome = OUTCOME_NAMES.get(result.outcome, str(result.outcome))
        self._sends.add(
            1,
            {
                "provider": result.provider,
                "app": app_id,
                "outcome": outcome,
                "reason": result.reason or str(result.status),
            },
        )
        if result.next_retry_delay_seconds is not None:
            self._retries.add(1, {"provider": result.provider, "reason": result.reason})
        if result.invalidation:
            self._invalidated.add(
                1,
                {
                    "provider": result.provider,
                    "reason": result.reason,
                    "verdict": result.invalidation,
                },
            )

    def event(self, kind: str, provider: str) -> None:
        """The senders' hook: "goaway" or "token_refresh"."""
        if kind == "goaway":
            self.goaway(provider)
        elif kind == "token_refresh":
            self.token_refresh(provider)

    def goaway(self, provider: str) -> None:
        self._goaways.add(1, {"provider": provider})

    def token_refresh(self, provider: str) -> None:
        self._refreshes.add(1, {"provider": provider})

    def observe(
        self,
        name: str,
        description: str,
        unit: str,
        read: Callable[[], Iterable[tuple[float, dict[str, str]]]],
    ) -> None:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            try:
                return [Observation(value, labels) for value, labels in read()]
            except Exception:  # a scrape must never fail because of one gauge
                log.warning("reading %s failed", name, exc_info=True)
                return []

        self.meter.create_observable_gauge(name, [callback], unit=unit, description=description)


class QueueSampler:
    """Per shard: items held (XLEN) and the age of the oldest (its stream id's time)."""

    def __init__(self, store: QueueStore, every: float = 2.0) -> None:
        self.store = store
        self.every = every
        self.depth: dict[int, int] = {}
        self.oldest_age: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dlv-queue-sampler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def sample(self) -> None:
        depth, oldest = await self.store.depth_and_oldest()
        now_ms = time.time() * 1000
        self.depth = depth
        self.oldest_age = {
            s: max(0.0, (now_ms - ms) / 1000) if ms else 0.0 for s, ms in oldest.items()
        }

    async def _loop(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:
                log.warning("sampling the queue failed", exc_info=True)
            await asyncio.sleep(self.every)

    def depths(self) -> list[tuple[float, dict[str, str]]]:
        return [(float(n), {"shard": str(s)}) for s, n in sorted(self.depth.items())]

    def ages(self) -> list[tuple[float, dict[str, str]]]:
        return [(age, {"shard": str(s)}) for s, age in sorted(self.oldest_age.items())]
