"""StreamOutcomes: per-token outcomes from the shards' outcome streams.

Workers append one OutcomeEvent per attempt (and CancelNotifications one per cancelled
item) to their shard's outcome stream, trimmed by time (MINID) after
`outcomes_retention_seconds`; the trim keeps the newest id it deleted per shard (the
watermark, docs/keys/delivery.md), which is how an expired cursor is told. A reader polls every shard from its own position (no
blocking reads: the shards may live on different Cluster nodes); the cursor it hands out
is the list of those positions, so a resumed stream continues right after the last
batch it delivered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from herald.delivery.v1 import delivery_service_pb2, notification_pb2
from services.core.errors import FieldViolation, InvalidArgument, OutOfRange
from services.delivery import queue_keys as keys
from services.delivery.queue_store import QueueStore, execute

DS = delivery_service_pb2
DEFAULT_BATCH = 500
MAX_BATCH = 5000
IDLE_FLUSH_SECONDS = 0.1


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class OutcomeStream:
    def __init__(self, store: QueueStore) -> None:
        self.store = store
        self.redis = store.redis

    async def stream(
        self, request: DS.StreamOutcomesRequest
    ) -> AsyncIterator[DS.StreamOutcomesResponse]:
        if not 0 <= request.batch_size <= MAX_BATCH:
            raise InvalidArgument(
                "batch_size must be 0 to 5000",
                [FieldViolation("batch_size", f"must be 0 to {MAX_BATCH}")],
            )
        size = request.batch_size or DEFAULT_BATCH
        digest = _digest(request)
        positions = await self._start(request, digest)
        wanted = set(request.outcomes)
        pending: list[notification_pb2.OutcomeEvent] = []
        last_new = time.monotonic()
        while True:
            events, positions_after = await self._read(
                positions, size - len(pending), request, wanted
            )
            positions = positions_after
            if events:
                pending.extend(events)
                last_new = time.monotonic()
            idle = time.monotonic() - last_new >= IDLE_FLUSH_SECONDS
            if pending and (len(pending) >= size or idle or not events):
                yield DS.StreamOutcomesResponse(outcomes=pending, cursor=_cursor(digest, positions))
                pending = []
                continue
            if not events:
                await asyncio.sleep(IDLE_FLUSH_SECONDS)

    async def _start(self, request: DS.StreamOutcomesRequest, digest: str) -> list[str]:
        shards = self.store.shards
        if request.cursor:
            positions = _read_cursor(request.cursor, digest, shards)
            await self._check_retained(positions)
            return positions
        watermarks = await self._watermarks()
        if request.from_earliest:
            # Everything up to the watermark is gone already; starting there (never at
            # "0-0") means the cursor expires only if something it has not read is
            # deleted after it was made.
            return watermarks
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(shards):
            pipe.xrevrange(keys.outcomes(shard), "+", "-", count=1)
        latest: Any = await execute(pipe)
        return [
            _decode(rows[0][0]) if rows else watermark
            for rows, watermark in zip(latest, watermarks, strict=True)
        ]

    async def _watermarks(self) -> list[str]:
        """Per shard, the newest outcome id the trim has deleted ("0-0": none yet)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.store.shards):
            pipe.get(keys.outcomes_watermark(shard))
        found: Any = await execute(pipe)
        return [_decode(value) if value else "0-0" for value in found]

    async def _check_retained(self, positions: list[str]) -> None:
        """CURSOR_EXPIRED when the trim deleted an outcome after a position: that
        outcome was never delivered to this reader."""
        watermarks = await self._watermarks()
        for position, watermark in zip(positions, watermarks, strict=True):
            if _id_key(position) < _id_key(watermark):
                raise OutOfRange(
                    "CURSOR_EXPIRED",
                    "outcomes after the cursor were deleted (older than the retention); "
                    "restart with from_earliest",
                )

    async def _read(
        self,
        positions: list[str],
        count: int,
        request: DS.StreamOutcomesRequest,
        wanted: set[Any],
    ) -> tuple[list[notification_pb2.OutcomeEvent], list[str]]:
        pipe = self.redis.pipeline(transaction=False)
        for shard, position in enumerate(positions):
            pipe.xread({keys.outcomes(shard): position}, count=count)
        answers: Any = await execute(pipe)
        rows: list[tuple[tuple[int, int], int, str, dict[bytes, bytes]]] = []
        for shard, answer in enumerate(answers):
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    decoded = _decode(entry_id)
                    rows.append((_id_key(decoded), shard, decoded, fields))
        rows.sort(key=lambda row: row[0])  # in the order they happened, across shards
        after = list(positions)
        events: list[notification_pb2.OutcomeEvent] = []
        app = request.app_id.encode()
        campaign = request.campaign_id.encode()
        for _key, shard, entry_id, fields in rows:
            if len(events) == count:
                break
            after[shard] = entry_id
            if app and fields.get(b"app") != app:
                continue
            if campaign and fields.get(b"c") != campaign:
                continue
            event = notification_pb2.OutcomeEvent.FromString(fields[b"e"])
            if wanted and event.outcome not in wanted:
                continue
            events.append(event)
        return events, after


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _digest(request: DS.StreamOutcomesRequest) -> str:
    parts = [request.app_id, request.campaign_id, *(str(o) for o in sorted(request.outcomes))]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _cursor(digest: str, positions: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"f": digest, "p": positions}).encode()).decode()


def _read_cursor(cursor: str, digest: str, shards: int) -> list[str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        positions = [str(p) for p in data["p"]]
        if data["f"] == digest and len(positions) == shards:
            for position in positions:
                _id_key(position)
            return positions
    except (ValueError, KeyError, TypeError):
        pass
    raise InvalidArgument(
        "the cursor is malformed or belongs to another query",
        [FieldViolation("cursor", "was not issued by StreamOutcomes for these filters")],
        reason="INVALID_CURSOR",
    )
