"""Delivery's metrics, through the service's OpenTelemetry meter (Prometheus /metrics).

Counters are recorded where things happen (an attempt answered, a GOAWAY, a provider
token minted, a token invalidated); gauges are read when Prometheus scrapes: pool state
from the Dispatcher's live objects, queue depth and oldest age, and credential expiry
from the last sample (Redis cannot be read inside a synchronous callback, and a scrape
must not cost a Redis call per app: `QueueSampler` and `ExpirySampler` refresh them in
the background).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation

from herald.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from services.delivery.attempt import AttemptResult
from services.delivery.credential_store import CredentialStore
from services.delivery.credentials import Slot
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


class Sampler:
    """Runs `sample()` now and then every `every` seconds until closed; a failed sample
    is logged and the gauges keep the last good one."""

    what = "a gauge"

    def __init__(self, every: float) -> None:
        self.every = every
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"dlv-{type(self).__name__}")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def sample(self) -> None:
        raise NotImplementedError

    async def _loop(self) -> None:
        # Not only the cancellation stops it: redis-py now and then swallows a
        # CancelledError that lands inside a command (redis/redis-py#2028, seen here in
        # one cancel out of ~30 during a ZRANGE), and close() then waited forever.
        while not self._closing:
            try:
                await self.sample()
            except Exception:
                log.warning("sampling %s failed", self.what, exc_info=True)
            if self._closing:
                break
            await asyncio.sleep(self.every)


class QueueSampler(Sampler):
    """Per shard: items held (XLEN) and the age of the oldest (its stream id's time)."""

    what = "the queue"

    def __init__(self, store: QueueStore, every: float = 2.0) -> None:
        super().__init__(every)
        self.store = store
        self.depth: dict[int, int] = {}
        self.oldest_age: dict[int, float] = {}

    async def sample(self) -> None:
        depth, oldest = await self.store.depth_and_oldest()
        now_ms = time.time() * 1000
        self.depth = depth
        self.oldest_age = {
            s: max(0.0, (now_ms - ms) / 1000) if ms else 0.0 for s, ms in oldest.items()
        }

    def depths(self) -> list[tuple[float, dict[str, str]]]:
        return [(float(n), {"shard": str(s)}) for s, n in sorted(self.depth.items())]

    def ages(self) -> list[tuple[float, dict[str, str]]]:
        return [(age, {"shard": str(s)}) for s, age in sorted(self.oldest_age.items())]


class DeletedApps:
    """Which apps Identity no longer has (GetApp answers NOT_FOUND). Identity's DeleteApp
    removes the app's Delivery credentials, but credentials can still be put for an app
    Identity does not have (PutCredentials does not ask it), and an alert on such a
    certificate would be noise. Any other answer (Identity down, not deployed) counts
    as "still there": a false alert is better than a missed expiry.

    An answer is kept `recheck_seconds`: an app's existence hardly changes, and asking
    about every listed app at every refresh cost 1.5 s of GetApp calls per 1,000 apps on
    a 2-core machine; this way a refresh asks only about those whose answer is old."""

    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        recheck_seconds: float,
        timeout: float = 3.0,
        parallel: int = 16,
    ) -> None:
        self._channel = channel
        self.recheck_seconds = recheck_seconds
        self.timeout = timeout
        self._parallel = asyncio.Semaphore(parallel)
        self._answers: dict[str, tuple[float, bool]] = {}  # app -> (when asked, gone)
        self._failing = False

    async def among(self, app_ids: Iterable[str]) -> set[str]:
        now = time.monotonic()
        ids = set(app_ids)
        # Apps no longer listed are forgotten, so the answers stay as few as the index.
        known = {a: answer for a, answer in self._answers.items() if a in ids}
        stale = sorted(
            a for a in ids if a not in known or now - known[a][0] >= self.recheck_seconds
        )
        if stale:
            stub: Any = identity_service_pb2_grpc.IdentityServiceStub(self._channel())
            answers = await asyncio.gather(*(self._gone(stub, app_id) for app_id in stale))
            for app_id, gone in zip(stale, answers, strict=True):
                if gone is None:  # no answer: ask again at the next refresh
                    known.pop(app_id, None)
                else:
                    known[app_id] = (now, gone)
        self._answers = known
        return {app_id for app_id, (_, gone) in known.items() if gone}

    async def _gone(self, stub: Any, app_id: str) -> bool | None:
        request = identity_service_pb2.GetAppRequest(app_id=app_id)
        async with self._parallel:
            try:
                await stub.GetApp(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return True
                if not self._failing:  # once per outage, not once per app and refresh
                    log.warning(
                        "Identity.GetApp failed (%s): the expiry gauge keeps every app",
                        error.code().name,
                    )
                self._failing = True
                return None
        self._failing = False
        return False


class ExpirySampler(Sampler):
    """Seconds until each stored credential that expires (APNs certificates) does, for
    every app whether or not this process sends for it: the expiry index read every
    `every` seconds (one ZRANGE, one pipelined read of the listed credentials, GetApp
    for the listed apps not asked about lately). This process's own puts and deletes
    show at once."""

    what = "credential expiry"

    def __init__(self, store: CredentialStore, deleted_apps: DeletedApps, every: float) -> None:
        super().__init__(every)
        self.store = store
        self.deleted_apps = deleted_apps
        self.expiries: dict[Slot, float] = {}
        self._noted: dict[Slot, float] = {}  # since the running sample began reading

    async def sample(self) -> None:
        self._noted = {}
        found = await self.store.expiring()
        gone = await self.deleted_apps.among(e.slot.app_id for e in found)
        fresh = {e.slot: e.expire_time for e in found if e.slot.app_id not in gone}
        for slot, expire in self._noted.items():  # newer than what the sample read
            _set(fresh, slot, expire)
        self.expiries = fresh

    def note(self, slot: Slot, expire: float) -> None:
        """A credential this process just put (its expire time; 0: none) or deleted (0)."""
        self._noted[slot] = expire
        _set(self.expiries, slot, expire)

    def gauge(self) -> list[tuple[float, dict[str, str]]]:
        now = time.time()
        return [
            (
                expire - now,
                {"app": slot.app_id, "provider": slot.provider, "environment": slot.environment},
            )
            for slot, expire in sorted(self.expiries.items(), key=_by_app)
        ]


def _by_app(item: tuple[Slot, float]) -> tuple[str, str]:
    return item[0].app_id, item[0].name


def _set(expiries: dict[Slot, float], slot: Slot, expire: float) -> None:
    if expire:
        expiries[slot] = expire
    else:
        expiries.pop(slot, None)
