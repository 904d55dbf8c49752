"""Per-user frequency caps across an app's campaigns (one Lua script per user)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from redis.asyncio.cluster import RedisCluster

from herald.campaign.v1 import campaign_pb2
from services.campaign import keys
from services.core.redis import RedisClient, load_script

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
        if isinstance(self.redis, RedisCluster):
            # redis-py refuses scripts in a cluster pipeline; each user's history is its
            # own slot, so the calls go concurrently to their nodes (bounded batches).
            answers: list[Any] = []
            for start in range(0, len(users), CLUSTER_CONCURRENCY):
                answers += await asyncio.gather(
                    *(
                        self._script(keys=[keys.frequency(app_id, user)], args=args)
                        for user in users[start : start + CLUSTER_CONCURRENCY]
                    )
                )
        else:
            pipe = self.redis.pipeline(transaction=False)
            for user in users:
                await self._script(keys=[keys.frequency(app_id, user)], args=args, client=pipe)
            answers = await pipe.execute()
        return {user for user, allowed in zip(users, answers, strict=True) if allowed}
