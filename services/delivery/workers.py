"""Queue workers: read the shard streams as one consumer of the group, send through the
Dispatcher, record each attempt, schedule retries, and take over what dead workers held.

One WorkerPool per process. One reader (XREADGROUP on each shard in turn, only as many
items as there are free send slots, so nothing waits in a process's memory that another
could send); one mover (due retries back to the streams) and one reclaimer (XAUTOCLAIM) for all
shards. At close: stop reading, let in-flight sends finish within the grace, give the
rest back (marked idle, so another process reclaims them at once).

Redis work is per batch, not per item (it was most of a push's CPU): a read batch is
claimed with one script call (`begin_attempts.lua`), and answered attempts are recorded
by one call per shard for all answered meanwhile (QueueStore.finish coalesces).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from contextvars import Context

from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

from herald.delivery.v1 import notification_pb2
from services.delivery import queue_tracing, records, tokens
from services.delivery.attempt import AttemptResult
from services.delivery.dispatch import Dispatcher
from services.delivery.options import DeliveryOptions
from services.delivery.queue_store import Claim, Entry, QueueStore
from services.delivery.ratelimit import RateLimiter

log = logging.getLogger(__name__)
MIN_POLL, MAX_POLL = 0.005, 0.05  # seconds between reads of an empty queue
# Redis commands the workers run at once. The shared client's pool refuses (rather than
# queues) a command beyond its 100 connections, and hundreds of sends are in flight, so
# the workers wait here for a connection instead; the rest is left to the RPCs.
REDIS_SLOTS = 48


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class _Capacity:
    """Free send slots, reserved before reading so a reader never takes more items than
    this process can start at once."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._changed = asyncio.Condition()

    async def reserve(self, most: int) -> int:
        async with self._changed:
            await self._changed.wait_for(lambda: self.free > 0)
            taken = min(most, self.free)
            self.free -= taken
            return taken

    async def give_back(self, count: int) -> None:
        if count:
            async with self._changed:
                self.free += count
                self._changed.notify_all()


class WorkerPool:
    def __init__(
        self,
        store: QueueStore,
        dispatcher: Dispatcher,
        limiter: RateLimiter,
        options: DeliveryOptions,
        tracer: trace.Tracer,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.limiter = limiter
        self.options = options
        self.tracer = tracer
        self.worker_id = worker_id or new_worker_id()
        self.capacity = _Capacity(options.worker_concurrency)
        self._redis_slots = asyncio.Semaphore(REDIS_SLOTS)
        self._loops: list[asyncio.Task[None]] = []
        self._inflight: dict[asyncio.Task[None], Entry] = {}  # one task per item sending
        self._claiming: dict[asyncio.Task[None], list[Entry]] = {}  # batches being claimed
        self._stopping = False
        self._closed = False
        self.sent = 0  # attempts sent by this process (tests, bench)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.ensure_groups()
        # The loops' Redis commands (reads, claims, moves, reclaims) serve many traces at
        # once: no per-command spans for them (they cost more CPU than the send they
        # prepare). Each item's send runs in a fresh context (see _claim).
        with suppress_instrumentation():
            self._loops.append(asyncio.create_task(self._read_loop(), name="dlv-read"))
            self._loops.append(asyncio.create_task(self._move_loop(), name="dlv-move"))
            self._loops.append(asyncio.create_task(self._reclaim_loop(), name="dlv-reclaim"))

    async def close(self, grace: float) -> None:
        """Stop taking items, let in-flight sends finish within `grace`, give back the rest."""
        if self._closed:
            return
        self._closed = self._stopping = True
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._claiming:  # claims are one Redis call: let them finish and spawn
            await asyncio.wait(list(self._claiming), timeout=grace)
        pending = list(self._inflight) + list(self._claiming)
        if pending:
            _done, late = await asyncio.wait(pending, timeout=grace)
            unfinished = [self._inflight[t] for t in late if t in self._inflight]
            unfinished += [e for t in late if t in self._claiming for e in self._claiming[t]]
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            await self._give_back(unfinished)
        for shard in range(self.store.shards):
            try:
                await self.store.forget_consumer(shard, self.worker_id)
            except Exception:  # a dead Redis must not block shutdown
                log.warning("could not remove consumer from shard %d", shard, exc_info=True)

    def crash(self) -> None:
        """Stop dead, as a killed process would: no acknowledgement, no hand-back (tests)."""
        self._closed = self._stopping = True
        for task in [*self._loops, *self._claiming, *self._inflight]:
            task.cancel()

    async def _give_back(self, entries: list[Entry]) -> None:
        by_shard: dict[int, list[str]] = {}
        for entry in entries:
            by_shard.setdefault(entry.shard, []).append(entry.entry_id)
        for shard, ids in by_shard.items():
            try:
                await self.store.release(shard, self.worker_id, ids)
            except Exception:
                log.warning("could not hand back %d items of shard %d", len(ids), shard)
        try:
            # The leases too, so the next worker need not wait for them to run out.
            await self.store.drop_leases(entries, self.worker_id)
        except Exception:
            log.warning("could not drop the leases of %d items", len(entries))

    # -- loops --------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        """One reader for every shard: take as many items as there are free send slots,
        shard after shard from a rotating start (so no shard starves), without blocking
        reads (shards may live on different Cluster nodes); poll quicker when busy."""
        shards = self.store.shards
        start = 0
        idle = MIN_POLL
        while not self._stopping:
            wanted = await self.capacity.reserve(self.options.read_batch)
            got = 0
            try:
                for step in range(shards):
                    if got >= wanted:
                        break
                    shard = (start + step) % shards
                    entries = await self.store.read(shard, self.worker_id, wanted - got, None)
                    got += len(entries)
                    self._spawn(entries)
            except asyncio.CancelledError:
                await self.capacity.give_back(wanted - got)
                raise
            except Exception:
                log.warning("reading the queue failed; retrying", exc_info=True)
                idle = MAX_POLL
            await self.capacity.give_back(wanted - got)
            start = (start + 1) % shards
            if got == 0:
                await asyncio.sleep(idle)
                idle = min(MAX_POLL, idle * 2)
            else:
                idle = MIN_POLL

    async def _move_loop(self) -> None:
        while not self._stopping:
            now_ms = int(time.time() * 1000)
            try:
                for shard in range(self.store.shards):
                    await self.store.move_due(shard, now_ms)
            except Exception:
                log.warning("moving due retries failed; retrying", exc_info=True)
            await asyncio.sleep(self.options.retry_poll_seconds)

    async def _reclaim_loop(self) -> None:
        period = max(0.25, self.options.reclaim_seconds / 2)
        min_idle = int(self.options.reclaim_seconds * 1000)
        while not self._stopping:
            await asyncio.sleep(period)
            for shard in range(self.store.shards):
                wanted = await self.capacity.reserve(self.options.read_batch)
                try:
                    entries = await self.store.reclaim(shard, self.worker_id, min_idle, wanted)
                except Exception:
                    await self.capacity.give_back(wanted)
                    log.warning("reclaiming shard %d failed", shard, exc_info=True)
                    continue
                await self.capacity.give_back(wanted - len(entries))
                if entries:
                    log.info("reclaimed %d items of shard %d", len(entries), shard)
                self._spawn(entries)

    def _spawn(self, entries: list[Entry]) -> None:
        """Claim the entries (one shard's read) with one script call, then send each."""
        if not entries:
            return
        task = asyncio.create_task(self._claim(entries))
        self._claiming[task] = entries
        task.add_done_callback(self._claimed)

    def _claimed(self, task: asyncio.Task[None]) -> None:
        self._claiming.pop(task, None)

    async def _claim(self, entries: list[Entry]) -> None:
        shard = entries[0].shard
        try:
            async with self._redis_slots:
                claims = await self.store.begin_many(
                    shard, entries, self.worker_id, int(time.time() * 1000)
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            # Left pending: reclaimed after the timeout, by this process or another.
            log.warning("claiming %d items of shard %d failed", len(entries), shard, exc_info=True)
            await self.capacity.give_back(len(entries))
            return
        settled: list[str] = []  # DONE, CANCELLED or GONE (record expired): nothing to send
        unused = 0
        for entry, claim in zip(entries, claims, strict=True):
            if claim.status == "GO" and claim.payload is not None:
                # A fresh context: not the loop's (instrumentation suppressed), so the
                # send's own calls (Registration) carry the notification's trace.
                task = asyncio.create_task(self._handle(entry, claim), context=Context())
                self._inflight[task] = entry
                task.add_done_callback(self._done)
                continue
            unused += 1
            if claim.status != "BUSY":  # BUSY: another live worker's finish acknowledges it
                settled.append(entry.entry_id)
        # Every entry now belongs to a send task, is settled, or is another worker's:
        # nothing of this batch is handed back at close any more.
        current = asyncio.current_task()
        if current in self._claiming:
            self._claiming[current] = []
        await self.capacity.give_back(unused)
        if settled:
            try:
                async with self._redis_slots:
                    await self.store.ack(shard, settled)
            except Exception:
                log.warning("acknowledging %d settled items failed", len(settled), exc_info=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)

    # -- one item -----------------------------------------------------------------------
    async def _handle(self, entry: Entry, claim: Claim) -> None:
        try:
            await self._process(entry, claim.payload or b"")
        except asyncio.CancelledError:
            raise
        except Exception:
            # Left pending: reclaimed after the timeout, by this process or another.
            log.exception("delivering %s failed; it will be reclaimed", entry.notification_id)
        finally:
            if not self._closed:
                await self.capacity.give_back(1)

    async def _process(self, entry: Entry, payload: bytes) -> None:
        notification = notification_pb2.Notification.FromString(payload)
        provider = tokens.provider_of(notification.token)
        # The wait must leave the lease room for the send itself: a longer one goes back
        # to the schedule, so no worker sits on an item another could reclaim meanwhile.
        most = min(self.options.rate_wait_max_seconds, self.options.reclaim_seconds / 2)
        if self.options.rate_limit(provider, notification.app_id) is not None:
            async with self._redis_slots:
                taken, wait = await self.limiter.take(notification.app_id, provider, most)
                if not taken:
                    await self.store.postpone(entry, int((time.time() + wait) * 1000))
                    return
            if wait > 0:
                await asyncio.sleep(wait)
                async with self._redis_slots:
                    status, _ = await self.store.begin(
                        entry, self.worker_id, int(time.time() * 1000)
                    )
                if status != "GO":  # renewing the lease failed: someone else has it now
                    return
        parent = queue_tracing.parent_of(notification)
        queue_tracing.record_wait(
            self.tracer, parent, notification, entry.queued_ms, time.time_ns(), entry.attempt
        )
        with queue_tracing.attempt_span(self.tracer, parent, notification, entry.attempt) as span:
            result = await self.dispatcher.deliver(notification, entry.attempt)
            self.sent += 1
            queue_tracing.annotate(span, result)
            trace_id, span_id = queue_tracing.ids(span)
        await self._finish(entry, notification, result, trace_id, span_id)

    async def _finish(
        self,
        entry: Entry,
        notification: notification_pb2.Notification,
        result: AttemptResult,
        trace_id: str,
        span_id: str,
    ) -> None:
        now = time.time()
        done = records.finish_of(
            notification,
            result,
            attempt=entry.attempt,
            worker_id=self.worker_id,
            trace_id=trace_id,
            span_id=span_id,
            now=now,
        )
        # No Redis slot held: finishes of a shard share one call (one connection), and
        # holding a slot while waiting for the batch would cap the batch at the slots.
        await self.store.finish(
            entry.shard, entry.notification_id, entry.entry_id, done, int(now * 1000)
        )
