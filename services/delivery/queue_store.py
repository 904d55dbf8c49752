"""The durable queue in Redis: shard streams with a consumer group, retry schedules,
notification records, list indexes and outcome streams (docs/keys/delivery.md).

Only this module and its Lua scripts touch these keys; the Enqueue edge, the workers
and the read RPCs call it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.exceptions import ResponseError

from services.core.redis import RedisClient, load_script
from services.delivery import queue_keys as keys
from services.delivery.coalescer import Coalescer
from services.delivery.options import DeliveryOptions

SCRIPTS = "services.delivery.scripts"
WATERMARK = ("outcome_watermark.lua",)  # the outcome stream's trim, shared by two scripts
QUEUED, RETRYING, CANCELLED = 1, 4, 6  # herald.type.v1.DeliveryOutcome numbers the scripts use


@dataclass(frozen=True)
class NewItem:
    """One accepted notification on its way into a shard."""

    notification_id: str
    payload: bytes  # the serialized Notification (token included: workers need it)
    app_id: str
    device_id: str
    user_id: str
    campaign_id: str


@dataclass(frozen=True)
class Entry:
    """One stream entry a worker holds: attempt `attempt` of a notification."""

    shard: int
    entry_id: str
    notification_id: str
    attempt: int
    queued_ms: int  # when it was enqueued or became due


@dataclass(frozen=True)
class Claim:
    """What `begin_attempts.lua` said about one entry: GO (with the notification's bytes),
    DONE, BUSY, CANCELLED or GONE."""

    status: str
    payload: bytes | None


@dataclass(frozen=True)
class Finish:
    attempt: int
    attempt_bytes: bytes
    outcome: int
    reason: str
    complete_ms: int  # 0 when not final
    next_due_ms: int  # 0 when final
    event_bytes: bytes
    app_id: str
    campaign_id: str


async def execute(pipe: Any) -> list[Any]:
    """Run a pipeline to the end even if the caller is cancelled (a StreamOutcomes
    client hanging up, a worker loop stopping): redis-py's cluster pipeline put back
    connections cancelled mid-read, which leaked sockets and nodes under
    --redis-cluster. The caller still sees its cancellation at once."""
    return list(await asyncio.shield(asyncio.ensure_future(pipe.execute())))


class QueueStore:
    def __init__(self, redis: RedisClient, options: DeliveryOptions) -> None:
        self.redis = redis
        self.options = options
        self.shards = options.queue_shards
        self._append = load_script(redis, SCRIPTS, "append_items.lua")
        self._begin = load_script(redis, SCRIPTS, "begin_attempts.lua")
        self._finish = load_script(redis, SCRIPTS, "finish_attempts.lua", after=WATERMARK)
        self._finishes: Coalescer[int, tuple[str, str, Finish, int]] = Coalescer(self._finish_batch)
        self._move = load_script(redis, SCRIPTS, "move_due.lua")
        self._cancel = load_script(redis, SCRIPTS, "cancel_queued.lua", after=WATERMARK)

    # -- set-up -------------------------------------------------------------------------
    async def ensure_groups(self) -> None:
        for shard in range(self.shards):
            try:
                # From "0": items appended before the group existed are still sent.
                await self.redis.xgroup_create(
                    keys.stream(shard), keys.GROUP, id="0", mkstream=True
                )
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    # -- enqueue ------------------------------------------------------------------------
    async def depths(self, shards: list[int]) -> dict[int, int]:
        """Items each shard holds (queued + in flight: entries are deleted when done)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in shards:
            pipe.xlen(keys.stream(shard))
        return dict(zip(shards, (int(n) for n in await execute(pipe)), strict=True))

    async def depth_and_oldest(self) -> tuple[dict[int, int], dict[int, int]]:
        """Per shard: XLEN, and the time (ms) of the oldest entry (0 when empty)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.xlen(keys.stream(shard))
            pipe.xrange(keys.stream(shard), "-", "+", count=1)
        answers = await execute(pipe)
        depth: dict[int, int] = {}
        oldest: dict[int, int] = {}
        for shard in range(self.shards):
            depth[shard] = int(answers[2 * shard])
            rows = answers[2 * shard + 1]
            entry_id = rows[0][0].decode() if rows else "0-0"
            oldest[shard] = int(entry_id.partition("-")[0])
        return depth, oldest

    async def append(self, shard: int, items: list[NewItem], now_ms: int) -> None:
        """Records, indexes and stream entries of one shard in one script call
        (append_items.lua, atomic): an item is never queued without its record, nor
        recorded without being queued."""
        script_keys = [keys.stream(shard)]
        args: list[Any] = [now_ms, self.options.record_ttl_seconds]
        for item in items:
            indexes = self._indexes(shard, item)
            script_keys.append(keys.record(shard, item.notification_id))
            script_keys += indexes
            args += [item.notification_id, item.payload, len(indexes)]
        await self._append(keys=script_keys, args=args)

    async def open_direct(
        self, shard: int, item: NewItem, now_ms: int, owner: str, lease_until_ms: int
    ) -> None:
        """The record and indexes of a Send's notification, leased to the Send until
        `lease_until_ms`: it is in no stream (Send makes its attempts itself), and the
        lease keeps CancelNotifications off it while Send runs. A retry Send hands to
        the queue at its deadline goes to the retry schedule (finish)."""
        ttl = self.options.record_ttl_seconds
        record = keys.record(shard, item.notification_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            record,
            mapping={
                "n": item.payload,
                "o": QUEUED,
                "cr": now_ms,
                "lw": owner,
                "lu": lease_until_ms,
            },
        )
        pipe.expire(record, ttl)
        for index in self._indexes(shard, item):
            pipe.zadd(index, {item.notification_id: now_ms})
            pipe.zremrangebyscore(index, "-inf", now_ms - ttl * 1000)
            pipe.expire(index, ttl)
        await execute(pipe)

    @staticmethod
    def _indexes(shard: int, item: NewItem) -> list[str]:
        found = [keys.index(shard, "app", item.app_id)]
        if item.device_id:
            found.append(keys.index(shard, "device", item.app_id, item.device_id))
        if item.user_id:
            found.append(keys.index(shard, "user", item.app_id, item.user_id))
        if item.campaign_id:
            found.append(keys.index(shard, "campaign", item.app_id, item.campaign_id))
        return found

    async def claim_idempotency(self, claims: list[tuple[str, str]]) -> list[str | None]:
        """For each (key, notification id), in order: None if the id now owns the key,
        else the id that already does. Pipelined: an Enqueue of a campaign claims a key
        for every notification (one round trip per key cost more than the queueing)."""
        if not claims:
            return []
        ttl = self.options.record_ttl_seconds
        pipe = self.redis.pipeline(transaction=False)
        for key, notification_id in claims:
            # The raw command: redis-py's set() checks its keyword options per call,
            # which cost more than packing the command.
            pipe.execute_command("SET", key, notification_id, "NX", "EX", ttl)
        won: list[Any] = await pipe.execute()
        taken = [position for position, ok in enumerate(won) if not ok]
        owners: list[str | None] = [None] * len(claims)
        if taken:
            pipe = self.redis.pipeline(transaction=False)
            for position in taken:
                pipe.get(claims[position][0])
            for position, owner in zip(taken, await pipe.execute(), strict=True):
                owners[position] = owner.decode() if owner else None
        return owners

    # -- workers ------------------------------------------------------------------------
    async def read(
        self, shard: int, consumer: str, count: int, block_ms: int | None = None
    ) -> list[Entry]:
        answer: Any = await self.redis.xreadgroup(
            keys.GROUP, consumer, {keys.stream(shard): ">"}, count=count, block=block_ms
        )
        entries: list[Entry] = []
        for _stream, rows in answer or []:
            entries.extend(self._entries(shard, rows))
        return entries

    async def reclaim(self, shard: int, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries another worker (or a dead process) held too long."""
        answer: Any = await self.redis.xautoclaim(
            keys.stream(shard), keys.GROUP, consumer, min_idle_ms, start_id="0-0", count=count
        )
        rows = answer[1] if answer else []
        gone = [r[0] for r in rows if not r or not r[1]]
        if gone:  # entries deleted while pending (Redis 6.2 still lists them)
            await self.redis.xack(keys.stream(shard), keys.GROUP, *gone)
        return self._entries(shard, [r for r in rows if r and r[1]])

    async def release(self, shard: int, consumer: str, entry_ids: list[Any]) -> None:
        """Give entries back at shutdown: marked idle for the whole reclaim time, so the
        next XAUTOCLAIM of any worker takes them at once."""
        if entry_ids:
            idle = int(self.options.reclaim_seconds * 1000) + 1
            await self.redis.xclaim(
                keys.stream(shard), keys.GROUP, consumer, 0, entry_ids, idle=idle, justid=True
            )

    async def forget_consumer(self, shard: int, consumer: str) -> None:
        """Remove this process's consumer from a shard's group if it holds nothing."""
        info: Any = await self.redis.xpending_range(
            keys.stream(shard), keys.GROUP, min="-", max="+", count=1, consumername=consumer
        )
        if not info:
            await self.redis.xgroup_delconsumer(keys.stream(shard), keys.GROUP, consumer)

    @staticmethod
    def _entries(shard: int, rows: Any) -> list[Entry]:
        entries = []
        for entry_id, fields in rows:
            entries.append(
                Entry(
                    shard=shard,
                    entry_id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
                    notification_id=fields[b"i"].decode(),
                    attempt=int(fields[b"a"]),
                    queued_ms=int(float(fields.get(b"q", b"0"))),
                )
            )
        return entries

    async def begin(
        self, entry: Entry, worker: str, now_ms: int, lease_ms: int | None = None
    ) -> tuple[str, bytes | None]:
        claim = (await self.begin_many(entry.shard, [entry], worker, now_ms, lease_ms))[0]
        return claim.status, claim.payload

    async def begin_many(
        self,
        shard: int,
        entries: list[Entry],
        worker: str,
        now_ms: int,
        lease_ms: int | None = None,
    ) -> list[Claim]:
        """Claim the attempts of entries of one shard (a read batch) in one script call."""
        if lease_ms is None:
            lease_ms = int(self.options.reclaim_seconds * 1000)
        answer: Any = await self._begin(
            keys=[keys.record(shard, entry.notification_id) for entry in entries],
            args=[worker, now_ms, lease_ms, *(entry.attempt for entry in entries)],
        )
        claims = []
        for status, payload in zip(answer[::2], answer[1::2], strict=True):
            name = status.decode() if isinstance(status, bytes) else str(status)
            claims.append(Claim(name, payload if name == "GO" else None))
        return claims

    async def drop_leases(self, entries: list[Entry], worker: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for entry in entries:
            pipe.hdel(keys.record(entry.shard, entry.notification_id), "lw", "lu")
        await execute(pipe)

    async def ack(self, shard: int, entry_ids: list[str]) -> None:
        """Acknowledge and delete entries of one shard that need no send."""
        if not entry_ids:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(keys.stream(shard), keys.GROUP, *entry_ids)
        pipe.xdel(keys.stream(shard), *entry_ids)
        await execute(pipe)

    async def finish(
        self, shard: int, notification_id: str, entry_id: str, done: Finish, now_ms: int
    ) -> None:
        """Record one answered attempt (finish_attempts.lua); returns once it is written.
        Attempts of a shard answered meanwhile are written by the same script call."""
        await self._finishes.add(shard, (notification_id, entry_id, done, now_ms))

    async def _finish_batch(self, shard: int, items: list[tuple[str, str, Finish, int]]) -> None:
        now_ms = max(item[3] for item in items)  # update time and outcome trim point
        retention_ms = self.options.outcomes_retention_seconds * 1000
        args: list[Any] = [
            keys.GROUP,
            max(0, now_ms - retention_ms),
            self.options.record_ttl_seconds,
            now_ms,
        ]
        for notification_id, entry_id, done, _ in items:
            args += [
                entry_id,
                done.attempt,
                done.attempt_bytes,
                done.outcome,
                done.reason,
                done.complete_ms,
                done.next_due_ms,
                f"{notification_id}|{done.attempt + 1}",
                done.event_bytes,
                done.app_id,
                done.campaign_id,
            ]
        with suppress_instrumentation():  # one call for many traces: no span for it
            await self._finish(
                keys=[
                    keys.stream(shard),
                    keys.retries(shard),
                    keys.outcomes(shard),
                    keys.outcomes_watermark(shard),
                    *(keys.record(shard, item[0]) for item in items),
                ],
                args=args,
            )

    async def postpone(self, entry: Entry, due_ms: int) -> None:
        """Put the same attempt back in the schedule (no send happened: rate budget)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(keys.record(entry.shard, entry.notification_id), "lw", "lu")
        pipe.zadd(keys.retries(entry.shard), {f"{entry.notification_id}|{entry.attempt}": due_ms})
        pipe.xack(keys.stream(entry.shard), keys.GROUP, entry.entry_id)
        pipe.xdel(keys.stream(entry.shard), entry.entry_id)
        await execute(pipe)

    async def move_due(self, shard: int, now_ms: int, limit: int = 500) -> int:
        moved: Any = await self._move(
            keys=[keys.retries(shard), keys.stream(shard)], args=[now_ms, limit]
        )
        return int(moved)

    # -- records ------------------------------------------------------------------------
    async def record(self, shard: int, notification_id: str) -> dict[bytes, bytes]:
        found: Any = await self.redis.hgetall(keys.record(shard, notification_id))
        return dict(found)

    async def records(self, shard: int, ids: list[str], fields: list[str]) -> list[list[Any]]:
        pipe = self.redis.pipeline(transaction=False)
        for notification_id in ids:
            pipe.hmget(keys.record(shard, notification_id), fields)
        return list(await execute(pipe))

    async def index_page(
        self, shard: int, index: str, before: tuple[int, str] | None, count: int
    ) -> list[tuple[str, int]]:
        """Up to `count` (id, create ms) of one shard's index, newest first, strictly
        after the `before` position (create ms, id) in that order."""
        out: list[tuple[str, int]] = []
        high = "+inf"
        if before is not None:
            # Members sharing the position's create time (one batch shares it) come in
            # reverse id order; then everything strictly older.
            same: Any = await self.redis.zrangebyscore(index, before[0], before[0])
            ties = sorted((m.decode() for m in same if m.decode() < before[1]), reverse=True)
            out = [(nid, before[0]) for nid in ties[:count]]
            high = f"({before[0]}"
        if len(out) < count:
            rows: Any = await self.redis.zrevrangebyscore(
                index, high, "-inf", start=0, num=count - len(out), withscores=True
            )
            out += [(member.decode(), int(score)) for member, score in rows]
        return out

    async def cancel(
        self, shard: int, items: list[tuple[str, bytes, str, str]], now_ms: int
    ) -> int:
        """items: (notification id, event bytes, app, campaign). Returns how many were
        still waiting and are now CANCELLED."""
        if not items:
            return 0
        retention_ms = self.options.outcomes_retention_seconds * 1000
        args: list[Any] = [now_ms, max(0, now_ms - retention_ms), self.options.record_ttl_seconds]
        for _nid, event, app, campaign in items:
            args += [event, app, campaign]
        cancelled: Any = await self._cancel(
            keys=[keys.outcomes(shard), keys.outcomes_watermark(shard)]
            + [keys.record(shard, nid) for nid, *_ in items],
            args=args,
        )
        return int(cancelled)

    async def index_members(self, index: str) -> list[str]:
        found: Any = await self.redis.zrange(index, 0, -1)
        return [m.decode() for m in found]
