"""Per-user frequency caps across an app's campaigns (one Lua script call per user, a
batch's calls in one round trip)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio.cluster import RedisCluster

from herald.campaign.v1 import campaign_pb2
from services.campaign import keys
from services.core.redis import RedisClient, load_script
from services.core.script_batches import run_scripts

RETENTION_MS = 90 * 86400 * 1000  # the longest period a cap may have
CLUSTER_CONCURRENCY = 200  # script calls in flight on Redis Cluster


class FrequencyCaps:
    def __init__(self, redis: RedisClient) -> None:
        self.redis: Any = redis  # redis-py's async stubs do not type bytes replies
        self._script: Any = load_script(redis, "services.campaign.scripts", "frequency.lua")

    async def allow(
        self,
        app_id: str,
        user_ids: Iterable[str],
        cap: campaign_pb2.FrequencyCap,
        campaign_id: str,
        now_ms: int,
    ) -> set[str]:
        """Counts one push of this campaign for each user under the cap; returns them."""
        users = list(dict.fromkeys(u for u in user_ids if u))
        if not users:
            return set()
        period_ms = cap.period.seconds * 1000 + cap.period.nanos // 1_000_000
        args = [now_ms, period_ms, cap.max_messages, campaign_id, RETENTION_MS]
        calls = [(self._script, [keys.frequency(app_id, user)], args) for user in users]
        # One round trip on a single Redis; on a Cluster each user's history is its own
        # slot and the calls go concurrently to their nodes, in bounded batches.
        batch = CLUSTER_CONCURRENCY if isinstance(self.redis, RedisCluster) else len(calls)
        answers: list[Any] = []
        for start in range(0, len(calls), batch):
            answers += await run_scripts(self.redis, calls[start : start + batch])
        return {user for user, allowed in zip(users, answers, strict=True) if allowed}
